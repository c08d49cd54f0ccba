"""Where the imagery is: the footprints of the chosen sources' scenes on the New job map, for the chosen dates,
and their extent as a one-click area of interest. From sources on this machine (the embedded sample, `local:`
folders the operator allows); a catalogue's scenes are known once the pre-flight has searched it."""

from dataclasses import dataclass
from datetime import date

import folium
import streamlit as st
from rasterio.warp import transform_bounds
from shapely.geometry import box, mapping, shape
from shapely.ops import unary_union

from core.config import Settings
from core.errors import AppError
from core.sources import check_app_source, cube_file, is_cube_source, is_remote_source, parse_source
from core.sources.local import LocalSource
from core.sources.monthly_cube import open_cube

FOOTPRINT_STYLE = {"color": "#1f78b4", "weight": 1.5, "fill": True, "fillOpacity": 0.05, "dashArray": "4 4"}


@dataclass(frozen=True)
class Footprint:
    """One scene's outline (GeoJSON, EPSG:4326), its source and date."""

    source: str
    date_iso: str
    geometry: dict[str, object]


@st.cache_data(ttl=60, max_entries=16, show_spinner=False)
def scene_footprints(sources: tuple[str, ...], _settings: Settings) -> list[Footprint]:
    """Every scene of the sources on this machine (headers only: the files' pixels are not read); a source that
    cannot be read is left out (its field says why)."""
    found: list[Footprint] = []
    for name in sources:
        if is_remote_source(name):
            continue
        try:
            check_app_source(name, _settings)
            if is_cube_source(name):  # one footprint: the cube's grid, dated by its first month
                cube = open_cube(cube_file(name))
                outline = box(*transform_bounds(cube.crs, "EPSG:4326", *cube.bounds))
                found.append(Footprint(name, cube.months[0].isoformat(), mapping(outline)))
                continue
            source = parse_source(name, _settings)
            scenes = source.scan() if isinstance(source, LocalSource) else []
        except AppError:
            continue
        found += [Footprint(name, s.date_iso, mapping(s.footprint)) for s in scenes]
    return found


def in_dates(footprints: list[Footprint], start: object, end: object) -> list[Footprint]:
    """The footprints of scenes between the chosen dates (all of them while a date is not valid)."""
    if not (isinstance(start, date) and isinstance(end, date)):
        return footprints
    return [f for f in footprints if start.isoformat() <= f.date_iso <= end.isoformat()]


def footprint_layer(footprints: list[Footprint]) -> folium.FeatureGroup:
    """The scenes' outlines as one map layer, each with its source and date on hover."""
    layer = folium.FeatureGroup(name="Imagery")
    for footprint in footprints:
        folium.GeoJson(
            footprint.geometry,
            style_function=lambda _: FOOTPRINT_STYLE,
            tooltip=f"{footprint.source}: scene of {footprint.date_iso}",
        ).add_to(layer)
    return layer


def covered_extent(footprints: list[Footprint]) -> dict[str, object] | None:
    """The area every scene covers (their intersection), else their union: the area of interest that the button
    'Use the imagery's extent' draws."""
    shapes = [shape(f.geometry) for f in footprints]
    if not shapes:
        return None
    common = shapes[0]
    for other in shapes[1:]:
        common = common.intersection(other)
    chosen = common if not common.is_empty and common.area > 0 else unary_union(shapes)
    return dict(mapping(chosen.envelope))
