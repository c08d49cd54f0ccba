"""Helpers for the real-browser test: a `streamlit run` server, and a browser cut off from the outside network.

The app serves its maps' files itself (Leaflet, Leaflet.draw, the offline basemap: pages/widgets/map_assets), so
the browser tests block every request that would leave the machine, as an air-gapped site or a locked-down network
does: nothing is rerouted to a local copy. Basemap tiles then fail and the map falls back to country outlines.
tests/browser/node_modules (npm packages, installed by `make test` from tests/browser/package-lock.json) holds
the published Leaflet files the app's copies are checked against.
"""

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


def is_remote(url: str) -> bool:
    """Whether a request leaves the machine (the app's own requests go to its server untouched)."""
    host = url.split("/")[2] if "://" in url else ""
    return not (host.startswith(("127.0.0.1", "localhost")) or url.startswith(("data:", "blob:")))


def block(route: Route) -> None:
    """Refuse a request that would leave the machine, and keep its URL for the test to look at."""
    BLOCKED.append(route.request.url)
    route.abort("blockedbyclient")


BLOCKED: list[str] = []  # the outside URLs the app's pages asked for (basemap tiles only, offline)


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
