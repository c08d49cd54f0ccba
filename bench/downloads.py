"""Download benchmark: bytes fetched for a 5 km x 5 km AOI from a full-tile COG through the window path, against
the whole asset and against the window's own (uncompressed) size.

    .venv/bin/python bench/downloads.py

A synthetic full Sentinel-2 tile (10,980 x 10,980 px uint16, deflate, 512 px blocks, the embedded sample's
pixels repeated; cached in bench/.cache/) is served over HTTP with Range support by the project's local STAC test
server, in its own process. `core.sources.download.fetch_band_window` copies the AOI window into a temporary cache; the
server's log says how many bytes it sent. Prints JSON. Target (issue 5): window path <= 2x the window's own size.

Throughput: the whole tile file downloaded through `core.sources.transfer.download_file` (resumable, MD5-verified,
locked), through `curl -o`, and through `curl -o` then `md5sum` (the same verification), from the same local
server, alternating, 3 times each; medians in MB/s; once on loopback at full speed (CPU-bound on a small
machine: MD5 alone runs at about 320 MB/s on 2 vCPU) and once over a link the server limits to 50 MB/s, the
order of a real mirror's bandwidth. Target: download_file >= 0.8x curl.
"""

import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds
from shapely.geometry import box

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CACHE = ROOT / "bench" / ".cache"
TILE_PX, ORIGIN = 10980, (399960.0, 5100000.0)


def full_tile() -> Path:
    path = CACHE / "full_tile_B04.tif"
    if path.exists():
        return path
    from core.sources import SAMPLE_DIR

    CACHE.mkdir(parents=True, exist_ok=True)
    with rasterio.open(sorted(SAMPLE_DIR.glob("*.tif"))[0]) as src:
        red = src.read(4)
    data = np.tile(red, (TILE_PX // red.shape[0] + 1, TILE_PX // red.shape[1] + 1))[:TILE_PX, :TILE_PX]
    plain = CACHE / "full_tile_B04.plain.tif"
    with rasterio.open(
        plain, "w", driver="GTiff", count=1, dtype="uint16", width=TILE_PX, height=TILE_PX, crs="EPSG:32633",
        transform=from_origin(*ORIGIN, 10, 10), nodata=0, tiled=True, blockxsize=512, blockysize=512,
    ) as dst:  # fmt: skip
        dst.write(data.astype(np.uint16), 1)
    rasterio.shutil.copy(plain, path, driver="COG", BLOCKSIZE=512, COMPRESS="DEFLATE", OVERVIEWS="NONE")
    plain.unlink()
    return path


def measure_throughput(
    server: object, url: str, tile: Path, tmp: Path, repeats: int = 3
) -> dict[str, object]:
    """Median MB/s of download_file (with its MD5 check), of curl, and of curl followed by md5sum, for the same
    file from the same server: on loopback at full speed, and over a link limited to 50 MB/s."""
    import requests

    from core.sources.transfer import Expected, download_file

    size = tile.stat().st_size
    md5 = hashlib.md5(tile.read_bytes(), usedforsecurity=False).hexdigest()
    results: dict[str, object] = {"throughput_file_bytes": size}
    for link, rate in (("loopback", None), ("link_50mb_s", 50.0)):
        server.set_rate(rate)  # type: ignore[attr-defined]
        runs: dict[str, list[float]] = {"download_file": [], "curl": [], "curl_md5sum": []}
        with requests.Session() as session:
            for attempt in range(repeats):
                target = tmp / f"ours-{attempt}.tif"
                started = time.perf_counter()
                download_file(session, url, target, Expected(size, md5), "bench")
                runs["download_file"].append(size / 1e6 / (time.perf_counter() - started))
                target.unlink()
                for name, command in (
                    ("curl", "curl -sf -o {0} {1}"),
                    ("curl_md5sum", "curl -sf -o {0} {1} && md5sum {0}"),
                ):
                    target = tmp / f"{name}-{attempt}.tif"
                    started = time.perf_counter()
                    subprocess.run(command.format(target, url), shell=True, check=True, capture_output=True)
                    runs[name].append(size / 1e6 / (time.perf_counter() - started))
                    target.unlink()
        medians = {name: statistics.median(values) for name, values in runs.items()}
        results[link] = {
            **{f"{name}_mb_s": round(value, 1) for name, value in medians.items()},
            "download_file_over_curl": round(medians["download_file"] / medians["curl"], 3),
            "download_file_over_curl_md5sum": round(medians["download_file"] / medians["curl_md5sum"], 3),
            "runs_mb_s": {name: [round(v, 1) for v in values] for name, values in runs.items()},
        }
    server.set_rate(None)  # type: ignore[attr-defined]
    return results


def main() -> None:
    from core.sources.download import fetch_band_window
    from core.types import BandAsset
    from tests.core.sources.stac_server import StacServerProcess

    tile = full_tile()
    with tempfile.TemporaryDirectory() as tmp:
        server = StacServerProcess(Path(tmp) / "server", (tile,))
        try:
            url = f"{server.url}/data/extra/{tile.name}"
            # A 5 km x 5 km AOI in the middle of the tile.
            left, top = ORIGIN[0] + 50_000, ORIGIN[1] - 50_000
            aoi = box(*transform_bounds("EPSG:32633", "EPSG:4326", left, top - 5000, left + 5000, top))
            before = server.bytes_served()
            started = time.perf_counter()
            path, _ = fetch_band_window(
                BandAsset(path=f"/vsicurl/{url}"), aoi, lambda w: Path(tmp) / "window.tif"
            )
            window_s = time.perf_counter() - started
            fetched = server.bytes_served() - before
            with rasterio.open(path) as window:
                own_bytes = window.width * window.height * 2
                shape = [window.height, window.width]
            throughput = measure_throughput(server, url, tile, Path(tmp))
        finally:
            server.stop()
    whole = tile.stat().st_size
    print(
        json.dumps(
            {
                "aoi_km": [5, 5],
                "window_px": shape,
                "window_own_bytes": own_bytes,
                "fetched_bytes_window_path": fetched,
                "whole_asset_bytes": whole,
                "fetched_over_window_own": round(fetched / own_bytes, 3),
                "fetched_over_whole_asset": round(fetched / whole, 4),
                "window_fetch_s": round(window_s, 3),
                **throughput,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
