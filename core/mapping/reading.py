"""Read a date's scenes onto the target grid as reflectance, window by window, with a validity mask."""

import logging
import math
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from core.errors import SourceError
from core.geometry.grid import Grid
from core.types import Scene

log = logging.getLogger(__name__)


def _is_aligned(dataset: rasterio.DatasetReader, grid: Grid) -> bool:
    """Same CRS, same pixel size and a whole-pixel offset: the grid is a plain window of the file."""
    if dataset.crs is None or dataset.crs.to_string() != grid.crs:
        return False
    src, dst = dataset.transform, grid.transform
    if not (np.isclose(src.a, dst.a) and np.isclose(src.e, dst.e) and src.b == 0 and src.d == 0):
        return False
    col_off, row_off = (src.c - dst.c) / dst.a, (src.f - dst.f) / dst.e
    return bool(np.isclose(col_off, round(col_off)) and np.isclose(row_off, round(row_off)))


def scene_cover(dataset: rasterio.DatasetReader, grid: Grid) -> Grid:
    """The scene's extent in the grid's CRS, snapped outwards to the grid's pixel lattice."""
    left, bottom, right, top = transform_bounds(dataset.crs, grid.crs, *dataset.bounds, densify_pts=21)
    res = grid.resolution_m
    col0 = math.floor((left - grid.transform.c) / res)
    row0 = math.floor((grid.transform.f - top) / res)
    col1 = math.ceil((right - grid.transform.c) / res)
    row1 = math.ceil((grid.transform.f - bottom) / res)
    transform = grid.transform @ Affine.translation(col0, row0)
    return Grid(grid.crs, transform, max(1, col1 - col0), max(1, row1 - row0))


class _BandGroup:
    """Bands of one scene stored in one file, read together: directly when aligned, else through a WarpedVRT."""

    def __init__(
        self,
        dataset: rasterio.DatasetReader,
        grid: Grid,
        indexes: list[int],
        nodata: float | None,
        resampling: Resampling,
    ) -> None:
        self.indexes, self.nodata, self.path = indexes, nodata, dataset.name
        self.aligned = _is_aligned(dataset, grid)
        if self.aligned:
            self.reader = dataset
            self.col0 = round((dataset.transform.c - grid.transform.c) / grid.transform.a)
            self.row0 = round((dataset.transform.f - grid.transform.f) / grid.transform.e)
        else:
            # Warped onto the scene's own cover on the grid's lattice, not onto `grid`: GDAL warps block by block
            # of the virtual raster (approximating source positions and choosing the kernel's scale per block),
            # so a pixel's value depends on where the virtual raster starts. Started where the scene starts, the
            # same pixel reads the same value in every grid of this CRS (another AOI, a chunk of a large job).
            source = scene_cover(dataset, grid)
            self.col0 = round((source.transform.c - grid.transform.c) / grid.transform.a)
            self.row0 = round((source.transform.f - grid.transform.f) / grid.transform.e)
            # A VRT with an alpha band marks pixels outside the source as invalid even without a nodata value.
            self.reader = WarpedVRT(
                dataset,
                crs=grid.crs,
                transform=source.transform,
                width=source.width,
                height=source.height,
                resampling=resampling,
                src_nodata=nodata,
                nodata=nodata,
                add_alpha=nodata is None,
            )

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Raw values (n, h, w) float32 and validity (n, h, w) bool for a window of the grid."""
        height, width = int(window.height), int(window.width)
        data = np.zeros((len(self.indexes), height, width), np.float32)
        valid = np.zeros(data.shape, bool)
        row, col = int(window.row_off) - self.row0, int(window.col_off) - self.col0
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + height, self.reader.height), min(col + width, self.reader.width)
        if r1 > r0 and c1 > c0:
            part = Window(c0, r0, c1 - c0, r1 - r0)
            block = self.reader.read(self.indexes, window=part)
            target = (slice(None), slice(r0 - row, r1 - row), slice(c0 - col, c1 - col))
            data[target] = block
            if not self.aligned:
                valid[target] = self.reader.read_masks(self.indexes, window=part) > 0
            else:
                valid[target] = True if self.nodata is None else block != self.nodata
        return data, valid


class SceneReader:
    """Reads `bands` of one date's scenes (mosaicked: the first scene with valid data wins) onto `grid`.

    Use as a context manager; `read(window)` returns reflectance `(C, h, w)` float32 in `bands` order and a
    `(h, w)` bool mask that is True where every band has data.
    """

    def __init__(
        self,
        scenes: list[Scene],
        bands: tuple[str, ...],
        grid: Grid,
        resampling: Resampling = Resampling.bilinear,
    ) -> None:
        missing = {s.id: [b for b in bands if b not in s.bands] for s in scenes}
        if any(missing.values()):
            raise ValueError(f"scenes lack bands: { {k: v for k, v in missing.items() if v} }")
        self.scenes, self.bands, self.grid, self.resampling = scenes, bands, grid, resampling
        self._stack = ExitStack()
        # per scene: list of (group, positions of its bands in `bands`, scale, add_offset per band)
        self._groups: list[list[tuple[_BandGroup, list[int], np.ndarray, np.ndarray]]] = []

    def __enter__(self) -> "SceneReader":
        for scene in self.scenes:
            by_path: dict[str, list[int]] = defaultdict(list)
            for position, band in enumerate(self.bands):
                by_path[scene.bands[band].path].append(position)
            groups = []
            for path, positions in by_path.items():
                assets = [scene.bands[self.bands[p]] for p in positions]
                try:
                    dataset = self._stack.enter_context(rasterio.open(path))
                except RasterioError as err:  # moved, removed or overwritten since the search found it
                    log.warning("Opening %s failed: %s", path, err)
                    raise SourceError(
                        f"Opening the scene file {Path(path).name} of {scene.id} failed ({type(err).__name__}); it "
                        "was moved, removed or damaged after the search. Restore it, or run again."
                    ) from err
                group = _BandGroup(
                    dataset, self.grid, [a.band_index for a in assets], assets[0].nodata, self.resampling
                )
                if not group.aligned:
                    self._stack.enter_context(group.reader)
                scale = np.array([a.scale for a in assets], np.float32)[:, None, None]
                offset = np.array([a.add_offset for a in assets], np.float32)[:, None, None]
                groups.append((group, positions, scale, offset))
            self._groups.append(groups)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.close()

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Reflectance (C, h, w) float32 and validity (h, w) bool of the mosaic over `window` of the grid."""
        shape = (len(self.bands), int(window.height), int(window.width))
        reflectance = np.zeros(shape, np.float32)
        valid = np.zeros(shape[1:], bool)
        for groups in self._groups:
            scene_data = np.zeros(shape, np.float32)
            scene_valid = np.ones(shape[1:], bool)
            for group, positions, scale, offset in groups:
                try:
                    raw, raw_valid = group.read(window)
                except RasterioError as err:
                    log.warning("Reading %s failed: %s", group.path, err)  # the whole path: for the operator
                    raise SourceError(
                        f"Reading the scene file {Path(group.path).name} failed ({type(err).__name__}); it may be "
                        "truncated or corrupt. Remove or replace it and run again."
                    ) from err
                scene_data[positions] = (raw + offset) * scale
                scene_valid &= raw_valid.all(axis=0)
            fill = scene_valid & ~valid
            reflectance[:, fill] = scene_data[:, fill]
            valid |= fill
            if valid.all():
                break
        return reflectance, valid
