"""Queued jobs on a DHuS mirror: the archive wait shows in the job's progress, and a cancel mid-download stops
within 2 s and leaves a partial file that the retry resumes."""

import time

import pytest

from tests.core.sources.dhus_server import PASSWORD, USER, DhusServerProcess
from tests.services import sample_spec, wait_for
from worker.client import JobClient

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
