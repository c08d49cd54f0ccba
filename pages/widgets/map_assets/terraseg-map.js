/* TerraSeg's map script (GPL-3.0-or-later). When the basemap's tiles cannot be fetched (an offline or locked-down
 * machine), draw country outlines served by the app itself under the map's layers, with a short note, so the map
 * still shows where things are. Called by the map's own script (pages/widgets/base_map.py). */
window.terrasegOfflineBasemap = function (map, outlinesUrl, waitMs) {
  var loaded = false;
  var shown = false;
  var failed = 0;
  var note = null;
  function showOutlines() {
    if (shown || loaded) {
      return;
    }
    shown = true;
    map.createPane("terrasegOffline");
    map.getPane("terrasegOffline").style.zIndex = 150; /* above the tiles (200 is the overlays') */
    fetch(outlinesUrl)
      .then(function (response) { return response.json(); })
      .then(function (countries) {
        L.geoJSON(countries, {
          pane: "terrasegOffline",
          interactive: false,
          style: { color: "#8a8a8a", weight: 1, fillColor: "#f4f1ea", fillOpacity: 1 },
        }).addTo(map);
      });
    map.getContainer().style.background = "#cfe0ee"; /* the sea */
    note = L.control({ position: "bottomleft" });
    note.onAdd = function () {
      var div = L.DomUtil.create("div", "terraseg-offline-note");
      div.style.cssText = "background:#fff;padding:2px 6px;border-radius:4px;font:12px sans-serif;opacity:0.9";
      div.textContent = "Basemap tiles unreachable (no internet?): country outlines shown instead.";
      return div;
    };
    note.addTo(map);
  }
  map.eachLayer(function (layer) {
    if (layer instanceof L.TileLayer) {
      layer.on("tileload", function () {
        loaded = true;
        if (note !== null) {
          note.remove(); /* the tiles came after all (a slow network): they draw over the outlines */
          note = null;
        }
      });
      layer.on("tileerror", function () {
        failed += 1;
        if (failed >= 2) {
          showOutlines();
        }
      });
    }
  });
  /* A blocked network may drop requests rather than refuse them: no tile at all after a while counts too. */
  setTimeout(showOutlines, waitMs);
};
