"""The app's folium maps, with their scripts and styles served by the app itself (pages/widgets/web_server.py)
rather than from CDNs, and a basemap that falls back to country outlines when its tiles cannot be fetched."""

from typing import Any

import folium
from branca.element import MacroElement
from folium.plugins import Draw
from folium.template import Template

from pages.widgets.web_server import ASSETS_PATH

LEAFLET_JS = [
    ("leaflet", f"{ASSETS_PATH}/leaflet/leaflet.js"),
    ("terraseg_map", f"{ASSETS_PATH}/terraseg-map.js"),
]
LEAFLET_CSS = [("leaflet_css", f"{ASSETS_PATH}/leaflet/leaflet.css")]
DRAW_JS = [("leaflet_draw_js", f"{ASSETS_PATH}/leaflet-draw/leaflet.draw.js")]
DRAW_CSS = [("leaflet_draw_css", f"{ASSETS_PATH}/leaflet-draw/leaflet.draw.css")]
COUNTRIES_URL = f"{ASSETS_PATH}/countries.geojson"
OFFLINE_WAIT_MS = (
    6000  # no basemap tile after this long: the outlines are drawn (a dropped request never fails)
)


class OfflineBasemap(MacroElement):
    """Calls terraseg-map.js on the map: country outlines and a note when the tiles do not come."""

    _template = Template(
        """{% macro script(this, kwargs) %}
        window.terrasegOfflineBasemap({{ this._parent.get_name() }}, {{ this.url|tojson }}, {{ this.wait_ms }});
        {% endmacro %}"""
    )

    def __init__(self) -> None:
        super().__init__()
        self._name = "OfflineBasemap"
        self.url = COUNTRIES_URL
        self.wait_ms = OFFLINE_WAIT_MS


def base_map(**options: Any) -> folium.Map:
    """A folium.Map (`options` as folium's) whose Leaflet comes from the app; add layers, then `finish` it."""
    fmap = folium.Map(tiles=None, **options)
    folium.TileLayer("OpenStreetMap", name="OpenStreetMap").add_to(fmap)  # named as users know it
    # folium links Leaflet, jQuery, Bootstrap and marker icons from CDNs; TerraSeg's maps use Leaflet alone.
    fmap.default_js = LEAFLET_JS
    fmap.default_css = LEAFLET_CSS
    return fmap


def finish(fmap: folium.Map) -> folium.Map:
    """Add the offline fallback last, so it sees every basemap the map was given."""
    OfflineBasemap().add_to(fmap)
    return fmap


def draw_tools() -> Draw:
    """Leaflet.draw's rectangle and polygon tools (no lines, circles or markers; no editing), from the app."""
    draw = Draw(
        export=False,
        draw_options={"polyline": False, "circle": False, "marker": False, "circlemarker": False},
        edit_options={"edit": False},
    )
    draw.default_js = DRAW_JS
    draw.default_css = DRAW_CSS
    return draw
