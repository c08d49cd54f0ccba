"""Plain data records passed between stages: scenes and their bands. No IO here."""

from dataclasses import dataclass, field
from datetime import datetime

from shapely.geometry.base import BaseGeometry

S2_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12",
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
