"""The Results page's map: basemaps, the true-colour image, the class overlay and the outline of the AOI the job
ran on."""

from pathlib import Path

import folium
import streamlit_folium

from core.jobs.report import read_run_record
from core.outputs.overlay import Overlay
from pages.widgets.base_map import base_map, finish
from pages.widgets.overlays import data_url, satellite_basemap

AOI_OUTLINE_STYLE = {"color": "#ff7800", "weight": 2, "fill": False, "dashArray": "6 4"}


def run_aoi(outputs: dict[str, Path]) -> dict[str, object] | None:
    """The AOI geometry the job ran on (from its run record), or None for an older job without one."""
    record = read_run_record(outputs["run.json"]) if "run.json" in outputs else None
    return record.aoi.geometry if record is not None else None


def result_map(
    classes: Overlay, scene: Overlay | None, opacity: float, aoi: dict[str, object] | None
) -> None:
    """Basemaps (OpenStreetMap or satellite imagery; either may be missing offline), true-colour image, class
    overlay and the AOI's outline (so a user sees where the data is and is not); everything else from local
    files. The class overlay is handed to the map component apart from the rest, so that moving the opacity
    slider changes only that layer: the map keeps its zoom and position."""
    fmap = base_map()
    satellite_basemap().add_to(fmap)
    if scene is not None:
        folium.raster_layers.ImageOverlay(
            data_url(scene.png), bounds=scene.bounds_latlon, name="True-colour image", opacity=1.0
        ).add_to(fmap)
    if aoi is not None:
        folium.GeoJson(aoi, name="Area of interest", style_function=lambda _: AOI_OUTLINE_STYLE).add_to(fmap)
    class_layer = folium.FeatureGroup(name="Classes")
    folium.raster_layers.ImageOverlay(
        data_url(classes.png), bounds=classes.bounds_latlon, opacity=opacity, pixelated=True
    ).add_to(class_layer)
    fmap.fit_bounds(list(classes.bounds_latlon))
    streamlit_folium.st_folium(
        finish(fmap),
        key="result_map",
        height=520,
        use_container_width=True,
        returned_objects=[],
        feature_group_to_add=class_layer,
        layer_control=folium.LayerControl(collapsed=False),
    )
