"""Queued jobs on a DHuS mirror: the archive wait shows in the job's progress, and a cancel mid-download stops
within 2 s and leaves a partial file that the retry resumes."""

import time

import pytest

from tests.core.sources.dhus_server import PASSWORD, USER, DhusServerProcess
from tests.services import sample_spec, wait_for
from worker.queue.client import JobClient

pytestmark = pytest.mark.slow


@pytest.fixture
def dhus(tmp_path, monkeypatch):  # noqa: ANN201
    server = DhusServerProcess(tmp_path / "dhus")
    # Workers take their settings from the environment, as an operator's would.
    monkeypatch.setenv("TERRASEG_DHUS_USER", USER)
    monkeypatch.setenv("TERRASEG_DHUS_PASSWORD", PASSWORD)
    monkeypatch.setenv("TERRASEG_DHUS_URL", server.url)
    monkeypatch.setenv("TERRASEG_DHUS_ALLOW_HTTP", "true")  # the test mirror is plain HTTP on loopback
    monkeypatch.setenv("TERRASEG_LTA_POLL_S", "0.5")
    yield server
    server.stop()


def test_a_job_waits_for_the_archive_in_its_progress_then_finishes(client: JobClient, start_worker, dhus):
    offline = next(p for p in dhus.products if "20150820" in p["name"])
    dhus.flag("offline", f"{offline['uuid']} 3\n")
    start_worker()
    job_id = client.submit(sample_spec(sources=(f"dhus:{dhus.url}",)))
    deadline, messages = time.monotonic() + 60, set()
    while "waiting for the archive" not in " ".join(messages):
        assert time.monotonic() < deadline, client.logs(job_id)
        messages.add(client.status(job_id).message)
        time.sleep(0.05)
    wait_for(client, job_id, ("finished",), timeout_s=120)
    assert any(f"offline at dhus:{dhus.url}" in m for m in messages)
    assert PASSWORD not in client.logs(job_id)


def test_cancel_during_a_product_download_stops_within_2_s_and_the_retry_resumes(
    client: JobClient, start_worker, dhus
):
    dhus.flag("slow", "0.3")  # about 200 KB/s: each product takes about a second
    start_worker()
    job_id = client.submit(sample_spec(sources=(f"dhus:{dhus.url}",)))
    deadline = time.monotonic() + 60
    while "downloading" not in client.status(job_id).message or "MB" not in client.status(job_id).message:
        assert time.monotonic() < deadline, client.logs(job_id)
        time.sleep(0.05)
    time.sleep(0.5)
    asked = time.monotonic()
    client.cancel(job_id)
    wait_for(client, job_id, ("cancelled",), timeout_s=10)
    assert time.monotonic() - asked < 2.0
    assert not client.store.outputs_dir(job_id).exists()
    products = client.settings.cache_dir / "products"
    partial = list(products.rglob("*.zip.part"))  # the downloads that were running (2 slots by default)
    assert 1 <= len(partial) <= 2 and all(p.stat().st_size > 0 for p in partial)
    kept = {p.stat().st_size for p in partial}
    dhus.flag("slow", None)
    client.retry(job_id)
    wait_for(client, job_id, ("finished",), timeout_s=120)
    assert len(list(products.rglob("*.zip"))) == 5 and not list(products.rglob("*.part"))
    resumed = {int(r[2].removeprefix("bytes=").removesuffix("-")) for r in dhus.downloads() if r[2]}
    assert kept <= resumed  # each interrupted product resumed where it stopped


def wait_until(condition, what: str, client: JobClient, job_id: str, timeout_s: float = 120) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not {what}; log:\n{client.logs(job_id)}"
        time.sleep(0.1)


def test_downloads_run_on_a_download_worker_and_the_map_on_an_inference_worker_from_the_cache(
    client: JobClient, start_worker, dhus, tmp_path
):
    from core.config import Settings
    from tests.worker.queue.test_jobs import assert_same_outputs
    from worker.pipelines.map_job import run_job

    dhus.flag("slow", "0.3")  # about a second per product: the first download worker dies mid-download
    first = start_worker("--queues", "download")
    remote = client.submit(sample_spec(sources=(f"dhus:{dhus.url}",)))
    local = client.submit(sample_spec(selected_date="2015-08-30"))  # nothing to download: inference at once
    assert client.store.read_info(remote).queue == "download"
    assert client.store.read_info(local).queue == "inference"
    wait_until(lambda: "MB" in client.status(remote).message, "downloading", client, remote)
    first.kill()  # SIGKILL mid-download: recovery puts the job back on the download queue
    dhus.flag("slow", None)
    start_worker("--queues", "download")
    wait_until(
        lambda: client.status(remote).queue == "inference" and client.status(remote).state == "queued",
        "handed on to the inference queue",
        client,
        remote,
    )
    status = client.status(remote)
    assert "downloaded 5 scenes; waiting for an inference worker" in status.message and status.attempts == 0
    assert client.status(local).state == "queued" and client.status(local).attempts == 0  # not a download job
    fetched = {r[1] for r in dhus.downloads() if r[3] in (200, 206)}
    assert len(fetched) == 5

    start_worker("--queues", "inference")
    wait_for(client, remote, ("finished",), timeout_s=120)
    wait_for(client, local, ("finished",), timeout_s=120)
    assert {r[1] for r in dhus.downloads() if r[3] in (200, 206)} == fetched  # the map read the cache only
    log = client.logs(remote)
    stages = [line for line in log.splitlines() if "started on" in line or "download stage done" in line]
    assert len(stages) == 4, log  # download (killed), download again, done, inference
    assert "re-queued by recovery: its worker stopped" in log
    # The same map as one process doing both stages.
    run_job(sample_spec(sources=(f"dhus:{dhus.url}",)), tmp_path / "whole", Settings(cache_dir=tmp_path / "c"))
    assert_same_outputs(client.store.outputs_dir(remote), tmp_path / "whole")
