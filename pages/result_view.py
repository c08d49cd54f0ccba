"""The Results page's pieces: the map with the overlays and the AOI outline, and the download buttons."""

import base64
import tempfile
from pathlib import Path

import folium
import leafmap.foliumap as leafmap
import pandas as pd
import rasterio
import streamlit as st
import streamlit_folium
from branca.element import MacroElement
from folium.template import Template
from shapely.geometry import shape

from core.compare import Comparison, compare_class_maps, write_change_map
from core.errors import AppError
from core.export import DATE_MAP_PREFIX
from core.jobstore import JobStatus
from core.overlay import Overlay, read_classes, render_overlay
from core.report import read_run_record, read_stats
from core.vectors import VectorOptions, polygonise, write_geopackage, write_geoparquet, zonal_areas
from pages import ui

# Larger files are read only when the user clicks (Streamlit's deferred download), not on every rerun: inline
# data stays in the session's memory and is re-sent whenever the page reruns (every slider move).
INLINE_DOWNLOAD_MAX_BYTES = 2**20
DOWNLOADS = (
    ("classes.tif", "Classes (COG)", "image/tiff"),
    ("confidence.tif", "Confidence (COG)", "image/tiff"),
    ("cropland.tif", "Cropland (COG)", "image/tiff"),
    ("scene.tif", "True-colour image (COG)", "image/tiff"),
    ("preview.png", "Preview (PNG)", "image/png"),
    ("stats.csv", "Areas (CSV)", "text/csv"),
    ("stats.json", "Statistics (JSON)", "application/json"),
    ("run.json", "Run record (JSON)", "application/json"),
)

AOI_OUTLINE_STYLE = {"color": "#ff7800", "weight": 2, "fill": False, "dashArray": "6 4"}


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


def run_aoi(outputs: dict[str, Path]) -> dict[str, object] | None:
    """The AOI geometry the job ran on (from its run record), or None for an older job without one."""
    record = read_run_record(outputs["run.json"]) if "run.json" in outputs else None
    return record.aoi.geometry if record is not None else None


SATELLITE_TILES = "https://server.arcgisonline.com/ArcGIS/rest/services/World_Imagery/MapServer/tile/{z}/{y}/{x}"
SATELLITE_ATTRIBUTION = "Imagery: Esri, Maxar, Earthstar Geographics"


def satellite_basemap() -> folium.TileLayer:
    """The satellite basemap, offered next to OpenStreetMap (which stays the one shown first)."""
    return folium.TileLayer(SATELLITE_TILES, attr=SATELLITE_ATTRIBUTION, name="Satellite", overlay=False, show=False)


def result_map(
    classes: Overlay, scene: Overlay | None, opacity: float, aoi: dict[str, object] | None
) -> None:
    """Basemaps (OpenStreetMap or satellite imagery; either may be missing offline), true-colour image, class
    overlay and the AOI's outline (so a user sees where the data is and is not); everything else from local
    files. The class overlay is handed to the map component apart from the rest, so that moving the opacity
    slider changes only that layer: the map keeps its zoom and position."""
    fmap = leafmap.Map(
        draw_control=False, measure_control=False, fullscreen_control=False, search_control=False
    )
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
        fmap,
        key="result_map",
        height=520,
        use_container_width=True,
        returned_objects=[],
        feature_group_to_add=class_layer,
        layer_control=folium.LayerControl(collapsed=False),
    )


def download_buttons(outputs: dict[str, Path]) -> None:
    columns = st.columns(4)
    for index, (name, label, mime) in enumerate(d for d in DOWNLOADS if d[0] in outputs):
        path = outputs[name]
        data = path.read_bytes() if path.stat().st_size <= INLINE_DOWNLOAD_MAX_BYTES else path.read_bytes
        columns[index % 4].download_button(
            label, data, file_name=name, mime=mime, key=f"download-{name}", on_click="ignore"
        )


@st.cache_data(max_entries=8, show_spinner="Tracing the class map's patches...")
def vector_files(path: str, mtime_ns: int, min_area_m2: float, simplify_m: float) -> tuple[int, bytes, bytes]:
    """How many polygons, and the GeoPackage and GeoParquet bytes (cached per file version and options)."""
    polygons = polygonise(Path(path), VectorOptions(min_area_m2, simplify_m))
    with tempfile.TemporaryDirectory() as folder:
        gpkg, parquet = Path(folder) / "classes.gpkg", Path(folder) / "classes.parquet"
        write_geopackage(polygons, gpkg)
        write_geoparquet(polygons, parquet)
        return len(polygons.geometries), gpkg.read_bytes(), parquet.read_bytes()


def vector_downloads(classes_path: Path, stem: str) -> None:
    """The class map as polygons, with the minimum mapping unit and simplification the user sets."""
    left, right = st.columns(2)
    min_area_m2 = left.number_input(
        "Minimum mapping unit (m²)",
        min_value=0.0,
        value=400.0,
        step=100.0,
        help="Patches smaller than this take the class of their largest neighbour (400 m² = 4 pixels of 10 m).",
    )
    simplify_m = right.number_input(
        "Simplification tolerance (m)",
        min_value=0.0,
        value=5.0,
        step=1.0,
        help="How far a simplified outline may depart from the pixel edges (0 keeps every pixel corner).",
    )
    if not st.toggle("Make the vector files", key="make-vectors"):
        return
    try:
        count, gpkg, parquet = vector_files(
            str(classes_path), classes_path.stat().st_mtime_ns, float(min_area_m2), float(simplify_m)
        )
    except AppError as err:
        st.error(str(err))
        return
    st.caption(f"{count:,} polygons in the map's CRS, with their class value, name and area (m²).")
    first, second = st.columns(2)
    first.download_button(
        "Classes (GeoPackage)", gpkg, file_name=f"{stem}.gpkg", mime="application/geopackage+sqlite3",
        key="download-gpkg", on_click="ignore",
    )
    second.download_button(
        "Classes (GeoParquet)", parquet, file_name=f"{stem}.parquet", mime="application/vnd.apache.parquet",
        key="download-parquet", on_click="ignore",
    )


def zone_areas(classes_path: Path, aoi: dict[str, object] | None) -> None:
    """Class areas per feature of the AOI, when it has several (an upload of many fields, say)."""
    geometry = shape(aoi) if aoi is not None else None
    parts = list(getattr(geometry, "geoms", []))
    if len(parts) < 2:
        return
    st.subheader("Area per class in each feature of the area")
    rows = zonal_areas(classes_path, [(f"feature {i}", part) for i, part in enumerate(parts, start=1)])
    table = pd.DataFrame(
        [
            {"feature": r.zone, "class": r.name, "area (ha)": r.area_ha, "share (%)": r.percent, "pixels": r.pixels}
            for r in rows
        ]
    )
    st.dataframe(table, hide_index=True)
    st.download_button(
        "Areas per feature (CSV)", table.to_csv(index=False), file_name="zonal_stats.csv", mime="text/csv",
        key="download-zonal", on_click="ignore",
    )


MAX_COMPARE_CANDIDATES = 30  # the newest finished jobs looked at for a comparison (each is a file header read)


def same_grid(first: Path, second: Path) -> bool:
    """Whether two class COGs lie on one grid (headers only, read once per pair of file versions: the page
    reruns at every slider move)."""
    return _same_grid(str(first), str(second), first.stat().st_mtime_ns, second.stat().st_mtime_ns)


@st.cache_data(max_entries=256, show_spinner=False)
def _same_grid(first: str, second: str, first_mtime_ns: int, second_mtime_ns: int) -> bool:
    with rasterio.open(first) as a, rasterio.open(second) as b:
        return (a.crs, a.transform, a.shape) == (b.crs, b.transform, b.shape)


@st.cache_data(max_entries=8, show_spinner="Comparing the two maps...")
def comparison(before: str, after: str, mtimes_ns: tuple[int, int]) -> tuple[Comparison, Overlay, bytes]:
    """The transition matrix, the change map as an overlay and as COG bytes (cached per pair of file versions)."""
    compared = compare_class_maps(Path(before), Path(after))
    with tempfile.TemporaryDirectory() as folder:
        change = Path(folder) / "change.tif"
        write_change_map(Path(before), Path(after), change)
        return compared, render_overlay(change), change.read_bytes()


def compare_section(job_id: str, outputs: dict[str, Path], others: list[JobStatus]) -> None:
    """Compare this job's map with another finished job's over the same area: both maps, the change, and the
    transition matrix (from-class x to-class, ha)."""
    here = outputs["classes.tif"]
    legend = [(c.value, c.name) for c in read_classes(here)]
    published_date = read_stats(outputs["stats.json"]).selected_date
    candidates: dict[str, tuple[str, Path, str]] = {}  # key: (label, class map, its date)
    for name, path in outputs.items():  # this job's other dates, when they are maps of the same model
        day = name.removeprefix(DATE_MAP_PREFIX).removesuffix(".tif")
        same_legend = name.startswith(DATE_MAP_PREFIX) and [(c.value, c.name) for c in read_classes(path)] == legend
        if same_legend and day != published_date:
            candidates[name] = (f"this job, {day}", path, day)
    for status in others[:MAX_COMPARE_CANDIDATES]:
        paths = {Path(p).name: Path(p) for p in status.outputs}
        there = paths.get("classes.tif")
        if status.job_id != job_id and there is not None and there.exists() and same_grid(here, there):
            label = f"{status.name} ({status.job_id})" if status.name else status.job_id
            candidates[status.job_id] = (label, there, read_stats(there.parent / "stats.json").selected_date)
    if not candidates:
        st.caption(
            "No other date of this job and no other finished job of yours covers this area. Run one over the same "
            "area (another date range, or a chosen date) to compare the two maps here."
        )
        return
    other = st.selectbox(
        "Compare with", [None, *candidates], format_func=lambda k: "-" if k is None else candidates[k][0]
    )
    if other is None:
        return
    there = candidates[other][1]
    dates = {here: published_date, there: candidates[other][2]}
    before, after = sorted((here, there), key=lambda p: dates[p])  # the earlier date first
    try:
        compared, change, change_cog = comparison(
            str(before), str(after), (before.stat().st_mtime_ns, after.stat().st_mtime_ns)
        )
    except AppError as err:
        st.error(str(err))
        return
    cols = st.columns(3)
    cols[0].metric("Compared area", f"{compared.compared_pixels * compared.pixel_ha:,.2f} ha")
    cols[1].metric("Changed", f"{compared.changed_pixels * compared.pixel_ha:,.2f} ha")
    cols[2].metric("Changed share", f"{compared.changed_percent:.1f} %")
    if compared.unmatched_pixels:
        st.caption(
            f"{compared.unmatched_pixels * compared.pixel_ha:,.2f} ha have a class in one map only (no data in "
            "the other, e.g. a cloud masked on one date) and are not compared."
        )
    left, right = st.columns(2)
    left.image(overlay_of(before).png, caption=f"Before: {dates[before]}", width="stretch")
    right.image(overlay_of(after).png, caption=f"After: {dates[after]}", width="stretch")
    compare_map(overlay_of(before), overlay_of(after), change, dates[before], dates[after])
    st.markdown("**Transition matrix** (ha; rows: the class before, columns: the class after)")
    names_of = [c.name for c in compared.classes]
    matrix = pd.DataFrame(compared.matrix_ha, index=[f"from {n}" for n in names_of], columns=names_of)
    st.dataframe(matrix)
    first, second = st.columns(2)
    first.download_button(
        "Transition matrix (CSV)", matrix.to_csv(), file_name="transitions.csv", mime="text/csv",
        key="download-transitions", on_click="ignore",
    )
    second.download_button(
        "Change map (COG)", change_cog, file_name="change.tif", mime="image/tiff", key="download-change",
        on_click="ignore",
    )


class SwipeControl(MacroElement):
    """A slider on the map that shows the `before` image left of it and the `after` image right of it (the after
    image is clipped to the slider's right). Drawn by the map's own script, no plugin to fetch: the app also
    runs offline. Arrow keys, Home and End move it too."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        (function () {
            var map = {{ this._parent.get_name() }};
            var after = {{ this.after.get_name() }};
            var control = L.control({position: "bottomleft"});
            control.onAdd = function () {
                var box = L.DomUtil.create("div", "terraseg-swipe leaflet-bar");
                box.style.background = "white";
                box.style.padding = "4px 8px";
                box.innerHTML = '<label>Before | after <input type="range" min="0" max="100" value="50" '
                    + 'aria-label="Swipe between before and after" style="width: 180px"></label>';
                L.DomEvent.disableClickPropagation(box);
                L.DomEvent.disableScrollPropagation(box);
                return box;
            };
            control.addTo(map);
            var slider = control.getContainer().querySelector("input");
            var line = L.DomUtil.create("div", "terraseg-swipe-line", map.getContainer());
            line.style.cssText = "position:absolute;top:0;bottom:0;width:2px;background:#fff;"
                + "box-shadow:0 0 2px #000;z-index:450;pointer-events:none";
            function clip() {
                var image = after.getElement();
                if (!image) { return; }
                var x = map.getSize().x * slider.value / 100;
                var left = map.latLngToContainerPoint(after.getBounds().getNorthWest()).x;
                var right = map.latLngToContainerPoint(after.getBounds().getSouthEast()).x;
                var cut = Math.max(0, Math.min(right - left, x - left));
                // inset() is in the image's own pixels: its width on screen over its layout width.
                var scale = image.offsetWidth ? (right - left) / image.offsetWidth : 1;
                image.style.clipPath = "inset(0px 0px 0px " + (cut / scale).toFixed(1) + "px)";
                line.style.left = x + "px";
            }
            slider.addEventListener("input", clip);
            map.on("move zoom zoomend moveend viewreset resize overlayadd", clip);
            after.on("load", clip);
            setTimeout(clip, 0);
        })();
        {% endmacro %}
        """
    )

    def __init__(self, before: folium.raster_layers.ImageOverlay, after: folium.raster_layers.ImageOverlay) -> None:
        super().__init__()
        self._name = "SwipeControl"
        self.before = before
        self.after = after


def compare_figure(
    before: Overlay, after: Overlay, change: Overlay, before_date: str, after_date: str
) -> folium.Map:
    """Both maps with a swipe between them, and the change, on one map whose layers switch on and off."""
    fmap = leafmap.Map(
        draw_control=False, measure_control=False, fullscreen_control=False, search_control=False
    )
    satellite_basemap().add_to(fmap)
    layers = [
        folium.raster_layers.ImageOverlay(
            data_url(overlay.png), bounds=overlay.bounds_latlon, name=name, pixelated=True, show=shown
        ).add_to(fmap)
        for overlay, name, shown in (
            (before, f"Before ({before_date}): left of the swipe", True),
            (after, f"After ({after_date}): right of the swipe", True),
            (change, "Changed: the class after", False),
        )
    ]
    SwipeControl(layers[0], layers[1]).add_to(fmap)
    folium.LayerControl(collapsed=False).add_to(fmap)
    fmap.fit_bounds(list(after.bounds_latlon))
    return fmap


def compare_map(before: Overlay, after: Overlay, change: Overlay, before_date: str, after_date: str) -> None:
    fmap = compare_figure(before, after, change, before_date, after_date)
    streamlit_folium.st_folium(fmap, key="compare_map", height=420, use_container_width=True, returned_objects=[])


def date_maps(outputs: dict[str, Path], fractions: dict[str, dict[str, float | None]]) -> None:
    """Every date the job computed: its map (of the model that judged the dates) and its class shares."""
    maps = {
        name.removeprefix(DATE_MAP_PREFIX).removesuffix(".tif"): path
        for name, path in sorted(outputs.items())
        if name.startswith(DATE_MAP_PREFIX)
    }
    if not maps:
        return
    day = st.selectbox("Date", list(maps), key="date-map")
    picture, facts = st.columns([3, 1])
    picture.image(overlay_of(maps[day]).png, caption=f"The map of {day}", width="stretch")
    with facts:
        st.html(ui.legend_html(read_classes(maps[day])))
        for name, share in fractions.get(day, {}).items():
            st.caption(f"{name}: {'-' if share is None else f'{share:.1f} %'}")
        st.download_button(
            "This date's map (COG)",
            maps[day].read_bytes,
            file_name=maps[day].name,
            mime="image/tiff",
            key="download-date-map",
            on_click="ignore",
        )
