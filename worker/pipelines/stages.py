"""The stages the map job, chunked passes and training runs share: the run's context, the models loaded for
the scenes, the search and download of a job's inputs, and one pass of a model over a grid."""

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal, Protocol

from core.config import Settings
from core.geometry.grid import Grid
from core.jobs import diskspace, report
from core.jobs.preflight import check_chosen_date, estimate_job, find_scenes
from core.jobs.progress import ProgressFn, RunContext, TilingOptions
from core.jobs.report import Stats
from core.jobs.request import JobArea, JobSpec
from core.jobs.store import file_lock
from core.mapping import analysis
from core.mapping.inference import context_area, tile_layout
from core.outputs import export
from core.sources.download import fetch_scenes, needs_network
from core.types import Scene
from models.catalogue import Catalogue, catalogue
from models.registry import LoadedModel, LoadOptions, load

log = logging.getLogger(__name__)


Role = Literal["judge", "model"]  # which of a job's models a pass runs (see Models.of_role)


@dataclass(frozen=True)
class JobResult:
    """Where a finished job's outputs are, and the few facts a caller prints."""

    out_dir: Path
    outputs: list[Path]
    selected_date: str
    stats: Stats
    warnings: list[str] = field(default_factory=list)  # as in stats.json: a (nearly) empty map, and why


@dataclass(frozen=True)
class Models:
    """The loaded models: the task's own, and the cloud model that chooses dates and masks clouds."""

    model: LoadedModel
    cloud_model: LoadedModel | None

    @property
    def caveats(self) -> list[str]:
        """What a reader must know of models that run on scenes of a level they were not trained on."""
        loaded = [self.model, *([self.cloud_model] if self.cloud_model is not None else [])]
        return [m.caveat for m in loaded if m.caveat]

    @property
    def judge(self) -> LoadedModel:
        """The model whose map of every date chooses the date: the cloud model, or the cloud task's own."""
        return self.cloud_model or self.model

    def of_role(self, role: Role) -> LoadedModel:
        return self.judge if role == "judge" else self.model

    @property
    def runs_as_series(self) -> bool:
        """A series model gets every chosen date at once, judged by the cloud model."""
        return self.model.card.is_series and self.model.for_dates is not None and self.cloud_model is not None


def job_folders(settings: Settings, out_dir: Path) -> list[diskspace.Folder]:
    """The folders a job writes to, named as a user knows them (a queued job publishes inside the cache)."""
    cache = diskspace.Folder(settings.cache_dir, diskspace.CACHE_FOLDER_LABEL)
    if out_dir.resolve().is_relative_to(settings.cache_dir.resolve()):
        return [cache]
    return [diskspace.Folder(out_dir, f"the output folder {out_dir}"), cache]


@dataclass(frozen=True)
class Inputs:
    """What a job maps: its scenes made readable from the cache, by date, and the models loaded for them."""

    models: Models
    groups: dict[date, list[Scene]]
    start: float  # the progress fraction the prediction starts at (downloads took the share before it)
    processing_level: str  # what the models were loaded for (see load_models)
    available_bands: frozenset[str]


def job_context(
    spec: JobSpec,
    settings: Settings,
    progress: ProgressFn | None,
    should_stop: Callable[[], bool] | None,
    work_dir: Path | None = None,
) -> tuple[Catalogue, JobSpec, RunContext]:
    """The models, the spec with its model version pinned, and the run's context."""
    cards = catalogue(settings.cache_dir)
    # A model trained here runs the version in production now, for the whole job (a promotion meanwhile does not
    # mix versions); run.json records it.
    spec = spec.model_copy(update={"model_id": cards.pinned(spec.model_id)})
    version = cards.get(spec.model_id).version
    run = RunContext(work_dir or settings.cache_dir / "work" / spec.spec_hash(version), progress, should_stop)
    return cards, spec, run


def fetch_inputs(
    cards: Catalogue,
    spec: JobSpec,
    area: JobArea,
    settings: Settings,
    folders: list[diskspace.Folder],
    needs: diskspace.DiskNeeds,
    run: RunContext,
) -> Inputs:
    """Search -> load the models -> download: the scenes a job maps, readable from the cache."""
    tiling = TilingOptions(settings.batch_size, settings.tile_overlap_px)
    with run.stage("search"):
        levels = cards.job_models(spec.task, spec.model_id).trained_levels
        scenes = find_scenes(
            spec.sources, area.aoi.geometry, spec.start, spec.end, spec.max_cloud_pct, settings, levels
        )
        check_chosen_date(scenes, spec.selected_date)
    space_warnings = check_space(cards, spec, area, scenes, folders, needs)
    run.report(0.02, "; ".join([f"Searching: {len(scenes)} scenes", *space_warnings]))
    level, bands = scene_facts(scenes)
    with run.stage("load_model"):
        models = load_models(cards, spec, level, bands, settings)
    for caveat in models.caveats:
        run.report(0.02, f"Caveat: {caveat}")
    # The progress bar follows time (so an ETA from its rate holds): downloads get a share only when there are
    # any; local scenes go straight to the models.
    start = 0.15 if any(needs_network(s) for s in scenes) else 0.03
    with run.stage("download"):
        groups = download(models, area, scenes, tiling, settings, run.within(0.02, start, "Downloading"))
    return Inputs(models, groups, start, level, bands)


def plan_area(spec: JobSpec, out_dir: Path) -> JobArea:
    """The stored AOI (validated when the spec was built) and its grid; the output folder checked first."""
    export.check_writable(out_dir)
    return JobArea.of(spec)


def check_space(
    cards: Catalogue,
    spec: JobSpec,
    area: JobArea,
    scenes: list[Scene],
    folders: list[diskspace.Folder],
    needs: diskspace.DiskNeeds,
) -> list[str]:
    """Record the space the job needs in each folder (for a DiskFull sentence), and warn where it is short."""
    chosen = cards.job_models(spec.task, spec.model_id)
    estimate = estimate_job(area.aoi, scenes, chosen.model, chosen.cloud_model)
    *out, cache = folders  # an --out outside the cache comes first
    needs.mb_by_label[cache.label] = estimate.cache_mb + (0 if out else estimate.output_mb)
    for folder in out:
        needs.mb_by_label[folder.label] = estimate.output_mb
    warnings = [
        warning
        for folder in folders
        if (warning := diskspace.space_warning(needs.mb_by_label[folder.label], folder)) is not None
    ]
    for warning in warnings:
        log.warning("%s", warning)
    return warnings


def scene_facts(scenes: list[Scene]) -> tuple[str, frozenset[str]]:
    """What models are loaded for: the scenes' processing level, and the bands every scene has."""
    return scenes[0].processing_level, frozenset(set.intersection(*(set(s.bands) for s in scenes)))


def load_models(
    cards: Catalogue,
    spec: JobSpec,
    processing_level: str,
    available_bands: frozenset[str],
    settings: Settings,
) -> Models:
    """The job's models, for the scenes' processing level and the bands every scene has."""
    options = LoadOptions(
        processing_level=processing_level,
        available_bands=available_bands,
        device=settings.device,
        threads=settings.torch_threads,
        compile=settings.torch_compile,
        cache_dir=settings.cache_dir,
    )
    chosen = cards.job_models(spec.task, spec.model_id)
    cloud = load(cards, chosen.cloud_model.id, options) if chosen.cloud_model is not None else None
    return Models(load(cards, spec.model_id, options), cloud)  # spec.model_id may name a version (id@N)


def cloud_grid(models: Models, area: JobArea, tiling: TilingOptions) -> Grid:
    """Where the cloud model runs: the job's grid, or a series model's context (it reads clear masks there)."""
    if models.runs_as_series:
        return tile_layout(models.model.card, area.grid, tiling.overlap_px).context
    return area.grid


def download(
    models: Models,
    area: JobArea,
    scenes: list[Scene],
    tiling: TilingOptions,
    settings: Settings,
    run: RunContext,
) -> dict[date, list[Scene]]:
    """Make the usable scenes readable from the cache, grouped by date.

    DHuS products are downloaded whole (verified); from STAC COGs only the window of the bands the models and
    the true-colour image read: the AOI and the context around it that the models see.
    """
    usable = analysis.usable_scenes(scenes, models.model.card)
    layouts = [tile_layout(models.model.card, area.grid, tiling.overlap_px)]
    needed = set(models.model.card.bands) | set(export.TRUE_COLOUR_BANDS)
    if models.cloud_model is not None:
        layouts.append(
            tile_layout(models.cloud_model.card, cloud_grid(models, area, tiling), tiling.overlap_px)
        )
        needed |= set(models.cloud_model.card.bands)
    fetched = fetch_scenes(usable, needed, context_area(layouts), settings, run)
    return analysis.group_by_date(fetched)


@contextmanager
def hold_work_dir(run: RunContext) -> Iterator[None]:
    """Own `run.work_dir` for this process; an identical request already running there is waited for."""
    lock_path = run.work_dir.with_name(run.work_dir.name + ".lock")
    while True:
        with file_lock(lock_path, wait_s=1.0, remove=True) as held:
            if held:
                yield
                return
        run.report(0.1, "Waiting: an identical request is running; its work will be reused")
        run.check_cancelled()


class DatePasses(Protocol):
    """Runs one of a job's models over its grid for some dates: results on the job's grid, rasters under
    `run.work_dir/<date>/` (analysis.predict_dates' contract)."""

    def __call__(
        self, role: Role, groups: dict[date, list[Scene]], run: RunContext, clip_to_aoi: bool
    ) -> list[analysis.DateResult]: ...

    def records(self) -> list[report.ChunkRecord]:
        """What run.json lists of the chunks (none for a single pass)."""
        ...

    def cleanup(self) -> None:
        """Drop what the passes left once the outputs are published."""
        ...


@dataclass(frozen=True)
class WholeGrid:
    """One pass over the whole grid, in this process."""

    models: Models
    area: JobArea
    tiling: TilingOptions

    def __call__(
        self, role: Role, groups: dict[date, list[Scene]], run: RunContext, clip_to_aoi: bool
    ) -> list[analysis.DateResult]:
        grid = cloud_grid(self.models, self.area, self.tiling) if role == "judge" else self.area.grid
        model = self.models.of_role(role)
        return analysis.predict_dates(
            groups, model, grid, self.area.aoi_grid, run, self.tiling, clip_to_aoi=clip_to_aoi
        )

    def records(self) -> list[report.ChunkRecord]:
        return []

    def cleanup(self) -> None:
        return None
