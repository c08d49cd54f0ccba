"""The Jobs page with many jobs: how long listing them takes and how long the page takes to draw (AppTest, the
script's own time), with 500 jobs of one user by default: 400 finished (the first a real run of the embedded
sample, the others identical requests under other names, answered at once with its outputs, as users would
repeat a job) and 100 queued with no worker. Starts its own redis-server on a free port. Prints JSON.

    .venv/bin/python bench/jobs_page.py [--jobs 500] [--repeats 5]

Target (issue 17): the page stays fast with 500 jobs (it draws one page of PAGE_SIZE).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(action) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from tests.services import free_port

    port = free_port()
    redis_server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["TERRASEG_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
            os.environ["TERRASEG_CACHE_DIR"] = str(Path(tmp) / "cache")
            os.environ["TERRASEG_APP_SIGN_IN"] = "false"  # the page as its one user sees it: every job
            time.sleep(0.3)
            print(json.dumps(run(args.jobs, args.repeats)))
    finally:
        redis_server.terminate()
        redis_server.wait()


def run(jobs: int, repeats: int) -> dict[str, object]:
    from streamlit.testing.v1 import AppTest

    from core.accounts import LOCAL
    from core.config import get_settings
    from core.jobs.request import JobRequest, build_spec
    from core.sources import SAMPLE_DIR
    from models.catalogue import catalogue
    from pages.widgets.job_list import JOBS_PAGE_SIZE as PAGE_SIZE
    from worker.entry import execute_job
    from worker.queue.client import JobClient

    settings = get_settings()
    client = JobClient(settings)

    def spec(start: date, max_cloud_pct: float | None = None):  # type: ignore[no-untyped-def]
        request = JobRequest(
            aoi=(SAMPLE_DIR / "aoi.geojson").read_text(),
            start=start,
            end=date(2015, 9, 30),
            task="cloud",
            model_id="cloud-csmask",
            max_cloud_pct=max_cloud_pct,
        )
        return build_spec(request, settings, catalogue(), lambda name: None)

    finished = jobs * 4 // 5
    first = client.submit(spec(date(2015, 7, 1)), owner="local", name="job 0")
    execute_job(first)  # one real run; the identical requests below reuse its outputs
    submit_s = []
    for index in range(1, jobs):
        queued = index - finished  # distinct requests (identical ones of a user would be one job)
        request = (
            spec(date(2015, 7, 1))
            if queued < 0
            else spec(date(2015, 7, 2) + timedelta(days=queued % 80), 50.0 if queued >= 80 else None)
        )
        name = f"job {index}"
        started = time.perf_counter()
        client.submit(request, owner="local", name=name)
        submit_s.append(time.perf_counter() - started)
    statuses = client.list_jobs(LOCAL)
    list_s = [timed(lambda: client.list_jobs(LOCAL)) for _ in range(repeats)]
    page = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    page.run()
    page.switch_page("pages/jobs.py")
    page_s = [timed(page.run) for _ in range(repeats)]
    assert not page.exception, [e.value for e in page.exception]
    return {
        "jobs": len(statuses),
        "finished": sum(s.state == "finished" for s in statuses),
        "queued": sum(s.state == "queued" for s in statuses),
        "submit_ms_median": round(1000 * statistics.median(submit_s), 1),
        "list_jobs_s_median": round(statistics.median(list_s), 3),
        "jobs_page_run_s_median": round(statistics.median(page_s), 3),
        "jobs_page_run_s_min": round(min(page_s), 3),
        "panels_drawn": sum("· finished ·" in str(m.value) or "· queued ·" in str(m.value) for m in page.markdown),
        "page_size": PAGE_SIZE,
        "repeats": repeats,
    }


if __name__ == "__main__":
    main()
