"""Results: the class map over the scene on a map, side by side, areas per class, and every output to download."""

from pathlib import Path

import streamlit as st

from core.errors import AppError
from core.jobs.report import read_stats
from core.learning.reference_sample import ACCURACY_FILES
from core.outputs.export import download_prefix
from core.outputs.overlay import read_classes
from core.types import ClassInfo
from pages.widgets.accuracy import accuracy_section
from pages.widgets.areas import class_areas, cropland_areas, zone_areas
from pages.widgets.compare import compare_section
from pages.widgets.date_maps import cloud_fractions, date_maps, date_shares
from pages.widgets.downloads import download_buttons, vector_downloads
from pages.widgets.formatting import legend_html
from pages.widgets.overlays import overlay_of, pictures
from pages.widgets.result_map import result_map, run_aoi
from pages.widgets.services import client
from pages.widgets.sign_in import account

current = account()
st.title("Results")
finished = [s for s in client().list_jobs(current) if s.state == "finished"]
if not finished:
    st.info("No finished job yet. Submit one on the New job page and follow it on the Jobs page.")
    st.stop()

job_ids = [s.job_id for s in finished]
names = {s.job_id: f"{s.name} ({s.job_id})" if s.name else s.job_id for s in finished}
wanted = st.query_params.get("job")  # another user's job id is not in the list: the newest of one's own opens
job_id = st.selectbox(
    "Job", job_ids, index=job_ids.index(wanted) if wanted in job_ids else 0, format_func=names.__getitem__
)
st.query_params["job"] = job_id  # the choice survives other jobs finishing, and the URL can be shared
status = next(s for s in finished if s.job_id == job_id)
outputs = {Path(p).name: Path(p) for p in status.outputs if Path(p).exists()}
if "classes.tif" not in outputs or "stats.json" not in outputs:
    st.error(f"The outputs of job {job_id} are incomplete on disk (a file was removed); run the job again.")
    st.stop()
try:
    stats = read_stats(outputs["stats.json"])
except AppError as err:
    st.error(str(err))
    st.stop()
classes = read_classes(outputs["classes.tif"])
st.caption(
    f"{stats.task} · {stats.model_id} · date {stats.selected_date} · AOI {stats.aoi_area_km2:,.3f} km²"
    + (f" · {status.message}" if status.reused_from is not None else "")
)

for warning in stats.warnings:  # a (nearly) empty map says so before anything else
    st.warning(warning)

map_column, legend_column = st.columns([4, 1])
with legend_column:
    opacity = st.slider("Class overlay opacity", 0.0, 1.0, 0.6, 0.05)
    st.html(legend_html(classes))
with map_column:
    class_overlay = overlay_of(outputs["classes.tif"])
    scene_overlay = overlay_of(outputs["scene.tif"]) if "scene.tif" in outputs else None
    result_map(class_overlay, scene_overlay, opacity, run_aoi(outputs))

cropland_overlay = overlay_of(outputs["cropland.tif"]) if "cropland.tif" in outputs else None
st.subheader(
    "Image and classes side by side" if cropland_overlay is None else "Cropland and crop types side by side"
)
left, right = st.columns(2)
beside = scene_overlay or cropland_overlay
shown = pictures(class_overlay.png, *([beside.png] if beside else []))  # sharp, cropped together
if scene_overlay is not None:
    left.image(shown[1], caption=f"True colour, {stats.selected_date}", width="stretch")
elif cropland_overlay is not None:  # a crop job on a monthly cube: no single date to show
    left.image(shown[1], caption=f"Cropland ({stats.cropland_model_id})", width="stretch")
    left.html(legend_html(tuple(ClassInfo(c.value, c.name, c.color) for c in stats.cropland or [])))
else:
    left.info("No true-colour image: the scenes lack the red, green or blue band.")
right.image(shown[0], caption="Classes", width="stretch")

st.subheader("Area per class")
class_areas(stats)
st.caption(
    "Mapped areas: pixels times their area, biased by the map's errors. For areas to report, with confidence "
    "intervals, label a reference sample under *Accuracy and area* below."
)
if stats.cropland:
    st.subheader("Cropland area")
    cropland_areas(stats)
if stats.cloud_model_id:
    st.caption(
        f"Date chosen and clouds masked by {stats.cloud_model_id}: "
        f"{stats.cloud_masked_pixels or 0:,} cloud or shadow pixels are no data in the map."
    )
if stats.dates:
    st.subheader("Cloud fractions per date")
    cloud_fractions(stats)
    st.subheader("The map of each date")
    date_maps(outputs, date_shares(stats))

zone_areas(outputs["classes.tif"], run_aoi(outputs))

st.subheader("Compare with another job over this area")
compare_section(job_id, outputs, finished)

prefix = download_prefix(status.name, job_id)  # `<job name or id>_classes.tif`: no clash between jobs
st.subheader("Accuracy and area")
accuracy_section(outputs["classes.tif"], client().store.job_dir(job_id) / "reference", prefix)

st.subheader("Downloads")
for name in ACCURACY_FILES:  # written beside the class map once a labelled sample was given
    if (outputs["classes.tif"].parent / name).is_file():
        outputs[name] = outputs["classes.tif"].parent / name
download_buttons(outputs, prefix)
st.subheader("Vector files")
vector_downloads(outputs["classes.tif"], f"{prefix}_classes")
