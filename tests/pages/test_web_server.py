"""The app's own HTTP routes (pages/widgets/web_server.py): where the session route may send a browser, and the
cookie's attributes. The browser test (test_browser.py) checks the same cookie as Chromium keeps it."""

from pathlib import Path

from core.config import Settings
from pages.widgets.web_server import MAP_ASSETS_DIR, cookie_header, local_path


def test_the_session_route_sends_browsers_only_within_the_app():
    assert local_path("/results?job=20261208-1") == "/results?job=20261208-1"
    assert local_path("/") == "/"
    for outside in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "evil", "", None):
        assert local_path(outside) == "/", outside


def test_the_cookie_is_http_only_lax_and_secure_over_https(tmp_path: Path):
    settings = Settings(cache_dir=tmp_path, app_session_hours=8)
    plain = cookie_header(settings, "value", secure=False)
    assert plain == "terraseg_session=value; Path=/; Max-Age=28800; HttpOnly; SameSite=Lax"
    assert cookie_header(settings, "value", secure=True).endswith("; Secure")
    assert "Max-Age=0" in cookie_header(settings, "", secure=False)  # deletes it


def test_the_maps_files_are_the_published_leaflet_and_leaflet_draw_unchanged():
    """The app's copies (pages/widgets/map_assets) against npm's leaflet@1.9.3 and leaflet-draw@1.0.2, installed
    by `make test` from tests/browser/package-lock.json: the same bytes, images included."""
    from tests.pages.browser import NODE_MODULES

    assert (NODE_MODULES / "leaflet").is_dir(), "tests/browser/node_modules is missing; `make test` runs npm ci"
    pairs = {
        MAP_ASSETS_DIR / "leaflet": NODE_MODULES / "leaflet" / "dist",
        MAP_ASSETS_DIR / "leaflet-draw": NODE_MODULES / "leaflet-draw" / "dist",
    }
    compared = 0
    for ours, published in pairs.items():
        for path in ours.rglob("*"):
            if path.is_file() and path.name != "LICENSE":
                assert path.read_bytes() == (published / path.relative_to(ours)).read_bytes(), path.name
                compared += 1
    assert compared >= 15
    assert (MAP_ASSETS_DIR / "leaflet" / "LICENSE").read_text() == (NODE_MODULES / "leaflet" / "LICENSE").read_text()
