"""Pipeline benchmark: model-forward time alone vs the whole pipeline, and peak memory, per scene size.

    .venv/bin/python bench/pipeline.py [--sizes 1024 4096 10980] [--device auto]

For each size a synthetic 13-band uint16 scene (a tiled, deflate GeoTIFF, cached in bench/.cache/) goes
through read -> normalise -> tile -> infer (a random-weight UNet, base width 16, 3 levels) -> blend -> write
COGs. Each measurement runs in its own process so `peak_rss_mb` (ru_maxrss) is that run's own. Prints JSON.
Targets (issue 2): pipeline_s / model_only_s <= 1.25 at 4096^2; peak RSS at 10980^2 within 1.2x of 4096^2.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CACHE = ROOT / "bench" / ".cache"
TILE_PX, OVERLAP_PX, BATCH = 512, 32, 4


def bench_card():  # noqa: ANN201 - ModelCard, imported lazily so the parent process stays light
    from core.types import S2_BANDS, ClassInfo, ModelCard

    return ModelCard(
        id="bench-unet16",
        version="0",
        task="bench",
        description="random weights, for timing only",
        architecture="unet base 16, 3 levels",
        sensor="S2",
        bands=S2_BANDS,
        processing_levels=("L1C",),
        resolution_m=10.0,
        tile_px=TILE_PX,
        normalisation={"kind": "none"},
        classes=tuple(ClassInfo(i, f"class {i}", "#808080") for i in range(4)),
        status="untrained",
        licence="n/a",
        provenance="benchmark",
    )


def make_scene(size: int) -> Path:
    """A smooth-plus-noise 13-band uint16 scene of size^2 px, written strip by strip (bounded memory)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    from core.types import S2_BANDS

    path = CACHE / f"scene_{size}.tif"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(size)
    profile = {
        "driver": "GTiff",
        "count": 13,
        "width": size,
        "height": size,
        "dtype": "uint16",
        "crs": "EPSG:32633",
        "transform": from_origin(500_000, 5_100_000, 10, 10),
        "nodata": 0,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "BIGTIFF": "YES",
    }
    partial = path.with_suffix(".partial.tif")
    x = np.arange(size, dtype=np.float32)
    with rasterio.open(partial, "w", **profile) as dst:
        for row in range(0, size, 512):
            rows = min(512, size - row)
            y = np.arange(row, row + rows, dtype=np.float32)[:, None]
            base = 2000 + 1500 * np.sin(x / 97.0) * np.cos(y / 131.0)
            block = base[None] + rng.integers(0, 400, (13, rows, size))
            dst.write(block.astype(np.uint16), window=Window(0, row, size, rows))
        dst.descriptions = S2_BANDS
        dst.scales = [1e-4] * 13
        dst.update_tags(ACQUISITION_DATETIME="2024-06-01T10:00:00Z", PROCESSING_LEVEL="L1C")
    partial.rename(path)
    return path


def build_predictor(device: str):  # noqa: ANN201
    import torch

    from models.torch_predictor import TorchPredictor
    from models.unet import UNet

    torch.manual_seed(0)
    return TorchPredictor(UNet(13, 4, base_width=16, levels=3), device=device)


def run_pipeline(size: int, device: str) -> dict[str, float]:
    """The whole pipeline on the cached scene; returns timings and this process's peak RSS."""
    from rasterio.windows import Window  # noqa: F401 - imported here so import time is not timed below
    from shapely.geometry import box

    from core.geometry.grid import Grid
    from core.jobs.progress import RunContext
    from core.mapping.inference import CardModel, predict_grid, tile_layout
    from core.mapping.reading import SceneReader
    from core.outputs import export
    from core.sources.geotiff import read_geotiff_scene

    path = make_scene(size)
    scene = read_geotiff_scene(path)
    card = bench_card()
    predictor = build_predictor(device)
    predictor.predict(np.zeros((BATCH, 13, TILE_PX, TILE_PX), np.float32))  # warm-up, as a worker would be
    import rasterio

    with rasterio.open(path) as dataset:
        grid = Grid("EPSG:32633", dataset.transform, size, size)
    with tempfile.TemporaryDirectory(dir=CACHE) as work:
        out = Path(work)
        started = time.perf_counter()
        layout = tile_layout(card, grid, OVERLAP_PX)
        with SceneReader([scene], card.bands, layout.context) as reader:
            result = predict_grid(
                reader.read,
                CardModel(card, predictor.predict),
                layout,
                box(*grid.bounds),
                RunContext(out / "raw"),
                batch_size=BATCH,
            )
        export.write_class_cog(out / "raw" / "classes.tif", out / "classes.tif", card.classes, 255, "bench")
        export.write_confidence_cog(out / "raw" / "confidence.tif", out / "confidence.tif")
        total = time.perf_counter() - started
    return {
        "pipeline_s": round(total, 3),
        "model_in_pipeline_s": round(result.model_s, 3),
        "tiles": result.tiles,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def run_model_only(size: int, device: str) -> dict[str, float]:
    """The model's forward passes alone over exactly as many tiles as the pipeline feeds it."""
    import rasterio

    from core.geometry.grid import Grid
    from core.mapping.inference import tile_layout

    with rasterio.open(make_scene(size)) as dataset:
        grid = Grid("EPSG:32633", dataset.transform, size, size)
    tiles = len(tile_layout(bench_card(), grid, OVERLAP_PX).tiles)
    predictor = build_predictor(device)
    batch = np.random.default_rng(0).random((BATCH, 13, TILE_PX, TILE_PX), dtype=np.float32) * 0.3
    predictor.predict(batch)  # warm-up
    started = time.perf_counter()
    for first in range(0, tiles, BATCH):
        predictor.predict(batch[: min(BATCH, tiles - first)])
    return {"model_only_s": round(time.perf_counter() - started, 3), "tiles": tiles}


def child(mode: str, size: int, device: str) -> dict[str, float]:
    """Run one measurement in a fresh interpreter and parse its JSON line."""
    command = [sys.executable, __file__, "--child", mode, "--sizes", str(size), "--device", device]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 10980])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--child", choices=["make", "pipeline", "model"])
    args = parser.parse_args()
    if args.child:
        os.environ.setdefault("GDAL_CACHEMAX", "256")  # TerraSeg's default (TERRASEG_GDAL_CACHE_MB)
        size = args.sizes[0]
        if args.child == "make":
            print(json.dumps({"path": str(make_scene(size))}))
        elif args.child == "pipeline":
            print(json.dumps(run_pipeline(size, args.device)))
        else:
            print(json.dumps(run_model_only(size, args.device)))
        return
    import torch

    results = []
    for size in args.sizes:
        child("make", size, args.device)
        model = child("model", size, args.device)
        pipeline = child("pipeline", size, args.device)
        results.append(
            {
                "size_px": size,
                **model,
                **pipeline,
                "pipeline_over_model": round(pipeline["pipeline_s"] / model["model_only_s"], 3),
            }
        )
    rss = {r["size_px"]: r["peak_rss_mb"] for r in results}
    summary = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "tile_px": TILE_PX,
        "overlap_px": OVERLAP_PX,
        "batch": BATCH,
        "results": results,
    }
    if 4096 in rss and 10980 in rss:
        summary["rss_10980_over_4096"] = round(rss[10980] / rss[4096], 3)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
