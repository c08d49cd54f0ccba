"""The New job page's area input: draw on a map, upload a file or type a bbox; each gives a validated AOI or an
error sentence. Validation is core.aoi's, with the operator's limits."""

import json
from typing import Any

import folium
import streamlit as st
import streamlit_folium
from folium.plugins import Draw

from core.aoi import AOI, MAX_UPLOAD_BYTES, parse_aoi_upload, parse_bbox, read_aoi, validate_aoi
from core.config import Settings
from core.errors import AppError

SAMPLE_CENTER = (45.8705, 14.5579)  # the embedded sample, near Ljubljana
AOI_MODES = ("Draw on the map", "Upload a file", "Type a bbox")


@st.cache_data(max_entries=8, show_spinner="Reading the file...")
def parsed_upload(name: str, data: bytes, max_area_km2: float, max_vertices: int) -> AOI | str:
    """The uploaded file's AOI, or why it cannot be used: parsed once per file content (Streamlit keys the cache by
    the bytes' hash), failures too, rather than on every rerun."""
    try:
        return parse_aoi_upload(name, data, max_area_km2=max_area_km2, max_vertices=max_vertices)
    except AppError as err:
        return str(err)


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
    drawn = streamlit_folium.st_folium(  # looked up at each call: tests replace it with a drawing
        fmap, key="aoi_map", height=460, use_container_width=True, returned_objects=["last_active_drawing"]
    )
    return (drawn or {}).get("last_active_drawing")


def area_of_interest(settings: Settings) -> AOI | None:
    """The AOI input, with its map and a line saying what was understood (or what is wrong)."""
    limits = {"max_area_km2": settings.max_aoi_km2, "max_vertices": settings.max_aoi_vertices}
    mode = st.radio("Area of interest", AOI_MODES, horizontal=True)
    aoi: AOI | None = None
    error = ""
    try:
        if mode == "Upload a file":
            upload = st.file_uploader(
                f"GeoJSON, zipped Shapefile (with its .prj), GeoPackage or KML; at most "
                f"{MAX_UPLOAD_BYTES // 2**20} MB",
                type=["geojson", "json", "zip", "gpkg", "kml"],
            )
            if upload is not None:
                parsed = parsed_upload(upload.name, upload.getvalue(), **limits)
                aoi, error = (parsed, "") if isinstance(parsed, AOI) else (None, parsed)
        elif mode == "Type a bbox":
            text = st.text_input(
                "Bounding box: west, south, east, north in degrees", placeholder="14.55,45.866,14.564,45.875"
            )
            if text.strip():
                aoi = parse_bbox(text, **limits)
        elif drawn_json := st.session_state.get("drawn_aoi"):
            aoi = validate_aoi(read_aoi(json.loads(drawn_json))[0], "drawn on the map", **limits)
    except AppError as err:
        error = str(err)
    drawn = aoi_map(aoi)
    if mode == "Draw on the map" and drawn and drawn.get("geometry"):
        drawn_json = json.dumps(drawn["geometry"])
        if drawn_json != st.session_state.get("drawn_aoi"):
            st.session_state["drawn_aoi"] = drawn_json  # kept across reruns: the map forgets its drawings
            st.rerun()
    if error:
        st.error(error)
    elif aoi is not None:
        st.success(f"Area of interest: {aoi.area_km2:,.3f} km² ({aoi.label})")
    elif mode == "Draw on the map":
        st.info("Draw a rectangle or a polygon with the tools on the left of the map.")
    return aoi
