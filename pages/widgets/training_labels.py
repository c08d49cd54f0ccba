"""The labels a training run over imagery learns from: an upload of polygons or points, its class field, and
the extent of the labels (the default area of the imagery)."""

from pathlib import Path

import streamlit as st

from core.config import Settings
from core.errors import AppError
from core.learning.labels import UPLOAD_SUFFIXES, label_fields, read_labels, store_upload


@st.cache_data(max_entries=8, show_spinner="Reading the labels...")
def labels_extent(path: str, label_field: str, max_vertices: int) -> str:
    """'west,south,east,north' around the labels (a few pixels wider), or why they cannot be read."""
    try:
        labels = read_labels(Path(path), label_field, max_vertices)
    except AppError as err:
        return f"error: {err}"
    west = min(g.bounds[0] for g in labels.geometries) - 0.0005
    south = min(g.bounds[1] for g in labels.geometries) - 0.0005
    east = max(g.bounds[2] for g in labels.geometries) + 0.0005
    north = max(g.bounds[3] for g in labels.geometries) + 0.0005
    return f"{west:.4f},{south:.4f},{east:.4f},{north:.4f}"


def labels_ui(settings: Settings, admin_dir: Path) -> tuple[Path, str, str] | None:
    """The uploaded labels (stored), their class field and their extent; None, with why, until they are usable."""
    upload = st.file_uploader(
        "Labels: polygons or points with a class field (GeoJSON, GeoPackage, zipped Shapefile or KML; any CRS)",
        type=[s.lstrip(".") for s in UPLOAD_SUFFIXES],
    )
    if upload is None:
        st.caption("Upload labels to choose their class field and see how much of each class there is.")
        return None
    try:
        labels_path = store_upload(upload.name, upload.getvalue(), admin_dir / "uploads")
        fields = label_fields(labels_path)
    except AppError as err:
        st.error(str(err))
        return None
    if not fields:
        st.error(f"{upload.name} has no attribute field to take the class from.")
        return None
    label_field = st.selectbox("Class field", fields)
    extent = labels_extent(str(labels_path), label_field, settings.max_label_vertices)
    if extent.startswith("error: "):
        st.error(extent.removeprefix("error: "))
        return None
    return labels_path, label_field, extent
