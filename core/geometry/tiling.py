"""Tile layouts over a grid, the cosine blend window that hides tile seams, and no-data fill. Pure numpy.

A model with spatial context (a CNN) gives a pixel's class from the pixels around it, so the tiles it sees must
not depend on the area drawn around that pixel. `lattice_layout` therefore places tiles on a lattice fixed in
the grid's CRS (multiples of the tile stride from the CRS origin), not at the corner of the job's grid: every
job whose grid covers a pixel feeds the model the same tiles around it, read from the scenes beyond the AOI
(the context), and blends them with the same weights. A per-pixel model needs no context (`grid_layout`).
"""

import math
from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.windows import Window
from scipy import ndimage

from core.geometry.grid import Grid

NODATA_FILLS = ("nearest", "zero")


@dataclass(frozen=True)
class Tile:
    """One model tile: the window it reads from the context grid, and the part of it inside the output grid."""

    read: Window  # in context-grid pixels; `size` x `size` for lattice tiles
    out: Window  # in output-grid pixels: the part of the tile that lies inside the output grid
    row_in_tile: int  # where `out` starts inside the tile
    col_in_tile: int


@dataclass(frozen=True)
class TileLayout:
    """Tiles covering an output grid, read from a context grid that contains it."""

    grid: Grid  # the output grid (the job's grid)
    context: Grid  # what the readers must cover; equal to `grid` for per-pixel layouts
    size: int  # tile size in grid pixels
    overlap: int  # overlap between neighbouring tiles, in grid pixels
    tiles: tuple[Tile, ...]  # by tile row, then column: `out.row_off` never decreases (the stitcher streams)


def _lattice_starts(first: int, extent: int, size: int, stride: int) -> list[int]:
    """Lattice positions k * stride (global pixel index) of the tiles that intersect [first, first + extent)."""
    k_min = math.floor((first - size) / stride) + 1
    k_max = math.ceil((first + extent) / stride) - 1
    return [k * stride for k in range(k_min, k_max + 1)]


def lattice_layout(grid: Grid, size: int, overlap: int) -> TileLayout:
    """Tiles of `size` px on a lattice anchored at the CRS origin, every one that touches `grid`.

    Tile starts are multiples of `size - overlap` pixels counted from the CRS origin (x = 0, y = 0), so two
    grids on the same 10 m lattice get identical tiles where they overlap. The context grid is the union of
    those tiles; readers fill what lies outside the scenes as no data.
    """
    if not 0 <= overlap < size:
        raise ValueError(f"need 0 <= overlap < size; got overlap={overlap}, size={size}")
    resolution = grid.resolution_m
    col0 = round(grid.transform.c / resolution)  # the grid's first column on the global pixel lattice
    row0 = round(-grid.transform.f / resolution)  # rows count southwards from y = 0
    stride = size - overlap
    col_starts = _lattice_starts(col0, grid.width, size, stride)
    row_starts = _lattice_starts(row0, grid.height, size, stride)
    context = Grid(
        grid.crs,
        Affine(resolution, 0.0, col_starts[0] * resolution, 0.0, -resolution, -row_starts[0] * resolution),
        col_starts[-1] + size - col_starts[0],
        row_starts[-1] + size - row_starts[0],
    )
    tiles = []
    for r in row_starts:
        top, bottom = max(r, row0), min(r + size, row0 + grid.height)
        for c in col_starts:
            left, right = max(c, col0), min(c + size, col0 + grid.width)
            tiles.append(
                Tile(
                    read=Window(c - col_starts[0], r - row_starts[0], size, size),
                    out=Window(left - col0, top - row0, right - left, bottom - top),
                    row_in_tile=top - r,
                    col_in_tile=left - c,
                )
            )
    return TileLayout(grid, context, size, overlap, tuple(tiles))


def grid_layout(grid: Grid, size: int, overlap: int) -> TileLayout:
    """Tiles inside `grid` (see tile_windows): for per-pixel models, whose output needs no context."""
    tiles = tuple(Tile(w, w, 0, 0) for w in tile_windows(grid.height, grid.width, size, overlap))
    return TileLayout(grid, grid, size, overlap, tiles)


def fill_nodata(tile: np.ndarray, valid: np.ndarray, how: str) -> np.ndarray:
    """Replace the values of invalid pixels of a (..., C, h, w) tile in place, per the model card's `nodata_fill`.

    `valid` is (h, w), or (T, h, w) for a (T, C, h, w) series. "nearest" copies the nearest valid pixel of the
    same date (a CNN sees the edge of the data continue, not a flat field it reads as cloud shadow); "zero" sets
    0 (the normalised mean for standardised inputs; series models also get a padding mask). A date with no
    valid pixel at all gets 0 either way.
    """
    if how not in NODATA_FILLS:
        raise ValueError(f"unknown nodata_fill {how!r}; expected one of {NODATA_FILLS}")
    if valid.ndim == 3:
        for t in range(valid.shape[0]):
            fill_nodata(tile[t], valid[t], how)
        return tile
    if valid.all():
        return tile
    if how == "zero" or not valid.any():
        tile[:, ~valid] = 0.0
        return tile
    rows, cols = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
    tile[:] = tile[:, rows, cols]
    return tile


def tile_windows(height: int, width: int, size: int, overlap: int = 0) -> list[Window]:
    """Cover a height x width grid with size-px windows in row-major order; edge windows shift inward.

    A grid smaller than `size` along an axis gets one window spanning that whole axis (the caller pads the
    tile up to `size`), so every pixel is covered and none is dropped.
    """
    if not 0 <= overlap < size:
        raise ValueError(f"need 0 <= overlap < size; got overlap={overlap}, size={size}")
    if height < 1 or width < 1:
        raise ValueError(f"grid must be at least 1x1 px; got {height}x{width}")
    stride = size - overlap

    def starts(extent: int) -> list[int]:
        if extent <= size:
            return [0]
        return sorted({*range(0, extent - size, stride), extent - size})

    return [Window(c, r, min(size, width), min(size, height)) for r in starts(height) for c in starts(width)]


def blend_weights(size: int, overlap: int) -> np.ndarray:
    """(size, size) float32 weights: 1 inside, a raised-cosine ramp over `overlap` px at each edge.

    Overlapping tiles' weights sum smoothly, so averaging weighted predictions leaves no seam. The ramp never
    reaches 0 (range: (0, 1]), so pixels at the grid's outer edge, covered by one tile only, keep a weight.
    """
    ramp = np.ones(size, np.float32)
    if overlap > 0:
        rising = np.sin(0.5 * np.pi * (np.arange(overlap, dtype=np.float32) + 0.5) / overlap) ** 2
        ramp[:overlap] = rising
        ramp[size - overlap :] = np.minimum(ramp[size - overlap :], rising[::-1])
    return np.outer(ramp, ramp)


def pad_tile(tile: np.ndarray, size: int) -> np.ndarray:
    """Pad the last two axes of `tile` up to `size` by mirroring, so the model sees plausible context."""
    pad_rows, pad_cols = size - tile.shape[-2], size - tile.shape[-1]
    if pad_rows == 0 and pad_cols == 0:
        return tile
    widths = [(0, 0)] * (tile.ndim - 2) + [(0, pad_rows), (0, pad_cols)]
    return np.pad(tile, widths, mode="symmetric")
