"""How a queued run is executed: lock its folder, run its stages, record how it ended.

The run's folder (core.jobs.store) is the truth; Redis only carries live progress (`job.meta`). An expected
failure ends the run as "failed" with its sentence, an unexpected one as "internal error, see log", a transient
one (Redis or network) goes back to RQ's Retry with backoff while retries are left. Which stages a kind of run
has is the entry table's business (worker.entry).
"""

import logging
import shutil
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any, TypedDict, Unpack

import redis
from rq import get_current_job
from rq.job import Job
from rq.timeouts import JobTimeoutException

from core.config import Settings
from core.errors import AppError, JobCancelled
from core.jobs.store import JobStatus, JobStore, StatusChanges, utc_now
from worker.queue.client import RETRY_BACKOFF_S, cancelled_before_start

log = logging.getLogger(__name__)


class EndFields(TypedDict, total=False):
    """What a run's end may record besides its state and message."""

    error: str | None
    outputs: list[str]


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
        live: StatusChanges = {
            "stage": stage,
            "fraction": round(fraction, 4),
            "message": message,
            "eta_s": eta_s,
        }
        if now - self.last_meta >= META_INTERVAL_S or fraction >= 1.0:
            self.last_meta = now
            self._publish_meta({**live, "updated_at": utc_now()})
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


# The part of a run that differs between jobs and training runs: it ends the run with `end` and returns the state.
Stages = Callable[[JobStore, JobStatus, Settings, Job | None], str]


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


def guarded(
    store: JobStore, status: JobStatus, settings: Settings, rq_job: Job | None, stages: Stages
) -> str:
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


def end(store: JobStore, status: JobStatus, state: str, message: str, **fields: Unpack[EndFields]) -> str:
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
