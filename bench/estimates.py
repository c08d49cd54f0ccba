"""Pre-flight estimates against real runs: the New job page's run-time estimate (core.jobs.preflight) and the time the
job then takes, for the cloud and land-cover tasks on the embedded sample (1 km2, 5 dates) and on a larger
local source built from its pixels (4 dates, about 300 km2, as the job tests use), in this process, each job
from an empty cache after one warm-up run. Prints JSON with each estimate/actual ratio.

    .venv/bin/python bench/estimates.py

Target (issue 17): every ratio within 0.7..1.3 on a 2-core CPU.
"""

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.warp import transform_bounds

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def large_folder(folder: Path, size: int = 1800) -> dict[str, object]:
    """4 dates of size x size px tiled from the sample's real pixels; returns an AOI 200 m inside them."""
    from core.sources import SAMPLE_DIR
    from tests.conftest import write_scene

    for index, name in enumerate(sorted(SAMPLE_DIR.glob("*.tif"))[:4]):
        with rasterio.open(name) as src:
            pixels, crs, bounds = src.read(), src.crs, src.bounds
            acquired = src.tags()["ACQUISITION_DATETIME"]
        data = np.tile(pixels, (1, size // pixels.shape[1] + 1, size // pixels.shape[2] + 1))[:, :size, :size]
        write_scene(folder / f"large_{index}.tif", data, origin=(bounds.left, bounds.top), acquired=acquired)
    west, south, east, north = transform_bounds(
        crs, "EPSG:4326", bounds.left + 200, bounds.top - size * 10 + 200, bounds.left + size * 10 - 200,
        bounds.top - 200,
    )  # fmt: skip
    return {
        "type": "Polygon",
        "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]],
    }


def main() -> None:
    from core.config import Settings
    from core.jobs.preflight import estimate_job, find_scenes
    from core.jobs.request import JobRequest, build_spec
    from core.sources import SAMPLE_DIR, parse_source
    from models.catalogue import catalogue
    from worker.pipelines.map_job import run_job

    cards = catalogue()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "large").mkdir()
        areas = {
            "sample": (
                json.loads((SAMPLE_DIR / "aoi.geojson").read_text()),
                ("sample",),
                "2015-07-01",
                "2015-09-30",
            ),
            "large": (large_folder(base / "large"), (f"local:{base / 'large'}",), "2015-07-01", "2015-08-31"),
        }
        for task in ("cloud", "landcover"):
            for area_name, (aoi, sources, start, end) in areas.items():
                request = JobRequest(aoi=aoi, start=start, end=end, task=task, sources=sources)
                settings = Settings(cache_dir=base / f"cache-{task}-{area_name}")
                spec = build_spec(request, settings, cards, lambda name, s=settings: parse_source(name, s))
                models = cards.job_models(spec.task, spec.model_id)
                scenes = find_scenes(
                    spec.sources,
                    spec.aoi.to_aoi().geometry,
                    spec.start,
                    spec.end,
                    None,
                    settings,
                    models.trained_levels,
                )
                estimate = estimate_job(spec.aoi.to_aoi(), scenes, models.model, models.cloud_model)
                run_job(
                    spec, base / "warm", Settings(cache_dir=base / "warm-cache")
                )  # warm: imports, sessions
                started = time.perf_counter()
                run_job(spec, base / f"out-{task}-{area_name}", settings)
                actual = time.perf_counter() - started
                results[f"{task} on {area_name}"] = {
                    "estimate_s": round(estimate.run_s or 0.0, 2),
                    "actual_s": round(actual, 2),
                    "ratio": round((estimate.run_s or 0.0) / actual, 3),
                    "pixels": estimate.pixels,
                }
                print(f"{task} on {area_name}: {results[f'{task} on {area_name}']}", file=sys.stderr)
    print(json.dumps({"benchmark": "estimates", "target_ratio": [0.7, 1.3], "jobs": results}, indent=1))


if __name__ == "__main__":
    main()
