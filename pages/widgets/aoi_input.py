"""The New job page's area input: draw on a map, upload a file or type a bbox; each gives a validated AOI or an
error sentence. Validation is core.geometry.aoi's, with the operator's limits."""

import json
import math
from collections.abc import Sequence
from typing import Any

import folium
import streamlit as st
import streamlit_folium
from shapely.geometry import shape

from core.config import Settings
from core.errors import AppError
from core.geometry.aoi import AOI, MAX_AOI_FILE_BYTES, parse_aoi_upload, parse_bbox, read_aoi, validate_aoi
from core.geometry.places import find_places
from pages.widgets.base_map import base_map, draw_tools, finish
from pages.widgets.footprints import Footprint, covered_extent, footprint_layer, in_dates, scene_footprints
from pages.widgets.model_choice import END_KEY, SAMPLE_DATES, SOURCES_KEY, START_KEY

SAMPLE_CENTER = (45.8705, 14.5579)  # the embedded sample, near Ljubljana
AOI_MODES = ("Draw on the map", "Upload a file", "Type a bbox")
IMAGERY_AOI = "imagery_aoi"  # the area 'Use the imagery's extent' chose (GeoJSON), in draw mode


@st.cache_data(max_entries=8, show_spinner="Reading the file...")
def parsed_upload(name: str, data: bytes, max_area_km2: float, max_vertices: int) -> AOI | str:
    """The uploaded file's AOI, or why it cannot be used: parsed once per file content (Streamlit keys the cache by
    the bytes' hash), failures too, rather than on every rerun."""
    try:
        return parse_aoi_upload(name, data, max_area_km2=max_area_km2, max_vertices=max_vertices)
    except AppError as err:
        return str(err)


def view_of(aoi: AOI) -> tuple[tuple[float, float], int]:
    """The map's centre (lat, lon) and a zoom level that shows the whole AOI."""
    return view_of_bounds(aoi.geometry.bounds)


def view_of_bounds(bounds: tuple[float, float, float, float]) -> tuple[tuple[float, float], int]:
    """The map's centre (lat, lon) and a zoom level that shows (west, south, east, north), in degrees."""
    west, south, east, north = bounds
    extent_deg = max(east - west, (north - south) * 1.5, 1e-4)
    return ((south + north) / 2, (west + east) / 2), int(min(max(math.log2(360 / extent_deg), 2), 17))


def aoi_map(
    aoi: AOI | None,
    drawing: bool,
    go_to: tuple[tuple[float, float], int] | None,
    footprints: Sequence[Footprint] = (),
) -> dict[str, Any]:
    """The map with the current AOI, the scenes' `footprints`, and the Draw tools (rectangle, polygon) when
    `drawing`; returns what the map component sends back (the drawn features).

    The map itself stays the same page after page (the AOI goes to the component as a layer of its own), so a
    new drawing or another rerun does not reset the view the user chose; it moves only to `go_to` (centre and
    zoom), which is where an uploaded or typed AOI, or a place searched for, lies."""
    extent = covered_extent(list(footprints))  # the map opens on the imagery (the sample's by default)
    (lat, lon), zoom = view_of_bounds(shape(extent).bounds) if extent else (SAMPLE_CENTER, 13)
    fmap = base_map(location=(lat, lon), zoom_start=zoom, control_scale=True)
    if drawing:
        draw_tools().add_to(fmap)
    finish(fmap)
    layer = folium.FeatureGroup(name="AOI")
    if aoi is not None:
        folium.GeoJson(aoi.to_geojson(), style_function=lambda _: {"color": "#d95f02"}).add_to(layer)
    returned = streamlit_folium.st_folium(  # looked up at each call: tests replace it with a drawing
        fmap,
        key="aoi_map",
        height=460,
        use_container_width=True,
        returned_objects=["last_active_drawing", "all_drawings"],
        feature_group_to_add=[footprint_layer(list(footprints)), layer],
        center=go_to[0] if go_to else None,
        zoom=go_to[1] if go_to else None,
    )
    return returned or {}


def place_search() -> tuple[tuple[float, float], int] | None:
    """'Go to a place': a city name to the map's centre, from the offline gazetteer."""
    query = st.text_input("Go to a place", placeholder="a city, e.g. Ljubljana")
    if not query.strip():
        return None
    places = find_places(query)
    if not places:
        st.caption(f"No city called {query.strip()!r} in the offline list (cities of 15,000 people or more).")
        return None
    place = st.selectbox("Places found", places, format_func=lambda p: p.label)
    return ((place.lat, place.lon), 12)


def typed_aoi(mode: str, limits: dict[str, Any]) -> tuple[AOI | None, str]:
    """The AOI of the chosen input (an upload, a typed bbox, or the drawing kept in the session), or why it cannot
    be used."""
    try:
        if mode == "Upload a file":
            upload = st.file_uploader(
                f"GeoJSON, zipped Shapefile (with its .prj), GeoPackage or KML; at most "
                f"{MAX_AOI_FILE_BYTES // 2**20} MB",
                type=["geojson", "json", "zip", "gpkg", "kml"],
            )
            if upload is not None:
                parsed = parsed_upload(upload.name, upload.getvalue(), **limits)
                return (parsed, "") if isinstance(parsed, AOI) else (None, parsed)
        elif mode == "Type a bbox":
            text = st.text_input(
                "Bounding box: west, south, east, north in degrees", placeholder="14.55,45.866,14.564,45.875"
            )
            if text.strip():
                return parse_bbox(text, **limits), ""
        elif drawn_json := st.session_state.get("drawn_aoi"):
            return validate_aoi(read_aoi(json.loads(drawn_json))[0], "drawn on the map", **limits), ""
        elif extent_json := st.session_state.get(IMAGERY_AOI):
            return validate_aoi(read_aoi(json.loads(extent_json))[0], "the imagery's extent", **limits), ""
    except AppError as err:
        return None, str(err)
    return None, ""


def keep_drawing(returned: dict[str, Any]) -> None:
    """Keep the map's latest drawing in the session (the map forgets its drawings), or forget it once the trash
    tool cleared the map; either reruns the page."""
    drawn = returned.get("last_active_drawing")
    if returned.get("all_drawings") == [] and st.session_state.get("drawn_aoi"):
        del st.session_state["drawn_aoi"]  # the trash tool cleared the map: no area any more
        st.rerun()
    if drawn and drawn.get("geometry") and returned.get("all_drawings") != []:
        drawn_json = json.dumps(drawn["geometry"])
        if drawn_json != st.session_state.get("drawn_aoi"):
            st.session_state["drawn_aoi"] = drawn_json  # kept across reruns: the map forgets its drawings
            st.session_state.pop(IMAGERY_AOI, None)  # a new drawing replaces the imagery's extent
            st.rerun()


def aoi_message(aoi: AOI | None, error: str, drawing: bool) -> None:
    """The line under the map: what is wrong, or the area understood, or how to draw one."""
    if error:
        st.error(error)
    elif aoi is not None:
        (lat, lon), _ = view_of(aoi)
        where = f"{abs(lat):.3f}° {'N' if lat >= 0 else 'S'}, {abs(lon):.3f}° {'E' if lon >= 0 else 'W'}"
        st.success(f"Area of interest: {aoi.area_km2:,.3f} km² ({aoi.label}), centred at {where}")
    elif drawing:
        st.info("Draw a rectangle or a polygon with the tools on the left of the map.")


def area_of_interest(settings: Settings) -> AOI | None:
    """The AOI input, with its map (the chosen sources' scenes outlined on it) and a line saying what was
    understood (or what is wrong)."""
    limits = {"max_area_km2": settings.max_aoi_km2, "max_vertices": settings.max_aoi_vertices}
    mode = st.radio("Area of interest", AOI_MODES, horizontal=True)
    aoi, error = typed_aoi(mode, limits)
    drawing = mode == "Draw on the map"
    go_to = place_search() if drawing else (view_of(aoi) if aoi is not None else None)
    # The source and date fields come below the map; their values of the last run (Streamlit keeps them by key)
    # say which scenes to outline.
    sources = tuple(
        s.strip() for s in str(st.session_state.get(SOURCES_KEY, "sample")).split(",") if s.strip()
    )
    footprints = in_dates(
        scene_footprints(sources, settings),
        st.session_state.get(START_KEY, SAMPLE_DATES[0]),
        st.session_state.get(END_KEY, SAMPLE_DATES[1]),
    )
    returned = aoi_map(aoi, drawing, go_to, footprints)
    if drawing:
        keep_drawing(returned)
        use_imagery_extent(footprints)
    aoi_message(aoi, error, drawing)
    return aoi


def use_imagery_extent(footprints: list[Footprint]) -> None:
    """A button that makes the area the chosen scenes cover the area of interest, as if drawn."""
    if not footprints:
        st.caption("No scene of the chosen sources and dates is on this machine to outline on the map.")
        return
    dates = sorted({f.date_iso for f in footprints})
    st.caption(f"Dashed blue: {len(footprints)} scene(s) of the chosen sources, {dates[0]} to {dates[-1]}.")
    if st.button(
        "Use the imagery's extent", help="The area every outlined scene covers, as the area of interest"
    ):
        extent = covered_extent(footprints)
        if extent is not None:
            # Kept apart from the drawing, which the map's trash tool (its last state stays in the component's
            # value) would clear again at once; a new drawing replaces it.
            st.session_state.pop("drawn_aoi", None)
            st.session_state[IMAGERY_AOI] = json.dumps(extent)
            st.rerun()
