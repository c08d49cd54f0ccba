"""`terraseg worker`: an RQ worker that survives Redis restarts and re-queues abandoned jobs.

By default each job runs in a forked work horse (RQ's default), which dies with its worker
(PR_SET_PDEATHSIG), so a killed worker never leaves a job running unwatched, and whatever a job leaks dies with
its horse. With `--no-fork` (`TERRASEG_WORKER_FORK=false`) jobs run in the worker process itself (RQ's
SimpleWorker): each job then finds the process warm (model files hashed, onnxruntime and torch initialised,
memory allocated), which saves a few hundred milliseconds per job, at the price of that isolation; a job's
crash takes the worker down and recovery re-queues the job as for a killed worker.

A recovery thread scans the job folders every `TERRASEG_RECOVER_INTERVAL_S` seconds and re-queues jobs whose
worker died or that Redis lost. It tells a running job by the flock its process holds on the job's folder,
which works the same whichever process runs the job.
"""

import contextlib
import ctypes
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from typing import cast

import rasterio
import redis
from rasterio.windows import Window
from redis.client import Pipeline
from rq import Queue, SimpleWorker, Worker, worker_registration
from rq.job import Job
from rq.serializers import JSONSerializer

from core.config import Settings
from core.errors import AppError
from core.geometry.aoi import read_aoi
from core.geometry.grid import grid_for_aoi
from core.sources import SAMPLE_DIR
from models.weights import sha256_of
from worker.queue.client import QUEUES, ChunkClient, JobClient, SafeJob, TrainingClient, redacted

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
# A worker beats every HEARTBEAT_S (waiting for a job: its dequeue timeout; running one: the job monitoring
# interval) and counts as alive for ALIVE_S after its last beat: a killed worker leaves the health count after
# two beats (RQ's own default keeps it for 7 minutes).
HEARTBEAT_S = 5
ALIVE_S = 2 * HEARTBEAT_S + 2


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op where prctl is missing)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Liveness:
    """Heartbeats that say within seconds when a worker died, and that put the worker back in Redis when Redis
    lost it (restarted empty): RQ's heartbeat only extends a key, which other writes may have re-created without
    the worker being listed again, and RQ restarts a scheduler that died with Redis only every 10 minutes."""

    # A worker that runs its job in its own process cannot beat meanwhile: the long TTL RQ gives it for the
    # job is kept (a killed --no-fork worker then counts as alive until its job's timeout).
    keeps_job_ttl = False
    # An idle worker retries a lost Redis at most a heartbeat apart (RQ's default backs off to 60 s), so it is
    # back in the health count within a beat of Redis returning.
    max_connection_wait_time = float(HEARTBEAT_S)

    def register_birth(self) -> None:
        super().register_birth()  # type: ignore[misc]
        # RQ gives a new record worker_ttl + 60 s: a worker killed before its first beat (its scheduler still
        # starting on a loaded machine) would count as alive for 80 s.
        rq_self = cast(Worker, self)
        rq_self.connection.expire(rq_self.key, ALIVE_S)

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        rq_self = cast(Worker, self)
        if not rq_self.connection.sismember(worker_registration.REDIS_WORKER_KEYS, rq_self.key):
            rq_self.log.warning("Worker %s: Redis lost this worker's record; registering again", rq_self.name)
            rq_self.connection.delete(rq_self.key)  # a partial record (working time only) blocks registering
            rq_self.register_birth()
        scheduler = rq_self.scheduler
        in_worker = os.getpid() == rq_self.pid  # the work horse beats too; only the worker owns the scheduler
        if (
            in_worker
            and scheduler is not None
            and (not scheduler._process or not scheduler._process.is_alive())
        ):
            scheduler.acquire_locks(auto_start=True)  # one worker at a time holds a queue's scheduler lock
        ttl = timeout if self.keeps_job_ttl and timeout else ALIVE_S
        super().heartbeat(ttl, pipeline=pipeline)  # type: ignore[misc]


class TerraSegWorker(Liveness, Worker):
    """RQ's forking worker, made to ride out a Redis outage while a job runs."""

    stop_asked = False  # set by SIGINT/SIGTERM: `serve` must not start a new worker then

    def request_stop(self, signum: int, frame: object) -> None:
        self.stop_asked = True
        super().request_stop(signum, frame)

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        parent = os.getppid()
        die_with_parent()
        if os.getppid() != parent:  # the worker died between fork and prctl
            os._exit(1)
        super().main_work_horse(job, queue)

    def maintain_heartbeats(self, job: Job) -> None:
        # The job keeps running (its progress goes to disk) while Redis is away; heartbeats resume after.
        try:
            super().maintain_heartbeats(job)
        except redis.exceptions.RedisError as err:
            self.log.warning("Heartbeat skipped, Redis unreachable: %s", err)

    def set_current_job_working_time(
        self, current_job_working_time: float, pipeline: Pipeline | None = None
    ) -> None:
        try:
            super().set_current_job_working_time(current_job_working_time, pipeline=pipeline)
        except redis.exceptions.RedisError as err:
            self.log.warning("Working time not recorded, Redis unreachable: %s", err)


class SafeQueue(Queue):
    """The queues a worker listens on hand out SafeJobs."""

    job_class = SafeJob


class InProcessWorker(Liveness, SimpleWorker):
    """RQ's non-forking worker (`terraseg worker --no-fork`): jobs run in this process, one at a time."""

    keeps_job_ttl = True

    stop_asked = False

    def request_stop(self, signum: int, frame: object) -> None:
        self.stop_asked = True
        super().request_stop(signum, frame)


def warm_up() -> None:
    """Do once in the worker what every job would otherwise pay for again in its fresh work horse: GDAL's
    driver registration and PROJ's database (a few hundred ms together), by reading the embedded sample, and
    the sha256 of the cloud model's weights (0.1 s a job)."""
    try:
        with rasterio.open(next(SAMPLE_DIR.glob("*.tif"))) as dataset:
            dataset.read(1, window=Window(0, 0, 1, 1))

        geometries, _ = read_aoi(SAMPLE_DIR / "aoi.geojson")
        grid_for_aoi(geometries[0])
        # Every job that is not a plain cloud job runs the csmask cloud model too; hash its files once here
        # (the sums are remembered, and forked work horses inherit them).
        from models.csmask_model import PACKAGE_DIR  # onnxruntime: not in the CLI's light verbs

        for onnx_file in PACKAGE_DIR.glob("*.onnx"):
            sha256_of(onnx_file)
    except (OSError, StopIteration, rasterio.errors.RasterioError) as err:  # only an optimisation
        log.warning("Warm-up skipped: %s", err)


def recovery_loop(clients: Sequence[JobClient], stop: threading.Event) -> None:
    """Re-queue abandoned or lost jobs and training runs until `stop` is set (a thread in the worker's main
    process; every worker recovers every kind, whichever queues it serves)."""
    while not stop.is_set():
        for client in clients:
            try:
                for job_id in client.recover():
                    log.warning("Re-queued %s %s", client.folder_name, job_id)
            except Exception:  # recovery must never take the worker down
                log.exception("Recovery pass failed")
        stop.wait(clients[0].settings.recover_interval_s)


def serve(
    settings: Settings, queues: Sequence[str] = QUEUES, burst: bool = False, fork: bool | None = None
) -> int:
    """Run a worker on `queues` until stopped (SIGINT/SIGTERM); restart it when Redis drops away.

    `fork` (default: `TERRASEG_WORKER_FORK`): run each job in a forked work horse, or in this process.
    """
    fork = settings.worker_fork if fork is None else fork
    # Import torch, GDAL and the model runtimes once here, so each forked work horse starts warm.
    import models.csmask_model  # noqa: F401
    import models.s2cloudless_model  # noqa: F401
    import worker.entry  # noqa: F401  (the entry table: every pipeline a horse may run)

    warm_up()
    # Objects loaded so far live on in every forked horse; keep the collector from touching (and so
    # copying) their pages in each horse.
    gc.collect()
    gc.freeze()
    unknown = [q for q in queues if q not in QUEUES]
    if unknown:
        raise AppError(f"Unknown queue(s) {', '.join(unknown)}; the queues are {', '.join(QUEUES)}.")
    clients = (JobClient(settings), TrainingClient(settings), ChunkClient(settings))
    stop = threading.Event()
    threading.Thread(target=recovery_loop, args=(clients, stop), daemon=True, name="terraseg-recover").start()
    connection = redis.Redis.from_url(settings.redis_url)
    # JSON jobs, and only TerraSeg's entry points (worker.queue.client.SafeJob): Redis is no way to run code here.
    wait_s = 1.0
    try:
        while True:
            try:
                rq_worker: TerraSegWorker | InProcessWorker = (
                    TerraSegWorker(
                        list(queues),
                        connection=connection,
                        job_monitoring_interval=HEARTBEAT_S,
                        worker_ttl=HEARTBEAT_S + 15,  # RQ waits worker_ttl - 15 s for a job between beats
                        job_class=SafeJob,
                        queue_class=SafeQueue,
                        serializer=JSONSerializer,
                    )
                    if fork
                    else InProcessWorker(
                        list(queues),
                        connection=connection,
                        job_monitoring_interval=HEARTBEAT_S,
                        worker_ttl=HEARTBEAT_S + 15,
                        job_class=SafeJob,
                        queue_class=SafeQueue,
                        serializer=JSONSerializer,
                    )
                )
                # The scheduler puts jobs waiting for a retry back on their queue when their time comes. (Its
                # process is forked from this one: core.jobs.store.file_lock keeps it from holding job locks.)
                rq_worker.work(burst=burst, logging_level="INFO", with_scheduler=True)
                if burst or rq_worker.stop_asked:
                    return 0
                log.warning("The RQ worker stopped (Redis lost?); starting again")
                wait_s = 1.0
            except redis.exceptions.RedisError as err:
                log.warning(
                    "Redis at %s unreachable (%s); trying again in %.0f s",
                    redacted(settings.redis_url),
                    err,
                    wait_s,
                )
                time.sleep(wait_s)
                # At most a heartbeat apart: the worker is back in the health count within one beat of Redis.
                wait_s = min(wait_s * 2, HEARTBEAT_S)
    finally:
        stop.set()
