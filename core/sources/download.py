"""Fetch what a job reads into the cache: whole products from DHuS mirrors, and only the AOI window of each
needed band from remote COGs (`fetch_scenes` does both; local scenes pass unchanged).

Whole products go through `core.sources.transfer` (resumable, MD5-verified, locked, bounded per source).

Each window is read over HTTP range requests (GDAL /vsicurl), written to a temporary file next to its place in
`<cache>/products/<source>/<item>/`, re-opened to validate it, and renamed into place, so the cache never holds a
half-written file. A cached window is reused when it opens; one that does not is moved aside (quarantined) and
fetched again. Two jobs fetching the same window at once both succeed: the rename is atomic and the content is
the same. Cancellation is checked between bands.
"""

import dataclasses
import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import rasterio
from rasterio.errors import RasterioError
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds
from shapely.geometry.base import BaseGeometry

from core.config import Settings
from core.errors import JobCancelled, SourceError
from core.geometry.grid import grid_for_aoi
from core.jobs.progress import ProgressFn, RunContext
from core.sources import parse_source
from core.sources.dhus import needs_fetch
from core.sources.sentinel1 import calibrate_to_grid, needs_calibration
from core.sources.transfer import cache_name
from core.types import BandAsset, Scene

log = logging.getLogger(__name__)

REMOTE_PREFIX = "/vsicurl/"
MARGIN_PX = 3  # source pixels kept around the AOI, so bilinear resampling at its edge has neighbours
# GDAL retries 429 and 5xx answers itself (honouring Retry-After), and is told not to list the remote "folder".
GDAL_HTTP_OPTIONS = {
    "GDAL_HTTP_MAX_RETRY": "4",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_HTTP_TIMEOUT": "60",
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
}


def is_remote(asset: BandAsset) -> bool:
    return asset.path.startswith(REMOTE_PREFIX)


def needs_network(scene: Scene) -> bool:
    """Whether making the scene readable downloads anything (a DHuS product, or COG windows)."""
    return needs_fetch(scene) or any(is_remote(a) for a in scene.bands.values())


def aoi_window(dataset: rasterio.DatasetReader, aoi_4326: BaseGeometry) -> Window:
    """The window of `dataset` covering the AOI's bounds plus a margin, snapped to whole pixels and clipped."""
    left, bottom, right, top = transform_bounds("EPSG:4326", dataset.crs, *aoi_4326.bounds, densify_pts=21)
    window = from_bounds(left, bottom, right, top, transform=dataset.transform)
    col0 = max(0, math.floor(window.col_off) - MARGIN_PX)
    row0 = max(0, math.floor(window.row_off) - MARGIN_PX)
    col1 = min(dataset.width, math.ceil(window.col_off + window.width) + MARGIN_PX)
    row1 = min(dataset.height, math.ceil(window.row_off + window.height) + MARGIN_PX)
    if col1 <= col0 or row1 <= row0:
        raise SourceError(f"{dataset.name} does not overlap the area of interest.")
    return Window(col0, row0, col1 - col0, row1 - row0)


def _cache_path(cache_dir: Path, scene: Scene, band: str, asset: BandAsset, window: Window) -> Path:
    # Without the query string: signed links (SAS tokens) change every hour, the data behind them does not.
    href = asset.path.split("?", 1)[0]
    key = hashlib.sha256(f"{href}|{window.col_off},{window.row_off},{window.width},{window.height}".encode())
    source = cache_name(scene.source)
    return cache_dir / "products" / source / scene.id / f"{band}-{key.hexdigest()[:16]}.tif"


def _valid_copy(path: Path, window: Window) -> bool:
    try:
        with rasterio.open(path) as dataset:
            dataset.read(1, window=Window(0, 0, 1, 1))
            return (dataset.width, dataset.height) == (int(window.width), int(window.height))
    except (RasterioError, OSError):
        return False


def fetch_band_window(
    asset: BandAsset, aoi_4326: BaseGeometry, target: Callable[[Window], Path]
) -> tuple[Path, int]:
    """Copy the AOI window of one remote band into the cache (or reuse it); returns (local file, bytes written)."""
    try:
        # GDAL remembers a failed answer for a URL for the life of the process: a 403 or 404 met once would fail
        # every later fetch of that file in a --no-fork worker, even after the server is back. Not cached, each
        # open asks the server again (the window is read once per open anyway).
        uncached = {"CPL_VSIL_CURL_NON_CACHED": asset.path}
        with rasterio.Env(**GDAL_HTTP_OPTIONS, **uncached), rasterio.open(asset.path) as remote:
            window = aoi_window(remote, aoi_4326)
            path = target(window)
            if path.exists():
                if _valid_copy(path, window):
                    return path, 0
                quarantined = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
                os.replace(path, quarantined)
                log.warning(
                    "Cached window %s was unreadable; moved to %s and fetched again", path, quarantined.name
                )
            data = remote.read(asset.band_index, window=window)
            profile = {
                "driver": "GTiff", "count": 1, "dtype": data.dtype, "width": int(window.width),
                "height": int(window.height), "crs": remote.crs, "transform": remote.window_transform(window),
                "nodata": remote.nodata if remote.nodata is not None else asset.nodata, "compress": "deflate",
                "tiled": window.width >= 256 and window.height >= 256,
            }  # fmt: skip
    except RasterioError as err:
        raise SourceError(f"Fetching {asset.path.removeprefix(REMOTE_PREFIX)} failed ({err}).") from err
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    with rasterio.open(partial, "w", **profile) as out:
        out.write(data, 1)
    if not _valid_copy(partial, window):
        partial.unlink(missing_ok=True)
        raise SourceError(f"The window fetched from {asset.path} could not be read back; try again.")
    os.replace(partial, path)
    return path, path.stat().st_size


def fetch_windows(
    scenes: list[Scene],
    bands: set[str],
    aoi_4326: BaseGeometry,
    cache_dir: Path,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[Scene]:
    """The scenes with every needed remote band replaced by its cached AOI window (local scenes pass as they are)."""
    jobs = [(s, b) for s in scenes for b in sorted(bands & set(s.bands)) if is_remote(s.bands[b])]
    if not jobs:
        return scenes
    replaced: dict[str, dict[str, BandAsset]] = {}
    fetched_bytes = 0
    for index, (scene, band) in enumerate(jobs):
        if should_stop is not None and should_stop():
            raise JobCancelled("The job was cancelled.")
        asset = scene.bands[band]

        def target(window: Window, scene: Scene = scene, band: str = band, asset: BandAsset = asset) -> Path:
            return _cache_path(cache_dir, scene, band, asset, window)

        path, written = fetch_band_window(asset, aoi_4326, target)
        fetched_bytes += written
        replaced.setdefault(scene.id, {})[band] = dataclasses.replace(asset, path=str(path), band_index=1)
        if progress is not None:
            done_scenes = len({s.id for s, _ in jobs[: index + 1]})
            progress(
                (index + 1) / len(jobs),
                f"downloading {done_scenes}/{len({s.id for s, _ in jobs})} scenes, band {index + 1}/{len(jobs)}, "
                f"{fetched_bytes / 1e6:.1f} MB",
            )
    log.info("Fetched %d band windows (%d bytes) into %s", len(jobs), fetched_bytes, cache_dir)
    return [
        dataclasses.replace(s, bands={**s.bands, **replaced[s.id]}) if s.id in replaced else s for s in scenes
    ]


def fetch_scenes(
    scenes: list[Scene], bands: set[str], aoi_4326: BaseGeometry, settings: Settings, run: RunContext
) -> list[Scene]:
    """Every scene made readable from the cache: products downloaded first (80 % of the progress when windows
    follow), then Sentinel-1 products calibrated onto the job's grid, then COG windows fetched."""
    cache_dir, progress, should_stop = settings.cache_dir, run.progress, run.should_stop

    products = [s for s in scenes if needs_fetch(s)]
    windows = any(is_remote(s.bands[b]) for s in scenes if not needs_fetch(s) for b in bands & set(s.bands))
    product_share = 0.8 if windows else 1.0  # of this stage's progress
    product_progress = None if progress is None else (lambda f, m: progress(product_share * f, m))
    fetched = fetch_products(products, settings, product_progress, should_stop) if products else {}
    ready = [fetched.get(s.id, s) for s in scenes]
    if any(needs_calibration(s) for s in ready):  # Sentinel-1 SAFE: sigma0 dB of the AOI, on the job's grid
        grid = grid_for_aoi(aoi_4326)
        ready = [calibrate_to_grid(s, grid, cache_dir) if needs_calibration(s) else s for s in ready]
    windows_progress = (
        None if progress is None else (lambda f, m: progress(product_share + (1 - product_share) * f, m))
    )
    return fetch_windows(ready, bands, aoi_4326, cache_dir, windows_progress, should_stop)


class _ProductProgress:
    """Bytes received per product, summed over the products downloading in parallel, as one ProgressFn report."""

    def __init__(self, products: list[Scene], progress: ProgressFn | None) -> None:
        self.progress, self.count = progress, len(products)
        self.expected = {s.id: int(s.extra.get("download_bytes", 0)) for s in products}
        self.have: dict[str, int] = {}
        self.done = 0
        self.fraction = 0.0  # never reported lower: the total moves when exact sizes replace rounded ones
        self.lock = threading.Lock()

    def bytes(self, scene_id: str, have: int, size: int | None) -> None:
        with self.lock:
            self.have[scene_id] = have
            if size:
                self.expected[scene_id] = size  # the OData size is exact; the search's is rounded
            total = sum(self.expected.values()) or 1
            received = sum(self.have.values())
            self.fraction = max(self.fraction, min(received / total, 1.0))
            if self.progress is not None:
                self.progress(
                    self.fraction,
                    f"downloading {self.done}/{self.count} scenes done, {received / 1e6:,.1f}/{total / 1e6:,.1f} MB",
                )

    def finished(self, scene_id: str) -> None:
        with self.lock:
            self.done += 1
            self.have[scene_id] = self.expected[scene_id]

    def status(self, message: str) -> None:
        with self.lock:
            if self.progress is not None:
                total = sum(self.expected.values()) or 1
                self.progress(
                    min(sum(self.have.values()) / total, 1.0), f"{self.done}/{self.count} scenes: {message}"
                )


def fetch_products(
    products: list[Scene],
    settings: Settings,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Scene]:
    """Download whole products (DHuS), up to the source's `download_slots` at once; {scene id: local scene}.

    The first failure stops the other downloads (their partial files stay for a later resume) and is raised.
    """
    sources = {s.source: parse_source(s.source, settings) for s in products}
    tracker = _ProductProgress(products, progress)
    failed = threading.Event()

    def stop() -> bool:
        return failed.is_set() or (should_stop is not None and should_stop())

    def fetch_one(scene: Scene) -> Scene:
        def on_bytes(have: int, size: int | None) -> None:
            tracker.bytes(scene.id, have, size)

        local = sources[scene.source].fetch(scene, settings.cache_dir, on_bytes, tracker.status, stop)
        tracker.finished(scene.id)
        return local

    parallel = max(s.download_slots for s in sources.values())
    fetched: dict[str, Scene] = {}
    with ThreadPoolExecutor(max_workers=min(parallel, len(products)), thread_name_prefix="download") as pool:
        futures = {pool.submit(fetch_one, scene): scene for scene in products}
        try:
            for future in as_completed(futures):
                fetched[futures[future].id] = future.result()
        except BaseException:
            failed.set()  # running downloads stop at their next chunk; queued ones never start
            for future in futures:
                future.cancel()
            raise
    return fetched
