"""Large jobs in chunks: one land-cover job over a synthetic area across a UTM zone border (real sample pixels,
two scenes a date, see tests/services.py), mapped

- whole, in one pass, by `terraseg run` (no chunks), and chunked by `terraseg run` (chunks one after another):
  each in a process of its own, whose peak memory (max RSS) is reported;
- on the queue by 1 and by 2 workers (`terraseg worker`, 1 torch thread each), timed from submission to the
  finished job, every worker started and warm first.

Every chunked output is compared with the whole pass's, pixel for pixel. Prints JSON.

    .venv/bin/python bench/chunked.py [--width-km 8 --height-km 4 --chunk-km 2]

The 2-core machine bounds what two workers can gain: with 1 torch thread each, 2 workers use both cores, 1 leaves
one idle (the job's own process polls and works on chunks; it is not a second worker).
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def job_args(folder: Path, aoi_file: Path) -> list[str]:
    return [
        "--task", "landcover", "--aoi", str(aoi_file), "--start", "2015-07-01", "--end", "2015-08-31",
        "--source", f"local:{folder}",
    ]  # fmt: skip


def run_here(base: Path, folder: Path, aoi_file: Path, chunk_km: float, name: str) -> dict[str, float]:
    """`terraseg run` in a process of its own; its wall time and peak memory."""
    out = base / name
    env = {
        **os.environ,
        "TERRASEG_CACHE_DIR": str(base / f"cache-{name}"),
        "TERRASEG_CHUNK_KM": str(chunk_km),
    }
    env |= {"TERRASEG_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1"}  # as the workers below: see main()
    code = (
        "import resource, sys; from worker.cli import main; rc = main(sys.argv[1:]); "
        "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)"
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, "run", *job_args(folder, aoi_file), "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    wall_s = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"terraseg run failed: {done.stderr[-2000:]}")
    rss_kb = next(int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("MAXRSS_KB"))
    return {"wall_s": round(wall_s, 2), "max_rss_mb": round(rss_kb / 1024, 1)}


def run_queued(base: Path, folder: Path, aoi_file: Path, chunk_km: float, workers: int) -> tuple[float, Path]:
    """One job on the queue with `workers` workers; seconds from submission to finished, and its outputs."""
    from core.config import Settings
    from tests.services import RedisServer, request_spec
    from worker.queue.client import JobClient

    base.mkdir(parents=True)
    redis_server = RedisServer(base)
    redis_server.start()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TERRASEG_REDIS_URL": redis_server.url,
        "TERRASEG_CACHE_DIR": str(base / "cache"),
        "TERRASEG_CHUNK_KM": str(chunk_km),
        "TERRASEG_TORCH_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "worker", "worker", "--queues", "inference"],
            cwd=base,
            env=env,
            stdout=(base / f"worker-{index}.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for index in range(workers)
    ]
    try:
        settings = Settings(redis_url=redis_server.url, cache_dir=base / "cache", chunk_km=chunk_km)
        client = JobClient(settings)
        while client.health().workers < workers:
            time.sleep(0.2)
        aoi = json.loads(aoi_file.read_text())
        spec = request_spec(
            aoi=aoi, start="2015-07-01", end="2015-08-31", task="landcover", sources=(f"local:{folder}",)
        )
        started = time.perf_counter()
        job_id = client.submit(spec)
        while not (status := client.status(job_id)).is_terminal:
            time.sleep(0.2)
        total_s = time.perf_counter() - started
        if status.state != "finished":
            raise RuntimeError(f"the job ended {status.state}: {client.logs(job_id)[-3000:]}")
        return total_s, client.store.outputs_dir(job_id)
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGKILL)  # the job has ended; nothing to finish
            process.wait()
        redis_server.kill()


def same_rasters(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.glob("*.tif"))
    if names != sorted(p.name for p in b.glob("*.tif")):
        return False
    return all(np.array_equal(rasterio.open(a / n).read(), rasterio.open(b / n).read()) for n in names)


def main() -> None:
    from tests.services import write_two_zone_source

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width-km", type=float, default=8.0)
    parser.add_argument("--height-km", type=float, default=4.0)
    parser.add_argument("--chunk-km", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        folder = base / "scenes"
        folder.mkdir()
        aoi_file = base / "aoi.geojson"
        aoi_file.write_text(json.dumps(write_two_zone_source(folder, args.width_km, args.height_km)))
        whole = run_here(base, folder, aoi_file, 1e6, "whole")
        chunked = run_here(base, folder, aoi_file, args.chunk_km, "chunked")
        one_s, one_out = run_queued(base / "one", folder, aoi_file, args.chunk_km, 1)
        two_s, two_out = run_queued(base / "two", folder, aoi_file, args.chunk_km, 2)
        record = json.loads((one_out / "run.json").read_text())
        workers_used = len({p["worker"] for c in record["chunks"] for p in c["passes"]})
        two_record = json.loads((two_out / "run.json").read_text())
        result = {
            "area_km2": round(record["aoi"]["area_km2"], 2),
            "grid_px": [record["grid"]["width"], record["grid"]["height"]],
            "chunk_km": args.chunk_km,
            "chunks": len(record["chunks"]),
            "terraseg_run_whole": whole,
            "terraseg_run_chunked": chunked,
            "chunked_over_whole_max_rss": round(chunked["max_rss_mb"] / whole["max_rss_mb"], 3),
            "queue_1_worker_s": round(one_s, 2),
            "queue_2_workers_s": round(two_s, 2),
            "two_over_one": round(two_s / one_s, 3),
            "km2_per_h_1_worker": round(record["aoi"]["area_km2"] / one_s * 3600, 1),
            "km2_per_h_2_workers": round(record["aoi"]["area_km2"] / two_s * 3600, 1),
            "workers_used_1_2": [
                workers_used,
                len({p["worker"] for c in two_record["chunks"] for p in c["passes"]}),
            ],
            "identical_to_whole": {
                "terraseg_run_chunked": same_rasters(base / "chunked", base / "whole"),
                "queue_1_worker": same_rasters(one_out, base / "whole"),
                "queue_2_workers": same_rasters(two_out, base / "whole"),
            },
            "cpu_count": os.cpu_count(),
            "peak_rss_note": "max RSS of the whole terraseg run process (models, GDAL cache and the pass)",
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
