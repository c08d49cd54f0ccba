"""The Results page's downloads: every output file, and the class map as polygons (GeoPackage, GeoParquet)."""

import tempfile
from pathlib import Path

import streamlit as st

from core.errors import AppError
from core.outputs.vectors import VectorOptions, polygonise, write_geopackage, write_geoparquet

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
    ("accuracy.json", "Accuracy and areas (JSON)", "application/json"),
    ("accuracy.csv", "Accuracy and areas (CSV)", "text/csv"),
)


def download_buttons(outputs: dict[str, Path], prefix: str) -> None:
    """A button for each output, its file named `<prefix>_<output>`."""
    columns = st.columns(4)
    for index, (name, label, mime) in enumerate(d for d in DOWNLOADS if d[0] in outputs):
        path = outputs[name]
        data = path.read_bytes() if path.stat().st_size <= INLINE_DOWNLOAD_MAX_BYTES else path.read_bytes
        columns[index % 4].download_button(
            label, data, file_name=f"{prefix}_{name}", mime=mime, key=f"download-{name}", on_click="ignore"
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


def vector_options() -> tuple[float, float]:
    """The minimum mapping unit (m²) and the simplification tolerance (m) the user sets."""
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
    return float(min_area_m2), float(simplify_m)


def vector_downloads(classes_path: Path, stem: str) -> None:
    """The class map as polygons, with the minimum mapping unit and simplification the user sets."""
    min_area_m2, simplify_m = vector_options()
    if not st.toggle("Make the vector files", key="make-vectors"):
        return
    try:
        count, gpkg, parquet = vector_files(
            str(classes_path), classes_path.stat().st_mtime_ns, min_area_m2, simplify_m
        )
    except AppError as err:
        st.error(str(err))
        return
    st.caption(f"{count:,} polygons in the map's CRS, with their class value, name and area (m²).")
    first, second = st.columns(2)
    first.download_button(
        "Classes (GeoPackage)",
        gpkg,
        file_name=f"{stem}.gpkg",
        mime="application/geopackage+sqlite3",
        key="download-gpkg",
        on_click="ignore",
    )
    second.download_button(
        "Classes (GeoParquet)",
        parquet,
        file_name=f"{stem}.parquet",
        mime="application/vnd.apache.parquet",
        key="download-parquet",
        on_click="ignore",
    )
