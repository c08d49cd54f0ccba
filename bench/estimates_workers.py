"""Pre-flight estimates against jobs run by a real worker (a redis-server and a `terraseg worker` started here, as
the tests start them): a crop job on the embedded monthly cube (`sample-crop`, whole and a quarter), and a land-cover
job over 160 km² of the sample's pixels (2 dates) in one pass and in 4 chunk jobs (`chunk_km` 7). The time taken
is the job's own, from its status (started to ended). Prints JSON with each estimate/actual ratio.

    .venv/bin/python bench/estimates_workers.py

Target (issue 32): every ratio within 0.7..1.3 on a 2-core CPU.
"""

import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CUBE_AREAS = {"whole cube": "5.3192,50.6291,5.3331,50.6373", "a quarter of it": "5.3192,50.6291,5.3262,50.6332"}


def took_s(client: "object", job_id: str) -> float:
    status = client.status(job_id)  # type: ignore[attr-defined]
    return (datetime.fromisoformat(status.ended_at) - datetime.fromisoformat(status.started_at)).total_seconds()


def main() -> None:
    from bench.estimates import large_folder
    from core.config import Settings
    from core.geometry.aoi import parse_bbox
    from core.jobs.preflight import estimate_cube_job, estimate_job, find_scenes
    from core.sources.monthly_cube import ready_cube
    from models.catalogue import catalogue
    from tests.services import RedisServer, WorkerProcess, request_spec, wait_for
    from worker.queue.client import JobClient

    cards = catalogue()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        redis = RedisServer(base)
        redis.start()
        try:
            runs = []
            for name, bbox in CUBE_AREAS.items():
                aoi = parse_bbox(bbox, max_area_km2=5e4, max_vertices=10_000)
                spec = request_spec(
                    aoi=aoi.to_geojson(), start="2020-11-01", end="2021-10-31", task="crop", sources=("sample-crop",)
                )
                cube = ready_cube(spec.sources, spec.model_id, spec.start, spec.end)
                assert cube is not None
                runs.append((f"crop on {name}", spec, estimate_cube_job(aoi, cube, cards.get(spec.model_id)), 25.0))
            (base / "large").mkdir()
            large_aoi = large_folder(base / "large", size=1300)
            for name, chunk_km in (("one pass", 25.0), ("4 chunks", 7.0)):
                spec = request_spec(
                    aoi=large_aoi, start="2015-07-01", end="2015-07-31", task="landcover",
                    sources=(f"local:{base / 'large'}",),
                )  # fmt: skip
                models = cards.job_models(spec.task, spec.model_id)
                scenes = find_scenes(
                    spec.sources, spec.aoi.to_aoi().geometry, spec.start, spec.end, None,
                    Settings(cache_dir=base / "search"), models.trained_levels,
                )  # fmt: skip
                estimate = estimate_job(spec.aoi.to_aoi(), scenes, models.model, models.cloud_model)
                runs.append((f"landcover on 160 km2, 2 dates, {name}", spec, estimate, chunk_km))
            for label, spec, estimate, chunk_km in runs:
                settings = Settings(redis_url=redis.url, cache_dir=base / f"cache-{len(results)}", chunk_km=chunk_km)
                settings.cache_dir.mkdir()
                client = JobClient(settings)
                worker = WorkerProcess(settings, base / f"worker-{len(results)}.log")
                try:
                    time.sleep(6)  # the worker's start, not the job's
                    job_id = client.submit(spec)
                    wait_for(client, job_id, ("finished",), timeout_s=900)
                    actual = took_s(client, job_id)
                finally:
                    worker.stop()
                results[label] = {
                    "estimate_s": round(estimate.run_s or 0.0, 1),
                    "actual_s": round(actual, 1),
                    "ratio": round((estimate.run_s or 0.0) / actual, 3),
                }
                print(f"{label}: {results[label]}", file=sys.stderr)
        finally:
            redis.kill()
    print(json.dumps({"benchmark": "estimates_workers", "target_ratio": [0.7, 1.3], "jobs": results}, indent=1))


if __name__ == "__main__":
    main()
