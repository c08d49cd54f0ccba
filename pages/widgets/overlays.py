"""Class maps and images as map overlays: the COGs warped to Web Mercator PNGs (cached per file version), as
data URLs, and the satellite basemap offered under them."""

import base64
from pathlib import Path

import folium
import streamlit as st

from core.outputs.overlay import Overlay, display_pngs, render_overlay

SATELLITE_TILES = (
    "https://server.arcgisonline.com/ArcGIS/rest/services/World_Imagery/MapServer/tile/{z}/{y}/{x}"
)
SATELLITE_ATTRIBUTION = "Imagery: Esri, Maxar, Earthstar Geographics"


@st.cache_data(max_entries=16, show_spinner="Rendering the overlay...")
def overlay(path: str, mtime_ns: int) -> Overlay:
    """The COG warped to a Web Mercator PNG (cached per file version)."""
    return render_overlay(Path(path))


@st.cache_data(max_entries=32, show_spinner=False)
def pictures(*pngs: bytes) -> list[bytes]:
    """Overlays as sharp pictures cropped together (core.outputs.overlay.display_pngs), cached: the Results page
    reruns on every slider move."""
    return display_pngs(*pngs)


def overlay_of(path: Path) -> Overlay:
    return overlay(str(path), path.stat().st_mtime_ns)


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def satellite_basemap() -> folium.TileLayer:
    """The satellite basemap, offered next to OpenStreetMap (which stays the one shown first)."""
    return folium.TileLayer(
        SATELLITE_TILES, attr=SATELLITE_ATTRIBUTION, name="Satellite", overlay=False, show=False
    )
