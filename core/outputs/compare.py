"""Two class maps of the same area compared: the transition matrix (from-class x to-class areas in hectares) and
a change map (the later class where the class changed, no data elsewhere).

Maps compare pixel for pixel, so both must be on the same grid (jobs over the same AOI get the same grid) and use
the same classes; a pixel counts only where both maps have a class (no data in either, e.g. a cloud masked on
one date, is left out and counted apart).
"""

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from core.errors import AppError
from core.outputs.export import write_class_cog
from core.outputs.overlay import read_classes
from core.types import ClassInfo


@dataclass(frozen=True)
class Comparison:
    """What changed between `before` and `after`: `matrix_ha[i][j]` is the area that was class `classes[i]` and
    became `classes[j]`."""

    classes: tuple[ClassInfo, ...]
    matrix_pixels: list[list[int]]
    pixel_ha: float
    unmatched_pixels: int  # a class in one map, no data in the other

    @property
    def matrix_ha(self) -> list[list[float]]:
        return [[round(n * self.pixel_ha, 4) for n in row] for row in self.matrix_pixels]

    @property
    def compared_pixels(self) -> int:
        return sum(sum(row) for row in self.matrix_pixels)

    @property
    def changed_pixels(self) -> int:
        return self.compared_pixels - sum(self.matrix_pixels[i][i] for i in range(len(self.classes)))

    @property
    def changed_percent(self) -> float:
        return 100.0 * self.changed_pixels / self.compared_pixels if self.compared_pixels else 0.0


def _read(path: Path) -> tuple[np.ndarray, dict[str, object], int]:
    with rasterio.open(path) as src:
        if src.nodata is None:
            raise AppError(f"{path.name} is not a TerraSeg class map (it has no no-data value).")
        return src.read(1), {"crs": src.crs, "transform": src.transform, "shape": src.shape}, int(src.nodata)


def _check_comparable(before: Path, after: Path) -> tuple[tuple[ClassInfo, ...], np.ndarray, np.ndarray, int]:
    classes = read_classes(before)
    if [(c.value, c.name) for c in classes] != [(c.value, c.name) for c in read_classes(after)]:
        raise AppError(
            "The two maps have different classes; compare jobs of the same model (or models with one legend)."
        )
    first, first_grid, nodata = _read(before)
    second, second_grid, second_nodata = _read(after)
    if first_grid != second_grid or nodata != second_nodata:
        raise AppError(
            "The two maps are on different grids; compare jobs over the same area (the same AOI gives the same "
            "grid)."
        )
    return classes, first, second, nodata


def compare_class_maps(before: Path, after: Path) -> Comparison:
    """The transition matrix between two class COGs of one grid and legend."""
    classes, first, second, nodata = _check_comparable(before, after)
    with rasterio.open(before) as src:
        pixel_ha = abs(src.transform.a * src.transform.e - src.transform.b * src.transform.d) / 1e4
    both = (first != nodata) & (second != nodata)
    index = {c.value: i for i, c in enumerate(classes)}
    lookup = np.full(256, -1, dtype=np.int64)
    for value, i in index.items():
        lookup[value] = i
    rows, columns = lookup[first[both]], lookup[second[both]]
    known = (rows >= 0) & (columns >= 0)
    size = len(classes)
    counts = np.bincount(rows[known] * size + columns[known], minlength=size * size).reshape(size, size)
    unmatched = int(np.count_nonzero((first != nodata) ^ (second != nodata)))
    return Comparison(classes, counts.tolist(), pixel_ha, unmatched)


def write_change_map(before: Path, after: Path, dst: Path) -> int:
    """A class COG (the same legend) with `after`'s class where the class changed and no data elsewhere; returns
    the changed pixels."""
    classes, first, second, nodata = _check_comparable(before, after)
    changed = (first != nodata) & (second != nodata) & (first != second)
    with rasterio.open(after) as src:
        profile = src.profile | {"driver": "GTiff", "tiled": True, "blockxsize": 256, "blockysize": 256}
    with tempfile.TemporaryDirectory() as folder:
        intermediate = Path(folder) / "change.tif"
        with rasterio.open(intermediate, "w", **profile) as out:
            out.write(np.where(changed, second, nodata).astype(first.dtype), 1)
        write_class_cog(intermediate, dst, classes, nodata, "class after a change")
    return int(np.count_nonzero(changed))
