"""Jobs on a real redis-server and real `terraseg worker` processes: the lifecycle, cancels and retries, queueing
and the CLI. The faults a job survives (killed workers, Redis lost) are in test_job_faults.py."""

import json
import shutil
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio

from core.config import Settings
from core.errors import AppError
from tests.services import sample_spec, wait_for
from worker.pipelines.map_job import run_job
from worker.queue.client import JobClient, JobError, fetch_job

pytestmark = pytest.mark.slow


def read_band(path: Path) -> np.ndarray:
    with rasterio.open(path) as dataset:
        return dataset.read(1)


def assert_same_outputs(out_a: Path, out_b: Path) -> None:
    """The class and confidence rasters (and every date's map) are pixel-identical, and so are the statistics."""
    dates = sorted(p.name for p in out_a.glob("date-*.tif"))
    assert dates and dates == sorted(p.name for p in out_b.glob("date-*.tif"))
    for name in ("classes.tif", "confidence.tif", *dates):
        np.testing.assert_array_equal(read_band(out_a / name), read_band(out_b / name))
    stats_a, stats_b = (json.loads((d / "stats.json").read_text()) for d in (out_a, out_b))
    assert stats_a["classes"] == stats_b["classes"] and stats_a["dates"] == stats_b["dates"]


def test_a_queued_job_runs_on_a_worker_and_an_identical_request_is_answered_at_once(
    client: JobClient, start_worker, tmp_path: Path
):
    start_worker()
    spec = sample_spec()
    job_id = client.submit(spec)
    assert client.status(job_id).state in ("queued", "running")
    assert json.loads((client.store.job_dir(job_id) / "spec.json").read_text())["task"] == "cloud"
    wait_for(client, job_id, ("finished",), timeout_s=120)
    status = client.status(job_id)
    assert status.fraction == 1.0 and status.error is None and status.attempts == 1
    assert status.started_at and status.ended_at and status.worker
    out = client.store.outputs_dir(job_id)
    dates = [d["date"] for d in json.loads((client.store.outputs_dir(job_id) / "stats.json").read_text())["dates"]]
    assert sorted(Path(p).name for p in status.outputs) == sorted(
        ["classes.tif", "confidence.tif", "scene.tif", "preview.png", "stats.json", "stats.csv", "run.json"]
        + [f"date-{d}.tif" for d in dates]  # the map of every date the job computed
    )
    assert len(dates) == 5 and Path(status.outputs[-1]).name == "run.json"
    log = client.logs(job_id)
    for line in ("submitted", "started on", "Planning", "Predicting", "Exporting", "finished"):
        assert line in log
    assert str(client.settings.cache_dir) not in log  # a user reads the log: no server folder in it
    with pytest.raises(JobError, match="has already finished; its outputs are published, nothing to cancel"):
        client.cancel(job_id)
    assert not list(client.store.job_dir(job_id).glob(".outputs.staging*"))
    assert not list((client.settings.cache_dir / "work").glob("*.lock"))  # the work folder's lock is gone too

    run_job(spec, tmp_path / "in_process", client.settings)
    assert_same_outputs(out, tmp_path / "in_process")

    started = time.monotonic()
    again = client.submit(spec)
    status = client.status(again)
    assert time.monotonic() - started < 2.0
    assert status.state == "finished" and status.reused_from == job_id
    assert "reused" in status.message
    assert_same_outputs(out, client.store.outputs_dir(again))
    assert [s.job_id for s in client.list_jobs()] == [again, job_id]  # newest first
    # Another user's identical request gets a job of its own with the outputs, and learns no other job's id.
    theirs = client.status(client.submit(spec, owner="someone-else"))
    assert theirs.state == "finished" and theirs.reused_from == ""
    assert theirs.message.startswith("Reused the identical outputs of an earlier finished job")
    assert job_id not in theirs.message + client.logs(theirs.job_id)
    assert_same_outputs(out, client.store.outputs_dir(theirs.job_id))


def test_expected_failures_end_the_job_with_their_sentence(client: JobClient, start_worker):
    start_worker()
    no_scenes = client.submit(sample_spec(start="2016-01-01", end="2016-02-01"))
    wait_for(client, no_scenes, ("failed",))
    status = client.status(no_scenes)
    assert status.error is not None and status.error.startswith("No S2 scene of sample"), status.error
    assert "Widen the date range" in status.error
    assert "Traceback" not in client.logs(no_scenes)
    assert not client.store.outputs_dir(no_scenes).exists()


def test_a_job_with_a_damaged_spec_fails_clearly_and_the_others_run(client: JobClient, start_worker):
    broken = client.submit(sample_spec(selected_date="2015-07-11"))
    fine = client.submit(sample_spec(selected_date="2015-08-30"))
    (client.store.job_dir(broken) / "spec.json").write_text('{"aoi": {"type": "Poly')
    listed = {s.job_id: s for s in client.list_jobs()}
    assert listed[broken].state == "failed" and "damaged" in (listed[broken].error or "")
    start_worker()
    wait_for(client, fine, ("finished",))
    wait_for(client, broken, ("failed",))
    assert "spec.json is damaged" in (client.status(broken).error or "")
    with pytest.raises(AppError, match="damaged"):
        client.retry(broken)


def test_cancel_retry_and_delete_of_a_job_that_no_worker_has_taken(client: JobClient):
    job_id = client.submit(sample_spec())
    status = client.cancel(job_id)
    assert status.state == "cancelled" and "before it started" in status.message
    with pytest.raises(JobError, match="only failed or cancelled"):
        client.retry(client.submit(sample_spec(selected_date="2015-08-30")))
    assert client.retry(job_id).state == "queued"
    with pytest.raises(JobError, match="cancel it before deleting"):
        client.delete(job_id)
    client.cancel(job_id)
    client.delete(job_id)
    assert job_id not in [s.job_id for s in client.list_jobs()]
    with pytest.raises(AppError, match="not a TerraSeg job id"):
        client.status("../../etc")


def test_a_retry_over_an_execution_record_its_worker_was_still_writing_is_queued(client: JobClient):
    """A worker ending a job may still write its execution record (a late heartbeat) while a user retries it; RQ
    then meets a half-written execution. The retry must queue the job, not fail with an internal error."""
    job_id = client.submit(sample_spec())
    client.cancel(job_id)
    client.redis.zadd(f"rq:executions:{job_id}", {"late": time.time() + 3600})
    client.redis.hset(f"rq:execution:{job_id}:late", "last_heartbeat", time.time())  # no created_at
    assert client.retry(job_id).state == "queued"
    assert fetch_job(job_id, client.redis).get_status() == "queued"
    client.cancel(job_id)
    client.delete(job_id)


def test_identical_requests_at_once_are_one_job(client: JobClient):
    """Two submissions of one request in the same second used to give two jobs computing the same thing."""
    first, second = client.submit(sample_spec()), client.submit(sample_spec())
    assert first == second and [s.job_id for s in client.list_jobs()] == [first]
    assert "an identical request was submitted" in client.logs(first)
    other = client.submit(sample_spec(selected_date="2015-08-30"))  # a different request is a job of its own
    assert other != first and len(client.list_jobs()) == 2


def test_cancelling_a_job_that_rq_has_cancelled_already_is_not_an_error(client: JobClient):

    job_id = client.submit(sample_spec())
    fetch_job(job_id, client.redis).cancel()  # e.g. an operator with rq's own tools
    status = client.cancel(job_id)  # used to raise InvalidJobOperation: "internal error" for the user
    assert status.state == "cancelled"


def test_cancel_during_download_stops_within_2_s_and_leaves_the_cache_sound(
    client: JobClient, start_worker, tmp_path
):
    from tests.core.sources.stac_server import StacServerProcess

    stac = StacServerProcess(tmp_path / "stac")
    try:
        stac.set_slow(0.4)  # a slow mirror: each band window takes a while
        start_worker()
        job_id = client.submit(sample_spec(sources=(f"stac:{stac.url}",)))
        wait_for(client, job_id, ("running",), min_fraction=0.11, timeout_s=60)
        seen = client.status(job_id)
        assert seen.stage == "Downloading" and "downloading" in seen.message and "MB" in seen.message
        asked = time.monotonic()
        client.cancel(job_id)
        wait_for(client, job_id, ("cancelled",), timeout_s=10)
        assert time.monotonic() - asked < 2.0
        assert not client.store.outputs_dir(job_id).exists()
        products = client.settings.cache_dir / "products"
        cached = list(products.rglob("*.tif"))
        assert cached and not list(products.rglob("*.part"))  # whole windows only, no partial files
        for path in cached:
            with rasterio.open(path) as dataset:
                assert dataset.read(1).size > 0
        stac.set_slow(None)
        before = {path: path.stat().st_mtime_ns for path in cached}
        client.retry(job_id)
        wait_for(client, job_id, ("finished",), timeout_s=120)
        # The retry reused every window the cancelled run had finished, and fetched the rest.
        assert {path: path.stat().st_mtime_ns for path in cached} == before
        assert len(list(products.rglob("*.tif"))) > len(cached)
    finally:
        stac.stop()


def test_a_source_that_is_down_is_retried_with_backoff_through_rq_and_the_job_then_finishes(
    client: JobClient, start_worker, tmp_path
):
    from tests.core.sources.stac_server import StacServerProcess

    stac = StacServerProcess(tmp_path / "stac")
    try:
        stac.set_down(True)  # every request gets 503
        start_worker()
        job_id = client.submit(sample_spec(sources=(f"stac:{stac.url}",)))
        wait_for(client, job_id, ("queued",), min_fraction=0.0, timeout_s=60)
        deadline = time.monotonic() + 30
        while "retrying in 5 s after a transient error" not in client.status(job_id).message:
            assert time.monotonic() < deadline, client.logs(job_id)
            time.sleep(0.1)
        failed_at = time.time()
        # The retry waits in RQ's schedule, not in the worker: the only worker takes another job at once.
        other = client.submit(sample_spec())
        wait_for(client, other, ("running", "finished"), timeout_s=60)
        other_started = datetime.fromisoformat(client.status(other).started_at or "").timestamp()
        assert other_started - failed_at < 4.0, "the worker was held by the waiting retry"
        stac.set_down(False)
        wait_for(client, other, ("finished",), timeout_s=120)
        wait_for(client, job_id, ("finished",), timeout_s=120)
    finally:
        stac.stop()
    status = client.status(job_id)
    assert status.error is None
    log = client.logs(job_id)
    assert "unavailable (HTTP 503)" in log and "transient error; retry in 5 s (3 left)" in log
    # The download stage was started twice; the inference stage, with the scenes in the cache, once.
    assert "(attempt 2)\n" in log.split("download stage done")[0] and status.attempts == 1


def test_two_workers_run_twenty_jobs_each_exactly_once(client: JobClient, start_worker):
    start_worker()
    start_worker("--no-fork")  # one of each kind: they share queues and locks
    # 20 different requests (a different cloud limit changes the spec hash, not the work); one date each keeps
    # the work small, since what is checked is the queueing, not the maps.
    job_ids = [
        client.submit(
            sample_spec(
                model_id="cloud-s2cloudless", max_cloud_pct=80 + i, start="2015-07-11", end="2015-07-11"
            )
        )
        for i in range(20)
    ]
    for job_id in job_ids:
        wait_for(client, job_id, ("finished",), timeout_s=240)
    workers = set()
    for job_id in job_ids:
        log = client.logs(job_id)
        assert log.count("started on") == 1 and log.count("finished:") == 1, log
        workers.add(client.status(job_id).worker)
    assert len(workers) == 2
    assert len({s.job_id for s in client.list_jobs()}) == 20


def test_cli_submits_to_the_queue_and_reports(settings: Settings, start_worker, tmp_path: Path):
    import subprocess
    import sys

    from core.sources import SAMPLE_DIR
    from tests.services import job_env

    start_worker()

    def terraseg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worker", *args],
            cwd=tmp_path,
            env=job_env(settings),
            capture_output=True,
            text=True,
            timeout=120,
        )

    out = tmp_path / "copy"
    submitted = terraseg(
        "run", "--queue", "--task", "cloud", "--aoi", str(SAMPLE_DIR / "aoi.geojson"),
        "--start", "2015-07-01", "--end", "2015-09-30", "--out", str(out),
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().splitlines()[-1]
    client = JobClient(settings)
    wait_for(client, job_id, ("finished",))
    status = json.loads(terraseg("status", job_id, "--json").stdout)
    assert status["state"] == "finished" and status["fraction"] == 1.0
    assert {"stage", "message", "eta_s", "error", "outputs"} <= status.keys()
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(p).name for p in status["outputs"])
    assert_same_outputs(out, client.store.outputs_dir(job_id))
    listed = json.loads(terraseg("jobs", "--json").stdout)
    assert [j["job_id"] for j in listed] == [job_id]
    assert job_id in terraseg("jobs").stdout and "finished" in terraseg("jobs").stdout
    assert "finished: Done" in terraseg("logs", job_id).stdout
    health = terraseg("health", "--this-host")  # a container's health check: a live worker on this host
    assert health.returncode == 0 and "workers on this host" in health.stdout and "): 1 (" in health.stdout
    bad = terraseg("status", "20990101-000000-abcdef")
    assert bad.returncode == 2 and "There is no job" in bad.stderr and "Traceback" not in bad.stderr
    # A finished job's map, by its id: a sample to label, and the accuracy from it (labelled as mapped).
    sampled = terraseg("sample", job_id, "--out", str(tmp_path / "sample.gpkg"), "--per-class", "5")
    assert sampled.returncode == 0, sampled.stderr
    assert "5 per class (equal allocation)" in sampled.stdout
    rows = (tmp_path / "sample.csv").read_text().splitlines()
    (tmp_path / "labelled.csv").write_text("\n".join([rows[0]] + [r + r.split(",")[1] for r in rows[1:]]) + "\n")
    scored = terraseg("accuracy", job_id, "--reference", str(tmp_path / "labelled.csv"), "--label-field", "reference")
    assert scored.returncode == 0 and "Overall accuracy: 1.000" in scored.stdout, scored.stderr
    assert (client.store.outputs_dir(job_id) / "accuracy.json").is_file()


def test_a_job_submitted_while_redis_is_down_is_queued_when_it_is_back(
    client: JobClient, start_worker, redis_server
):
    redis_server.kill()
    job_id = client.submit(sample_spec())
    assert "Redis is unreachable" in client.status(job_id).message
    health = client.health()
    assert not health.redis_ok and "unreachable" in health.message
    redis_server.start()
    start_worker()
    wait_for(client, job_id, ("finished",), timeout_s=120)
    assert client.health().redis_ok


def test_a_deleted_job_folder_is_not_resurrected(client: JobClient, start_worker):
    job_id = client.submit(sample_spec())
    shutil.rmtree(client.store.job_dir(job_id))
    start_worker()
    later = client.submit(sample_spec(selected_date="2015-08-30"))
    wait_for(client, later, ("finished",))
    assert not client.store.job_dir(job_id).exists()


def test_a_cancel_that_arrives_during_the_export_stops_the_job_before_it_publishes(tmp_path: Path):
    """Cancels aimed at the export stage used to let the job publish anyway (issue: hardening, item 9)."""
    from core.errors import JobCancelled

    exporting = {"seen": False}

    def progress(fraction: float, message: str) -> None:
        exporting["seen"] |= message.startswith("Exporting")

    with pytest.raises(JobCancelled):
        run_job(
            sample_spec(start="2015-07-11", end="2015-07-11"),
            tmp_path / "out",
            Settings(cache_dir=tmp_path / "cache"),
            progress=progress,
            should_stop=lambda: exporting["seen"],  # the cancel arrives once the export has begun
        )
    assert exporting["seen"]
    assert not list(tmp_path.glob("out/*")) and not list(
        tmp_path.glob(".out*")
    )  # nothing published or staged


def test_a_job_cancelled_between_two_attempts_does_not_say_it_never_started():
    from core.jobs.store import JobStatus
    from worker.queue.client import cancelled_before_start

    fresh = JobStatus(job_id="20261129-120000-a1b2c3", state="queued")
    assert cancelled_before_start(fresh) == "Cancelled before it started."
    ran_once = JobStatus(job_id="20261129-120000-a1b2c3", state="queued", attempts=1)
    assert "waiting for its next attempt" in cancelled_before_start(ran_once)


def test_a_twin_submitted_while_the_first_ran_reuses_its_outputs_when_it_starts(
    client: JobClient, start_worker, tmp_path: Path
):
    """Two identical requests for two --out folders, both queued before any ran: the second is not answered at
    submission (the first has not finished), so it is when it starts: the outputs are reused, not computed."""
    spec = sample_spec()
    first = client.submit(spec, copy_to=tmp_path / "a")
    second = client.submit(spec, copy_to=tmp_path / "b")
    assert second != first and client.status(second).state == "queued"
    start_worker()
    wait_for(client, first, ("finished",))
    wait_for(client, second, ("finished",))
    log = client.logs(second)
    assert "an identical job has finished meanwhile: its outputs are reused" in log
    assert "Predicting" not in log  # nothing was computed again
    assert_same_outputs(tmp_path / "b", client.store.outputs_dir(first))
