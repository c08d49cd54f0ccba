"""The job request: raw fields from the CLI or the page become one validated JobSpec, in one function.

`build_spec` is the only place a request is checked (AOI rules and limits, dates, task and model, sources); the
stored spec is trusted afterwards (the worker checks its schema version only).
"""

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import PurePosixPath
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry.base import BaseGeometry

import core
from core.config import Settings
from core.errors import DateRangeError, SpecError
from core.geometry.aoi import AOI, AOILike, parse_aoi
from core.geometry.grid import Grid, grid_for_aoi, project_geometry
from core.types import ModelCard, ModelRef

SPEC_SCHEMA_VERSION = 2


class AOIValue(BaseModel):
    """A validated area of interest as stored in a spec: a GeoJSON (Multi)Polygon in EPSG:4326 and its area."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    geometry: dict[str, Any]
    area_km2: float = Field(gt=0)

    @classmethod
    def of(cls, aoi: AOI) -> "AOIValue":
        # As JSON types (lists, not tuples), so that a spec read back from its file equals the one written.
        return cls(geometry=json.loads(json.dumps(aoi.to_geojson())), area_km2=aoi.area_km2)

    def to_aoi(self) -> AOI:
        """The AOI again, without re-validating it: it was validated when the spec was built."""
        geometry = shape(self.geometry)
        if not isinstance(geometry, Polygon | MultiPolygon):
            raise SpecError(f"The stored area is a {geometry.geom_type}, not a polygon.")
        return AOI(geometry=geometry, area_km2=self.area_km2, label="the job request")


class JobSpec(BaseModel):
    """What a user asked for, validated by build_spec."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[2] = 2  # SPEC_SCHEMA_VERSION; older specs are refused, not guessed at
    aoi: AOIValue
    start: date
    end: date
    task: str
    model_id: str
    sources: tuple[str, ...] = ("sample",)
    selected_date: date | None = None  # None: the least cloudy date
    max_cloud_pct: float | None = Field(None, ge=0, le=100)

    @model_validator(mode="after")
    def _dates_in_order(self) -> "JobSpec":
        if self.end < self.start:
            raise DateRangeError(f"The end date {self.end} is before the start date {self.start}. Swap them.")
        if self.selected_date is not None and not self.start <= self.selected_date <= self.end:
            raise DateRangeError(f"The chosen date {self.selected_date} is outside {self.start}..{self.end}.")
        return self

    def spec_hash(self, model_version: str) -> str:
        """sha256 over AOI, dates, task, model and its version, sources and TerraSeg's version."""
        payload = self.model_dump(mode="json") | {
            "model_version": model_version,
            "code_version": core.__version__,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class JobArea:
    """A job's area and the 10 m grid it is mapped on, computed once from the stored spec."""

    aoi: AOI
    grid: Grid
    aoi_grid: BaseGeometry  # the AOI in the grid's CRS

    @classmethod
    def of(cls, spec: "JobSpec") -> "JobArea":
        aoi = spec.aoi.to_aoi()
        grid = grid_for_aoi(aoi.geometry)
        return cls(aoi, grid, project_geometry(aoi.geometry, "EPSG:4326", grid.crs))


@dataclass(frozen=True)
class JobModels:
    """The models a job of one task runs: its own, and the cloud model that chooses its date and masks it."""

    model: ModelCard
    cloud_model: ModelCard | None  # None for the cloud task itself, and for crop models on monthly cubes

    @property
    def trained_levels(self) -> tuple[str, ...]:
        """The processing levels every model of the job was trained on, in the task model's order of preference
        (the scenes a search should prefer)."""
        cloud = self.cloud_model
        return tuple(
            lv for lv in self.model.processing_levels if cloud is None or lv in cloud.processing_levels
        )


class ModelLookup(Protocol):
    """What building a request needs to know of the models (models.catalogue.Catalogue)."""

    def job_models(self, task: str, model_id: str | None) -> JobModels: ...

    def require_weights(self, model_id: str) -> ModelCard: ...


@dataclass(frozen=True)
class JobRequest:
    """A request as typed on the CLI or entered on the page, before any check."""

    aoi: AOILike | AOI  # an AOI the page has parsed already (to show it) passes as it is
    start: date | str
    end: date | str
    task: str
    model_id: str | None = None  # None: the task's default model
    sources: tuple[str, ...] = ("sample",)
    selected_date: date | str | None = None
    max_cloud_pct: float | None = None
    fix_aoi: bool = False


def build_spec(
    request: JobRequest,
    settings: Settings,
    models: ModelLookup,
    check_source: Callable[[str], object],
) -> JobSpec:
    """Check `request` once and return its JobSpec; every problem is an AppError with a plain sentence.

    `check_source(name)` refuses a source (it raises SourceError): the CLI passes the syntax check, the web app
    also its operator's limits on folders and URLs.
    """
    aoi = request.aoi
    if not isinstance(aoi, AOI):
        aoi = parse_aoi(
            aoi,
            max_area_km2=settings.max_aoi_km2,
            max_vertices=settings.max_aoi_vertices,
            fix_invalid=request.fix_aoi,
        )
    start, end = check_dates(request.start, request.end, today=date.today())
    chosen = as_date(request.selected_date, "chosen") if request.selected_date is not None else None
    card = models.job_models(request.task, request.model_id).model
    # `id@N` names one version of a model trained here; a plain id runs the version in production when it starts.
    model_id = (
        request.model_id if request.model_id and ModelRef.parse(request.model_id).is_pinned else card.id
    )
    models.require_weights(model_id)  # an untrained model cannot run: say so before anything is searched
    if not request.sources:
        raise SpecError("Name at least one source, e.g. 'sample'.")
    for name in request.sources:
        check_source(name)
    try:
        return JobSpec(
            aoi=AOIValue.of(aoi),
            start=start,
            end=end,
            task=request.task,
            model_id=model_id,
            sources=request.sources,
            selected_date=chosen,
            max_cloud_pct=request.max_cloud_pct,
        )
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SpecError(f"Invalid job request: {where}: {first['msg']}.") from None


def check_dates(start: date | str, end: date | str, today: date) -> tuple[date, date]:
    """The request's dates, checked as the page (beside its date fields) and the CLI both check them: each a
    date, the end not after `today` and not before the start; else a DateRangeError saying which."""
    first, last = as_date(start, "start"), as_date(end, "end")
    check_not_future(last, today)
    if last < first:
        raise DateRangeError(f"The end date {last} is before the start date {first}. Swap them.")
    return first, last


def check_not_future(end: date, today: date) -> None:
    """DateRangeError when the end date is after `today`: no satellite has imaged it yet."""
    if end > today:
        raise DateRangeError(
            f"The end date {end} is after today ({today}); no imagery exists yet. Choose an end date up to today."
        )


def as_date(value: date | str, what: str) -> date:
    """A date, or 'YYYY-MM-DD' text -> date; a DateRangeError naming the field otherwise."""
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except ValueError as err:
        raise DateRangeError(f"The {what} date {value!r} is not a date in the form YYYY-MM-DD.") from err


class LabelsTraining(BaseModel):
    """A training run's data: labels over imagery (as `terraseg train --labels` takes them), checked at submission.
    The labels file is in the run's folder as `labels_file`; the area is stored as GeoJSON."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["labels"] = "labels"
    mode: str = "head"
    block_px: int = Field(32, ge=1)
    val_fraction: float = Field(0.2, gt=0, lt=1)
    parent_classes: dict[str, str] = Field(default_factory=dict)
    labels_file: str = Field(pattern=r"^labels\.[a-z]+$")  # a name inside the run's folder, never a path
    label_field: str
    aoi_geojson: str
    start: date
    end: date
    sources: tuple[str, ...] = ("sample",)

    def describe(self) -> str:
        return f"labels {self.label_field} · {self.start}..{self.end} · {', '.join(self.sources)}"


class SamplesTraining(BaseModel):
    """A training run's data: WorldCereal sample tables (as `terraseg train --samples` takes them), copied into the
    run's folder as `sample_files`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["samples"] = "samples"
    sample_files: tuple[str, ...] = Field(min_length=1)
    legend: str = ""  # default: the base's
    min_samples: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _names_in_the_folder(self) -> "SamplesTraining":
        for name in self.sample_files:
            if not re.fullmatch(r"samples-[0-9]+\.(parquet|geoparquet)", name):
                raise ValueError(f"{name!r} is not a samples file name of a training run")
        return self

    def describe(self) -> str:
        return f"{len(self.sample_files)} samples table(s) · legend {self.legend or 'of the base'}"


class DatasetTraining(BaseModel):
    """A training run's data: a patch dataset's release folder on the server (`terraseg train --dataset`; the
    command line only, where the operator names server folders)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["dataset"] = "dataset"
    root: str
    format: str
    mode: str = "head"
    val_fraction: float = Field(0.2, gt=0, lt=1)
    pixels_per_patch: int = Field(2000, ge=1)
    parent_classes: dict[str, str] = Field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.format} dataset, {self.mode}"


class TrainingSpec(BaseModel):
    """A training run queued for a worker, checked at submission."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1  # older training specs are refused, not guessed at
    base_id: str
    new_id: str
    epochs: int = Field(200, ge=1)
    seed: int = 0
    by: str  # who started it, for the new version's card
    data: LabelsTraining | SamplesTraining | DatasetTraining = Field(discriminator="kind")


class ChunkSpec(BaseModel):
    """One pass of one model over one chunk of a large job (core.geometry.chunks), queued by the job for any worker.

    The work goes to `<cache>/work/<work_name>/<pass_name>/chunks/<index>/`, inside the job's own work folder;
    both are names checked here, never paths. The chunk reads the scenes its job wrote there (no search, no
    download of its own).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    job: JobSpec  # the whole job, its model version pinned
    job_id: str | None = None  # the job's id, whose cancel stops the chunk too (None: not a queued job)
    work_name: str = Field(pattern=r"^[0-9a-f]{64}$")  # the job's work folder: its spec hash
    pass_name: Literal["", "cloud", "model"]  # "": the cloud task's own pass
    role: Literal["judge", "model"]  # the model that judges the dates (the cloud model), or the task's own
    dates: tuple[date, ...] = Field(min_length=1)
    clip_to_aoi: bool = True
    index: int = Field(ge=0)
    row_off: int = Field(ge=0)
    col_off: int = Field(ge=0)
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    chunks: int = Field(gt=0)  # how many chunks the job has, for messages

    def describe(self) -> str:
        return f"chunk {self.index + 1}/{self.chunks} ({self.role} pass, {len(self.dates)} dates)"


def public_source(source: str) -> str:
    """A source as a record a user downloads names it: a folder or a file by its own name (`local:scenes`),
    never the server's path; catalogues and mirrors by their preset name or URL, as given."""
    kind, separator, rest = source.partition(":")
    if separator and kind in ("local", "cube"):
        return f"{kind}:{PurePosixPath(rest.rstrip('/')).name}"
    return source
