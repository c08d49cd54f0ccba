"""What a finished job reports: `stats.json` (areas, per-date fractions, warnings) and `run.json` (provenance).

Both are typed here, built from the stages' results by the functions below, written by export and read back by
the Results page through the same types.
"""

import csv
import dataclasses
import importlib.metadata
import io
import platform
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol
from urllib.parse import urlsplit

import numpy as np
import rasterio
from pydantic import BaseModel, ConfigDict, ValidationError

import core
from core.errors import OutputError
from core.jobs.request import JobArea, JobSpec, public_source
from core.jobs.store import utc_now
from core.mapping import analysis
from core.mapping.analysis import DateResult
from core.types import ModelCard, Scene


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClassArea(_Record):
    """One class's pixels, area (ha) and share (%) of the valid pixels inside the AOI."""

    value: int
    name: str
    color: str
    pixels: int
    area_ha: float
    percent: float


class DateFractions(_Record):
    """One date: the share of the AOI with data (0-1) and each class's share of those pixels (None: no data)."""

    date: str
    scenes: list[str]
    valid_fraction: float
    fractions: dict[str, float | None]


class Stats(_Record):
    """stats.json: the published map's areas per class, the dates' fractions, and warnings for the user."""

    task: str
    model_id: str
    selected_date: str  # YYYY-MM-DD, or "first..last (N dates)" for a series model
    aoi_area_km2: float
    pixel_area_m2: float
    aoi_pixels: int
    valid_pixels: int
    classes: list[ClassArea]
    dates: list[DateFractions]  # judged by the cloud model when one ran
    warnings: list[str] = []  # a (nearly) empty map, and why
    series_dates: list[str] | None = None  # the dates a series model used
    cloud_model_id: str | None = None  # the model that chose the date and masked clouds (single-date models)
    cloud_masked_pixels: int | None = None
    cropland_model_id: str | None = None  # crop jobs: the model of cropland.tif
    cropland: list[ClassArea] | None = None  # crop jobs: cropland.tif's areas

    def csv(self) -> str:
        """The per-class areas as CSV text (one row per class, spreadsheet-ready)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["value", "class", "pixels", "area_ha", "percent"])
        writer.writerows([c.value, c.name, c.pixels, c.area_ha, c.percent] for c in self.classes)
        return buffer.getvalue()


class InputRecord(_Record):
    id: str
    source: str
    date: str
    acquired: str
    path: str
    processing_level: str
    processing_baseline: str | None
    cloud_cover_pct: float | None
    radiometry: dict[str, dict[str, float]]  # band -> {"scale", "add_offset"} for the model's bands


class ModelRecord(_Record):
    id: str
    version: str
    status: str
    weights_file: str
    weights_sha256: str
    bands: list[str]
    resolution_m: float
    licence: str
    provenance: str


class CloudModelRecord(_Record):
    id: str
    version: str
    weights_file: str
    weights_sha256: str
    use: str = "chose the clearest date; its clouds and shadows are no data in the class map"


class AOIRecord(_Record):
    geometry: dict[str, Any]  # GeoJSON, EPSG:4326
    area_km2: float


class ChunkPassRecord(_Record):
    """One model pass over one chunk: which job ran it, on which worker, in how many attempts."""

    pass_name: str  # "cloud" (the cloud model on every date), "model" (the task's model), "" (the cloud task)
    job_id: str | None  # the chunk job (None: run by the job itself, outside the queue)
    worker: str
    attempts: int


class ChunkRecord(_Record):
    """One chunk of a large job: its window of the job's grid (pixels) and the passes that mapped it."""

    index: int
    row_off: int
    col_off: int
    height: int
    width: int
    passes: list[ChunkPassRecord]


class RunRecord(_Record):
    """run.json: the inputs, model and weights, grid, settings, timings and software versions of a run."""

    terraseg_version: str
    finished_at: str
    spec: dict[str, Any]
    spec_hash: str
    aoi: AOIRecord
    grid: dict[str, Any]
    selected_date: str
    series_dates: list[str] | None  # the dates a series model used (None: a single-date model)
    inputs: list[InputRecord]
    model: ModelRecord
    cloud_model: CloudModelRecord | None
    settings: dict[str, Any]
    timings_s: dict[str, float]
    versions: dict[str, str]
    notes: list[str] = []  # what a reader of the outputs must know (e.g. a crop map made without Sentinel-1)
    chunks: list[ChunkRecord] = []  # a large job's chunks (none: the grid was mapped in one pass)


class Weights(Protocol):
    """A loaded model as the record names it: its card (as it applied to the input) and its weights
    (models.registry.LoadedModel is one)."""

    @property
    def card(self) -> ModelCard: ...

    @property
    def weights_file(self) -> str: ...

    @property
    def weights_sha256(self) -> str: ...


def class_areas(counts: np.ndarray, card: ModelCard, pixel_area_m2: float) -> list[ClassArea]:
    """Per-class area in ha and share in % of the valid pixels inside the AOI."""
    total = int(counts.sum())
    return [
        ClassArea(
            value=c.value,
            name=c.name,
            color=c.color,
            pixels=int(counts[c.value]),
            area_ha=round(int(counts[c.value]) * pixel_area_m2 / 10_000, 4),
            percent=round(100.0 * int(counts[c.value]) / total, 4) if total else 0.0,
        )
        for c in card.classes
    ]


def date_fractions(results: list[DateResult], card: ModelCard) -> list[DateFractions]:
    """For each date: valid coverage of the AOI and each class's fraction of the valid pixels (0-1)."""
    rows = []
    for result in results:
        valid, aoi_px = result.valid_px, result.inference.aoi_px
        rows.append(
            DateFractions(
                date=result.date.isoformat(),
                scenes=[s.id for s in result.scenes],
                valid_fraction=round(valid / aoi_px, 6) if aoi_px else 0.0,
                fractions={
                    c.name: round(int(result.inference.class_counts[c.value]) / valid, 6) if valid else None
                    for c in card.classes
                },
            )
        )
    return rows


def build_stats(
    spec: JobSpec,
    area: JobArea,
    results: list[DateResult],
    published: DateResult,
    model: ModelCard,
    cloud_model: ModelCard | None,
    caveats: list[str] | None = None,
) -> Stats:
    """The statistics of a job that published `published` with `model`; `results` are the dates as judged by
    the cloud model (or by `model` itself for the cloud task). `caveats` (a model run on a level it was not
    trained on) come first among the warnings."""
    grid = area.grid
    series_dates = sorted({s.date_iso for s in published.scenes}) if model.is_series else None
    # Pixels with data on the published date before cloud masking: the judging model's count of that date.
    data_px = next(
        (int(r.inference.class_counts.sum()) for r in results if r.date == published.date), published.valid_px
    )
    masked_px = None
    if cloud_model is not None and series_dates is None:
        masked_px = data_px - published.valid_px
    return Stats(
        task=spec.task,
        model_id=model.id,
        selected_date=published.date.isoformat()
        if series_dates is None
        else f"{series_dates[0]}..{series_dates[-1]} ({len(series_dates)} dates)",
        aoi_area_km2=round(area.aoi.area_km2, 6),
        pixel_area_m2=grid.pixel_area_m2,
        aoi_pixels=published.inference.aoi_px,
        valid_pixels=published.valid_px,
        classes=class_areas(published.inference.class_counts, model, grid.pixel_area_m2),
        dates=date_fractions(results, cloud_model or model),
        warnings=[
            *(caveats or []),
            *analysis.coverage_warnings(
                published.inference.aoi_px,
                data_px,
                published.valid_px,
                published.date,
                cloud_model.id if cloud_model is not None else None,
            ),
        ],
        series_dates=series_dates,
        cloud_model_id=cloud_model.id if cloud_model is not None and series_dates is None else None,
        cloud_masked_pixels=masked_px,
    )


def _input_record(scene: Scene, bands: tuple[str, ...]) -> InputRecord:
    return InputRecord(
        id=scene.id,
        source=public_source(scene.source),
        date=scene.date_iso,
        acquired=scene.acquired.isoformat(),
        path=PurePosixPath(urlsplit(scene.path).path).name
        or scene.path,  # the file, not the server's folders
        processing_level=scene.processing_level,
        processing_baseline=scene.processing_baseline,
        cloud_cover_pct=scene.cloud_cover_pct,
        radiometry={
            b: {"scale": a.scale, "add_offset": a.add_offset} for b, a in scene.bands.items() if b in bands
        },
    )


@dataclass(frozen=True)
class RunSettings:
    """The settings a run's outputs depend on, as its record names them."""

    device: str
    batch_size: int
    tile_overlap_px: int


@dataclass(frozen=True)
class RunFacts:
    """How a run went, as its record tells it: the settings its outputs depend on, each stage's time, what a
    reader of the outputs must know (a model's caveat for the scenes' level), and a large job's chunks."""

    settings: RunSettings
    timings_s: dict[str, float]
    notes: list[str] = dataclasses.field(default_factory=list)
    chunks: list[ChunkRecord] = dataclasses.field(default_factory=list)


def build_run_record(
    spec: JobSpec,
    area: JobArea,
    results: list[DateResult],
    stats: Stats,
    models: tuple[Weights, Weights | None],
    facts: RunFacts,
) -> RunRecord:
    """Provenance of a run: inputs, model and weights, grid, timings and software versions."""
    model, cloud_model = models
    card = model.card
    return RunRecord(
        terraseg_version=terraseg_version(),
        finished_at=utc_now(),
        spec=spec.model_dump(mode="json") | {"sources": [public_source(s) for s in spec.sources]},
        spec_hash=spec.spec_hash(card.version),
        aoi=AOIRecord(geometry=area.aoi.to_geojson(), area_km2=round(area.aoi.area_km2, 6)),
        grid=area.grid.to_dict(),
        selected_date=stats.selected_date,
        series_dates=stats.series_dates,
        inputs=[_input_record(s, card.bands) for r in results for s in r.scenes],
        model=ModelRecord(
            id=card.id,
            version=card.version,
            status=card.status,
            weights_file=model.weights_file,
            weights_sha256=model.weights_sha256,
            bands=list(card.bands),
            resolution_m=card.resolution_m,
            licence=card.licence,
            provenance=card.provenance,
        ),
        cloud_model=None
        if cloud_model is None
        else CloudModelRecord(
            id=cloud_model.card.id,
            version=cloud_model.card.version,
            weights_file=cloud_model.weights_file,
            weights_sha256=cloud_model.weights_sha256,
        ),
        settings=dataclasses.asdict(facts.settings),
        timings_s=dict(facts.timings_s),
        versions=software_versions(),
        notes=list(facts.notes),
        chunks=list(facts.chunks),
    )


def terraseg_version() -> str:
    return core.__version__


def software_versions() -> dict[str, str]:
    """The versions a run's outputs depend on, for run.json. The model runtimes' versions are read from their
    installed metadata: importing lightgbm (and with it scikit-learn and scipy) only to ask cost each job a second."""
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__,
        **{name: installed_version(name) for name in ("torch", "onnxruntime", "lightgbm")},
    }


def installed_version(distribution: str) -> str:
    """The version pip installed ('2.13.0+cpu'), or 'not installed'."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def read_stats(path: Path) -> Stats:
    """A job's stats.json, or an OutputError saying it is damaged."""
    try:
        return Stats.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as err:
        raise OutputError(
            f"The statistics of this job ({path.name}) cannot be read; run the job again."
        ) from err


def read_run_record(path: Path) -> RunRecord | None:
    """A job's run.json, or None when it is missing or damaged (older jobs, a removed file)."""
    try:
        return RunRecord.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None
