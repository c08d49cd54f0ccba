"""Job entry points: each is a list of core stage calls, with no numpy or logic of its own."""

import logging
import platform
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from shapely.geometry.base import BaseGeometry

import core
from core import analysis, export
from core.aoi import AOI, parse_aoi
from core.config import Settings
from core.download import fetch_scenes
from core.errors import JobCancelled
from core.grid import Grid, grid_for_aoi, project_geometry
from core.inference import context_area, tile_layout
from core.jobs import JobSpec
from core.jobstore import file_lock
from core.preflight import find_scenes
from core.progress import ProgressFn, span
from core.series import predict_series
from core.types import ModelCard, Scene
from models import registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobResult:
    """Where a finished job's outputs are, and the few facts a caller prints."""

    out_dir: Path
    outputs: list[Path]
    selected_date: str
    stats: dict[str, object]
    warnings: list[str] = field(default_factory=list)  # as in stats.json: a (nearly) empty map, and why


@dataclass(frozen=True)
class Plan:
    """What planning, search and model loading decided: the area, its grid, the models, the dates."""

    aoi: AOI
    grid: Grid
    aoi_grid: BaseGeometry  # the AOI in the grid's CRS
    model: registry.LoadedModel
    cloud_model: registry.LoadedModel | None  # for tasks other than cloud: date choice and masking
    groups: dict[date, list[Scene]]
    cloud_grid: Grid  # where the cloud model runs: the grid, or a series model's context grid


class StageTimer:
    """Wall-clock seconds per stage, for the run record."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - started, 3)


def run_job(
    spec: JobSpec,
    out_dir: Path,
    settings: Settings,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    work_dir: Path | None = None,
) -> JobResult:
    """Plan -> search -> load model -> predict every date -> choose a date -> export, publishing atomically.

    Per-date rasters go to `work_dir` (default: `<cache>/work/<spec hash>`), which outlives a crash or a cancel
    so that running the same request again resumes there; it is removed once the outputs are published.
    """
    timer = StageTimer()
    report = span(progress, 0.0, 0.05, "Planning")
    with timer.stage("plan"):
        export.check_writable(out_dir)
        registry.require_weights(spec.model_id)  # before any search: an untrained model cannot run anyway
        aoi = parse_aoi(spec.aoi, max_area_km2=settings.max_aoi_km2, max_vertices=settings.max_aoi_vertices)
        grid = grid_for_aoi(aoi.geometry)
        aoi_grid = project_geometry(aoi.geometry, "EPSG:4326", grid.crs)
    report(1.0, f"{aoi.area_km2:.2f} km2, grid {grid.width}x{grid.height} px in {grid.crs}")
    with timer.stage("search"):
        scenes = find_scenes(spec.sources, aoi.geometry, spec.start, spec.end, spec.max_cloud_pct)
    span(progress, 0.05, 0.1, "Searching")(1.0, f"{len(scenes)} scenes")
    with timer.stage("load_model"):
        load_options = {
            "processing_level": scenes[0].processing_level,
            "available_bands": set.intersection(*(set(s.bands) for s in scenes)),
            "device": settings.device,
            "threads": settings.torch_threads,
        }
        model = registry.load(spec.model_id, **load_options)  # type: ignore[arg-type]
        # Other tasks use the cloud model to choose the clearest date and to mask its clouds and shadows.
        cloud_model = None
        if spec.task != "cloud":
            cloud_model = registry.load(registry.default_model("cloud"), **load_options)  # type: ignore[arg-type]
        usable = analysis.usable_scenes(scenes, model.card)
        # A series model reads the clear mask over its context, so the cloud model then covers that context.
        is_series = runs_as_series(model, cloud_model)
        model_layout = tile_layout(model.card, grid, settings.tile_overlap_px)
        cloud_grid = model_layout.context if is_series else grid
        layouts = [model_layout]
        if cloud_model is not None:
            layouts.append(tile_layout(cloud_model.card, cloud_grid, settings.tile_overlap_px))
    with timer.stage("download"):
        # DHuS products are downloaded whole (verified); from STAC COGs only the window of the bands the models
        # and the true-colour image read: the AOI and the context around it that the models see.
        needed = set(model.card.bands) | set(export.TRUE_COLOUR_BANDS)
        if cloud_model is not None:
            needed |= set(cloud_model.card.bands)
        usable = fetch_scenes(
            usable,
            needed,
            context_area(layouts),
            settings.cache_dir,
            span(progress, 0.1, 0.15, "Downloading"),
            should_stop,
        )
        groups = analysis.group_by_date(usable)
    plan = Plan(aoi, grid, aoi_grid, model, cloud_model, groups, cloud_grid)
    work_dir = work_dir or settings.cache_dir / "work" / spec.spec_hash(model.card.version)
    work_dir.mkdir(parents=True, exist_ok=True)
    with hold_work_dir(work_dir, progress, should_stop):
        return _predict_and_export(spec, out_dir, settings, progress, should_stop, work_dir, timer, plan)


def runs_as_series(model: registry.LoadedModel, cloud_model: registry.LoadedModel | None) -> bool:
    """The card decides: a series model gets every chosen date at once (its loader provides for_dates)."""
    return (
        model.card.temporal.get("mode") == "series"
        and model.for_dates is not None
        and cloud_model is not None
    )


@contextmanager
def hold_work_dir(
    work_dir: Path, progress: ProgressFn | None, should_stop: Callable[[], bool] | None
) -> Iterator[None]:
    """Own `work_dir` for this process; an identical request already running there is waited for."""
    lock_path = work_dir.with_name(work_dir.name + ".lock")
    while True:
        with file_lock(lock_path, wait_s=1.0) as held:
            if held:
                yield
                return
        if progress is not None:
            progress(0.1, "Waiting: an identical request is running; its work will be reused")
        if should_stop is not None and should_stop():
            raise JobCancelled("The job was cancelled.")


def _predict_and_export(
    spec: JobSpec,
    out_dir: Path,
    settings: Settings,
    progress: ProgressFn | None,
    should_stop: Callable[[], bool] | None,
    work_dir: Path,
    timer: StageTimer,
    plan: Plan,
) -> JobResult:
    """The stages after planning, while holding the work folder."""
    model, grid, aoi = plan.model, plan.grid, plan.aoi
    staging = export.make_staging_dir(out_dir)
    try:
        with timer.stage("predict"):
            results, selected, date_card = _predict(spec, settings, progress, should_stop, work_dir, plan)
        span(progress, 0.9, 1.0, "Exporting")(0.0, "writing COGs")
        with timer.stage("export"):
            title = f"{model.card.id} {selected.date}"
            export.write_class_cog(
                selected.classes_path,
                staging / "classes.tif",
                model.card.classes,
                model.card.nodata_value,
                title,
            )
            export.write_confidence_cog(selected.confidence_path, staging / "confidence.tif")
            # The published date's own image (for a series: its last date), not a mix of dates.
            same_day = [s for s in selected.scenes if s.acquired.date() == selected.date]
            export.write_true_colour_cog(same_day, grid, staging / "scene.tif")
            export.write_preview_png(
                staging / "classes.tif",
                staging / "preview.png",
                model.card.classes,
                model.card.nodata_value,
                title,
            )
            stats = {
                "task": spec.task,
                "model_id": model.card.id,
                "selected_date": selected.date.isoformat(),
                "aoi_area_km2": round(aoi.area_km2, 6),
                "pixel_area_m2": grid.pixel_area_m2,
                "aoi_pixels": selected.inference.aoi_px,
                "valid_pixels": selected.valid_px,
                "classes": analysis.class_stats(
                    selected.inference.class_counts, model.card, grid.pixel_area_m2
                ),
                "dates": analysis.date_fractions(results, date_card),
            }
            # Pixels with data on the published date before cloud masking: the cloud model's count of that date.
            data_px = next(
                (int(r.inference.class_counts.sum()) for r in results if r.date == selected.date),
                selected.valid_px,
            )
            warnings = analysis.coverage_warnings(
                selected.inference.aoi_px,
                data_px,
                selected.valid_px,
                selected.date,
                plan.cloud_model.card.id if plan.cloud_model is not None else None,
            )
            stats["warnings"] = warnings
            series_dates = sorted({s.date_iso for s in selected.scenes}) if model.for_dates else []
            if series_dates:  # a series model: the dates it used, chosen by clear fraction and spacing
                stats["series_dates"] = series_dates
                stats["selected_date"] = f"{series_dates[0]}..{series_dates[-1]} ({len(series_dates)} dates)"
            if plan.cloud_model is not None and not series_dates:
                stats["cloud_model_id"] = plan.cloud_model.card.id
                stats["cloud_masked_pixels"] = int(
                    sum(r.inference.class_counts.sum() for r in results if r.date == selected.date)
                    - selected.inference.class_counts.sum()
                )
            export.write_json(staging / "stats.json", stats)
            (staging / "stats.csv").write_text(export.stats_csv(stats))
        export.write_json(
            staging / "run.json",
            run_record(
                spec,
                aoi.to_geojson(),
                aoi.area_km2,
                grid.to_dict(),
                results,
                str(stats["selected_date"]),
                model,
                settings,
                timer.seconds,
                plan.cloud_model,
                series_dates,
            ),
        )
        # The export stage takes a while on big grids: a cancel that came meanwhile must win over publishing.
        if should_stop is not None and should_stop():
            raise JobCancelled("The job was cancelled.")
        outputs = export.publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(work_dir, ignore_errors=True)
    if progress is not None:
        progress(1.0, f"Done: {out_dir}")
    for warning in warnings:
        log.warning("%s", warning)
    return JobResult(out_dir, outputs, selected.date.isoformat(), stats, warnings)


def _predict(
    spec: JobSpec,
    settings: Settings,
    progress: ProgressFn | None,
    should_stop: Callable[[], bool] | None,
    work_dir: Path,
    plan: Plan,
) -> tuple[list[analysis.DateResult], analysis.DateResult, ModelCard]:
    """Run the models; returns every date's result (of the model that judged the dates), the published one,
    and the card of the model whose classes the per-date fractions count.

    The cloud task runs its model on every date and publishes the clearest. Other tasks run the cloud model on
    every date, their own model on the clearest date only, and mask what the cloud model did not call clear.
    """
    options = {
        "batch_size": settings.batch_size,
        "overlap_px": settings.tile_overlap_px,
        "should_stop": should_stop,
    }
    cloud = plan.cloud_model or plan.model
    is_series = runs_as_series(plan.model, plan.cloud_model)
    results = analysis.predict_dates(
        plan.groups,
        cloud.predict,
        cloud.card,
        plan.cloud_grid,
        plan.aoi_grid,
        work_dir if plan.cloud_model is None else work_dir / "cloud",
        clip_to_aoi=not is_series,
        progress=span(progress, 0.15, 0.9 if plan.cloud_model is None else 0.5, "Predicting"),
        **options,  # type: ignore[arg-type]
    )
    if is_series and plan.model.for_dates and plan.cloud_model:
        max_dates = int(plan.model.card.temporal.get("max_dates", 30))  # type: ignore[call-overload]
        series = predict_series(
            results,
            max_dates,
            plan.model.for_dates,
            plan.model.card,
            plan.grid,
            plan.aoi_grid,
            work_dir / "series",
            progress=span(progress, 0.5, 0.9, f"Predicting {plan.model.card.task} over the series"),
            **options,  # type: ignore[arg-type]
        )
        return results, series, plan.cloud_model.card
    clearest = analysis.select_date(results, spec.selected_date)
    if plan.cloud_model is None:
        return results, clearest, plan.model.card
    [unmasked] = analysis.predict_dates(
        {clearest.date: list(clearest.scenes)},
        plan.model.predict,
        plan.model.card,
        plan.grid,
        plan.aoi_grid,
        work_dir / "model",
        progress=span(progress, 0.5, 0.88, f"Predicting {plan.model.card.task} on {clearest.date}"),
        **options,  # type: ignore[arg-type]
    )
    span(progress, 0.88, 0.9, "Masking")(0.0, "clouds and shadows")
    masked = analysis.mask_clouds(unmasked, clearest, plan.model.card, plan.grid, work_dir / "masked")
    return results, masked, plan.cloud_model.card


def run_record(
    spec: JobSpec,
    aoi_geojson: dict[str, object],
    area_km2: float,
    grid: dict[str, object],
    results: list[analysis.DateResult],
    selected_date: str,
    model: registry.LoadedModel,
    settings: Settings,
    timings_s: dict[str, float],
    cloud_model: registry.LoadedModel | None = None,
    series_dates: list[str] | None = None,
) -> dict[str, object]:
    """Provenance of a run: inputs, model and weights, grid, timings and software versions."""
    import lightgbm
    import numpy
    import onnxruntime
    import rasterio
    import torch

    return {
        "terraseg_version": core.__version__,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "spec": spec.model_dump(mode="json"),
        "spec_hash": spec.spec_hash(model.card.version),
        "aoi": {"geometry": aoi_geojson, "area_km2": round(area_km2, 6)},
        "grid": grid,
        "selected_date": selected_date,
        "series_dates": series_dates or None,  # the dates a series model used (None: a single-date model)
        "inputs": [
            {
                "id": s.id,
                "source": s.source,
                "date": s.date_iso,
                "acquired": s.acquired.isoformat(),
                "path": s.path,
                "processing_level": s.processing_level,
                "processing_baseline": s.processing_baseline,
                "cloud_cover_pct": s.cloud_cover_pct,
                "radiometry": {
                    b: {"scale": a.scale, "add_offset": a.add_offset}
                    for b, a in s.bands.items()
                    if b in model.card.bands
                },
            }
            for r in results
            for s in r.scenes
        ],
        "model": {
            "id": model.card.id,
            "version": model.card.version,
            "status": model.card.status,
            "weights_file": model.weights_file,
            "weights_sha256": model.weights_sha256,
            "bands": list(model.card.bands),
            "resolution_m": model.card.resolution_m,
            "licence": model.card.licence,
            "provenance": model.card.provenance,
        },
        "cloud_model": None
        if cloud_model is None
        else {
            "id": cloud_model.card.id,
            "version": cloud_model.card.version,
            "weights_file": cloud_model.weights_file,
            "weights_sha256": cloud_model.weights_sha256,
            "use": "chose the clearest date; its clouds and shadows are no data in the class map",
        },
        "settings": {
            "device": settings.device,
            "batch_size": settings.batch_size,
            "tile_overlap_px": settings.tile_overlap_px,
        },
        "timings_s": timings_s,
        "versions": {
            "python": platform.python_version(),
            "numpy": numpy.__version__,
            "rasterio": rasterio.__version__,
            "gdal": rasterio.__gdal_version__,
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "lightgbm": lightgbm.__version__,
        },
    }
