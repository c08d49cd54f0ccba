"""The faults a job survives, on a real redis-server and real `terraseg worker` processes: a cancel mid-inference,
a worker killed mid-job (forking and not), Redis killed and restarted empty. Each interrupted job must give the
outputs of an uninterrupted run, pixel for pixel."""

import itertools
import time
from pathlib import Path

import pytest
from rq import Worker

from core.config import Settings
from tests.services import large_spec, sample_spec, wait_for
from tests.worker.queue.test_jobs import assert_same_outputs
from worker.pipelines.map_job import run_job
from worker.queue.client import JobClient
from worker.queue.service import ALIVE_S, HEARTBEAT_S

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def large_reference(large_source, tmp_path_factory) -> Path:
    """The large job run in-process, uninterrupted: what every interrupted run must reproduce."""
    base = tmp_path_factory.mktemp("reference")
    run_job(large_spec(large_source), base / "out", Settings(cache_dir=base / "cache"))
    return base / "out"


def seconds_per_batch(client: JobClient, job_id: str, batches: int = 3) -> float:
    """The longest of `batches` gaps between a running job's progress lines ("tiles 12/64": one per batch).
    The longest, because on a loaded machine (the other test process busy) one batch can take twice another."""
    changes: list[float] = []
    last = client.status(job_id).message
    deadline = time.monotonic() + 30
    while len(changes) < batches + 1:
        assert time.monotonic() < deadline, "the job's progress did not move"
        message = client.status(job_id).message
        if message != last:
            changes.append(time.monotonic())
            last = message
        time.sleep(0.05)
    return max(b - a for a, b in itertools.pairwise(changes))


def test_cancel_during_inference_stops_within_2_s_and_a_retry_resumes(
    client: JobClient, start_worker, large_source, large_reference
):
    start_worker()
    job_id = client.submit(large_spec(large_source))
    wait_for(client, job_id, ("running",), min_fraction=0.3, timeout_s=120)
    seen = client.status(job_id)
    assert seen.stage == "Predicting" and 0.3 <= seen.fraction < 0.9 and "tiles" in seen.message
    # A running job stops at the end of the forward pass it is in. That pass takes under a second on an idle
    # machine and a few on CI's loaded one, so the bound is 2 s or, where one batch is slower, a batch and 1 s
    # (the cleanup and this test's poll); the batch time is the job's own, read from its progress.
    batch_s = seconds_per_batch(client, job_id)
    asked = time.monotonic()
    client.cancel(job_id)
    wait_for(client, job_id, ("cancelled",), timeout_s=10)
    assert time.monotonic() - asked < max(2.0, batch_s + 1.0), batch_s
    assert not client.store.outputs_dir(job_id).exists()
    assert not list(client.store.job_dir(job_id).glob(".outputs.staging*"))
    work = client.settings.cache_dir / "work"
    saved = list(work.glob("*/*/done.json")) + list(work.glob("*/*/blocks/*.npz"))
    assert saved, "the partial work is kept for a retry"

    client.retry(job_id)
    wait_for(client, job_id, ("finished",), timeout_s=180)
    assert client.status(job_id).attempts == 2
    assert_same_outputs(client.store.outputs_dir(job_id), large_reference)
    assert not [p for p in work.iterdir() if p.is_dir()], "the work folder goes once outputs are published"


def test_a_worker_killed_mid_inference_is_replaced_and_the_outputs_are_identical(
    client: JobClient, start_worker, large_source, large_reference
):
    first = start_worker()
    job_id = client.submit(large_spec(large_source))
    wait_for(client, job_id, ("running",), min_fraction=0.4, timeout_s=120)
    first_start = client.status(job_id).started_at
    first.kill()
    killed = time.monotonic()
    # With no worker left, whoever looks at the job sees at once that its worker is gone (not "running" with an
    # ETA), and the job is queued again for the next worker.
    while (seen := client.status(job_id)).state != "queued":
        assert time.monotonic() - killed < 10, (
            f"a job whose worker died still reads {seen.state}: {seen.message}"
        )
        time.sleep(0.2)
    assert "its worker stopped" in seen.message and seen.eta_s is None
    starting = time.monotonic()
    start_worker()
    wait_for(
        client, job_id, ("running",), timeout_s=15
    )  # a new worker (its start-up included) takes it at once
    assert time.monotonic() - starting < 15
    wait_for(client, job_id, ("finished",), timeout_s=180)
    status = client.status(job_id)
    assert status.attempts == 2
    assert status.started_at == first_start  # the job's start, not the second attempt's
    log = client.logs(job_id)
    assert "re-queued by recovery: its worker stopped" in log
    assert "reused from an earlier run" in log  # the dates the killed run finished were not computed again
    assert_same_outputs(client.store.outputs_dir(job_id), large_reference)


def test_a_no_fork_worker_killed_mid_job_is_recovered_like_a_forking_one(
    client: JobClient, start_worker, tmp_path
):
    from tests.core.sources.stac_server import StacServerProcess

    stac = StacServerProcess(tmp_path / "stac")
    try:
        stac.set_slow(0.4)  # the job stays in its download stage for a few seconds
        first = start_worker("--no-fork")
        job_id = client.submit(sample_spec(sources=(f"stac:{stac.url}",)))
        wait_for(client, job_id, ("running",), min_fraction=0.11, timeout_s=60)
        first.kill()  # the job ran in the worker's own process: it dies with it
        stac.set_slow(None)
        start_worker("--no-fork")
        wait_for(client, job_id, ("finished",), timeout_s=120)
    finally:
        stac.stop()
    log = client.logs(job_id)
    assert "re-queued by recovery: its worker stopped" in log
    # Killed in its download stage, which a second worker started again; then the inference stage, once.
    assert "(attempt 2)\n" in log.split("download stage done")[0] and client.status(job_id).attempts == 1


def test_redis_killed_and_restarted_empty_loses_no_job(
    client: JobClient, start_worker, redis_server, large_source, large_reference
):
    start_worker()
    done_before = client.submit(sample_spec(selected_date="2015-09-09"))
    wait_for(client, done_before, ("finished",))
    running = client.submit(large_spec(large_source))
    queued = [client.submit(sample_spec(selected_date=d)) for d in ("2015-07-11", "2015-08-30")]
    wait_for(client, running, ("running",), min_fraction=0.2, timeout_s=120)
    redis_server.kill()
    time.sleep(1.0)
    redis_server.start()  # empty: no persistence
    lost_at = time.monotonic()
    while client.health().workers != 1:  # the worker registers again at its next heartbeat
        assert time.monotonic() - lost_at < 2 * HEARTBEAT_S + 5, client.health()
        time.sleep(0.2)
    for job_id in [running, *queued]:
        wait_for(client, job_id, ("finished",), timeout_s=240)
    assert_same_outputs(client.store.outputs_dir(running), large_reference)
    states = {s.job_id: s.state for s in client.list_jobs()}
    assert states[done_before] == "finished"
    assert (client.store.outputs_dir(done_before) / "classes.tif").exists()
    # Recovery re-queued the lost jobs in the order they were submitted, so they ran in that order.
    # (One worker runs one job at a time, so the order they ended in is the order they started in.)
    ends = [client.status(job_id).ended_at or "" for job_id in queued]
    assert ends == sorted(ends), (ends, [client.store.read_log(job_id) for job_id in queued])


def test_an_idle_worker_registers_again_within_a_heartbeat_of_redis_coming_back(
    client: JobClient, start_worker, redis_server
):
    start_worker()
    deadline = time.monotonic() + 60
    while client.health().workers != 1:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    redis_server.kill()
    # Tries at 0, 1, 3, 7, 12, 17 s with the backoff capped at a heartbeat; uncapped, at 0, 1, 3, 7, 15, 31 s. Back
    # at 16 s, the uncapped worker would wait until 31 s, past the bound below (the shortest outage that shows it).
    time.sleep(16.0)
    redis_server.start()
    back_at = time.monotonic()
    while client.health().workers != 1:
        assert time.monotonic() - back_at < HEARTBEAT_S + 3, "the worker did not register again in time"
        time.sleep(0.2)


def test_a_killed_worker_leaves_the_health_count_once_its_last_beat_expires(client: JobClient, start_worker):
    worker = start_worker()
    deadline = time.monotonic() + 60
    while client.health().workers != 1:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    [record] = Worker.all(connection=client.redis)
    worker.kill()
    # The last beat set the record to expire ALIVE_S after it (not RQ's own 7 minutes). When that beat came
    # depends on the machine's load; when it expires is Redis's to say, so the test measures from there.
    ttl_ms = client.redis.pttl(record.key)
    expires = time.monotonic() + ttl_ms / 1000
    assert 0 < ttl_ms <= ALIVE_S * 1000, ttl_ms
    assert client.health().workers == 1 or time.monotonic() >= expires - 0.5, "gone before its beat expired"
    while True:
        asked = time.monotonic()
        if client.health().workers == 0:
            break
        # One health poll after the expiry sees it gone; allow for that poll on a loaded machine.
        assert asked - expires <= 2.0, "a dead worker still counts as alive after its last beat expired"
        time.sleep(0.2)
