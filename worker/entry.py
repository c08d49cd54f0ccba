"""The RQ entry point of a TerraSeg job: lock its folder, run the stages, record how it ended.

The job's folder (core.jobstore) is the truth; Redis only carries live progress (`job.meta`). An expected
failure ends the job as "failed" with its sentence, an unexpected one as "internal error, see log", a transient
one (Redis or network) goes back to RQ's Retry with backoff while retries are left.
"""

import json
import logging
import shutil
import socket
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from rq import get_current_job
from rq.job import Job
from rq.timeouts import JobTimeoutException

from core import diskspace, export, report
from core.config import Settings, get_settings
from core.errors import AppError, JobCancelled
from core.jobs import ChunkSpec, TrainingSpec
from core.jobstore import JobStatus, JobStore, utc_now
from worker.client import DOWNLOAD_QUEUE, RETRY_BACKOFF_S, cancelled_before_start

log = logging.getLogger(__name__)

# Errors worth another try later: Redis hiccups and network failures (sources raise these once they fetch).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
    socket.timeout,
)
META_INTERVAL_S = 0.25  # Redis meta at most 4 times a second
DISK_INTERVAL_S = 1.0  # status.json at most once a second


class JobProgress:
    """A core ProgressFn that publishes to the RQ job's meta and, less often, to status.json and the log."""

    def __init__(self, store: JobStore, job_id: str, rq_job: Job | None) -> None:
        self.store, self.job_id, self.rq_job = store, job_id, rq_job
        self.started = time.monotonic()
        self.last_meta = self.last_disk = 0.0
        self.stage = ""
        self.redis_ok = True

    def __call__(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        stage = message.split(":", 1)[0]
        if stage != self.stage:
            self.stage = stage
            self.store.append_log(self.job_id, message)
        elapsed = now - self.started
        # A rate needs a few seconds and a few percent behind it before it says anything.
        eta_s = round(elapsed * (1 - fraction) / fraction, 1) if fraction >= 0.05 and elapsed >= 2 else None
        live = {"stage": stage, "fraction": round(fraction, 4), "message": message, "eta_s": eta_s}
        if now - self.last_meta >= META_INTERVAL_S or fraction >= 1.0:
            self.last_meta = now
            self._publish_meta(live | {"updated_at": utc_now()})
        if now - self.last_disk >= DISK_INTERVAL_S:
            self.last_disk = now
            self.store.update_status(self.job_id, **live)

    def _publish_meta(self, live: dict[str, Any]) -> None:
        """Best effort: progress must not stop the job when Redis is briefly away."""
        if self.rq_job is None:
            return
        try:
            self.rq_job.meta.update(live)
            self.rq_job.save_meta()
            if not self.redis_ok:
                self.store.append_log(self.job_id, "Redis is reachable again; live progress resumes")
            self.redis_ok = True
        except redis.exceptions.RedisError as err:
            if self.redis_ok:
                self.store.append_log(self.job_id, f"live progress paused, Redis unreachable: {err}")
            self.redis_ok = False


def execute_job(job_id: str) -> str:
    """RQ entry point: run job `job_id` from its folder; returns the state it ended in."""
    settings = get_settings()
    return execute(JobStore(settings.cache_dir / "jobs"), job_id, settings, run_stages)


def execute_training(job_id: str) -> str:
    """RQ entry point of the `training` queue: run training run `job_id` from its folder."""
    settings = get_settings()
    return execute(JobStore(settings.cache_dir / "training-runs"), job_id, settings, run_training)


# The part of a run that differs between jobs and training runs: it ends the run with `end` and returns the state.
Stages = Callable[[JobStore, JobStatus, Settings, Job | None], str]


def execute_chunk(job_id: str) -> str:
    """RQ entry point of a large job's chunk pass (worker/chunked.py)."""
    settings = get_settings()
    return execute(JobStore(settings.cache_dir / "chunk-jobs"), job_id, settings, run_chunk_stages)


def execute(
    store: JobStore,
    job_id: str,
    settings: Settings,
    stages: Stages,
    current_job: Callable[[], Job | None] = get_current_job,
    worker_name: str | None = None,
) -> str:
    """Lock the run's folder, mark it running, and run `stages`; how it ends is decided in `guarded`.

    A job that runs a chunk of itself in its own process passes `current_job` (no RQ job: the chunk's progress
    must not land in the job's own meta) and its worker's name.
    """
    if not store.job_dir(job_id).exists():
        log.warning("Job %s has no folder (deleted?); nothing to run", job_id)
        return "missing"
    # Wait briefly: a client or a recovering worker holds the lock for milliseconds while (re)queueing.
    with store.try_lock(job_id, wait_s=3.0) as held:
        if not held:
            log.warning("Job %s is running in another process; this duplicate run stops here", job_id)
            return "duplicate"
        status = store.read_status(job_id)
        if status.is_terminal:  # a stale second entry of a job that has ended
            return status.state
        if store.cancel_requested(job_id):
            return end(store, status, "cancelled", cancelled_before_start(status))
        rq_job = current_job()
        # Staging folders of an attempt that died before publishing (this job's lock is held: none is in use).
        for stale in store.job_dir(job_id).glob(".outputs.staging*"):
            shutil.rmtree(stale, ignore_errors=True)
        status = store.update_status(
            job_id,
            state="running",
            stage="Starting",
            message="started",
            # The first attempt's start: a job re-queued after its worker died keeps it (a retry resets it).
            started_at=status.started_at or utc_now(),
            ended_at=None,
            error=None,
            attempts=status.attempts + 1,
            worker=worker_name or (rq_job.worker_name if rq_job else socket.gethostname()),
        )
        store.append_log(job_id, f"started on {status.worker} (attempt {status.attempts})")
        return guarded(store, status, settings, rq_job, stages)


def run_stages(store: JobStore, status: JobStatus, settings: Settings, rq_job: Job | None) -> str:
    """A job's stages: map the area (or reuse what an earlier attempt published), copy to --out, finish. On the
    download queue: fetch its scenes and hand it on to the inference queue."""
    from worker.tasks import run_job  # the heavy imports; already loaded in a worker's parent process

    job_id = status.job_id
    if status.queue == DOWNLOAD_QUEUE:
        return run_download(store, status, settings, rq_job)
    outputs_dir = store.outputs_dir(job_id)
    spec = store.read_spec(job_id)
    published = export.published_outputs(outputs_dir)
    if published is not None:  # an earlier attempt published them; only its copy to --out failed
        store.append_log(job_id, "outputs published by an earlier attempt: copying them, not computing again")
        warnings = report.read_stats(outputs_dir / "stats.json").warnings
    else:
        result = run_job(
            spec,
            outputs_dir,
            settings,
            progress=JobProgress(store, job_id, rq_job),
            should_stop=lambda: store.cancel_requested(job_id),
            job_id=job_id,
        )
        published, warnings = result.outputs, result.warnings
    outputs = [str(p) for p in published]
    copy_to = store.read_info(job_id).get("copy_to")
    if copy_to:
        try:
            copy_outputs(outputs_dir, Path(copy_to))
        except Exception as err:
            sentence = copy_failed_sentence(job_id, outputs_dir, Path(copy_to), err)
            store.append_log(job_id, traceback.format_exc())
            return end(store, status, "failed", sentence, error=sentence, outputs=outputs)
    message = f"Done: {len(outputs)} outputs"
    if warnings:  # an empty or nearly empty map still finishes, but says so
        message += ". Warning: " + " ".join(warnings)
    return end(store, status, "finished", message, outputs=outputs)


def run_download(store: JobStore, status: JobStatus, settings: Settings, rq_job: Job | None) -> str:
    """The download stage: the scenes into the cache, then the job onto the inference queue (queued again, as
    a job that waits for a GPU worker is). Its attempts count from 0 there: each stage has its own."""
    from worker.client import JOB_QUEUE, JobClient
    from worker.tasks import download_stage

    job_id = status.job_id
    ready = download_stage(
        store.read_spec(job_id),
        store.outputs_dir(job_id),
        settings,
        progress=JobProgress(store, job_id, rq_job),
        should_stop=lambda: store.cancel_requested(job_id),
    )
    if store.cancel_requested(job_id):
        return end(store, status, "cancelled", "Cancelled after its download; no outputs were published.")
    message = f"downloaded {ready} scenes; waiting for an inference worker"
    store.update_status(
        job_id, state="queued", queue=JOB_QUEUE, stage="Downloaded", message=message, eta_s=None, attempts=0
    )
    store.append_log(job_id, f"download stage done on {status.worker}: {message}")
    JobClient(settings).enqueue(job_id)  # while this job's lock is held: recovery keeps off until it is queued
    return "queued"


def run_chunk_stages(store: JobStore, status: JobStatus, settings: Settings, rq_job: Job | None) -> str:
    """A chunk pass: the model over the chunk, its rasters left in the job's work folder for the job to mosaic.
    It stops when its job is cancelled, too."""
    from worker.chunked import run_chunk

    job_id = status.job_id
    spec = store.read_request(job_id, ChunkSpec)
    jobs = JobStore(settings.cache_dir / "jobs")

    def should_stop() -> bool:
        return store.cancel_requested(job_id) or (
            spec.job_id is not None and jobs.exists(spec.job_id) and jobs.cancel_requested(spec.job_id)
        )

    run_chunk(spec, settings, progress=JobProgress(store, job_id, rq_job), should_stop=should_stop)
    return end(store, status, "finished", f"Done: {spec.describe()}")


def run_training(store: JobStore, status: JobStatus, settings: Settings, rq_job: Job | None) -> str:
    """A training run: train and install the new version, record its epochs and result, finish."""
    from worker.training import run_queued_training

    job_id = status.job_id
    # One line per epoch as it ends; an attempt that resumes from a checkpoint writes its earlier epochs again.
    epochs_file = store.job_dir(job_id) / "epochs.jsonl"

    def on_epoch(epoch: int, loss: float, val_macro_f1: float) -> None:
        with open(epochs_file, "a") as out:
            out.write(json.dumps({"epoch": epoch, "loss": loss, "val_macro_f1": val_macro_f1}) + "\n")

    result_file = run_queued_training(
        store.read_request(job_id, TrainingSpec),
        store.job_dir(job_id),
        settings,
        progress=JobProgress(store, job_id, rq_job),
        should_stop=lambda: store.cancel_requested(job_id),
        on_epoch=on_epoch,
    )
    summary = json.loads(result_file.read_text())
    message = f"Done: installed {summary['model_id']} version {summary['version']} ({summary['state']})"
    message += f"; validation macro F1 {summary['metrics']['macro_f1']:.3f}"
    if summary.get("parent_metrics"):
        message += f", the parent's {summary['parent_metrics']['macro_f1']:.3f}"
    return end(store, status, "finished", message, outputs=[str(result_file)])


def guarded(store: JobStore, status: JobStatus, settings: Settings, rq_job: Job | None, stages: Stages) -> str:
    """Run `stages`; the one place that decides how a run that raised ends."""
    job_id = status.job_id
    try:
        return stages(store, status, settings, rq_job)
    except JobCancelled:
        return end(store, status, "cancelled", "Cancelled; no outputs were published.")
    except AppError as err:
        return end(store, status, "failed", str(err), error=str(err))
    except JobTimeoutException:
        sentence = (
            f"The job ran longer than its limit of {settings.job_timeout_s} s (TERRASEG_JOB_TIMEOUT_S)."
        )
        return end(store, status, "failed", sentence, error=sentence)
    except TRANSIENT_ERRORS as err:
        store.append_log(job_id, traceback.format_exc())
        if rq_job is not None and rq_job.retries_left:
            wait_s = RETRY_BACKOFF_S[
                min(settings.job_retries - rq_job.retries_left, len(RETRY_BACKOFF_S) - 1)
            ]
            store.update_status(
                job_id, state="queued", message=f"retrying in {wait_s} s after a transient error: {err}"
            )
            store.append_log(job_id, f"transient error; retry in {wait_s} s ({rq_job.retries_left} left)")
            # RQ's Retry schedules the next attempt; this worker is free for other jobs meanwhile.
            raise
        sentence = f"The job failed after {settings.job_retries} retries of a transient error: {err}"
        return end(store, status, "failed", sentence, error=sentence)
    except Exception:
        store.append_log(job_id, traceback.format_exc())
        sentence = "Internal error, see the job's log."
        return end(store, status, "failed", sentence, error=sentence)


def end(store: JobStore, status: JobStatus, state: str, message: str, **fields: Any) -> str:
    """Record the final state (before the job's lock is released, so recovery never sees a stale 'running')."""
    store.update_status(
        status.job_id,
        state=state,
        message=message,
        ended_at=utc_now(),
        eta_s=None,
        fraction=1.0 if state == "finished" else store.read_status(status.job_id).fraction,
        **fields,
    )
    store.append_log(status.job_id, f"{state}: {message}")
    return state


def copy_outputs(source: Path, out_dir: Path) -> None:
    """Publish a copy of a job's outputs in `out_dir` (the CLI's `--out`), atomically like the job's own."""
    staging = export.make_staging_dir(out_dir)
    try:
        for path in source.iterdir():
            shutil.copy2(path, staging / path.name)
        export.publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def copy_failed_sentence(job_id: str, outputs_dir: Path, copy_to: Path, err: Exception) -> str:
    """Why the copy to --out failed, and that a retry copies the published outputs without computing again."""
    folder = diskspace.Folder(copy_to, f"the output folder {copy_to}")
    if diskspace.full_folder(err, [folder]) is not None:
        needed_mb = sum(p.stat().st_size for p in outputs_dir.iterdir()) / 1e6
        free_mb = diskspace.free_mb(copy_to)
        reason = (
            f"no space left (the outputs take {diskspace.format_mb(needed_mb)}, "
            f"{diskspace.format_mb(free_mb)} are free)"
        )
    else:
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return (
        f"Copying the outputs to {copy_to} failed: {reason}. They are published in the job's folder; "
        f"'terraseg retry {job_id}' copies them there without computing again."
    )


def ping() -> float:
    """A job that does nothing but say when it ran: how long RQ takes to start a job (bench/queue_overhead.py)."""
    return time.time()
