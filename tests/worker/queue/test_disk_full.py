"""Full disks, filled for real on small tmpfs mounts (root only: CI runs as root; skipped elsewhere).

A full disk ends a job as failed with a sentence that names the folder and the space needed, never as an
internal error or a job left "running"; the optimised-graph cache falls back to an uncached session; when only
the copy to --out fails, a retry copies the published outputs without computing again.
"""

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from core.jobs.diskspace import DiskFull, Folder, space_warning
from core.jobs.preflight import estimate_job
from core.jobs.store import write_json_atomic
from models.catalogue import catalogue
from tests.services import job_env, resize_tmpfs, sample_spec, wait_for
from tests.worker.cli.test_cli import SAMPLE_AOI, SAMPLE_DATES, terraseg
from tests.worker.queue.test_jobs import assert_same_outputs
from worker.queue.client import JobClient


def fill(folder: Path) -> None:
    """Write to `folder` until its filesystem is full."""
    with open(folder / "filler", "wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 4096)
        except OSError:
            pass


def test_a_status_file_is_still_written_on_a_full_disk(tmp_path, tmpfs):
    disk = tmpfs(tmp_path / "disk", "64k")
    write_json_atomic(disk / "status.json", {"state": "running", "message": "Predicting"})
    fill(disk)
    # A new temporary file cannot be created: the existing file is overwritten in place instead.
    write_json_atomic(disk / "status.json", {"state": "failed", "message": "No space left"})
    assert json.loads((disk / "status.json").read_text())["state"] == "failed"
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "status.json"]  # no temporary file left


def test_the_optimised_graph_cache_on_a_full_disk_falls_back_to_a_plain_session(tmp_path, tmpfs):
    from models.csmask_model import cpu_optimised_session, variant_file
    from models.weights import sha256_of

    cache = tmpfs(tmp_path / "cache", "1m")  # the optimised graph takes about 80 MB
    onnx_file = variant_file(6, "L1C")
    session = cpu_optimised_session(onnx_file, sha256_of(onnx_file), ["CPUExecutionProvider"], 1, cache)
    batch = np.random.default_rng(0).random((1, 6, 256, 256), dtype=np.float32)
    [probabilities] = session.run(None, {session.get_inputs()[0].name: batch})
    assert probabilities.shape == (1, 3, 256, 256)
    assert not list(cache.rglob("*.part")) and not list(cache.rglob("*.onnx"))  # nothing partial is left


def test_the_preflight_warns_when_a_folder_lacks_the_space_the_estimate_needs(tmp_path, tmpfs):
    from tests.core.jobs.test_preflight import SAMPLE_AOI, sample_scenes

    cards = catalogue()
    estimate = estimate_job(
        SAMPLE_AOI, sample_scenes(), cards.get("landcover-dynamic-world"), cards.get("cloud-csmask")
    )
    assert estimate.output_mb > 0 and estimate.cache_mb > estimate.work_mb * 0.99 > 0
    small = Folder(tmpfs(tmp_path / "small", "16k"), "the workers' cache folder")
    warning = space_warning(estimate.cache_mb + estimate.output_mb, small)
    assert warning is not None and warning.startswith(
        "The workers' cache folder has 0.016 MB free and this job"
    )
    assert space_warning(estimate.cache_mb + estimate.output_mb, Folder(tmp_path, "the cache")) is None


def test_a_full_output_folder_ends_the_run_with_a_sentence_naming_it(tmp_path, tmpfs):
    out = tmpfs(tmp_path / "out", "16k")
    done = terraseg(
        "run", "--task", "cloud", "--aoi", SAMPLE_AOI, *SAMPLE_DATES, "--source", "sample", "--out", str(out),
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"terraseg: No space left in the output folder {out}: the job needs about "), last
    assert "are free" in last and "Traceback" not in done.stderr
    assert f"The output folder {out} has 0.016 MB free" in done.stderr  # warned before the work started
    assert not list(out.iterdir()) and not list(tmp_path.glob(".out*"))  # nothing half-written is left


@pytest.fixture
def full_cache_client(tmp_path, tmpfs, settings) -> JobClient:
    """A client whose cache (and so its workers') is a 400 KB tmpfs: a job's folder fits, its work does not."""
    tmpfs(settings.cache_dir, "400k")
    return JobClient(settings)


def test_a_job_on_a_full_cache_ends_failed_with_the_folder_named(full_cache_client, start_worker):
    client = full_cache_client
    start_worker()
    job_id = client.submit(sample_spec())
    wait_for(client, job_id, ("failed",), timeout_s=120)
    status = client.status(job_id)
    assert status.message.startswith(
        "No space left in the cache folder (TERRASEG_CACHE_DIR): the job needs about "
    )
    assert "Internal error" not in status.message
    # The optimised-graph cache did not fit either: no partial graph left, the job ran on a plain session.
    assert not list(client.settings.cache_dir.rglob("*.part"))
    time.sleep(3 * client.settings.recover_interval_s)  # recovery passes see a failed job and leave it
    assert client.status(job_id).state == "failed" and client.status(job_id).attempts == 1


def test_when_only_the_copy_to_out_fails_a_retry_copies_without_computing_again(
    client: JobClient, start_worker, tmp_path, tmpfs
):
    out = tmpfs(tmp_path / "out", "16k")
    start_worker()
    job_id = client.submit(sample_spec(), copy_to=out / "demo")
    wait_for(client, job_id, ("failed",), timeout_s=120)
    status = client.status(job_id)
    assert status.message.startswith(
        f"Copying the outputs to {out / 'demo'} failed: no space left (the outputs"
    ), status.message
    assert f"'terraseg retry {job_id}' copies them there without computing again" in status.message
    published = client.store.outputs_dir(job_id)
    assert (published / "run.json").is_file()  # the job's own outputs stayed published
    assert not list(out.iterdir())  # no half copy
    resize_tmpfs(out, "8m")  # the operator frees space
    client.retry(job_id)
    wait_for(client, job_id, ("finished",), timeout_s=120)
    log = client.logs(job_id)
    assert "copying them, not computing again" in log
    assert log.count("Planning") == 1  # the stages ran once, in the first attempt
    assert_same_outputs(out / "demo", published)


def test_a_submission_that_meets_a_full_cache_leaves_no_folder_and_later_submissions_work(
    tmp_path, tmpfs, settings, redis_server
):
    tmpfs(settings.cache_dir, "400k")
    client = JobClient(settings)
    client.store.root.mkdir()
    fill(settings.cache_dir)
    # The command line, as a user submits: one sentence, exit 2, no traceback.
    env = job_env(settings)
    done = terraseg(
        "run", "--queue", "--task", "cloud", "--aoi", SAMPLE_AOI, *SAMPLE_DATES, "--source", "sample",
        "--out", str(tmp_path / "out"), cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "terraseg: The job could not be saved: no space left in the cache folder (TERRASEG_CACHE_DIR), "
        )
    ), done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    with pytest.raises(DiskFull, match="Free space there, then submit it again; nothing was queued."):
        client.submit(sample_spec())
    assert [p.name for p in client.store.root.iterdir()] == [".submit.lock"]  # no half-made job folder
    (settings.cache_dir / "filler").unlink()  # the operator frees space
    job_id = client.submit(sample_spec())
    assert client.status(job_id).state == "queued"


def test_a_job_folder_without_a_status_blocks_no_submission(client: JobClient):
    # What a submission that met a full disk left before it cleaned up after itself: a folder with a lock only.
    stale = client.store.job_dir("20261201-120000-abcdef")
    stale.mkdir(parents=True)
    (stale / ".lock").touch()
    first = client.submit(sample_spec())
    assert client.status(first).state == "queued"
    assert client.submit(sample_spec()) == first  # the duplicate lookups read past the broken folder
    assert [s.job_id for s in client.list_jobs()] == [first]
    assert client.recover() == []
    assert client.store.damaged_folders() == []  # a minute old at most: perhaps a submission still writing it
    os.utime(stale, (time.time() - 120, time.time() - 120))
    [damaged] = client.store.damaged_folders()
    assert damaged.job_id == stale.name and damaged.reason == "No status file; the folder holds .lock."
    health = terraseg("health", cwd=client.settings.cache_dir.parent, env=job_env(client.settings))
    assert f"damaged job folder {stale.name}: No status file" in health.stdout, health.stdout + health.stderr
    with client.store.try_lock(stale.name):  # a process holds its lock: someone is at work in it
        assert client.store.damaged_folders() == [] and not client.store.remove_damaged(stale.name)
    assert not client.store.remove_damaged(first)  # a sound job is never removed this way
    assert client.store.remove_damaged(stale.name) and not stale.exists()


def test_a_training_run_on_a_full_cache_ends_with_the_sentence_and_trains_once_space_is_freed(tmp_path, tmpfs):
    from models.conversion.presto_heads import DEFAULT_SAMPLES

    monthly, _ = DEFAULT_SAMPLES
    cache = tmpfs(tmp_path / "cache", "64m")  # `terraseg` (tests.worker.cli.test_cli) caches in cwd/cache
    fill(cache)
    args = ("train", "--base", "crop-presto-croptype", "--samples", str(monthly), "--as", "my-crops", "--epochs", "3")
    full = terraseg(*args, cwd=tmp_path)
    assert full.returncode == 2, full.stderr
    assert "No space left in the cache folder (TERRASEG_CACHE_DIR)" in full.stderr and "Traceback" not in full.stderr
    assert not (cache / "models" / "my-crops").exists()  # nothing half-installed
    (cache / "filler").unlink()  # the operator frees space
    again = terraseg(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (cache / "models" / "my-crops" / "v1" / "card.json").is_file()
