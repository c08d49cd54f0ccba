"""Plain data records passed between stages: scenes and their bands. No IO here."""

from dataclasses import dataclass, field
from datetime import datetime

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


@dataclass(frozen=True)
class ModelCard:
    """What the pipeline needs to know about a model, and what a user needs to trust it.

    `normalisation` is `{"kind": "none"}` (reflectance as is) or `{"kind": "standard", "mean": [...],
    "std": [...]}` per band in `bands` order. `resolution_m` is the pixel size the model expects; the
    pipeline averages 10 m input down to it and brings probabilities back up. `tile_px` is in model pixels.
    """

    id: str
    version: str
    task: str
    description: str
    architecture: str
    sensor: str
    bands: tuple[str, ...]
    processing_levels: tuple[str, ...]
    resolution_m: float
    tile_px: int
    normalisation: dict[str, object]
    classes: tuple[ClassInfo, ...]
    status: str  # pretrained | trained-here | untrained
    licence: str
    provenance: str
    nodata_value: int = 255
    weights: tuple[str, ...] = ()  # file names, for the record
    # Model-forward seconds per million 10 m pixels on a 2-vCPU CPU worker, for the pre-flight estimate.
    cpu_s_per_mpx: float | None = None
    # {"mode": "single"} or {"mode": "series", "max_dates": T, "date_choice": "..."}.
    temporal: dict[str, object] = field(default_factory=lambda: {"mode": "single"})
    # Reported by the model's authors or measured here.
    metrics: dict[str, object] = field(default_factory=dict)
    weights_sha256: dict[str, str] = field(default_factory=dict)  # weights file name -> pinned sha256
    # For PyTorch models whose weights sit next to the card (e.g. trained here): which architecture to build
    # (models.registry.BUILDERS) and its constructor arguments.
    builder: str = ""
    builder_args: dict[str, object] = field(default_factory=dict)
    # How invalid input pixels (outside the scenes, no data) are filled before the model sees them; they are
    # no data in every output whatever the fill. See core.tiling.fill_nodata.
    nodata_fill: str = "nearest"
    # True for models that classify each pixel from its own values (s2cloudless): they need no context
    # around the grid, so their tiles follow the job's grid instead of the CRS-anchored lattice.
    per_pixel: bool = False

    @property
    def n_classes(self) -> int:
        """Number of output classes (probability channels)."""
        return len(self.classes)
