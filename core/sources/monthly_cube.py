"""A ready monthly cube: an openEO netCDF of 12 monthly composites, as WorldCereal feeds its crop classifier.

One variable per input (`S2-L2A-B02`.., `S1-SIGMA0-VV/VH`, `AGERA5-PRECIP/TMEAN`, `slope`, `elevation`), each
[t, y, x] on a projected grid, with WorldCereal's value encodings (core.learning.crop_samples: the same as its samples
tables). Read strip by strip onto a job's grid (nearest neighbour), so a cube in another CRS or an AOI reaching
past the cube works: pixels the cube does not cover are missing in every month, and no class is given to them.
"""

import warnings
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from core.errors import AppError
from core.geometry.grid import Grid
from core.jobs.report import InputRecord
from core.learning.crop_samples import NO_DATA, OPTIONAL_COLUMNS, S1_COLUMNS, S2_COLUMNS, decode_columns
from core.mapping.presto_inputs import CHANNELS
from core.sources import CUBE_PREFIX, cube_file, is_cube_source

SEASON_MONTHS = 12
VARIABLES = (*S2_COLUMNS.values(), *S1_COLUMNS.values(), *OPTIONAL_COLUMNS.values())


class CubeError(AppError):
    """A file that cannot be read as a monthly cube."""


class MonthSteps:
    """What the crop mapper knows of a season of 12 monthly steps (`months`: the first day of each)."""

    months: tuple[date, ...]

    @property
    def season(self) -> str:
        return f"{self.months[0]:%Y-%m}..{self.months[-1]:%Y-%m}"

    @property
    def start_month(self) -> int:
        """Calendar month (0 = January) of the first step."""
        return self.months[0].month - 1


@dataclass(frozen=True)
class MonthlyCube(MonthSteps):
    """A cube's variables (netCDF subdataset names by variable), months, and grid."""

    path: Path
    subdatasets: dict[str, str]
    months: tuple[date, ...]  # first day of each month, in band order after sorting
    band_order: tuple[int, ...]  # 1-based bands of each variable, by month
    crs: str
    bounds: tuple[float, float, float, float]  # left, bottom, right, top in `crs`

    @property
    def has_s1(self) -> bool:
        return all(v in self.subdatasets for v in S1_COLUMNS.values())

    def read_strip(self, grid: Grid, rows: slice) -> tuple[np.ndarray, np.ndarray]:
        """Rows `rows` of `grid` (see the module's `read_strip`)."""
        return read_strip(self, grid, rows)

    def input_records(self) -> list[InputRecord]:
        """run.json's inputs: the cube's 12 months."""
        return [
            InputRecord(
                id=f"{self.path.name} {month:%Y-%m}",
                source=f"{CUBE_PREFIX}{self.path.name}",
                date=month.isoformat(),
                acquired=month.isoformat(),
                path=self.path.name,
                processing_level="L2A",
                processing_baseline=None,
                cloud_cover_pct=None,
                radiometry={},
            )
            for month in self.months
        ]


def _days_since(units: str) -> date:
    prefix = "days since "
    if not units.startswith(prefix):
        raise CubeError(f"The cube's time axis is in {units!r}; TerraSeg reads 'days since YYYY-MM-DD'.")
    return date.fromisoformat(units.removeprefix(prefix).strip()[:10])


def open_cube(path: Path) -> MonthlyCube:
    """The cube's layout, checked: 12 consecutive months, the S2 bands, one projected grid; CubeError if not."""
    if not path.is_file():
        raise CubeError(f"No cube file {path.name}.")
    try:
        with warnings.catch_warnings():  # the netCDF container has no geotransform; its variables do
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(path) as dataset:
                names = {name.rsplit(":", 1)[-1]: name for name in dataset.subdatasets}
    except rasterio.errors.RasterioError as err:
        raise CubeError(f"{path.name} is not a netCDF cube GDAL can read ({err}).") from err
    subdatasets = {v: names[v] for v in VARIABLES if v in names}
    absent = [c for b, c in S2_COLUMNS.items() if c not in subdatasets and b != "B8A"]
    if absent:
        raise CubeError(
            f"The cube lacks the variable(s) {', '.join(absent)}; a crop model needs the S2 bands."
        )
    with rasterio.open(subdatasets[S2_COLUMNS["B02"]]) as first:
        if first.crs is None or not first.crs.is_projected:
            raise CubeError(
                "The cube has no projected CRS; TerraSeg reads cubes on a UTM (or other metric) grid."
            )
        origin = _days_since(first.tags().get("t#units", ""))
        try:
            days = [int(float(first.tags(band)["NETCDF_DIM_t"])) for band in first.indexes]
        except (KeyError, ValueError) as err:
            raise CubeError(
                "The cube's bands carry no time (NETCDF_DIM_t); it is not a monthly cube."
            ) from err
        crs, shape, bounds = first.crs.to_string(), (first.width, first.height), tuple(first.bounds)
    months_by_band = sorted((origin + timedelta(days=d), band) for band, d in enumerate(days, start=1))
    months = tuple(m.replace(day=1) for m, _ in months_by_band)
    consecutive = all(
        (b.year * 12 + b.month) - (a.year * 12 + a.month) == 1
        for a, b in zip(months, months[1:], strict=False)
    )
    if len(months) != SEASON_MONTHS or not consecutive:
        listed = ", ".join(f"{m:%Y-%m}" for m in months[:14])
        raise CubeError(f"The cube holds the months {listed}; a crop season is 12 consecutive months.")
    for name in subdatasets.values():
        with rasterio.open(name) as variable:
            if (variable.width, variable.height) != shape or variable.count != SEASON_MONTHS:
                raise CubeError(
                    f"The cube's variable {name.rsplit(':', 1)[-1]} is not on the same grid and months."
                )
    return MonthlyCube(path, subdatasets, months, tuple(b for _, b in months_by_band), crs, bounds)


def cube_path(sources: tuple[str, ...] | list[str], model_id: str) -> Path:
    """The job's monthly cube (its one `cube:` source), or an AppError saying what a crop model reads."""
    cubes = [s for s in sources if is_cube_source(s)]
    if len(cubes) != 1 or len(sources) != 1:
        raise AppError(
            f"Model {model_id} maps crops from 12 monthly composites; give one ready monthly cube with "
            "--source cube:FILE.nc (an openEO netCDF as WorldCereal makes them). Monthly composites made from "
            "scenes are not built yet."
        )
    return cube_file(cubes[0])


def check_season(cube: MonthlyCube, start: date, end: date) -> None:
    """The cube's 12 months must meet the job's dates."""
    if cube.months[-1] < start.replace(day=1) or cube.months[0] > end:
        raise AppError(
            f"The cube's season is {cube.season}, outside the job's dates {start}..{end}; choose dates within it."
        )


def ready_cube(sources: tuple[str, ...], model_id: str, start: date, end: date) -> MonthlyCube | None:
    """How a crop job gets its 12 monthly composites, decided once for the pre-flight and the worker: a ready
    cube (its one `cube:` source, opened and checked against the season), or None: composites of the season's
    scenes."""
    if not any(is_cube_source(s) for s in sources):
        return None
    cube = open_cube(cube_path(sources, model_id))
    check_season(cube, start, end)
    return cube


def read_strip(cube: MonthlyCube, grid: Grid, rows: slice) -> tuple[np.ndarray, np.ndarray]:
    """Rows `rows` of `grid`: values [rows x width, 12, 17] in physical units and their mask (True = missing)."""
    height = rows.stop - rows.start
    size = height * grid.width * SEASON_MONTHS
    columns: dict[str, np.ndarray] = {}
    for variable, name in cube.subdatasets.items():
        with rasterio.open(name) as source:
            fill = source.nodata if source.nodata is not None else 65535
            with WarpedVRT(
                source,
                crs=grid.crs,
                transform=grid.transform,
                width=grid.width,
                height=grid.height,
                resampling=Resampling.nearest,
                nodata=fill,
            ) as warped:
                block = warped.read(list(cube.band_order), window=Window(0, rows.start, grid.width, height))
        block = np.where(block == fill, NO_DATA, block)  # the variable's own fill, and outside the cube
        # [12, h, w] -> [h, w, 12] -> flat, pixel-major
        columns[variable] = np.moveaxis(block, 0, -1).reshape(size).astype(np.float64)
    values, missing = decode_columns(columns, size)
    shape = (height * grid.width, SEASON_MONTHS, len(CHANNELS))
    return values.reshape(shape).astype(np.float32), missing.reshape(shape)
