"""Tile windows over a grid and the cosine blend window that hides tile seams. Pure numpy."""

import numpy as np
from rasterio.windows import Window


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
