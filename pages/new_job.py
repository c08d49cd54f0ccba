"""New job: draw, upload or type the area; choose dates, task, model and sources; see the estimate; submit."""

from datetime import date

import streamlit as st

from core.errors import AppError
from core.jobs.request import JobRequest, JobSpec
from models.catalogue import catalogue
from pages.widgets.aoi_input import area_of_interest
from pages.widgets.model_choice import dates_ui, model_ui, sources_ui
from pages.widgets.preflight import preflight_ui
from pages.widgets.services import client, settings
from pages.widgets.sign_in import account

current = account()
st.title("New job")
config = settings()
models = catalogue(config.cache_dir)
aoi = area_of_interest(config)

# -- request ----------------------------------------------------------------------------------------------
left, right = st.columns(2)
with left:
    start, end, max_cloud_pct, shown = dates_ui()  # errors said next to their field, not again below
with right:
    task, card, model_errors = model_ui(models, current)
    shown |= model_errors
    sources, bad_sources = sources_ui(config)
    shown |= bad_sources

# -- pre-flight and submit --------------------------------------------------------------------------------
st.subheader("Pre-flight estimate")
spec: JobSpec | None = None
if aoi is None:
    st.caption("The estimate appears once the area, dates, model and sources are valid.")
else:
    request = JobRequest(
        aoi=aoi,
        start=start if isinstance(start, date) else "",
        end=end if isinstance(end, date) else "",
        task=task,
        model_id=card.id,
        sources=sources,
        max_cloud_pct=None if max_cloud_pct >= 100 else float(max_cloud_pct),
    )
    spec = preflight_ui(request, config, models, shown)

SUBMITTED = "submitted_job"  # (job id, the request it was submitted for)
job_name = st.text_input("Job name (optional)", max_chars=80, placeholder="e.g. Ljubljana, July clouds")
if st.button("Submit", type="primary", disabled=spec is None) and spec is not None:
    try:
        st.session_state[SUBMITTED] = (client().submit(spec, owner=current.name, name=job_name), spec)
    except AppError as err:
        st.error(str(err))
submitted = st.session_state.get(SUBMITTED)
if submitted is not None and submitted[1] != spec:  # the request changed since: the message would be stale
    st.session_state.pop(SUBMITTED)
elif submitted is not None:
    st.success(f"Job {submitted[0]} submitted.")
    st.page_link("pages/jobs.py", label="Follow it on the Jobs page", icon=":material/list:")
