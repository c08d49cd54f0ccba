"""The entry table: the functions RQ runs (their names are in worker.queue.client's ENTRY_POINTS), each the
runner (worker.queue.runner) with the stages of one kind of run from worker.pipelines. The one module where the
queue meets the pipelines.
"""

import json
import logging
import time
import traceback
from pathlib import Path

from rq.job import Job

from core.config import Settings, get_settings
from core.jobs import report
from core.jobs.request import ChunkSpec, TrainingSpec
from core.jobs.store import JobStatus, JobStore
from core.outputs import export
from worker.pipelines.chunked import run_chunk
from worker.pipelines.map_job import download_stage, run_job
from worker.pipelines.training import run_queued_training
from worker.queue.client import DOWNLOAD_QUEUE, JOB_QUEUE, JobClient
from worker.queue.runner import JobProgress, end, execute

log = logging.getLogger(__name__)


def execute_job(job_id: str) -> str:
    """RQ entry point: run job `job_id` from its folder; returns the state it ended in."""
    settings = get_settings()
    return execute(JobStore(settings.cache_dir / "jobs"), job_id, settings, job_stages)


def execute_training(job_id: str) -> str:
    """RQ entry point of the `training` queue: run training run `job_id` from its folder."""
    settings = get_settings()
    return execute(JobStore(settings.cache_dir / "training-runs"), job_id, settings, training_stages)


def execute_chunk(job_id: str) -> str:
    """RQ entry point of a large job's chunk pass (worker/pipelines/chunked.py)."""
    settings = get_settings()
    return execute(JobStore(settings.cache_dir / "chunk-jobs"), job_id, settings, chunk_stages)


def job_stages(store: JobStore, status: JobStatus, settings: Settings, rq_job: Job | None) -> str:
    """A job's stages: map the area (or reuse what an earlier attempt published), copy to --out, finish. On the
    download queue: fetch its scenes and hand it on to the inference queue."""
    job_id = status.job_id
    outputs_dir = store.outputs_dir(job_id)
    published = export.published_outputs(outputs_dir)
    if published is None and (earlier := finished_twin(store, status)) is not None:
        # Submitted while its twin still ran (so not answered at submission): the twin's outputs serve it now.
        published = [Path(p) for p in store.link_outputs(earlier.job_id, job_id)]
        store.append_log(job_id, "an identical job has finished meanwhile: its outputs are reused, not computed")
    elif published is not None:  # an earlier attempt published them; only its copy to --out failed
        store.append_log(job_id, "outputs published by an earlier attempt: copying them, not computing again")
    elif status.queue == DOWNLOAD_QUEUE:
        return download_stages(store, status, settings, rq_job)
    spec = store.read_spec(job_id)
    if published is not None:
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
    copy_to = store.read_info(job_id).copy_to
    if copy_to:
        try:
            export.copy_outputs(outputs_dir, Path(copy_to))
        except Exception as err:
            sentence = export.copy_failed_sentence(job_id, outputs_dir, Path(copy_to), err)
            store.append_log(job_id, traceback.format_exc())
            return end(store, status, "failed", sentence, error=sentence, outputs=outputs)
    message = f"Done: {len(outputs)} outputs"
    if warnings:  # an empty or nearly empty map still finishes, but says so
        message += ". Warning: " + " ".join(warnings)
    return end(store, status, "finished", message, outputs=outputs)


def finished_twin(store: JobStore, status: JobStatus) -> JobStatus | None:
    """Another finished job of the same request whose outputs are on disk, or None."""
    if not status.spec_hash:
        return None
    twin = store.find_finished(status.spec_hash)
    return twin if twin is not None and twin.job_id != status.job_id else None


def download_stages(store: JobStore, status: JobStatus, settings: Settings, rq_job: Job | None) -> str:
    """The download stage: the scenes into the cache, then the job onto the inference queue (queued again, as
    a job that waits for a GPU worker is). Its attempts count from 0 there: each stage has its own."""
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
    JobClient(settings).enqueue(
        job_id
    )  # while this job's lock is held: recovery keeps off until it is queued
    return "queued"


def chunk_stages(store: JobStore, status: JobStatus, settings: Settings, rq_job: Job | None) -> str:
    """A chunk pass: the model over the chunk, its rasters left in the job's work folder for the job to mosaic.
    It stops when its job is cancelled, too."""
    job_id = status.job_id
    spec = store.read_request(job_id, ChunkSpec)
    jobs = JobStore(settings.cache_dir / "jobs")

    def should_stop() -> bool:
        return store.cancel_requested(job_id) or (
            spec.job_id is not None and jobs.exists(spec.job_id) and jobs.cancel_requested(spec.job_id)
        )

    run_chunk(spec, settings, progress=JobProgress(store, job_id, rq_job), should_stop=should_stop)
    return end(store, status, "finished", f"Done: {spec.describe()}")


def training_stages(store: JobStore, status: JobStatus, settings: Settings, rq_job: Job | None) -> str:
    """A training run: train and install the new version, record its epochs and result, finish."""
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


def ping() -> float:
    """A job that does nothing but say when it ran: how long RQ takes to start a job (bench/queue_overhead.py)."""
    return time.time()
