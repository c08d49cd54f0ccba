"""Areas larger than one chunk (worker/pipelines/chunked.py): chunk jobs on two real RQ workers, one of them SIGKILLed
mid-chunk, give the very rasters and statistics of one pass over the whole grid; so does a chunked run outside
the queue. The area lies across the UTM zone border at 18 E, covered on each date by a mosaic of two scenes,
one in each zone, of real Sentinel-2 pixels (the embedded sample's)."""

import contextlib
import json
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rq import Worker

from core.config import Settings
from core.geometry.chunks import Chunk, chunk_grid, chunk_px, plan_chunks
from core.geometry.grid import Grid
from core.jobs.request import JobSpec
from core.jobs.store import JobStatus, UnknownJob
from models.catalogue import catalogue
from tests.services import (
    RedisServer,
    WorkerProcess,
    request_spec,
    resize_tmpfs,
    wait_for,
    write_two_zone_source,
)
from worker.pipelines.map_job import run_job
from worker.queue.client import ChunkClient, JobClient

CHUNK_KM = 0.9  # 90 px: a 2 x 3 chunk job


@pytest.fixture(scope="module")
def two_zone_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """Two dates, each a mosaic of a scene in UTM 33N and one in 34N; an AOI of 2.4 x 1.6 km across the border."""
    folder = tmp_path_factory.mktemp("two_zones")
    return folder, write_two_zone_source(folder, 2.4, 1.6)


def two_zone_spec(source: tuple[Path, dict[str, object]], task: str = "landcover") -> JobSpec:
    folder, aoi = source
    model = {"landcover": "landcover-dynamic-world", "cloud": "cloud-csmask"}[task]
    return request_spec(
        aoi=aoi, start="2015-07-01", end="2015-08-31", task=task, model_id=model, sources=(f"local:{folder}",)
    )


def rasters(out_dir: Path) -> dict[str, np.ndarray]:
    """Every raster of a job's outputs, by name."""
    return {p.name: rasterio.open(p).read() for p in sorted(out_dir.glob("*.tif"))}


def assert_same_outputs(chunked: Path, whole: Path) -> None:
    got, want = rasters(chunked), rasters(whole)
    assert sorted(got) == sorted(want)
    for name, pixels in want.items():
        assert np.array_equal(got[name], pixels), f"{name} differs between the chunked and the whole run"
    stats, whole_stats = (json.loads((d / "stats.json").read_text()) for d in (chunked, whole))
    for key in ("selected_date", "class_areas", "dates", "aoi_px", "warnings"):
        assert stats.get(key) == whole_stats.get(key), key


def test_chunks_cover_the_grid_once_on_its_own_lattice() -> None:
    from affine import Affine

    grid = Grid("EPSG:32633", Affine(10, 0, 500_000, 0, -10, 5_100_000), 250, 130)
    side = chunk_px(0.9, 10.0, multiple_of=3)
    chunks = plan_chunks(grid, side)
    assert side == 90 and len(chunks) == 6
    covered = np.zeros((grid.height, grid.width), np.int32)
    for chunk in chunks:
        covered[
            chunk.row_off : chunk.row_off + chunk.height, chunk.col_off : chunk.col_off + chunk.width
        ] += 1
        sub = chunk_grid(grid, chunk)
        assert sub.crs == grid.crs and sub.transform.a == 10
        assert (sub.transform.c - grid.transform.c) / 10 == chunk.col_off
    assert (covered == 1).all()
    assert plan_chunks(grid, 1000) == [Chunk(0, 0, 0, 130, 250)]
    assert chunk_px(0.001, 10.0, multiple_of=3) == 3


def test_a_chunked_run_outside_the_queue_maps_the_very_pixels_of_one_pass(
    two_zone_source: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    spec = two_zone_spec(two_zone_source)
    whole = run_job(spec, tmp_path / "whole", Settings(cache_dir=tmp_path / "cache-whole"))
    chunked_settings = Settings(cache_dir=tmp_path / "cache-chunked", chunk_km=CHUNK_KM)
    chunked = run_job(spec, tmp_path / "chunked", chunked_settings)
    assert_same_outputs(tmp_path / "chunked", tmp_path / "whole")
    record = json.loads((tmp_path / "chunked" / "run.json").read_text())
    assert (
        len(record["chunks"]) == 6
        and json.loads((tmp_path / "whole" / "run.json").read_text())["chunks"] == []
    )
    assert [p["pass_name"] for p in record["chunks"][0]["passes"]] == ["cloud", "model"]
    assert (
        record["grid"]["crs"] == "EPSG:32633" and len(record["inputs"]) == 4
    )  # two scenes a date, two dates
    assert chunked.selected_date == whole.selected_date
    work = chunked_settings.cache_dir / "work"
    assert not work.exists() or not any(work.iterdir())  # the chunks' rasters went with the work folder


@pytest.fixture
def settings(tmp_path: Path, redis_server: RedisServer) -> Settings:
    """The queue's settings with small chunks: this area is six of them (the workers get them too)."""
    return Settings(
        redis_url=redis_server.url,
        cache_dir=tmp_path / "cache",
        recover_interval_s=1.0,
        chunk_km=CHUNK_KM,
    )


def chunk_statuses(settings: Settings) -> list[JobStatus]:
    """The chunk jobs on disk (one being created or deleted right now is left out)."""
    chunks, statuses = ChunkClient(settings), []
    for chunk_job in chunks.store.job_ids():
        with contextlib.suppress(UnknownJob):
            statuses.append(chunks.store.read_status(chunk_job))
    return statuses


def test_two_workers_share_a_large_job_and_a_worker_killed_mid_chunk_loses_nothing(
    two_zone_source: tuple[Path, dict[str, object]],
    settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    client: JobClient,
    tmp_path: Path,
) -> None:
    workers = [start_worker(), start_worker()]
    deadline = time.monotonic() + 60
    while len(Worker.all(connection=client.redis)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    spec = two_zone_spec(two_zone_source)
    job_id = client.submit(spec)
    wait_for(client, job_id, ("running",), timeout_s=60)
    parent_worker = client.status(job_id).worker
    pids = {w.name: w.pid for w in Worker.all(connection=client.redis)}
    # The other worker takes chunk jobs from the queue while the job works on chunks itself: once it has
    # finished one and is in the middle of another, it is killed.
    killed_name, deadline = None, time.monotonic() + 120
    while killed_name is None and time.monotonic() < deadline:
        others = [s for s in chunk_statuses(settings) if s.worker and s.worker != parent_worker]
        running = [s for s in others if s.state == "running"]
        if running and any(s.state == "finished" for s in others):
            killed_name = running[0].worker
            killed_chunk = running[0].job_id
        time.sleep(0.05)
    assert killed_name is not None, "the second worker never ran a chunk while the job ran"
    [victim] = [w for w in workers if w.pid == pids[killed_name]]
    victim.kill()
    wait_for(client, job_id, ("finished",), timeout_s=300)

    out = client.store.outputs_dir(job_id)
    whole = tmp_path / "whole"
    run_job(spec, whole, Settings(cache_dir=tmp_path / "cache-whole"))
    assert_same_outputs(out, whole)
    record = json.loads((out / "run.json").read_text())
    passes = [p for chunk in record["chunks"] for p in chunk["passes"]]
    assert len(record["chunks"]) == 6 and len(passes) == 12
    assert {p["worker"] for p in passes} == {parent_worker, killed_name}  # both workers mapped chunks
    [resumed] = [p for p in passes if p["job_id"] == killed_chunk]
    assert resumed["attempts"] == 2 and resumed["worker"] == parent_worker  # finished by the worker left
    # Every other chunk ran once: none was computed again, by the worker left or by the job.
    assert all(p["attempts"] == 1 for p in passes if p["job_id"] != killed_chunk)
    assert chunk_statuses(settings) == []  # the chunk jobs went with the job's work folder
    log = client.logs(job_id)
    assert "chunks" in log


def test_cancelling_a_large_job_cancels_its_chunks_and_a_retry_keeps_the_finished_ones(
    two_zone_source: tuple[Path, dict[str, object]],
    settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    client: JobClient,
    tmp_path: Path,
) -> None:
    start_worker()
    job_id = client.submit(two_zone_spec(two_zone_source))
    deadline = time.monotonic() + 120
    while sum(s.state == "finished" for s in chunk_statuses(settings)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    client.cancel(job_id)
    wait_for(client, job_id, ("cancelled",), timeout_s=60)
    statuses = chunk_statuses(settings)
    finished_before = {s.job_id for s in statuses if s.state == "finished"}
    assert len(finished_before) >= 2 and len(statuses) == 6  # the cloud pass, cancelled during it
    assert {s.state for s in statuses} <= {"finished", "cancelled"}  # nothing of the job runs on
    assert not client.store.outputs_dir(job_id).exists()

    client.retry(job_id)
    wait_for(client, job_id, ("finished",), timeout_s=180)
    record = json.loads((client.store.outputs_dir(job_id) / "run.json").read_text())
    attempts = {p["job_id"]: p["attempts"] for chunk in record["chunks"] for p in chunk["passes"]}
    assert finished_before <= set(attempts)  # the retry used the same chunk jobs...
    assert all(
        attempts[chunk_job] == 1 for chunk_job in finished_before
    )  # ...and did not run finished ones again
    status = client.status(job_id)
    assert status.fraction == 1.0 and status.message.startswith("Done")


def test_a_chunk_that_fails_fails_its_job_with_the_chunks_sentence_and_a_retry_finishes_it(
    two_zone_source: tuple[Path, dict[str, object]],
    settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    client: JobClient,
    tmp_path: Path,
) -> None:
    """A scene file damaged in the middle of a large job (an operator's mistake): the chunks after it fail, the
    job fails with their sentence and their logs in its own; with the file back, a retry finishes the job."""
    folder = tmp_path / "scenes"
    shutil.copytree(two_zone_source[0], folder)
    spec = request_spec(
        aoi=two_zone_source[1],
        start="2015-07-01",
        end="2015-08-31",
        task="landcover",
        sources=(f"local:{folder}",),
    )
    start_worker()
    job_id = client.submit(spec)
    deadline = time.monotonic() + 120
    while sum(s.state == "finished" for s in chunk_statuses(settings)) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    damaged = folder / "34_2015-07-11.tif"
    original = damaged.read_bytes()
    damaged.write_bytes(b"not a GeoTIFF any more")
    wait_for(client, job_id, ("failed",), timeout_s=120)
    status = client.status(job_id)
    assert re.fullmatch(
        r"Chunk \d of 6 failed: (Opening|Reading) the scene file 34_2015-07-11\.tif (of .+ )?failed \(\w+\); "
        r"it (was moved, removed or damaged after the search\. Restore it, or run again|may be truncated or "
        r"corrupt\. Remove or replace it and run again)\. Retry the job to finish the chunks left; finished "
        r"chunks are kept\.",
        status.error or "",
    ), status.error
    assert str(tmp_path) not in (status.error or "")  # no server path in what a page shows
    log = client.logs(job_id)
    # The failed chunk's log, in the job's own.
    assert "its log:" in log and "34_2015-07-11.tif" in log.split("its log:")[1]
    assert {s.state for s in chunk_statuses(settings)} <= {"finished", "failed", "cancelled"}

    damaged.write_bytes(original)
    client.retry(job_id)
    wait_for(client, job_id, ("finished",), timeout_s=180)
    assert chunk_statuses(settings) == []


def test_a_full_cache_during_a_chunk_fails_the_job_with_the_full_disk_sentence_and_a_retry_finishes_it(
    two_zone_source: tuple[Path, dict[str, object]],
    settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    client: JobClient,
    tmpfs: Callable[[Path, str], Path],
) -> None:
    """The job's work folder on a disk that fills up when the chunks write their rasters: the job fails with the
    sentence that names the cache folder (not "Internal error"), and once space is freed a retry finishes it."""
    spec = two_zone_spec(two_zone_source)
    version = catalogue(settings.cache_dir).get(spec.model_id).version
    work = tmpfs(settings.cache_dir / "work" / spec.spec_hash(version), "64k")
    start_worker()
    job_id = client.submit(spec)
    wait_for(client, job_id, ("failed",), timeout_s=180)
    error = client.status(job_id).error or ""
    assert re.fullmatch(
        r"Chunk \d of 6 failed: No space left in the cache folder \(TERRASEG_CACHE_DIR\): .+ are free\. Free "
        r"space there \(or choose another folder\), then retry the job; finished work is kept\. Retry the job to "
        r"finish the chunks left; finished chunks are kept\.",
        error,
    ), error
    resize_tmpfs(work, "256m")  # the operator frees space
    client.retry(job_id)
    wait_for(client, job_id, ("finished",), timeout_s=240)
