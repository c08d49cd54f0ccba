"""Streaming stitcher: blend overlapping tile predictions in a strip buffer and emit finished rows.

Memory is one strip of `tile` rows by the grid width, whatever the grid height (Raster Vision's
pixel-scores / pixel-hits idea, made to stream).
"""

from collections.abc import Callable

import numpy as np
from rasterio.windows import Window

# (first row, first column, class scores (K, h, w) already divided by their weights, valid (h, w)) -> None
RowSink = Callable[[int, int, np.ndarray, np.ndarray], None]
# Finished rows go to the sink in column chunks, so the temporaries of the division stay small on wide grids.
SINK_CHUNK_COLS = 1024


class StripStitcher:
    """Accumulates weighted (K, h, w) tiles; `flush_until(row)` emits all rows above `row` to the sink."""

    def __init__(
        self, n_classes: int, height: int, width: int, strip_rows: int, sink: RowSink, top: int = 0
    ) -> None:
        self.height, self.width, self.sink = height, width, sink
        self.rows = strip_rows
        self.top = top  # grid row of the buffer's first row (0, or where a resumed pass starts)
        self.scores = np.zeros((n_classes, strip_rows, width), np.float32)
        self.weights = np.zeros((strip_rows, width), np.float32)
        self.valid = np.zeros((strip_rows, width), bool)

    def add(self, window: Window, scores: np.ndarray, weights: np.ndarray, valid: np.ndarray) -> None:
        """Add class probabilities (K, h, w) of one tile, weighted by its blend window (h, w)."""
        r0 = int(window.row_off) - self.top
        c0 = int(window.col_off)
        h, w = scores.shape[1:]
        if r0 < 0 or r0 + h > self.rows:
            raise ValueError(
                f"tile rows {window.row_off}..{window.row_off + h} fall outside the strip "
                f"{self.top}..{self.top + self.rows}; flush rows in order"
            )
        self.scores[:, r0 : r0 + h, c0 : c0 + w] += scores * weights
        self.weights[r0 : r0 + h, c0 : c0 + w] += weights
        self.valid[r0 : r0 + h, c0 : c0 + w] |= valid

    def flush_until(self, row: int) -> None:
        """Emit rows [top, row) as final and move the strip down; no later tile may touch them."""
        row = min(row, self.height)
        n = row - self.top
        if n <= 0:
            return
        weights = self.weights[:n]
        if not (weights > 0).all():
            raise ValueError(
                f"rows {self.top}..{row} have pixels no tile covered; were the windows made by "
                "tile_windows()?"
            )
        for col in range(0, self.width, SINK_CHUNK_COLS):
            cols = slice(col, col + SINK_CHUNK_COLS)
            self.sink(self.top, col, self.scores[:, :n, cols] / weights[:, cols], self.valid[:n, cols].copy())
        keep = self.rows - n  # rows still open, moved to the top of the strip; small for usual overlaps
        for array in (self.scores, self.weights, self.valid):
            array[..., :keep, :] = array[..., n:, :].copy() if keep > n else array[..., n:, :]
            array[..., keep:, :] = 0
        self.top = row
