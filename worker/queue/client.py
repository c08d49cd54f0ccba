"""The job API that pages and the CLI use: submit, status, list, cancel, retry, delete, logs, recover.

Callers get plain values (core.jobs.store.JobStatus, str, dict); no RQ type leaves this module. A job whose sources
are remote (catalogues, mirrors) starts on the `download` queue: a download worker searches and fetches its
scenes into the cache and hands it on to the `inference` queue, where a (GPU) worker maps it from the cache, so a
GPU never waits on a network. Jobs on local sources, and crop jobs (their composites read scene by scene), go to
`inference` at once. One job folder, one status and one lock follow the job through both queues; its RQ record
on `download` is `<job id>-download`. Training runs (TrainingClient) run on the `training` queue, with folders of
their own under `<cache>/training-runs`.
"""

import contextlib
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import redis
from rq import Queue, Retry, Worker
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer

from core.accounts import Account, NotYourJob
from core.config import Settings, get_settings
from core.errors import AppError, SpecError
from core.jobs.diskspace import DiskFull, format_mb, free_mb, is_no_space
from core.jobs.request import ChunkSpec, JobSpec, TrainingSpec, public_source
from core.jobs.store import JobInfo, JobStatus, JobStore, UnknownJob, file_lock, new_job_id, utc_now
from core.mapping.presto_inputs import PRESTO_BUILDER
from models.catalogue import catalogue

log = logging.getLogger(__name__)

QUEUES = ("download", "inference", "training")
JOB_QUEUE = "inference"
DOWNLOAD_QUEUE = "download"
ENTRY_POINT = "worker.entry.execute_job"
TRAINING_QUEUE = "training"
TRAINING_ENTRY_POINT = "worker.entry.execute_training"
CHUNK_ENTRY_POINT = "worker.entry.execute_chunk"
# Jobs in Redis are JSON (a job id and plain values), never pickles, and workers run no function but these: a
# process that can write to Redis cannot make a worker run code of its choosing.
ENTRY_POINTS = frozenset({ENTRY_POINT, TRAINING_ENTRY_POINT, CHUNK_ENTRY_POINT, "worker.entry.ping"})
LIVE_RQ_STATES = ("queued", "started", "deferred", "scheduled")
# A job RQ reports as started but whose lock nobody holds gets this long to take it before it counts as dead.
START_GRACE_S = 10.0
# What one recovery look at a job did: re-queued it, left it (running, queued in RQ, ended), or found Redis down.
RecoveryOutcome = Literal["requeued", "left", "redis unreachable"]
# Waits before the 1st, 2nd, 3rd and later retries of a transient error. RQ's scheduler (run by every worker;
# one at a time holds its lock) puts the job back on its queue then; meanwhile the worker takes other jobs.
RETRY_BACKOFF_S = (5, 30, 120)
REDIS_RETRY_AFTER_S = 5.0


class JobError(AppError):
    """A job operation that cannot be done in the job's present state."""


class RefusedEntryPoint(Exception):
    """A job in Redis names a function that is not a TerraSeg entry point."""


class SafeJob(Job):
    """An RQ job that is read as JSON and whose function must be one of ENTRY_POINTS (checked before RQ
    imports anything the job names)."""

    serializer = JSONSerializer

    @property
    def func(self) -> Any:
        if self.func_name not in ENTRY_POINTS:
            raise RefusedEntryPoint(f"refused: {self.func_name!r} is not a TerraSeg entry point")
        return super().func


def fetch_job(job_id: str, connection: redis.Redis) -> SafeJob:
    """The RQ record of a job, read as JSON."""
    return cast(SafeJob, SafeJob.fetch(job_id, connection=connection, serializer=JSONSerializer))


def drop_rq_record(job_id: str, connection: redis.Redis) -> None:
    """Delete RQ's record of a job, if it has one (before queueing the job again, or with the job).

    A worker that has just ended the job may still be writing its execution record while it goes: RQ then finds a
    half-written execution (KeyError, ValueError). The job's own hash is deleted all the same, and queueing it
    again writes a new one, so those are not errors here.
    """
    with contextlib.suppress(NoSuchJobError):
        job = fetch_job(job_id, connection)
        try:
            job.delete()
        except (KeyError, ValueError) as err:
            log.info("RQ record of job %s deleted over a half-written execution (%r)", job_id, err)
            connection.delete(job.key, job.dependents_key, job.dependencies_key)


def rq_id(job_id: str, queue: str) -> str:
    """RQ's id of a job's run on `queue`: the download stage's record is separate from the inference one, so
    the download worker can queue the next stage while RQ still records its own."""
    return f"{job_id}-{DOWNLOAD_QUEUE}" if queue == DOWNLOAD_QUEUE else job_id


def first_queue(spec: JobSpec, builder: str) -> str:
    """Where a job starts: `download` when its sources are remote, else `inference` (see the module docstring)."""
    from core.sources import is_remote_source  # rasterio, requests: kept off the app's sign-in screen

    remote = any(is_remote_source(name) for name in spec.sources)
    return DOWNLOAD_QUEUE if remote and builder != PRESTO_BUILDER else JOB_QUEUE


def job_queue(name: str, connection: redis.Redis) -> Queue:
    """An RQ queue whose jobs are JSON SafeJobs."""
    return Queue(name, connection=connection, job_class=SafeJob, serializer=JSONSerializer)


def redacted(url: str) -> str:
    """A Redis URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


@dataclass(frozen=True)
class Health:
    """What the app's sidebar shows."""

    redis_ok: bool
    workers: int
    queued: int
    running: int
    message: str


class JobClient:
    """Submits and inspects jobs; the job folders under `<cache>/jobs` are the truth, Redis the live view."""

    queue_name = JOB_QUEUE
    entry_point = ENTRY_POINT
    folder_name = "jobs"

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.store = JobStore(self.settings.cache_dir / self.folder_name)
        self.redis = redis.Redis.from_url(
            self.settings.redis_url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=10
        )
        self._first_seen_dead: dict[str, float] = {}
        # After a failed connection, reads skip Redis for a few seconds: a page listing many running jobs
        # would otherwise wait for one connect timeout per job while Redis is down.
        self._redis_down_until = 0.0

    # -- submitting ---------------------------------------------------------------------------------------
    def submit(
        self, spec: JobSpec, copy_to: Path | None = None, owner: str | None = None, name: str = ""
    ) -> str:
        """Queue a job and return its id. An identical finished request is answered at once with its outputs (a
        new job of `owner`'s); an identical queued or running one of the same owner (with the same `copy_to`) is
        the answer itself: its id is returned. `owner`: the web app account (None: the command line); `name`:
        what the owner calls the job."""
        card = catalogue(self.settings.cache_dir).get(spec.model_id)
        spec_hash = spec.spec_hash(card.version)
        job_id = new_job_id()
        info = JobInfo(
            spec_hash=spec_hash,
            queue=first_queue(spec, card.builder),
            submitted_at=utc_now(),
            copy_to=str(copy_to) if copy_to else None,
            owner=owner,
            name=name.strip()[:80],
            task=spec.task,
            summary=job_summary(spec),
        )
        # One submission at a time (it takes milliseconds), so two identical requests in the same second cannot
        # both miss each other and compute the same thing twice.
        with self._submission_lock():
            previous = self.store.find_finished(spec_hash)
            if previous is not None:
                return self._reuse(job_id, spec, info, previous)
            active = self.store.find_active(spec_hash)
            if (
                active is not None
                and active.owner == owner
                and self.store.read_info(active.job_id).copy_to == info.copy_to
            ):
                self.store.append_log(
                    active.job_id, "an identical request was submitted: answered with this job"
                )
                return active.job_id
            with self._new_job_folder(job_id):  # recovery keeps off until it is on the queue
                self.store.create(job_id, spec, info)
                self.enqueue(job_id)
        return job_id

    @contextlib.contextmanager
    def _submission_lock(self) -> Iterator[None]:
        """Hold the store's submission lock; a full cache disk met on the way is one sentence (DiskFull)."""
        try:
            self.store.root.mkdir(parents=True, exist_ok=True)
            with file_lock(self.store.root / ".submit.lock", wait_s=30.0):
                yield
        except OSError as err:
            if not is_no_space(err):
                raise
            raise DiskFull(self._no_space_sentence()) from err

    @contextlib.contextmanager
    def _new_job_folder(self, job_id: str) -> Iterator[None]:
        """Make the job's folder and hold its lock while it is filled. A submission that fails half-way (a full
        cache disk) removes what it made: a folder without a status would be read by every later lookup."""
        folder = self.store.job_dir(job_id)
        try:
            folder.mkdir()
            with self.store.try_lock(job_id):
                yield
        except BaseException as err:
            shutil.rmtree(folder, ignore_errors=True)
            if isinstance(err, Exception) and is_no_space(err):
                raise DiskFull(self._no_space_sentence()) from err
            raise

    def _no_space_sentence(self) -> str:
        free = free_mb(self.settings.cache_dir)
        return (
            f"The job could not be saved: no space left in the cache folder (TERRASEG_CACHE_DIR), "
            f"{format_mb(free)} free. Free space there, then submit it again; nothing was queued."
        )

    def _reuse(self, job_id: str, spec: JobSpec, info: JobInfo, previous: JobStatus) -> str:
        """Answer with the outputs of an identical finished job (hard links: no copy, no shared deletion)."""
        with self._new_job_folder(job_id):
            self._link_outputs(job_id, spec, info, previous)
        return job_id

    def _link_outputs(self, job_id: str, spec: JobSpec, info: JobInfo, previous: JobStatus) -> None:
        from core.outputs.export import copy_outputs  # rasterio and PIL: kept out of the CLI's light verbs

        self.store.create(job_id, spec, info.model_copy(update={"reused_from": previous.job_id}))
        outputs = self.store.link_outputs(previous.job_id, job_id)
        target = self.store.outputs_dir(job_id)
        if info.copy_to:
            copy_outputs(target, Path(info.copy_to))
        # Another user's job is not named to this one: its id would let them ask for it.
        own = previous.owner == info.owner
        message = (
            f"Identical to finished job {previous.job_id}; its outputs were reused at once."
            if own
            else "Reused the identical outputs of an earlier finished job at once; nothing was computed again."
        )
        self.store.update_status(
            job_id,
            state="finished",
            stage="Done",
            fraction=1.0,
            message=message,
            started_at=utc_now(),
            ended_at=utc_now(),
            outputs=outputs,
            reused_from=previous.job_id if own else "",  # "": reused, from a job not this owner's
        )
        self.store.append_log(job_id, message)

    def queue_of(self, job_id: str) -> str:
        """The queue the job's current or next run is on."""
        return self.store.read_status(job_id).queue or self.queue_name

    def _rq_id(self, status: JobStatus) -> str:
        """RQ's id of the job's current or next run (from a status just read: no second read)."""
        return rq_id(status.job_id, status.queue or self.queue_name)

    def enqueue(self, job_id: str) -> bool:
        """Put the job on the queue its status names (replacing any stale RQ record); False when Redis is
        unreachable (recovery queues it when Redis is back). The caller holds the job's lock."""
        queue = self.queue_of(job_id)
        try:
            drop_rq_record(rq_id(job_id, queue), self.redis)
            job_queue(queue, self.redis).enqueue(
                self.entry_point,
                job_id,
                job_id=rq_id(job_id, queue),
                job_timeout=self.settings.job_timeout_s,
                result_ttl=24 * 3600,
                failure_ttl=7 * 24 * 3600,
                retry=Retry(max=self.settings.job_retries, interval=list(RETRY_BACKOFF_S))
                if self.settings.job_retries
                else None,
                description=f"TerraSeg job {job_id}",
            )
            return True
        except redis.exceptions.RedisError as err:
            self.store.update_status(
                job_id, message="saved; Redis is unreachable, a worker queues it when Redis is back"
            )
            self.store.append_log(job_id, f"could not queue: Redis unreachable ({err})")
            return False

    # -- reading ------------------------------------------------------------------------------------------
    def status(self, job_id: str) -> JobStatus:
        """The job's status: the disk state, with live progress from Redis while it runs."""
        status = self.store.read_status(job_id)
        if status.is_terminal:
            return status
        try:
            self.check_request(job_id)
        except SpecError as err:
            status.state, status.error, status.message = "failed", str(err), str(err)
            return status
        if status.state == "running" and self.store.is_unlocked(job_id):
            # Nobody holds a running job's lock: its worker died. Recover it now, so whoever looks sees it queued
            # again ("re-queued: its worker stopped") at once, not "running" until a worker's next recovery pass
            # (or for as long as no worker runs).
            with contextlib.suppress(UnknownJob, OSError):
                self._recover_one(job_id)
            status = self.store.read_status(job_id)
        if status.state == "running":
            meta = self._live_meta(status)
            for name in ("stage", "fraction", "message", "eta_s"):
                if name in meta:
                    setattr(status, name, meta[name])
        return status

    def _live_meta(self, status: JobStatus) -> dict[str, Any]:
        if time.monotonic() < self._redis_down_until:
            return {}
        try:
            return fetch_job(self._rq_id(status), self.redis).get_meta(refresh=True)
        except NoSuchJobError:
            return {}
        except redis.exceptions.RedisError:
            self._redis_down_until = time.monotonic() + REDIS_RETRY_AFTER_S
            return {}

    def list_jobs(self, account: Account | None = None) -> list[JobStatus]:
        """Every job on disk, newest first (finished ones too, whatever Redis remembers); with `account`, only
        those it may see (its own; an admin's: all)."""
        statuses = []
        for job_id in reversed(self.store.in_submission_order()):  # ids alone order jobs only to the second
            try:
                if account is None or account.may_touch(self.store.read_status(job_id).owner):
                    statuses.append(self.status(job_id))
            except UnknownJob:  # a folder being created or deleted right now
                continue
        return statuses

    def check_access(self, job_id: str, account: Account | None) -> None:
        """NotYourJob unless `account` may touch the job (None: the command line, the operator, may)."""
        if account is not None and not account.may_touch(self.store.read_status(job_id).owner):
            raise NotYourJob(f"Job {job_id} is not one of yours.")

    def check_request(self, job_id: str) -> None:
        """SpecError when the job's request file is damaged or too old to run."""
        self.store.read_spec(job_id)

    def spec(self, job_id: str) -> JobSpec:
        """The job's request as submitted (SpecError when its file is damaged)."""
        return self.store.read_spec(job_id)

    def logs(self, job_id: str, account: Account | None = None) -> str:
        """The job's log text."""
        self.check_access(job_id, account)
        return self.store.read_log(job_id)

    def health(self) -> Health:
        """Redis reachability, live workers, jobs queued and running (for the app's sidebar)."""
        statuses = [s.state for s in self.list_jobs()]
        queued, running = statuses.count("queued"), statuses.count("running")
        try:
            workers = len(Worker.all(connection=self.redis))
            self._redis_down_until = 0.0
        except redis.exceptions.RedisError:
            self._redis_down_until = time.monotonic() + REDIS_RETRY_AFTER_S
            where = redacted(self.settings.redis_url)
            return Health(False, 0, queued, running, f"Redis at {where} is unreachable.")
        message = "ok" if workers else "No worker is running: start one with `terraseg worker`."
        return Health(True, workers, queued, running, message)

    def live_workers(self, hostname: str) -> list[str]:
        """The names of the live workers (beat within ALIVE_S) that run on `hostname`."""
        return sorted(w.name for w in Worker.all(connection=self.redis) if w.hostname == hostname)

    # -- changing -----------------------------------------------------------------------------------------
    def cancel(self, job_id: str, account: Account | None = None) -> JobStatus:
        """Ask a job to stop. A queued job is cancelled at once; a running one within about 2 s. A finished job
        cannot be cancelled (its outputs are published): JobError says so."""
        self.check_access(job_id, account)
        status = self.store.read_status(job_id)
        if status.state == "finished":
            raise JobError(
                f"Job {job_id} has already finished; its outputs are published, nothing to cancel."
            )
        if status.is_terminal:
            return status
        self.store.request_cancel(job_id)
        self.store.append_log(job_id, "cancel requested")
        with self.store.try_lock(job_id) as held:
            if held:  # no worker runs it: take it off the queue and end it here
                status = self.store.read_status(job_id)
                if not status.is_terminal:
                    # InvalidJobOperation: RQ had cancelled it already (a second cancel), which is fine.
                    with contextlib.suppress(
                        NoSuchJobError, InvalidJobOperation, redis.exceptions.RedisError
                    ):
                        fetch_job(self._rq_id(status), self.redis).cancel()
                    message = cancelled_before_start(status)
                    status = self.store.update_status(
                        job_id, state="cancelled", message=message, ended_at=utc_now()
                    )
                    self.store.append_log(job_id, f"cancelled: {message}")
        return self.store.read_status(job_id)

    def retry(self, job_id: str, account: Account | None = None) -> JobStatus:
        """Queue a failed or cancelled job again; its cached work (finished dates, strips) is reused."""
        self.check_access(job_id, account)
        # A job that has just ended may still hold its lock for a moment.
        with self.store.try_lock(job_id, wait_s=5.0) as held:
            status = self.store.read_status(job_id)
            if not held or status.state not in ("failed", "cancelled"):
                raise JobError(
                    f"Job {job_id} is {status.state}; only failed or cancelled jobs can be retried."
                )
            self.check_request(job_id)  # a damaged request cannot be retried; say so now
            self.store.clear_cancel(job_id)
            self.store.update_status(
                job_id,
                # From the first stage again: a download worker checks the cache (what was fetched is reused).
                queue=self.store.read_info(job_id).queue,
                state="queued",
                stage="",
                fraction=0.0,
                message="retry: waiting for a worker",
                error=None,
                started_at=None,  # this run's start, set when a worker takes it
                ended_at=None,
                eta_s=None,
            )
            self.store.append_log(job_id, "retry requested")
            self.enqueue(job_id)
        return self.store.read_status(job_id)

    def delete(self, job_id: str, account: Account | None = None) -> None:
        """Remove a job that has ended, with its outputs and log."""
        self.check_access(job_id, account)
        with self.store.try_lock(
            job_id, wait_s=5.0 if self.store.read_status(job_id).is_terminal else 0
        ) as held:
            status = self.store.read_status(job_id)
            if not held or not status.is_terminal:
                raise JobError(f"Job {job_id} is {status.state}; cancel it before deleting it.")
            with contextlib.suppress(redis.exceptions.RedisError):
                for queue in QUEUES:
                    drop_rq_record(rq_id(job_id, queue), self.redis)
            shutil.rmtree(self.store.job_dir(job_id))

    # -- recovery -----------------------------------------------------------------------------------------
    def recover(self) -> list[str]:
        """Re-queue jobs whose worker died or that Redis lost; returns their ids.

        A job is left alone while a process holds its lock (it is running, or being queued). Without the
        lock, a 'running' job is dead; a 'queued' one is fine only if RQ still has it.
        """
        requeued = []
        for job_id in self.store.in_submission_order():  # re-queued jobs keep their submission order
            try:
                outcome = self._recover_one(job_id)
            except (UnknownJob, OSError) as err:
                log.warning("Recovery skipped job %s: %s", job_id, err)
                continue
            if outcome == "requeued":
                requeued.append(job_id)
            elif outcome == "redis unreachable":
                # End the pass: a later job re-queued while Redis fails now and then (a pooled connection
                # that died with a restarted Redis fails once) would run before this one.
                break
        return requeued

    def _recover_one(self, job_id: str) -> RecoveryOutcome:
        if self.store.read_status(job_id).is_terminal:
            return "left"
        with self.store.try_lock(job_id) as held:
            if not held:
                self._first_seen_dead.pop(job_id, None)
                return "left"
            status = self.store.read_status(job_id)  # again, now that nobody can change it
            if status.is_terminal:
                return "left"
            rq_state = self._rq_state(status)
            if rq_state == "unreachable":
                return "redis unreachable"
            if rq_state in ("queued", "deferred", "scheduled"):
                return "left"  # RQ will run it (RQ's own retry of a killed work horse lands here too)
            if rq_state == "started" and status.state != "running":
                # Started by RQ but nobody holds the lock: the horse is starting, or it died. (A job marked
                # running took the lock before it said so and keeps it until it has said how it ended: without
                # the lock it is dead, no grace needed.)
                first = self._first_seen_dead.setdefault(job_id, time.monotonic())
                if time.monotonic() - first < START_GRACE_S:
                    return "left"
            if status.state == "running":
                reason = "its worker stopped"
            else:
                reason = "Redis lost it" if rq_state is None else f"RQ has it as {rq_state}"
            self._first_seen_dead.pop(job_id, None)
            if status.attempts >= self.settings.job_max_attempts:
                sentence = (
                    f"The job was interrupted {status.attempts} times ({reason}); not trying again. "
                    "See the log, then retry it."
                )
                self.store.update_status(
                    job_id, state="failed", error=sentence, message=sentence, ended_at=utc_now()
                )
                self.store.append_log(job_id, f"failed: {sentence}")
                return "left"
            self.store.update_status(job_id, state="queued", message=f"re-queued: {reason}", eta_s=None)
            self.store.append_log(job_id, f"re-queued by recovery: {reason}")
            return "requeued" if self.enqueue(job_id) else "redis unreachable"

    def _rq_state(self, status: JobStatus) -> str | None:
        """RQ's status of the job, None when Redis does not know it, 'unreachable' when Redis is down."""
        try:
            job = fetch_job(self._rq_id(status), self.redis)
            state = job.get_status(refresh=True)
            return str(state.value) if state is not None else None
        except NoSuchJobError:
            return None
        except redis.exceptions.RedisError:
            return "unreachable"


class TrainingClient(JobClient):
    """Training runs on the `training` queue: the same folders, states, progress, cancel, retry and recovery as
    jobs, under `<cache>/training-runs`. A run's folder also holds its labels and `epochs.jsonl` (one line per
    epoch: loss and validation macro F1), and, when it has finished, `outputs/training.json`."""

    queue_name = TRAINING_QUEUE
    entry_point = TRAINING_ENTRY_POINT
    folder_name = "training-runs"

    def check_request(self, job_id: str) -> None:
        self.store.read_request(job_id, TrainingSpec)

    def training_spec(self, job_id: str) -> TrainingSpec:
        """The run's request as submitted (SpecError when its file is damaged)."""
        return self.store.read_request(job_id, TrainingSpec)

    def submit_training(self, spec: TrainingSpec, files: dict[str, Path]) -> str:
        """Queue a checked training run whose data files are `files` (name in the run's folder -> the file to copy
        there); returns the run's id. An identical queued or running run is the answer itself."""
        digest = hashlib.sha256(spec.model_dump_json(exclude={"by"}).encode())
        for name, path in sorted(files.items()):
            digest.update(name.encode() + hashlib.sha256(path.read_bytes()).digest())
        spec_hash = digest.hexdigest()
        job_id = new_job_id()
        info = JobInfo(kind="training", spec_hash=spec_hash, queue=self.queue_name, submitted_at=utc_now())
        with self._submission_lock():
            active = self.store.find_active(spec_hash)
            if active is not None:
                self.store.append_log(active.job_id, "an identical run was submitted: answered with this run")
                return active.job_id
            folder = self.store.job_dir(job_id)
            with self._new_job_folder(job_id):
                for name, path in files.items():
                    shutil.copyfile(path, folder / Path(name).name)
                self.store.create(job_id, spec, info)
                self.enqueue(job_id)
        return job_id

    def epochs(self, job_id: str) -> list[dict[str, float]]:
        """The run's epochs so far, in order: {"epoch", "loss", "val_macro_f1"} each (an epoch written again by a
        later attempt counts once, as last written)."""
        path = self.store.job_dir(job_id) / "epochs.jsonl"
        rows: dict[int, dict[str, float]] = {}
        with contextlib.suppress(FileNotFoundError):
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError, KeyError, TypeError):  # a line being written right now
                    row = json.loads(line)
                    rows[int(row["epoch"])] = row
        return [rows[epoch] for epoch in sorted(rows)]

    def result(self, job_id: str) -> dict[str, Any] | None:
        """What a finished run installed and how it scored (outputs/training.json), None before."""
        path = self.store.outputs_dir(job_id) / "training.json"
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return document if isinstance(document, dict) else None


class ChunkClient(JobClient):
    """Chunk passes of large jobs (worker/pipelines/chunked.py) on the `inference` queue, under
    `<cache>/chunk-jobs`: the same states, locks and recovery as jobs. Users never see them: their job shows
    their progress, and cancels, retries and deletes them."""

    entry_point = CHUNK_ENTRY_POINT
    folder_name = "chunk-jobs"

    def check_request(self, job_id: str) -> None:
        self.store.read_request(job_id, ChunkSpec)

    def chunk_spec(self, job_id: str) -> ChunkSpec:
        return self.store.read_request(job_id, ChunkSpec)

    def submit_chunk(self, spec: ChunkSpec) -> str:
        """Queue one chunk pass; returns its id."""
        job_id = new_job_id()
        info = JobInfo(kind="chunk", queue=self.queue_name, submitted_at=utc_now(), summary=spec.describe())
        self.store.root.mkdir(parents=True, exist_ok=True)
        with self._new_job_folder(job_id):
            self.store.create(job_id, spec, info)
            self.enqueue(job_id)
        return job_id


def job_summary(spec: JobSpec) -> str:
    """What a job computes, in one line for job lists: task, model, dates (and the date chosen to map), area and
    sources (a folder by its own name: job cards are shown to users, who need not see the server's paths)."""
    chosen = f" (date {spec.selected_date})" if spec.selected_date else ""
    return (
        f"{spec.task} · {spec.model_id} · {spec.start}..{spec.end}{chosen} · "
        f"{spec.aoi.to_aoi().area_km2:,.2f} km² · " + ", ".join(public_source(s) for s in spec.sources)
    )


def cancelled_before_start(status: JobStatus) -> str:
    """What a job cancelled while no process ran it says: before it started, or between two of its attempts."""
    if status.attempts == 0:
        return "Cancelled before it started."
    return "Cancelled while waiting for its next attempt; no outputs were published."


def job_client() -> JobClient:
    """A client with the process's settings."""
    return JobClient(get_settings())
