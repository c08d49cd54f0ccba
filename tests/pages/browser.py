"""Helpers for the real-browser test: a `streamlit run` server and offline routing of the map's CDN files.

folium and leafmap link Leaflet, Leaflet.draw and a few styling files from CDNs, which do not exist offline.
The test serves Leaflet and Leaflet.draw from the npm packages in tests/browser/node_modules (installed by
`make test` from tests/browser/package-lock.json), answers other CDN files with an empty body (they only style
markers and buttons the app does not use) and refuses basemap tiles, as an offline machine would.
"""

import mimetypes
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from re import Pattern

from playwright.sync_api import Page, Route
from playwright.sync_api import TimeoutError as PlaywrightTimeout

ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / "tests" / "browser" / "node_modules"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# The file name at the end of a CDN URL -> the local file that has the same content.
LOCAL_ASSETS = {
    "leaflet.js": NODE_MODULES / "leaflet" / "dist" / "leaflet.js",
    "leaflet.css": NODE_MODULES / "leaflet" / "dist" / "leaflet.css",
    "leaflet.draw.js": NODE_MODULES / "leaflet-draw" / "dist" / "leaflet.draw.js",
    "leaflet.draw.css": NODE_MODULES / "leaflet-draw" / "dist" / "leaflet.draw.css",
}
IMAGE_FOLDERS = (
    NODE_MODULES / "leaflet-draw" / "dist" / "images",
    NODE_MODULES / "leaflet" / "dist" / "images",
)
TILE_HOSTS = ("tile.openstreetmap.org", "tile.opentopomap.org", "basemaps.cartocdn.com", "arcgisonline.com")


def is_remote(url: str) -> bool:
    """Whether a request leaves the machine. Only those are routed: the app's own requests go to its server
    untouched (an intercepted and continued request is one more place for a page's script to fail to load)."""
    host = url.split("/")[2] if "://" in url else ""
    return not (host.startswith(("127.0.0.1", "localhost")) or url.startswith(("data:", "blob:")))


def route_offline(route: Route) -> None:
    """CDN files come from node_modules or are empty; basemap tiles fail (offline). For remote requests only."""
    url = route.request.url
    host = url.split("/")[2] if "://" in url else ""
    if any(tile_host in host for tile_host in TILE_HOSTS):
        route.abort("internetdisconnected")
        return
    name = url.split("?")[0].rsplit("/", 1)[-1]
    local = LOCAL_ASSETS.get(name)
    if local is None and "/images/" in url:
        local = next((f / name for f in IMAGE_FOLDERS if (f / name).exists()), None)
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if local is not None:
        route.fulfill(status=200, body=local.read_bytes(), content_type=content_type)
    else:
        route.fulfill(status=200, body=b"", content_type=content_type)


def choose_option(page: Page, combobox: str, option: str | Pattern[str], timeout_s: float = 60) -> None:
    """Open a selectbox and pick an option, as a user does, clicking it again when the list closed or lacked the
    option: a Streamlit rerun (a map component reporting its first view, a fragment refresh, a redraw after a
    version is installed) redraws the selectbox and closes an open list, more often on a loaded machine."""
    choice = page.get_by_role("option", name=option, exact=isinstance(option, str))
    deadline = time.monotonic() + timeout_s
    while True:
        box = page.get_by_role("combobox", name=combobox)
        box.scroll_into_view_if_needed()
        box.click()
        try:
            choice.wait_for(timeout=3000)
            choice.click(timeout=3000)
            return
        except PlaywrightTimeout:
            if time.monotonic() > deadline:
                raise AssertionError(f"{combobox!r} does not offer {option!r}") from None
            page.keyboard.press("Escape")


class StreamlitServer:
    """`streamlit run app.py` on a free port, with the test's Redis and cache folder."""

    def __init__(self, port: int, env: dict[str, str], log_path: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(log_path, "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                str(ROOT / "app.py"),
                "--server.port",
                str(port),
                "--server.address",
                "127.0.0.1",
                "--server.headless",
                "true",
                "--browser.gatherUsageStats",
                "false",
                "--server.fileWatcherType",
                "none",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("streamlit did not become healthy")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
        self.log.close()
