"""Queue overhead: submit-to-start and finish-to-visible for a trivial task, and a real job queued vs in-process.

Starts its own redis-server on a free port and one `terraseg worker` (the real worker with TerraSeg's recovery
thread), once forking a work horse per job (the default) and once with `--no-fork`. The in-process reference
runs `run_job` in this process, which is warm after its first run, as a `--no-fork` worker is. Prints JSON.
Usage: `python bench/queue_overhead.py [--jobs 200] [--repeats 3]`.
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from rq import Worker
from rq.job import JobStatus

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition, timeout_s: float = 60.0, poll_s: float = 0.001) -> float:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return time.time()
        time.sleep(poll_s)
    raise TimeoutError


def trivial_jobs(connection: redis.Redis, n_jobs: int) -> dict[str, float]:
    """One job at a time on an idle worker: submit -> horse starts, horse returns -> status 'finished' seen."""
    from worker.queue.client import fetch_job, job_queue

    queue = job_queue("inference", connection)
    start_s, visible_s = [], []
    for _ in range(n_jobs):
        submitted = time.time()
        job = queue.enqueue("worker.entry.ping", result_ttl=60)
        wait_until(lambda job=job: job.get_status(refresh=True) == JobStatus.FINISHED)
        seen = time.time()
        job = fetch_job(job.id, connection)
        ran_at = float(job.return_value())
        ended = job.ended_at.timestamp() if job.ended_at else ran_at
        start_s.append(ran_at - submitted)
        visible_s.append(seen - ended)
    return {
        "jobs": n_jobs,
        "submit_to_start_median_s": round(statistics.median(start_s), 4),
        "submit_to_start_p95_s": round(sorted(start_s)[int(0.95 * n_jobs) - 1], 4),
        "finish_to_visible_median_s": round(statistics.median(visible_s), 4),
    }


def sample_job_times(settings, repeats: int, offset: int = 0) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """The demo job through the queue vs in-process, best of `repeats` each.

    Queued time runs from submit to RQ's end-of-job time stamp (outputs published, status written); the status
    is polled only every 0.25 s meanwhile, because polling every few ms would itself take CPU from the job on a
    2-core machine. How soon a finished job is seen is the trivial jobs' `finish_to_visible` figure.
    """
    from core.config import Settings
    from tests.services import sample_spec
    from worker.pipelines.map_job import run_job
    from worker.queue.client import JobClient

    client = JobClient(settings)
    queued, in_process = [], []
    for index in range(repeats):
        # A new cloud limit each time: a new spec hash, so nothing is served from an earlier run.
        spec = sample_spec(max_cloud_pct=90 - offset - index)
        submitted = time.time()
        job_id = client.submit(spec)
        wait_until(lambda job_id=job_id: client.status(job_id).is_terminal, timeout_s=300, poll_s=0.25)
        assert client.status(job_id).state == "finished", client.logs(job_id)
        from worker.queue.client import fetch_job

        ended = fetch_job(job_id, client.redis).ended_at
        assert ended is not None
        queued.append(ended.timestamp() - submitted)
        spec = sample_spec(max_cloud_pct=50 - offset - index)
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            run_job(spec, Path(tmp) / "out", Settings(cache_dir=Path(tmp) / "cache"))
            in_process.append(time.perf_counter() - started)
    return {
        "repeats": repeats,
        "queued_s": round(min(queued), 3),
        "in_process_s": round(min(in_process), 3),
        "queued_over_in_process": round(min(queued) / min(in_process), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from core.config import Settings

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        settings = Settings(redis_url=f"redis://127.0.0.1:{port}/0", cache_dir=Path(tmp) / "cache")
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TERRASEG_REDIS_URL": settings.redis_url,
            "TERRASEG_CACHE_DIR": str(settings.cache_dir),
        }
        result: dict[str, object] = {}
        try:
            connection = redis.Redis.from_url(settings.redis_url)
            for offset, (mode, extra_args) in enumerate((("fork", []), ("no_fork", ["--no-fork"]))):
                worker = subprocess.Popen(
                    [sys.executable, "-m", "worker", "worker", *extra_args],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
                try:
                    time.sleep(0.5)
                    wait_until(lambda: len(Worker.all(connection=connection)) == 1, timeout_s=60, poll_s=0.1)
                    result[mode] = {
                        "trivial": trivial_jobs(connection, args.jobs),
                        "sample_job": sample_job_times(settings, args.repeats, offset=20 * offset),
                    }
                finally:
                    os.killpg(worker.pid, signal.SIGTERM)
                    worker.wait(30)
                    wait_until(lambda: len(Worker.all(connection=connection)) == 0, timeout_s=30, poll_s=0.1)
        finally:
            server.kill()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
