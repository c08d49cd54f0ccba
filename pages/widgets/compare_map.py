"""Two class maps on one map with a swipe between them, and the change between them as a layer of its own."""

import folium
import streamlit_folium
from branca.element import MacroElement
from folium.template import Template

from core.outputs.overlay import Overlay
from pages.widgets.base_map import base_map, finish
from pages.widgets.overlays import data_url, satellite_basemap


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

    def __init__(
        self, before: folium.raster_layers.ImageOverlay, after: folium.raster_layers.ImageOverlay
    ) -> None:
        super().__init__()
        self._name = "SwipeControl"
        self.before = before
        self.after = after


def compare_figure(
    before: Overlay, after: Overlay, change: Overlay, before_date: str, after_date: str
) -> folium.Map:
    """Both maps with a swipe between them, and the change, on one map whose layers switch on and off."""
    fmap = base_map()
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
    # Folded to its icon (opened on hover): open, its long layer names covered the right of the swipe.
    folium.LayerControl(collapsed=True).add_to(fmap)
    fmap.fit_bounds(list(after.bounds_latlon))
    return finish(fmap)


def compare_map(before: Overlay, after: Overlay, change: Overlay, before_date: str, after_date: str) -> None:
    fmap = compare_figure(before, after, change, before_date, after_date)
    streamlit_folium.st_folium(
        fmap, key="compare_map", height=420, use_container_width=True, returned_objects=[]
    )
