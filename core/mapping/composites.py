"""Monthly composites made from a job's own Sentinel-2 scenes, as a Presto crop model reads them.

Per pixel, month and band: the median of the clear observations of that month (clear: the cloud model calls the
pixel clear on that date and every band has data), in Presto's units (L2A reflectance x 10,000). Sentinel-1
VV and VH: per pixel and month the median of the month's GRD acquisitions (at most S1_PER_MONTH of them, spread
over the month) as sigma0 in dB, Presto's S1 unit (calibrated onto the job's grid by core.sources.sentinel1, or
read from dB GeoTIFFs). A month without an observation is masked, and so are the inputs a scene job has no
source for (weather, elevation; Sentinel-1 when no source gives any); Presto was trained with such masks. The
season is the 12 calendar months that end with the job's end date's month.

Composites are computed strip by strip on the job's grid (the rows the crop mapper asks for), so memory stays
bounded by a strip's scenes, not the whole area.
"""

import warnings
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from core.errors import AppError
from core.geometry.grid import Grid
from core.jobs.report import CloudModelRecord, InputRecord
from core.mapping.presto_inputs import CHANNELS
from core.mapping.reading import SceneReader
from core.sources.monthly_cube import MonthSteps
from core.types import Scene

SEASON_MONTHS = 12
S2_CHANNELS = (
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B11",
    "B12",
)  # the S2 bands Presto reads
S1_CHANNELS = ("VV", "VH")  # sigma0 in dB, as Presto reads them
# Sentinel-1 acquisitions per month that enter its median: 6- to 12-day revisits give 3-5, and each one read
# from a DHuS mirror is a whole GRD product of about 1 GB.
S1_PER_MONTH = 2
PRESTO_DN = 10_000.0  # Presto's S2 inputs are L2A reflectance x 10,000


def season_months(end: date) -> tuple[date, ...]:
    """The first days of the 12 months that end with `end`'s month."""
    months = []
    year, month = end.year, end.month
    for _ in range(SEASON_MONTHS):
        months.append(date(year, month, 1))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return tuple(reversed(months))


def season_start(start: date, end: date) -> date:
    """The first day a crop job searches: the job's start, or the season's first month if that is later."""
    return max(start, season_months(end)[0])


def check_composite_scenes(scenes: list[Scene], sources: tuple[str, ...]) -> None:
    """Scenes a season of composites can be made of: Sentinel-2 L2A with every band Presto reads."""
    levels = {s.processing_level for s in scenes}
    if levels != {"L2A"}:
        raise AppError(
            "Crop models read monthly composites of Sentinel-2 L2A (surface reflectance, as Presto was trained); "
            f"{', '.join(sources)} gave {'/'.join(sorted(levels))} scenes. Choose an L2A source (e.g. "
            "earth-search, or local L2A scenes) or a ready monthly cube (cube:FILE.nc)."
        )
    lacking = sorted({b for s in scenes for b in S2_CHANNELS if b not in s.bands})
    if lacking:
        raise AppError(
            f"The scenes lack the band(s) {', '.join(lacking)} that Presto reads; choose another source."
        )


@dataclass(frozen=True)
class CompositeDate:
    """One acquisition date of the season: its scenes and the cloud model's classes on the job grid."""

    day: date
    scenes: tuple[Scene, ...]
    classes_path: Path
    clear_value: int  # the cloud model's "clear" class


@dataclass(frozen=True)
class RadarDate:
    """One Sentinel-1 acquisition date of the season: its scenes, as sigma0 dB readable on the job grid."""

    day: date
    scenes: tuple[Scene, ...]


def choose_radar(scenes: list[Scene], months: tuple[date, ...], per_month: int = S1_PER_MONTH) -> list[Scene]:
    """The Sentinel-1 scenes of at most `per_month` acquisition dates per month, spread over the month (the
    first, the last, then between): what a month's median is made of. Pure."""
    chosen = []
    for month in months:
        days = sorted({s.acquired.date() for s in scenes if _in_month(s.acquired.date(), month)})
        if len(days) > per_month:
            picks = np.linspace(0, len(days) - 1, per_month).round().astype(int)
            days = [days[i] for i in sorted(set(picks.tolist()))]
        chosen += [s for s in scenes if s.acquired.date() in days]
    return sorted(chosen, key=lambda s: (s.acquired, s.id))


@dataclass(frozen=True)
class SceneComposites(MonthSteps):
    """A season of monthly composites of `dates` (those inside `months`), read strip by strip."""

    dates: tuple[CompositeDate, ...]
    months: tuple[date, ...]
    cloud_model: CloudModelRecord | None = None  # the model that masked the dates, for run.json
    radar: tuple[RadarDate, ...] = ()  # the Sentinel-1 acquisitions, empty when no source had any
    radar_note: str = ""  # why there is no Sentinel-1 (the sources' answer), for the warnings

    @property
    def has_s1(self) -> bool:
        return bool(self.radar)

    def months_with_data(self) -> list[date]:
        return [m for m in self.months if any(_in_month(d.day, m) for d in self.dates)]

    def months_with_radar(self) -> list[date]:
        return [m for m in self.months if any(_in_month(d.day, m) for d in self.radar)]

    def read_strip(self, grid: Grid, rows: slice) -> tuple[np.ndarray, np.ndarray]:
        """Rows `rows` of `grid`: values [rows x width, 12, 17] in physical units and their mask (True = missing)."""
        height = rows.stop - rows.start
        n = height * grid.width
        values = np.zeros((n, SEASON_MONTHS, len(CHANNELS)), np.float32)
        missing = np.ones((n, SEASON_MONTHS, len(CHANNELS)), bool)
        window = Window(0, rows.start, grid.width, height)
        positions = [CHANNELS.index(band) for band in S2_CHANNELS]
        for step, month in enumerate(self.months):
            layers = [d for d in self.dates if _in_month(d.day, month)]
            if not layers:
                continue
            observations = []
            for layer in layers:
                with SceneReader(list(layer.scenes), S2_CHANNELS, grid) as reader:
                    reflectance, valid = reader.read(window)
                with rasterio.open(layer.classes_path) as classes:
                    clear = classes.read(1, window=window) == layer.clear_value
                observations.append(np.where((valid & clear)[None], reflectance * PRESTO_DN, np.nan))
            with warnings.catch_warnings():  # a pixel with no clear observation this month: NaN, masked below
                warnings.simplefilter("ignore", RuntimeWarning)
                median = np.nanmedian(np.stack(observations), axis=0)  # (C, h, w)
            flat = median.reshape(len(S2_CHANNELS), n).T
            seen = ~np.isnan(flat)
            values[:, step, positions] = np.where(seen, flat, 0.0)
            missing[:, step, positions] = ~seen
        radar_positions = [CHANNELS.index(band) for band in S1_CHANNELS]
        for step, month in enumerate(self.months):
            acquisitions = [d for d in self.radar if _in_month(d.day, month)]
            if not acquisitions:
                continue
            observations = []
            for acquisition in acquisitions:
                with SceneReader(list(acquisition.scenes), S1_CHANNELS, grid) as reader:
                    db, valid = reader.read(window)
                observations.append(np.where(valid[None], db, np.nan))
            with warnings.catch_warnings():  # a pixel outside every swath this month: NaN, masked below
                warnings.simplefilter("ignore", RuntimeWarning)
                median = np.nanmedian(np.stack(observations), axis=0)
            flat = median.reshape(len(S1_CHANNELS), n).T
            seen = ~np.isnan(flat)
            values[:, step, radar_positions] = np.where(seen, flat, 0.0)
            missing[:, step, radar_positions] = ~seen
        return values, missing

    def input_records(self) -> list[InputRecord]:
        """run.json's inputs: every scene that went into a composite."""
        layers: list[CompositeDate | RadarDate] = [*self.dates, *self.radar]
        return [
            InputRecord(
                id=scene.id,
                source=scene.source,
                date=layer.day.isoformat(),
                acquired=scene.acquired.isoformat(),
                path=Path(scene.path).name if scene.path else "",
                processing_level=scene.processing_level,
                processing_baseline=scene.processing_baseline,
                cloud_cover_pct=scene.cloud_cover_pct,
                radiometry={},
            )
            for layer in layers
            for scene in layer.scenes
        ]


def _in_month(day: date, month: date) -> bool:
    return day.year == month.year and day.month == month.month
