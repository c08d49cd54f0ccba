"""Job entry points: each is a list of core stage calls, with no numpy or logic of its own."""

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from core.config import Settings
from core.jobs import diskspace, report
from core.jobs.preflight import cloud_share
from core.jobs.progress import ProgressFn, RunContext, TilingOptions
from core.jobs.report import Stats
from core.jobs.request import JobArea, JobSpec
from core.mapping import analysis
from core.mapping.series import predict_series
from core.outputs import export
from core.types import Scene
from models.catalogue import Catalogue
from models.presto_heads import BUILDER as PRESTO_BUILDER
from worker.pipelines.chunked import ChunkedGrid, plan_job_chunks
from worker.pipelines.crop_job import run_crop
from worker.pipelines.stages import (
    DatePasses,
    Inputs,
    JobResult,
    Models,
    WholeGrid,
    fetch_inputs,
    hold_work_dir,
    job_context,
    job_folders,
    plan_area,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """Every date as the judging model saw it, and the result to publish."""

    dates: list[analysis.DateResult]
    published: analysis.DateResult


def run_job(
    spec: JobSpec,
    out_dir: Path,
    settings: Settings,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    work_dir: Path | None = None,
    job_id: str | None = None,
) -> JobResult:
    """Plan -> search -> load models -> download -> predict every date -> export, publishing atomically.

    Per-date rasters go to `work_dir` (default: `<cache>/work/<spec hash>`), which outlives a crash or a cancel
    so that running the same request again resumes there; it is removed once the outputs are published. A full
    disk ends it with a DiskFull sentence that names the folder and the space the job needs.

    A grid larger than one chunk (TERRASEG_CHUNK_KM) is mapped chunk by chunk (worker/pipelines/chunked.py): by
    chunk jobs that any worker takes when `job_id` names the queued job running this, else one after another
    here.
    """
    folders = job_folders(settings, out_dir)
    needs = diskspace.DiskNeeds()
    with diskspace.disk_full_as_error(folders, needs):
        cards, spec, run = job_context(spec, settings, progress, should_stop, work_dir)
        return map_stages(spec, out_dir, settings, cards, run, folders, needs, job_id)


def map_stages(
    spec: JobSpec,
    out_dir: Path,
    settings: Settings,
    cards: Catalogue,
    run: RunContext,
    folders: list[diskspace.Folder],
    needs: diskspace.DiskNeeds,
    job_id: str | None,
) -> JobResult:
    """run_job's stages, with the job's model version pinned (`cards`, `spec`) and its run context."""
    tiling = TilingOptions(settings.batch_size, settings.tile_overlap_px)
    with run.stage("plan"):
        area = plan_area(spec, out_dir)
    grid = area.grid
    run.report(
        0.01, f"Planning: {area.aoi.area_km2:.2f} km2, grid {grid.width}x{grid.height} px in {grid.crs}"
    )
    if cards.get(spec.model_id).builder == PRESTO_BUILDER:  # a crop map from a monthly cube: its own stages
        outputs, stats = run_crop(spec, area, cards, run, out_dir, settings)
        run.report(1.0, f"Done: {len(outputs)} outputs published")  # no folder: a job's log is a user's to read
        return JobResult(out_dir, outputs, stats.selected_date, stats, stats.warnings)
    inputs = fetch_inputs(cards, spec, area, settings, folders, needs, run)
    models, groups, start = inputs.models, inputs.groups, inputs.start
    run.work_dir.mkdir(parents=True, exist_ok=True)
    with hold_work_dir(run):
        passes = date_passes(spec, area, inputs, tiling, settings, run, job_id)
        with run.stage("predict"):
            prediction = predict(spec, area, models, groups, tiling, run, start, passes)
        run.report(0.9, "Exporting: writing COGs")
        staging = export.make_staging_dir(out_dir)
        try:
            with run.stage("export"):
                stats = write_outputs(spec, area, models, prediction, staging)
            used = report.RunSettings(settings.device, tiling.batch_size, tiling.overlap_px)
            record = report.build_run_record(
                spec,
                area,
                prediction.dates,
                stats,
                (models.model, models.cloud_model),
                report.RunFacts(used, run.timings_s, models.caveats, passes.records()),
            )
            export.write_json(staging / "run.json", record.model_dump(mode="json"))  # with every stage's time
            # The export stage takes a while on big grids: a cancel that came meanwhile must win over publishing.
            run.check_cancelled()
            outputs = export.publish(staging, out_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(run.work_dir, ignore_errors=True)
    passes.cleanup()
    run.report(1.0, f"Done: {len(outputs)} outputs published")  # no folder: a job's log is a user's to read
    for warning in stats.warnings:
        log.warning("%s", warning)
    return JobResult(out_dir, outputs, prediction.published.date.isoformat(), stats, stats.warnings)


def download_stage(
    spec: JobSpec,
    out_dir: Path,
    settings: Settings,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> int:
    """A job's first stage on a download worker: search and fetch its scenes into the cache, where the
    inference stage (run_job) finds them; returns how many scenes are ready. Models are loaded too (on the CPU:
    they say which bands, and what context around the AOI, to fetch), not run."""
    folders = job_folders(settings, out_dir)
    needs = diskspace.DiskNeeds()
    with diskspace.disk_full_as_error(folders, needs):
        cards, spec, run = job_context(spec, settings, progress, should_stop)
        with run.stage("plan"):
            area = plan_area(spec, out_dir)
        on_cpu = settings.model_copy(update={"device": "cpu"})
        inputs = fetch_inputs(cards, spec, area, on_cpu, folders, needs, run)
    ready = sum(len(scenes) for scenes in inputs.groups.values())
    run.report(inputs.start, f"Downloaded: {ready} scenes in the cache; waiting for an inference worker")
    return ready


def date_passes(
    spec: JobSpec,
    area: JobArea,
    inputs: Inputs,
    tiling: TilingOptions,
    settings: Settings,
    run: RunContext,
    job_id: str | None,
) -> DatePasses:
    """How the job's models pass over its grid: whole, or chunk by chunk when it is larger than one chunk (a
    series model reads every date's clear mask around its grid: it runs whole)."""
    chunks = plan_job_chunks(inputs.models, area, settings)
    if len(chunks) <= 1 or inputs.models.runs_as_series:
        return WholeGrid(inputs.models, area, tiling)
    run.report(inputs.start, f"Planning: {len(chunks)} chunks of up to {settings.chunk_km:g} km")
    return ChunkedGrid(spec, area, inputs, tiling, chunks, settings, run.work_dir, job_id)


def predict(
    spec: JobSpec,
    area: JobArea,
    models: Models,
    groups: dict[date, list[Scene]],
    tiling: TilingOptions,
    run: RunContext,
    start: float = 0.15,
    passes: DatePasses | None = None,
) -> Prediction:
    """Run the models: every date's result (of the model that judged the dates) and the one to publish; their
    progress spans `start`..0.9 of the job, shared by their estimated times.

    The cloud task runs its model on every date and publishes the clearest. Other tasks run the cloud model on
    every date, their own model on the clearest date only, and mask what the cloud model did not call clear; a
    series model instead reads the clearest dates at once. `passes` runs the models over the grid (default: one
    whole pass here); the date is chosen from the whole grid's counts either way.
    """
    passes = passes or WholeGrid(models, area, tiling)
    judge = models.judge
    cloud_only = models.cloud_model is None
    # The progress bar's share of each model, by their estimated times (the task's model: its pass after 'split').
    split = (
        0.9
        if cloud_only
        else start + (0.88 - start) * cloud_share(judge.card, len(groups), models.model.card, area.grid)
    )
    results = passes(
        "judge",
        groups,
        run.within(
            start,
            split,
            "Predicting",
            run.work_dir if cloud_only else run.work_dir / "cloud",
        ),
        not models.runs_as_series,
    )
    if models.runs_as_series:
        label = f"Predicting {models.model.card.task} over the series"
        series = predict_series(
            results,
            models.model,
            area.grid,
            area.aoi_grid,
            run.within(split, 0.9, label, run.work_dir / "series"),
            tiling,
        )
        return Prediction(results, series)
    clearest = analysis.select_date(results, spec.selected_date)
    if cloud_only:
        return Prediction(results, clearest)
    label = f"Predicting {models.model.card.task} on {clearest.date}"
    [unmasked] = passes(
        "model",
        {clearest.date: list(clearest.scenes)},
        run.within(split, 0.88, label, run.work_dir / "model"),
        True,
    )
    run.report(0.88, "Masking: clouds and shadows")
    masked = analysis.mask_clouds(unmasked, clearest, models.model.card, area.grid, run.work_dir / "masked")
    return Prediction(results, masked)


def write_outputs(
    spec: JobSpec, area: JobArea, models: Models, prediction: Prediction, staging: Path
) -> Stats:
    """Write the COGs, the preview and the statistics of the published result to `staging`."""
    card, published = models.model.card, prediction.published
    cloud_card = models.cloud_model.card if models.cloud_model is not None else None
    stats = report.build_stats(spec, area, prediction.dates, published, card, cloud_card, models.caveats)
    title = f"{card.id} {published.date}"
    export.write_class_cog(
        published.classes_path, staging / "classes.tif", card.classes, card.nodata_value, title
    )
    export.write_confidence_cog(published.confidence_path, staging / "confidence.tif")
    # The published date's own image (for a series: its last date), not a mix of dates.
    same_day = [s for s in published.scenes if s.acquired.date() == published.date]
    export.write_true_colour_cog(same_day, area.grid, staging / "scene.tif")
    export.write_preview_png(
        staging / "classes.tif", staging / "preview.png", card.classes, card.nodata_value, title
    )
    # Every date the judging model (the cloud model, or the task's own for the cloud task) mapped, so a user can
    # look at each date and compare two of them.
    judge = models.cloud_model.card if models.cloud_model is not None else card
    for result in prediction.dates:
        export.write_class_cog(
            result.classes_path,
            staging / export.date_map_name(result.date),
            judge.classes,
            judge.nodata_value,
            f"{judge.id} {result.date}",
        )
    export.write_json(staging / "stats.json", stats.model_dump(mode="json"))
    (staging / "stats.csv").write_text(stats.csv())
    return stats
