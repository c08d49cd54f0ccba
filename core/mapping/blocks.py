"""Finished strips of a pass over the grid, kept as small files: the checkpoint a killed run resumes from.

Each strip of final rows the stitcher emits is saved as `<row0>-<row1>.npz` (class and, where the pass has one,
confidence rows as uint8, plus the per-class pixel counts and AOI pixels of those rows), written to a temporary
name and renamed, so a file that exists is complete. A resumed pass starts after the last contiguous strip from
row 0.
"""

import os
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window


class BlockStore:
    """The strips of one pass (one date), in `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def _blocks(self) -> list[tuple[int, int, Path]]:
        """Saved strips (row0, row1, path) that run contiguously from row 0, in order."""
        found = []
        for path in self.directory.glob("*.npz"):
            first, _, last = path.stem.partition("-")
            if first.isdigit() and last.isdigit():
                found.append((int(first), int(last), path))
        contiguous, row = [], 0
        for row0, row1, path in sorted(found):
            if row0 != row:
                break
            contiguous.append((row0, row1, path))
            row = row1
        return contiguous

    def finished_rows(self) -> int:
        """Rows [0, n) are saved; 0 when nothing is."""
        blocks = self._blocks()
        return blocks[-1][1] if blocks else 0

    def save(
        self, row0: int, classes: np.ndarray, confidence: np.ndarray | None, counts: np.ndarray, aoi_px: int
    ) -> None:
        """Save final rows [row0, row0 + classes.shape[0]) of the grid (`confidence` None: a layer without one)."""
        row1 = row0 + classes.shape[0]
        path = self.directory / f"{row0:06d}-{row1:06d}.npz"
        tmp = path.with_suffix(".tmp.npz")
        if confidence is None:
            np.savez(tmp, classes=classes, counts=counts, aoi_px=np.int64(aoi_px))
        else:
            np.savez(tmp, classes=classes, confidence=confidence, counts=counts, aoi_px=np.int64(aoi_px))
        os.replace(tmp, path)

    def totals(self, n_classes: int) -> tuple[np.ndarray, int]:
        """Per-class pixel counts and AOI pixels summed over the saved strips."""
        counts, aoi_px = np.zeros(n_classes, np.int64), 0
        for _, _, path in self._blocks():
            with np.load(path) as block:
                counts += block["counts"]
                aoi_px += int(block["aoi_px"])
        return counts, aoi_px

    def write_to(
        self, classes_out: rasterio.io.DatasetWriter, confidence_out: rasterio.io.DatasetWriter | None
    ) -> None:
        """Copy every saved strip into the rasters (which cover the whole grid)."""
        for row0, row1, path in self._blocks():
            with np.load(path) as block:
                window = Window(0, row0, block["classes"].shape[1], row1 - row0)
                classes_out.write(block["classes"], 1, window=window)
                if confidence_out is not None:
                    confidence_out.write(block["confidence"], 1, window=window)
