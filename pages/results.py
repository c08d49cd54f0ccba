"""Results: the class map over the scene on a map, side by side, areas per class, and every output to download."""

import base64
import json
from pathlib import Path

import altair as alt
import folium
import leafmap.foliumap as leafmap
import pandas as pd
import streamlit as st
from streamlit_folium import st_folium

from core.overlay import Overlay, read_classes, render_overlay
from pages import ui

# Larger files are read only when the user clicks (Streamlit's deferred download), not on every rerun: inline
# data stays in the session's memory and is re-sent whenever the page reruns (every slider move).
INLINE_DOWNLOAD_MAX_BYTES = 2**20
DOWNLOADS = (
    ("classes.tif", "Classes (COG)", "image/tiff"),
    ("confidence.tif", "Confidence (COG)", "image/tiff"),
    ("scene.tif", "True-colour image (COG)", "image/tiff"),
    ("preview.png", "Preview (PNG)", "image/png"),
    ("stats.csv", "Areas (CSV)", "text/csv"),
    ("stats.json", "Statistics (JSON)", "application/json"),
    ("run.json", "Run record (JSON)", "application/json"),
)

AOI_OUTLINE_STYLE = {"color": "#ff7800", "weight": 2, "fill": False, "dashArray": "6 4"}


def run_aoi(outputs: dict[str, Path]) -> dict[str, object] | None:
    """The AOI geometry the job ran on (from its run record), or None for an older job without one."""
    try:
        return json.loads(outputs["run.json"].read_text())["aoi"]["geometry"]
    except (KeyError, OSError, ValueError, TypeError):
        return None


@st.cache_data(max_entries=16, show_spinner="Rendering the overlay...")
def overlay(path: str, mtime_ns: int) -> Overlay:
    """The COG warped to a Web Mercator PNG (cached per file version)."""
    return render_overlay(Path(path))


def overlay_of(path: Path) -> Overlay:
    return overlay(str(path), path.stat().st_mtime_ns)


def percent(fraction: float | None) -> float | None:
    """A 0-1 fraction as a percentage; None (a date without valid pixels in the AOI) stays empty."""
    return None if fraction is None else round(100 * fraction, 1)


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def result_map(
    classes: Overlay, scene: Overlay | None, opacity: float, aoi: dict[str, object] | None
) -> None:
    """Basemap (may be missing offline), true-colour image, class overlay and the AOI's outline (so a user sees
    where the data is and is not); everything else from local files."""
    fmap = leafmap.Map(
        draw_control=False, measure_control=False, fullscreen_control=False, search_control=False
    )
    if scene is not None:
        folium.raster_layers.ImageOverlay(
            data_url(scene.png), bounds=scene.bounds_latlon, name="True-colour image", opacity=1.0
        ).add_to(fmap)
    folium.raster_layers.ImageOverlay(
        data_url(classes.png), bounds=classes.bounds_latlon, name="Classes", opacity=opacity, pixelated=True
    ).add_to(fmap)
    if aoi is not None:
        folium.GeoJson(aoi, name="Area of interest", style_function=lambda _: AOI_OUTLINE_STYLE).add_to(fmap)
    folium.LayerControl(collapsed=False).add_to(fmap)
    fmap.fit_bounds(list(classes.bounds_latlon))
    st_folium(fmap, key="result_map", height=520, use_container_width=True, returned_objects=[])


def download_buttons(outputs: dict[str, Path]) -> None:
    columns = st.columns(4)
    for index, (name, label, mime) in enumerate(d for d in DOWNLOADS if d[0] in outputs):
        path = outputs[name]
        data = path.read_bytes() if path.stat().st_size <= INLINE_DOWNLOAD_MAX_BYTES else path.read_bytes
        columns[index % 4].download_button(
            label, data, file_name=name, mime=mime, key=f"download-{name}", on_click="ignore"
        )


st.title("Results")
client = ui.client()
finished = [s for s in client.list_jobs() if s.state == "finished"]
if not finished:
    st.info("No finished job yet. Submit one on the New job page and follow it on the Jobs page.")
    st.stop()

job_ids = [s.job_id for s in finished]
wanted = st.query_params.get("job")
job_id = st.selectbox("Job", job_ids, index=job_ids.index(wanted) if wanted in job_ids else 0)
st.query_params["job"] = job_id  # the choice survives other jobs finishing, and the URL can be shared
status = next(s for s in finished if s.job_id == job_id)
outputs = {Path(p).name: Path(p) for p in status.outputs if Path(p).exists()}
if "classes.tif" not in outputs or "stats.json" not in outputs:
    st.error(f"The outputs of job {job_id} are incomplete on disk (a file was removed); run the job again.")
    st.stop()
stats = json.loads(outputs["stats.json"].read_text())
classes = read_classes(outputs["classes.tif"])
st.caption(
    f"{stats['task']} · {stats['model_id']} · date {stats['selected_date']} · AOI {stats['aoi_area_km2']:,.3f} km²"
    + (f" · {status.message}" if status.reused_from else "")
)

for warning in stats.get("warnings", []):  # a (nearly) empty map says so before anything else
    st.warning(warning)

map_column, legend_column = st.columns([4, 1])
with legend_column:
    opacity = st.slider("Class overlay opacity", 0.0, 1.0, 0.6, 0.05)
    st.html(ui.legend_html(classes))
with map_column:
    class_overlay = overlay_of(outputs["classes.tif"])
    scene_overlay = overlay_of(outputs["scene.tif"]) if "scene.tif" in outputs else None
    result_map(class_overlay, scene_overlay, opacity, run_aoi(outputs))

st.subheader("Image and classes side by side")
left, right = st.columns(2)
if scene_overlay is not None:
    left.image(scene_overlay.png, caption=f"True colour, {stats['selected_date']}", width="stretch")
else:
    left.info("No true-colour image: the scenes lack the red, green or blue band.")
right.image(class_overlay.png, caption="Classes", width="stretch")

st.subheader("Area per class")
areas = pd.DataFrame(stats["classes"])[["value", "name", "area_ha", "percent", "pixels"]]
areas.columns = ["value", "class", "area (ha)", "share (%)", "pixels"]
st.dataframe(areas, hide_index=True)
st.altair_chart(
    alt.Chart(areas.assign(colour=[c["color"] for c in stats["classes"]]))
    .mark_bar()
    .encode(
        x=alt.X("class:N", sort=None, title=None),
        y=alt.Y("area (ha):Q"),
        color=alt.Color("colour:N", scale=None, legend=None),  # the model's class colours
        tooltip=["class", "area (ha)", "share (%)"],
    )
)

if stats.get("cloud_model_id"):
    st.caption(
        f"Date chosen and clouds masked by {stats['cloud_model_id']}: "
        f"{stats.get('cloud_masked_pixels', 0):,} cloud or shadow pixels are no data in the map."
    )
if stats.get("dates"):
    st.subheader("Cloud fractions per date")
    rows = [
        {"date": d["date"], "valid (%)": percent(d["valid_fraction"])}
        | {f"{name} (%)": percent(value) for name, value in d["fractions"].items()}
        for d in stats["dates"]
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True)

st.subheader("Downloads")
download_buttons(outputs)
