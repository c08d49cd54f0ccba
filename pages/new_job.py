"""New job: draw, upload or type the area; choose dates, task, model and sources; see the estimate; submit."""

import json
import math
from datetime import date
from typing import Any

import folium
import streamlit as st
from folium.plugins import Draw
from streamlit_folium import st_folium

from core.aoi import AOI, MAX_UPLOAD_BYTES, parse_aoi, parse_aoi_upload, parse_bbox, read_aoi, validate_aoi
from core.errors import AppError
from core.jobs import make_spec
from core.preflight import Estimate, estimate_job, find_scenes, format_duration
from core.sources import SOURCE_HELP, check_app_source, parse_source
from models.registry import DEFAULT_MODEL_BY_TASK, default_model, get_card, list_cards, require_weights
from pages import ui

SAMPLE_CENTER = (45.8705, 14.5579)  # the embedded sample, near Ljubljana
SAMPLE_DATES = (date(2015, 7, 1), date(2015, 9, 30))
AOI_MODES = ("Draw on the map", "Upload a file", "Type a bbox")


@st.cache_data(ttl=600, show_spinner="Searching the sources...")
def preflight(
    sources: tuple[str, ...],
    aoi_json: str,
    start: date,
    end: date,
    max_cloud_pct: float | None,
    model_id: str,
) -> Estimate:
    """A real search and the estimate. Errors are raised, so Streamlit caches only successful answers."""
    aoi = parse_aoi(aoi_json, max_area_km2=math.inf, max_vertices=2**31)  # validated already, with the limits
    scenes = find_scenes(sources, aoi.geometry, start, end, max_cloud_pct)
    card = get_card(model_id)
    # Other tasks run the cloud model on every date to choose one (see worker/tasks.py).
    cloud_card = None if card.task == "cloud" else get_card(default_model("cloud"))
    return estimate_job(aoi, scenes, card, cloud_card)


@st.cache_data(max_entries=4, show_spinner=False)
def parsed_upload(name: str, data: bytes, max_area_km2: float, max_vertices: int) -> AOI:
    """The uploaded file's AOI, parsed once per file rather than on every rerun (errors are raised, not cached)."""
    return parse_aoi_upload(name, data, max_area_km2=max_area_km2, max_vertices=max_vertices)


def aoi_map(aoi: AOI | None) -> dict[str, Any] | None:
    """The map with the Draw tools (rectangle, polygon) and the current AOI; returns the last drawn feature."""
    fmap = folium.Map(location=SAMPLE_CENTER, zoom_start=13, control_scale=True)
    Draw(
        export=False,
        draw_options={"polyline": False, "circle": False, "marker": False, "circlemarker": False},
        edit_options={"edit": False},
    ).add_to(fmap)
    if aoi is not None:
        layer = folium.GeoJson(aoi.to_geojson(), name="AOI", style_function=lambda _: {"color": "#d95f02"})
        layer.add_to(fmap)
        west, south, east, north = aoi.geometry.bounds
        fmap.fit_bounds([[south, west], [north, east]])
    drawn = st_folium(
        fmap, key="aoi_map", height=460, use_container_width=True, returned_objects=["last_active_drawing"]
    )
    return (drawn or {}).get("last_active_drawing")


st.title("New job")
settings = ui.settings()
limits = {"max_area_km2": settings.max_aoi_km2, "max_vertices": settings.max_aoi_vertices}

# -- area of interest -------------------------------------------------------------------------------------
mode = st.radio("Area of interest", AOI_MODES, horizontal=True)
aoi: AOI | None = None
aoi_error = ""
if mode == "Upload a file":
    upload = st.file_uploader(
        f"GeoJSON, zipped Shapefile (with its .prj), GeoPackage or KML; at most {MAX_UPLOAD_BYTES // 2**20} MB",
        type=["geojson", "json", "zip", "gpkg", "kml"],
    )
    if upload is not None:
        try:
            aoi = parsed_upload(upload.name, upload.getvalue(), **limits)
        except AppError as err:
            aoi_error = str(err)
elif mode == "Type a bbox":
    bbox_text = st.text_input(
        "Bounding box: west, south, east, north in degrees", placeholder="14.55,45.866,14.564,45.875"
    )
    if bbox_text.strip():
        try:
            aoi = parse_bbox(bbox_text, **limits)
        except AppError as err:
            aoi_error = str(err)
else:
    drawn_json = st.session_state.get("drawn_aoi")
    if drawn_json:
        try:
            aoi = validate_aoi(read_aoi(json.loads(drawn_json))[0], "drawn on the map", **limits)
        except AppError as err:
            aoi_error = str(err)

drawn = aoi_map(aoi)
if mode == "Draw on the map" and drawn and drawn.get("geometry"):
    drawn_json = json.dumps(drawn["geometry"])
    if drawn_json != st.session_state.get("drawn_aoi"):
        st.session_state["drawn_aoi"] = drawn_json  # kept across reruns: the map forgets its drawings
        st.rerun()

if aoi_error:
    st.error(aoi_error)
elif aoi is not None:
    st.success(f"Area of interest: {aoi.area_km2:,.3f} km² ({aoi.label})")
elif mode == "Draw on the map":
    st.info("Draw a rectangle or a polygon with the tools on the left of the map.")

# -- request ----------------------------------------------------------------------------------------------
left, right = st.columns(2)
with left:
    start = st.date_input("Start date", SAMPLE_DATES[0], format="YYYY-MM-DD")
    end = st.date_input("End date", SAMPLE_DATES[1], format="YYYY-MM-DD")
    date_error = ""
    if isinstance(start, date) and isinstance(end, date) and end < start:
        date_error = f"The end date {end} is before the start date {start}. Swap them."
        st.error(date_error)
    max_cloud_pct = st.slider(
        "Maximum scene cloud cover (%)",
        0,
        100,
        100,
        help="Scenes whose metadata says more cloud are skipped; 100 keeps every scene.",
    )
with right:
    cards = list_cards()
    tasks = sorted({c.task for c in cards})
    task = st.selectbox("Task", tasks, index=tasks.index("cloud") if "cloud" in tasks else 0)
    task_cards = [c for c in cards if c.task == task]
    model_ids = [c.id for c in task_cards]
    model_id = st.selectbox(
        "Model",
        model_ids,
        index=model_ids.index(DEFAULT_MODEL_BY_TASK.get(task, model_ids[0])),
        format_func=lambda m: m + ("" if get_card(m).status != "untrained" else " (no trained weights)"),
    )
    card = get_card(model_id)
    st.caption(
        f"{card.description}  \nClasses: {', '.join(c.name for c in card.classes)}.  \n"
        f"Weights: {card.status}; licence {card.licence}."
    )
    model_error = ""
    try:
        require_weights(model_id)
    except AppError as err:
        model_error = str(err)
        st.error(model_error)
    sources_text = st.text_input(
        "Sources, in priority order (comma-separated)",
        "sample",
        help="; ".join(f"{name}: {text}" for name, text in SOURCE_HELP.items()),
    )
    sources = tuple(s.strip() for s in sources_text.split(",") if s.strip())
    source_error = "" if sources else "Name at least one source, e.g. 'sample'."
    for name in sources:
        try:
            check_app_source(name, settings)  # first: nothing reads a folder or URL it refuses
            parse_source(name)
        except AppError as err:
            source_error = str(err)
    if source_error:
        st.error(source_error)

# -- pre-flight and submit --------------------------------------------------------------------------------
st.subheader("Pre-flight estimate")
max_cloud = None if max_cloud_pct >= 100 else float(max_cloud_pct)
ready = aoi is not None and not (aoi_error or date_error or model_error or source_error)
preflight_error = ""
if aoi is None or not ready:
    st.caption("The estimate appears once the area, dates, model and sources are valid.")
else:
    try:
        answer = preflight(sources, json.dumps(aoi.to_geojson()), start, end, max_cloud, model_id)
    except AppError as err:
        preflight_error = str(err)
    except OSError as err:  # e.g. a local folder that cannot be read
        preflight_error = f"The sources cannot be searched: {err.strerror or err}."
    if preflight_error:
        st.error(preflight_error)
    else:
        cols = st.columns(4)
        cols[0].metric("Scenes found", answer.scenes)
        cols[1].metric("Dates", answer.dates)
        cols[2].metric("Download", f"{answer.download_mb:,.0f} MB")
        cols[3].metric("Expected run time", format_duration(answer.run_s))
        st.caption(answer.summary() + " Estimates only.")
        if warning := answer.coverage_warning():
            st.warning(warning)

can_submit = ready and not preflight_error
if st.button("Submit", type="primary", disabled=not can_submit) and aoi is not None:
    try:
        spec = make_spec(
            aoi=aoi.to_geojson(),
            start=start,
            end=end,
            task=task,
            model_id=model_id,
            sources=sources,
            max_cloud_pct=max_cloud,
        )
        st.session_state["submitted_job"] = ui.client().submit(spec)
    except AppError as err:
        st.error(str(err))
if job_id := st.session_state.get("submitted_job"):
    st.success(f"Job {job_id} submitted.")
    st.page_link("pages/jobs.py", label="Follow it on the Jobs page", icon=":material/list:")
