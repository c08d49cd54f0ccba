"""Admin (admin accounts only): start and follow training runs, see the models trained here with their versions and
metrics, promote or roll back a version, and read the audit log."""

import streamlit as st

from core.accounts import read_audit
from models.catalogue import catalogue
from pages.widgets.damaged_jobs import damaged_job_folders
from pages.widgets.dataset_form import dataset_form
from pages.widgets.formatting import local_time
from pages.widgets.samples_form import samples_form
from pages.widgets.services import settings
from pages.widgets.sign_in import account
from pages.widgets.training_form import training_form
from pages.widgets.training_runs import training_runs
from pages.widgets.versions import model_versions

current = account()
st.title("Admin")
config = settings()
admin_dir = config.cache_dir / "admin"
if not current.is_admin:  # not in a user's navigation; this also holds for a page reached another way
    st.info("This page is for admin accounts. Sign out and sign in with one.")
    st.stop()

damaged_job_folders(current, admin_dir)  # first: something on the server needs an admin's look
cards = catalogue(config.cache_dir)
st.subheader("Train a model")
st.caption(
    "A new classifier on a base model's features (then optionally the network fine-tuned): from your labels "
    "over the imagery of an area and dates, a crop head from WorldCereal sample tables, or a model trained on a "
    "patch dataset in its published layout (the seed architectures train whole there). Runs go to the "
    "`training` queue: a worker must serve it (`terraseg worker --queues training`, or a worker on every queue)."
)
over_imagery, from_samples, from_dataset = st.tabs(
    ["Labels over imagery (land cover)", "WorldCereal samples (crop heads)", "Patch dataset"]
)
with over_imagery, st.container(border=True):
    training_form(config, cards, admin_dir)
with from_samples, st.container(border=True):
    samples_form(config, cards, admin_dir)
with from_dataset, st.container(border=True):
    dataset_form(config, cards, admin_dir)
st.subheader("Training runs")
training_runs()

st.subheader("Models trained here")
if not cards.versions:
    st.info("No model has been trained on this installation yet: start a run above.")
for model_id, found in sorted(cards.versions.items()):
    model_versions(model_id, found, cards, current, admin_dir)

st.subheader("Audit log")
st.dataframe(
    [entry | {"at": local_time(entry.get("at"))} for entry in read_audit(admin_dir)],
    hide_index=True,
    use_container_width=True,
)
