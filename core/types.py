"""Plain data records passed between stages: scenes and their bands, and model cards. No IO here."""

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator
from shapely.geometry.base import BaseGeometry

S2_BANDS: tuple[str, ...] = (
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B10",
    "B11",
    "B12",
)
S1_BANDS: tuple[str, ...] = ("VV", "VH")


@dataclass(frozen=True)
class BandAsset:
    """One band of one scene, as a GDAL-readable path and how its values become physical units.

    `reflectance = (DN + add_offset) * scale`; `nodata` is the raw DN that marks no data (None: none).
    `band_index` is 1-based within `path`.
    """

    path: str
    band_index: int = 1
    scale: float = 1.0
    add_offset: float = 0.0
    nodata: float | None = None
    resolution_m: float | None = None


@dataclass(frozen=True)
class Scene:
    """One acquisition of one sensor, with everything the pipeline needs to read and to record it."""

    id: str
    source: str
    sensor: str  # "S2" or "S1"
    acquired: datetime  # UTC
    footprint: BaseGeometry  # EPSG:4326
    processing_level: str  # L1C, L2A or GRD
    bands: dict[str, BandAsset]
    processing_baseline: str | None = None
    cloud_cover_pct: float | None = None
    path: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def date_iso(self) -> str:
        """Acquisition date as YYYY-MM-DD (UTC)."""
        return self.acquired.date().isoformat()


@dataclass(frozen=True)
class ClassInfo:
    """One output class of a model: its raster value, name and display colour (#rrggbb)."""

    value: int
    name: str
    color: str


class NoNormalisation(BaseModel):
    """Reflectance as it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["none"] = "none"


class StandardNormalisation(BaseModel):
    """(x - mean[i]) / std[i] per band; a card may instead say where the statistics come from at load time
    (`mean_std_from`, e.g. csmask's variants), and the loader gives the card it returns the numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["standard"] = "standard"
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    mean_std_from: str | None = None

    @model_validator(mode="after")
    def _statistics_or_source(self) -> "StandardNormalisation":
        if len(self.mean) != len(self.std) or not (self.mean or self.mean_std_from):
            raise ValueError("standard normalisation needs mean and std of equal length, or mean_std_from")
        return self


class LogSigmoidNormalisation(BaseModel):
    """Dynamic World's transform of DN = reflectance x dn_scale, per band i:
    x = sigmoid(slope * (ln(1 + log_factor * DN) - low[i]) / spread[i] - shift)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["log-sigmoid"] = "log-sigmoid"
    dn_scale: float
    log_factor: float
    low: tuple[float, ...]
    spread: tuple[float, ...]
    slope: float
    shift: float


class ScaleClipNormalisation(BaseModel):
    """x * scale[i] + offset[i] per band, clipped to [low, high] (DFC2020: S2 to 0..1, S1 dB / 25 + 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["scale-clip"] = "scale-clip"
    scale: tuple[float, ...]
    offset: tuple[float, ...]
    low: float
    high: float


class PrestoNormalisation(BaseModel):
    """Presto's fixed per-channel shift and scale of physical values (core.mapping.presto_inputs.normalise)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["presto"] = "presto"


class UnknownNormalisation(BaseModel):
    """An untrained card whose input statistics are not known offline: such a model cannot run."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["unknown"] = "unknown"
    note: str = ""


Normalisation = Annotated[
    NoNormalisation
    | StandardNormalisation
    | LogSigmoidNormalisation
    | ScaleClipNormalisation
    | PrestoNormalisation
    | UnknownNormalisation,
    Field(discriminator="kind"),
]


class SingleDate(BaseModel):
    """A model that maps one date's image to a class map."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: Literal["single"] = "single"
    date_choice: str = "the clearest date by the cloud model"


class Series(BaseModel):
    """A model that maps up to `max_dates` dates at once (B, T, C, S, S); `position_origin` is the day its
    date positions count from (None: the first chosen date)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: Literal["series"] = "series"
    max_dates: int = Field(gt=0)
    date_choice: str = ""
    position_origin: date | None = None


Temporal = Annotated[SingleDate | Series, Field(discriminator="mode")]
Status = Literal["pretrained", "trained-here", "untrained"]
STATUSES: tuple[str, ...] = get_args(Status)
NodataFill = Literal["nearest", "zero"]
# What a model produces: a class map (the jobs run these) or labels for a whole image (no job runs these yet).
Output = Literal["map", "scene-tags"]


BF16_MIN_AGREEMENT = 0.995  # bf16 autocast runs a model on the CPU only when it keeps this share of its classes


class InferenceTuning(BaseModel):
    """How a PyTorch model runs fastest while keeping its outputs, as bench/inference_tuning.py measured it.

    `fold_batch_norms`: batch norms folded into the convolutions before them (probabilities within 1e-7).
    `compile`: torch.compile keeps the probabilities within 1e-4 and speeds the forward pass up; a worker compiles
    only when its operator asks (TERRASEG_TORCH_COMPILE: the compile costs tens of seconds per worker and shape).
    `cpu_bf16`: bf16 autocast on CPUs that have bf16 instructions, allowed only when `bf16_argmax_agreement` (the
    share of real test pixels whose class stays the fp32 one) is at least BF16_MIN_AGREEMENT.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    fold_batch_norms: bool = True
    compile: bool = False
    cpu_bf16: bool = False
    bf16_argmax_agreement: float | None = Field(None, ge=0, le=1)
    measured: str = ""  # on what: the scenes, the machine, the date

    @model_validator(mode="after")
    def _bf16_earned(self) -> "InferenceTuning":
        if self.cpu_bf16 and (self.bf16_argmax_agreement or 0) < BF16_MIN_AGREEMENT:
            raise ValueError(
                f"cpu_bf16 needs a measured bf16_argmax_agreement of at least {BF16_MIN_AGREEMENT}, "
                f"not {self.bf16_argmax_agreement}"
            )
        return self


@dataclass(frozen=True)
class ModelRef:
    """A model as a job names it: `id` (the version in production when the job starts) or `id@N` (version N of a
    model trained here)."""

    model_id: str
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> "ModelRef":
        """'id' or 'id@N' -> ModelRef ('id@' names no version)."""
        model_id, _, version = text.partition("@")
        return cls(model_id, version or None)

    @property
    def is_pinned(self) -> bool:
        """Whether it names one version rather than whichever is in production."""
        return self.version is not None

    def __str__(self) -> str:
        return self.model_id if self.version is None else f"{self.model_id}@{self.version}"


class ModelCard(BaseModel):
    """What the pipeline needs to know about a model, and what a user needs to trust it.

    `resolution_m` is the pixel size the model expects; the pipeline averages 10 m input down to it and brings
    probabilities back up. `tile_px` is in model pixels. Checked when read (models.catalogue.read_card).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    version: str
    task: str
    description: str
    architecture: str
    sensor: str
    bands: tuple[str, ...]
    processing_levels: tuple[str, ...]  # the levels it was trained on, the one to prefer first
    resolution_m: float = Field(gt=0)
    tile_px: int = Field(gt=0)
    normalisation: Normalisation
    classes: tuple[ClassInfo, ...]
    status: Status
    licence: str
    provenance: str
    nodata_value: int = 255
    weights: tuple[str, ...] = ()  # file names, for the record
    # Model-forward seconds per million 10 m pixels on a 2-vCPU CPU worker, for the pre-flight estimate.
    cpu_s_per_mpx: float | None = None
    temporal: Temporal = SingleDate()
    # Reported by the model's authors or measured here.
    metrics: dict[str, object] = Field(default_factory=dict)
    # For a model trained here: its base, mode, dataset hash, sample counts, seed, when (models.training).
    training: dict[str, Any] = Field(default_factory=dict)
    weights_sha256: dict[str, str] = Field(default_factory=dict)  # weights file name -> pinned sha256
    # How the registry loads it (models.registry.LOADERS: a shipped runtime or a PyTorch architecture) and the
    # architecture's constructor arguments. Empty: no loader yet (the card documents a model to come).
    builder: str = ""
    builder_args: dict[str, Any] = Field(default_factory=dict)
    # The model a job of this task uses when none is named (one per task).
    default_for_task: bool = False
    output: Output = "map"
    # How invalid input pixels (outside the scenes, no data) are filled before the model sees them; they are
    # no data in every output whatever the fill. See core.geometry.tiling.fill_nodata.
    nodata_fill: NodataFill = "nearest"
    # True for models that classify each pixel from its own values (s2cloudless): they need no context
    # around the grid, so their tiles follow the job's grid instead of the CRS-anchored lattice.
    per_pixel: bool = False
    # For a model whose labels come from a WorldCereal legend: the legend's name in class_mappings.json.
    label_mapping: str = ""
    # Levels the model was not trained on but may run on when a job's sources offer no other, each with what a
    # reader of its map must know (stats.json warnings, run.json notes, the job's status). A source of a trained
    # level is preferred whenever the job lists one (core.jobs.preflight.find_scenes).
    level_caveats: dict[str, str] = Field(default_factory=dict)
    inference: InferenceTuning = InferenceTuning()  # PyTorch models only

    @model_validator(mode="after")
    def _consistent(self) -> "ModelCard":
        if [c.value for c in self.classes] != list(range(len(self.classes))) or self.nodata_value < len(
            self.classes
        ):
            raise ValueError("classes must be numbered 0..K-1, below the nodata value")
        missing = [w for w in self.weights if self.status != "untrained" and w not in self.weights_sha256]
        if missing:
            raise ValueError(f"no sha256 pinned for {', '.join(missing)}")
        return self

    def runs_on(self, processing_level: str) -> bool:
        """Whether the model runs on scenes of `processing_level` (trained on it, or with a caveat)."""
        return processing_level in self.processing_levels or processing_level in self.level_caveats

    def caveat_for(self, processing_level: str) -> str:
        """What a reader must know of this model's map of `processing_level` scenes ("" for a trained level)."""
        if processing_level in self.processing_levels:
            return ""
        return self.level_caveats.get(processing_level, "")

    @property
    def runnable_levels(self) -> tuple[str, ...]:
        """The levels it runs on, trained ones first."""
        return self.processing_levels + tuple(lv for lv in self.level_caveats if lv not in self.processing_levels)

    @property
    def n_classes(self) -> int:
        """Number of output classes (probability channels)."""
        return len(self.classes)

    @property
    def is_series(self) -> bool:
        """Whether the model reads a series of dates at once."""
        return isinstance(self.temporal, Series)

    def replace(self, **changes: Any) -> "ModelCard":
        """A copy with `changes`, validated like a card read from its file."""
        return ModelCard.model_validate(self.model_dump() | changes)
