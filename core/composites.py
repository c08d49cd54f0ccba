"""Monthly composites made from a job's own Sentinel-2 scenes, as a Presto crop model reads them.

Per pixel, month and band: the median of the clear observations of that month (clear: the cloud model calls the
pixel clear on that date and every band has data), in Presto's units (L2A reflectance x 10,000). A month with
no clear observation is masked, and so are the inputs a scene job has no source for yet (Sentinel-1, weather,
elevation); Presto was trained with such masks. The season is the 12 calendar months that end with the job's
end date's month.

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
from core.grid import Grid
from core.monthly_cube import MonthSteps
from core.presto_inputs import CHANNELS
from core.reading import SceneReader
from core.report import CloudModelRecord, InputRecord
from core.types import Scene

SEASON_MONTHS = 12
S2_CHANNELS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")  # the S2 bands Presto reads
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
class SceneComposites(MonthSteps):
    """A season of monthly composites of `dates` (those inside `months`), read strip by strip."""

    dates: tuple[CompositeDate, ...]
    months: tuple[date, ...]
    cloud_model: CloudModelRecord | None = None  # the model that masked the dates, for run.json

    @property
    def has_s1(self) -> bool:
        return False  # Sentinel-1 composites from GRD scenes are not built yet

    def months_with_data(self) -> list[date]:
        return [m for m in self.months if any(_in_month(d.day, m) for d in self.dates)]

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
        return values, missing

    def input_records(self) -> list[InputRecord]:
        """run.json's inputs: every scene that went into a composite."""
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
            for layer in self.dates
            for scene in layer.scenes
        ]


def _in_month(day: date, month: date) -> bool:
    return day.year == month.year and day.month == month.month
