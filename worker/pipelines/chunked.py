"""Large jobs, chunk by chunk: each model pass of a job whose grid is larger than one chunk (TERRASEG_CHUNK_KM)
runs per chunk (core.geometry.chunks), and the chunks' rasters are put together into the job's.

A queued job queues one chunk job per chunk and pass (`ChunkClient`, `<cache>/chunk-jobs`) for any inference
worker, and works on chunks nobody has taken in its own process while it waits, so one worker alone finishes the
job and every further worker shortens it. A chunk job has the states, lock and recovery of a job: one whose worker
died is taken again (by the job, or re-queued by a worker's recovery) and resumes from its saved strips; a
finished chunk is never computed again, by a later attempt of the job either. Cancelling the job cancels its
chunks; retrying it retries the chunks that did not finish.

The date a job maps is chosen from the whole grid: the cloud pass over every chunk ends (its counts add up to the
whole grid's) before the task's model runs on the chosen date. Outside the queue (`terraseg run`), the chunks run
one after another in the calling process.
"""

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from rq import get_current_job
from rq.job import Job
from shapely.geometry.base import BaseGeometry

from core.config import Settings
from core.errors import AppError
from core.geometry.chunks import Chunk, ChunkInputs, chunk_grid, chunk_px, mosaic, plan_chunks, summed
from core.geometry.grid import Grid
from core.jobs import diskspace
from core.jobs.progress import ProgressFn, RunContext, TilingOptions
from core.jobs.report import ChunkPassRecord, ChunkRecord
from core.jobs.request import ChunkSpec, JobArea, JobSpec
from core.jobs.store import JobStatus, JobStore, UnknownJob
from core.mapping import analysis
from core.mapping.inference import model_scale_factor
from core.types import Scene
from models.registry import LoadedModel
from worker.pipelines.stages import Inputs, Models, Role, job_context, load_models
from worker.queue.client import ChunkClient, JobError
from worker.queue.runner import JobProgress, end, execute

log = logging.getLogger(__name__)

INPUTS_NAME = "chunk-inputs.json"  # in the job's work folder: the scenes every chunk reads
JOBS_NAME = "chunk-jobs.json"  # in a pass's work folder: its chunk jobs' ids, by chunk
POLL_S = 0.5


class ChunkFailed(AppError):
    """A chunk of a large job failed or was cancelled from outside."""


def plan_job_chunks(models: Models, area: JobArea, settings: Settings) -> list[Chunk]:
    """The job's chunks: squares of TERRASEG_CHUNK_KM, whole multiples of every model's pixel (a model that runs
    coarser than the grid averages the same blocks of grid pixels in a chunk as in the whole grid)."""
    loaded = [models.model, *([models.cloud_model] if models.cloud_model is not None else [])]
    multiple = math.lcm(*(model_scale_factor(m.card, area.grid) for m in loaded))
    return plan_chunks(area.grid, chunk_px(settings.chunk_km, area.grid.resolution_m, multiple))


def chunk_dir(pass_dir: Path, chunk: Chunk) -> Path:
    """Where one chunk's pass writes its per-date rasters (analysis.predict_dates' layout)."""
    return pass_dir / "chunks" / f"{chunk.index:04d}"


def chunk_pass(
    model: LoadedModel,
    groups: dict[date, list[Scene]],
    grid: Grid,
    chunk: Chunk,
    aoi_grid: BaseGeometry,
    run: RunContext,
    tiling: TilingOptions,
    clip_to_aoi: bool,
) -> None:
    """One model over one chunk of `grid` for every date of `groups`; counts cover the chunk's pixels inside the
    job's whole AOI (`aoi_grid`)."""
    analysis.predict_dates(
        groups, model, chunk_grid(grid, chunk), aoi_grid, run, tiling, clip_to_aoi=clip_to_aoi
    )


@dataclass
class ChunkedGrid:
    """A job's passes chunk by chunk (see the module docstring); a tasks.DatePasses."""

    spec: JobSpec
    area: JobArea
    inputs: Inputs
    tiling: TilingOptions
    chunks: list[Chunk]
    settings: Settings
    root: Path  # the job's work folder
    job_id: str | None  # the queued job running this (None: outside the queue, chunks run here)

    def __post_init__(self) -> None:
        self._passes: dict[int, list[ChunkPassRecord]] = {c.index: [] for c in self.chunks}
        self._chunk_jobs: list[str] = []
        if self.job_id is not None:
            ChunkInputs(self.inputs.groups, self.inputs.processing_level, self.inputs.available_bands).write(
                self.root / INPUTS_NAME
            )

    def __call__(
        self, role: Role, groups: dict[date, list[Scene]], run: RunContext, clip_to_aoi: bool
    ) -> list[analysis.DateResult]:
        pass_name = "" if run.work_dir == self.root else run.work_dir.relative_to(self.root).as_posix()
        if self.job_id is None:
            self._run_here(role, pass_name, groups, run, clip_to_aoi)
        else:
            self._run_queued(role, pass_name, groups, run, clip_to_aoi)
        return self._mosaic(role, groups, run)

    def records(self) -> list[ChunkRecord]:
        return [
            ChunkRecord(
                index=c.index,
                row_off=c.row_off,
                col_off=c.col_off,
                height=c.height,
                width=c.width,
                passes=self._passes[c.index],
            )
            for c in self.chunks
        ]

    def cleanup(self) -> None:
        """The chunk jobs' folders go with the work folder once the job has published its outputs."""
        if not self._chunk_jobs:
            return
        client = ChunkClient(self.settings)
        for chunk_job in self._chunk_jobs:
            with contextlib.suppress(JobError, UnknownJob, OSError):
                client.delete(chunk_job)

    # -- outside the queue --------------------------------------------------------------------------------------
    def _run_here(
        self, role: Role, pass_name: str, groups: dict[date, list[Scene]], run: RunContext, clip_to_aoi: bool
    ) -> None:
        model, n = self.inputs.models.of_role(role), len(self.chunks)
        for chunk in self.chunks:
            chunk_run = run.within(
                chunk.index / n,
                (chunk.index + 1) / n,
                f"chunk {chunk.index + 1}/{n}",
                chunk_dir(run.work_dir, chunk),
            )
            chunk_pass(
                model, groups, self.area.grid, chunk, self.area.aoi_grid, chunk_run, self.tiling, clip_to_aoi
            )
            self._passes[chunk.index].append(
                ChunkPassRecord(pass_name=pass_name, job_id=None, worker="", attempts=1)
            )

    # -- on the queue -------------------------------------------------------------------------------------------
    def _run_queued(
        self, role: Role, pass_name: str, groups: dict[date, list[Scene]], run: RunContext, clip_to_aoi: bool
    ) -> None:
        client = ChunkClient(self.settings)
        ids = self._submit(client, role, pass_name, groups, run, clip_to_aoi)
        self._chunk_jobs.extend(ids)
        # Chunks an earlier attempt of the job left unfinished go on from their saved strips.
        for chunk_job in ids:
            if client.store.read_status(chunk_job).state in ("failed", "cancelled"):
                client.retry(chunk_job)
        fractions = [0.0] * len(ids)
        try:
            while True:
                run.check_cancelled()
                statuses = [client.store.read_status(chunk_job) for chunk_job in ids]
                self._raise_for_ended(statuses, client.store)
                finished = sum(s.state == "finished" for s in statuses)
                if finished == len(ids):
                    break
                for index, status in enumerate(statuses):
                    fractions[index] = (
                        1.0 if status.state == "finished" else max(fractions[index], status.fraction)
                    )
                running = sum(s.state == "running" for s in statuses)
                run.report(
                    sum(fractions) / len(ids),
                    f"chunks {finished}/{len(ids)} done, {running} running elsewhere",
                )
                # From the last chunk back: the queue hands out the first ones, so the job meets the other
                # workers in the middle instead of reaching for the chunk one of them is about to take.
                free = next(
                    (
                        i
                        for i in reversed(range(len(ids)))
                        if not statuses[i].is_terminal and client.store.is_unlocked(ids[i])
                    ),
                    None,
                )
                if free is None:
                    time.sleep(POLL_S)
                    continue
                chunk_job, chunk = ids[free], self.chunks[free]
                self._run_in_process(
                    client.store, chunk_job, chunk, role, groups, run, clip_to_aoi, fractions
                )
        except BaseException:
            # Nothing of a job that stops goes on running: its chunks stop too (finished ones are kept).
            for chunk_job in ids:
                with contextlib.suppress(JobError, UnknownJob, OSError):
                    client.cancel(chunk_job)
            raise
        for chunk, chunk_job in zip(self.chunks, ids, strict=True):
            status = client.store.read_status(chunk_job)
            self._passes[chunk.index].append(
                ChunkPassRecord(
                    pass_name=pass_name,
                    job_id=chunk_job,
                    worker=status.worker or "",
                    attempts=status.attempts,
                )
            )

    def _submit(
        self,
        client: ChunkClient,
        role: Role,
        pass_name: str,
        groups: dict[date, list[Scene]],
        run: RunContext,
        clip_to_aoi: bool,
    ) -> list[str]:
        """The pass's chunk jobs: those an earlier attempt of the job queued (their ids are kept in the pass's
        work folder, written after each one is queued), and new ones for the rest."""
        dates = tuple(groups)
        day_names = [d.isoformat() for d in dates]
        jobs_file = run.work_dir / JOBS_NAME
        known: list[str] = []
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            document = json.loads(jobs_file.read_text())
            if document["dates"] == day_names:
                known = [str(i) for i in document["ids"]]
        run.work_dir.mkdir(parents=True, exist_ok=True)
        ids: list[str] = []
        for chunk in self.chunks:
            if chunk.index < len(known) and client.store.exists(known[chunk.index]):
                ids.append(known[chunk.index])
                continue
            spec = ChunkSpec(
                job=self.spec,
                job_id=self.job_id,
                work_name=self.root.name,
                pass_name=pass_name,  # "", "cloud" or "model": checked by ChunkSpec
                role=role,
                dates=dates,
                clip_to_aoi=clip_to_aoi,
                index=chunk.index,
                row_off=chunk.row_off,
                col_off=chunk.col_off,
                height=chunk.height,
                width=chunk.width,
                chunks=len(self.chunks),
            )
            ids.append(client.submit_chunk(spec))
            tmp = jobs_file.with_name(jobs_file.name + ".tmp")
            tmp.write_text(json.dumps({"dates": day_names, "ids": ids + known[len(ids) :]}))
            tmp.replace(jobs_file)
        return ids

    def _raise_for_ended(self, statuses: list[JobStatus], chunks: JobStore) -> None:
        """ChunkFailed for the first chunk that failed or was cancelled from outside; its log goes to the job's
        log, where the job's failure sentence sends the reader (nobody reads a chunk job's folder)."""
        for chunk, status in zip(self.chunks, statuses, strict=True):
            if status.state not in ("failed", "cancelled"):
                continue
            if self.job_id is not None:
                with contextlib.suppress(UnknownJob, OSError):
                    jobs = JobStore(self.settings.cache_dir / "jobs")
                    jobs.append_log(self.job_id, f"chunk {chunk.index + 1} {status.state}; its log:")
                    jobs.append_log(self.job_id, chunks.read_log(status.job_id))
            what = status.error or status.message or status.state
            raise ChunkFailed(
                f"Chunk {chunk.index + 1} of {len(self.chunks)} {status.state}: {what.rstrip('.')}. Retry the job "
                "to finish the chunks left; finished chunks are kept."
            )

    def _run_in_process(
        self,
        store: JobStore,
        chunk_job: str,
        chunk: Chunk,
        role: Role,
        groups: dict[date, list[Scene]],
        run: RunContext,
        clip_to_aoi: bool,
        fractions: list[float],
    ) -> None:
        """Run a chunk nobody has taken here, with the models this job has loaded, as a chunk job would."""
        n = len(self.chunks)
        model = self.inputs.models.of_role(role)
        parent_job = get_current_job()

        def stages(store: JobStore, status: JobStatus, settings: Settings, rq_job: Job | None) -> str:
            own = JobProgress(store, chunk_job, None)

            def progress(fraction: float, message: str) -> None:
                own(fraction, message)
                fractions[chunk.index] = fraction
                # Counted up as chunks finish: this worker takes them from the last one back, so "chunk 4/4"
                # then "3/4" read as a countdown.
                done = sum(f >= 1.0 for f in fractions)
                run.report(sum(fractions) / n, f"chunks {done}/{n} done; chunk {chunk.index + 1} here: {message}")

            def should_stop() -> bool:
                return store.cancel_requested(chunk_job) or (
                    run.should_stop is not None and run.should_stop()
                )

            chunk_run = RunContext(chunk_dir(run.work_dir, chunk), progress, should_stop)
            with diskspace.cache_full_as_error(settings.cache_dir):
                chunk_pass(
                    model,
                    groups,
                    self.area.grid,
                    chunk,
                    self.area.aoi_grid,
                    chunk_run,
                    self.tiling,
                    clip_to_aoi,
                )
            return end(store, status, "finished", f"Done: chunk {chunk.index + 1}/{n}, run by its job")

        execute(
            store,
            chunk_job,
            self.settings,
            stages,
            current_job=lambda: None,
            worker_name=parent_job.worker_name if parent_job is not None else None,
        )

    def _mosaic(
        self, role: Role, groups: dict[date, list[Scene]], run: RunContext
    ) -> list[analysis.DateResult]:
        """The chunks' rasters of each date put together on the job's grid, with the whole grid's counts."""
        card = self.inputs.models.of_role(role).card
        grid = self.area.grid
        results = []
        for day, scenes in groups.items():
            date_dir = run.work_dir / day.isoformat()
            inference = analysis.load_done(date_dir)
            if inference is None:
                parts = []
                for chunk in self.chunks:
                    part_dir = chunk_dir(run.work_dir, chunk) / day.isoformat()
                    part = analysis.load_done(part_dir)
                    if part is None:
                        raise ChunkFailed(
                            f"Chunk {chunk.index + 1} has no finished map of {day}; retry the job."
                        )
                    parts.append((chunk, part_dir, part))
                date_dir.mkdir(parents=True, exist_ok=True)
                mosaic(
                    [(c, d / "classes.tif") for c, d, _ in parts],
                    grid,
                    date_dir / "classes.tif",
                    card.nodata_value,
                )
                mosaic([(c, d / "confidence.tif") for c, d, _ in parts], grid, date_dir / "confidence.tif", 0)
                inference = summed([p for _, _, p in parts])
                analysis.save_done(date_dir, inference)
            results.append(
                analysis.DateResult(
                    day, tuple(scenes), date_dir / "classes.tif", date_dir / "confidence.tif", inference
                )
            )
        return results


def run_chunk(
    spec: ChunkSpec,
    settings: Settings,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> None:
    """A chunk job's work (worker.entry.chunk_stages): load the job's models for the scenes its job found,
    and run the pass over the chunk into the job's work folder."""
    cards, job, _ = job_context(spec.job, settings, None, None)
    root = settings.cache_dir / "work" / spec.work_name
    try:
        inputs = ChunkInputs.read(root / INPUTS_NAME)
    except (OSError, ValueError, KeyError) as err:
        raise AppError(
            f"The scenes of this chunk's job are gone from the cache ({type(err).__name__})."
        ) from None
    missing = [d for d in spec.dates if d not in inputs.groups]
    if missing:
        raise AppError(f"The job's scenes have no date {missing[0]}; retry the job.")
    models = load_models(cards, job, inputs.processing_level, inputs.available_bands, settings)
    area = JobArea.of(job)
    chunk = Chunk(spec.index, spec.row_off, spec.col_off, spec.height, spec.width)
    if spec.row_off + spec.height > area.grid.height or spec.col_off + spec.width > area.grid.width:
        raise AppError(f"Chunk {spec.index + 1} lies outside its job's grid.")
    run = RunContext(chunk_dir(root / spec.pass_name, chunk), progress, should_stop)  # "": the root itself
    tiling = TilingOptions(settings.batch_size, settings.tile_overlap_px)
    groups = {day: inputs.groups[day] for day in spec.dates}
    with diskspace.cache_full_as_error(settings.cache_dir):
        chunk_pass(
            models.of_role(spec.role), groups, area.grid, chunk, area.aoi_grid, run, tiling, spec.clip_to_aoi
        )
