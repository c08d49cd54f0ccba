"""Downloads on their own queue: N jobs on a bandwidth-limited DHuS mirror (the test mirror on 127.0.0.1 with
its `slow` switch), run once by one worker serving every queue and once by a `--queues download` worker next to
a `--queues inference` worker. Each job maps one date, so each downloads a product of its own. Starts its own
redis-server, mirror and workers; prints JSON with both total times and their ratio.

    .venv/bin/python bench/queue_split.py [--slow-s-per-64kb 0.25]

Target (issue 18): split / one worker <= 0.7. The mirror serves the 5 sample dates, so there are 5 jobs. The
gain depends on the balance: at the default (about 256 KB/s) a job's download takes about as long as its map,
where two stages in parallel gain most; a slower mirror makes the downloads the whole time, which no split
shortens (the README gives the ratios at three speeds).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATES = ("2015-07-11", "2015-07-31", "2015-08-20", "2015-08-30", "2015-09-09")


def run_jobs(base: Path, slow: str, worker_args: list[list[str]]) -> dict[str, float]:
    """Submit one job per date and time them to the last one finished with `worker_args` workers."""
    from core.config import Settings
    from tests.core.sources.dhus_server import PASSWORD, USER, DhusServerProcess
    from tests.services import RedisServer, sample_spec
    from worker.queue.client import JobClient

    base.mkdir(parents=True)
    redis_server = RedisServer(base)
    redis_server.start()
    mirror = DhusServerProcess(base / "dhus")
    mirror.flag("slow", slow)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TERRASEG_REDIS_URL": redis_server.url,
        "TERRASEG_CACHE_DIR": str(base / "cache"),
        "TERRASEG_DHUS_USER": USER,
        "TERRASEG_DHUS_PASSWORD": PASSWORD,
        "TERRASEG_DHUS_URL": mirror.url,
        "TERRASEG_DHUS_ALLOW_HTTP": "true",
        "OMP_NUM_THREADS": "1",  # two workers on 2 cores, as in a one-box deployment
    }
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "worker", "worker", *args],
            cwd=base,
            env=env,
            stdout=(base / f"worker-{index}.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for index, args in enumerate(worker_args)
    ]
    try:
        settings = Settings(redis_url=redis_server.url, cache_dir=base / "cache")
        client = JobClient(settings)
        while client.health().workers < len(workers):  # started and warm: the jobs alone are timed
            time.sleep(0.2)
        started = time.perf_counter()
        ids = [
            client.submit(sample_spec(sources=(f"dhus:{mirror.url}",), start=day, end=day, task="cloud"))
            for day in DATES
        ]
        while True:
            states = [client.status(job_id).state for job_id in ids]
            if all(state in ("finished", "failed", "cancelled") for state in states):
                break
            time.sleep(0.2)
        total_s = time.perf_counter() - started
        if set(states) != {"finished"}:
            raise RuntimeError(f"jobs ended {states}: {[client.logs(i) for i in ids]}")
        print(json.dumps({"workers": worker_args, "total_s": round(total_s, 2)}), file=sys.stderr)
        return {"total_s": round(total_s, 2), "jobs": len(ids)}
    finally:
        for worker in workers:
            os.killpg(worker.pid, signal.SIGKILL)  # the jobs have ended; nothing to finish
            worker.wait()
        mirror.stop()
        redis_server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow-s-per-64kb", default="0.25", help="the mirror's delay per 64 KB sent")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = run_jobs(Path(tmp) / "one", args.slow_s_per_64kb, [[]])
        split = run_jobs(
            Path(tmp) / "split", args.slow_s_per_64kb, [["--queues", "download"], ["--queues", "inference"]]
        )
    print(
        json.dumps(
            {
                "mirror_s_per_64kb": float(args.slow_s_per_64kb),
                "one_worker_every_queue": one,
                "download_worker_and_inference_worker": split,
                "split_over_one": round(split["total_s"] / one["total_s"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
