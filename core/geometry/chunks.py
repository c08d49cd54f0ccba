"""Areas larger than one chunk: the job's grid cut into chunk windows that workers map apart, and put together.

A chunk is a window of the job's grid, and its own grid is that window: same CRS, same pixel lattice. The tiles
a model sees are anchored on the CRS lattice and read the scenes beyond the grid (core.geometry.tiling), so a pixel gets
the same tiles, the same inputs and the same blend in a chunk as in the whole grid: a mosaic of chunk rasters
is the raster one pass over the whole grid writes. Counts add up the same way: each pixel of the grid lies in
exactly one chunk and is counted there against the whole AOI.

Memory then follows the chunk, not the area: a pass holds strips as wide as its chunk, and the mosaic copies
one chunk window at a time.
"""

import json
import math
from dataclasses import asdict, dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window
from shapely.geometry import mapping, shape

from core.geometry.grid import Grid
from core.mapping.inference import InferenceResult
from core.outputs.export import open_intermediate
from core.types import BandAsset, Scene


@dataclass(frozen=True)
class Chunk:
    """One window of a job's grid, in grid pixels; `index` counts row by row from the top left."""

    index: int
    row_off: int
    col_off: int
    height: int
    width: int

    @property
    def window(self) -> Window:
        return Window(self.col_off, self.row_off, self.width, self.height)


def chunk_px(chunk_km: float, resolution_m: float, multiple_of: int = 1) -> int:
    """A chunk's side in grid pixels: `chunk_km` rounded down to a multiple of `multiple_of` (at least one)."""
    side = math.floor(chunk_km * 1000.0 / resolution_m)
    return max(multiple_of, side // multiple_of * multiple_of)


def plan_chunks(grid: Grid, side_px: int) -> list[Chunk]:
    """Square windows of `side_px` covering `grid` (the last row and column narrower), row by row.

    One chunk (the whole grid) when the grid fits in one: such a job runs as it always did.
    """
    if side_px < 1:
        raise ValueError(f"a chunk needs at least 1 px a side; got {side_px}")
    chunks: list[Chunk] = []
    for row in range(0, grid.height, side_px):
        for col in range(0, grid.width, side_px):
            height, width = min(side_px, grid.height - row), min(side_px, grid.width - col)
            chunks.append(Chunk(len(chunks), row, col, height, width))
    return chunks


def chunk_grid(grid: Grid, chunk: Chunk) -> Grid:
    """The chunk's own grid: the window of `grid`, on the same CRS and lattice."""
    transform = grid.transform @ Affine.translation(chunk.col_off, chunk.row_off)
    return Grid(grid.crs, transform, chunk.width, chunk.height)


def summed(results: list[InferenceResult]) -> InferenceResult:
    """The inference of the whole grid from its chunks': counts, pixels, tiles and compute time add up."""
    return InferenceResult(
        class_counts=np.sum([r.class_counts for r in results], axis=0).astype(np.int64),
        aoi_px=sum(r.aoi_px for r in results),
        tiles=sum(r.tiles for r in results),
        model_s=sum(r.model_s for r in results),
        total_s=sum(r.total_s for r in results),
    )


def mosaic(parts: list[tuple[Chunk, Path]], grid: Grid, out_path: Path, nodata: int) -> None:
    """Write the chunk rasters (uint8, each on its chunk's grid) into one raster on `grid`, a chunk at a time."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open_intermediate(out_path, grid, nodata) as out:
        for chunk, path in parts:
            with rasterio.open(path) as part:
                if (part.height, part.width) != (chunk.height, chunk.width):
                    raise ValueError(f"{path} is {part.height}x{part.width} px, chunk {chunk.index} is not")
                out.write(part.read(1), 1, window=chunk.window)


# -- the scenes a parent job hands its chunks (read by chunk jobs, so that no chunk searches or downloads) -------


def scene_to_json(scene: Scene) -> dict[str, Any]:
    """A Scene as plain JSON values."""
    return {
        "id": scene.id,
        "source": scene.source,
        "sensor": scene.sensor,
        "acquired": scene.acquired.isoformat(),
        "footprint": mapping(scene.footprint),
        "processing_level": scene.processing_level,
        "bands": {name: asdict(asset) for name, asset in scene.bands.items()},
        "processing_baseline": scene.processing_baseline,
        "cloud_cover_pct": scene.cloud_cover_pct,
        "path": scene.path,
        "extra": dict(scene.extra),
    }


def scene_from_json(document: dict[str, Any]) -> Scene:
    """The Scene that scene_to_json wrote."""
    return Scene(
        id=document["id"],
        source=document["source"],
        sensor=document["sensor"],
        acquired=datetime.fromisoformat(document["acquired"]),
        footprint=shape(document["footprint"]),
        processing_level=document["processing_level"],
        bands={name: BandAsset(**asset) for name, asset in document["bands"].items()},
        processing_baseline=document["processing_baseline"],
        cloud_cover_pct=document["cloud_cover_pct"],
        path=document["path"],
        extra=dict(document["extra"]),
    )


@dataclass(frozen=True)
class ChunkInputs:
    """What every chunk of a job reads: the scenes by date (readable from the cache), and the scenes' facts the
    models were loaded for (their level, the bands all of them have), so each chunk loads the same models."""

    groups: dict[date, list[Scene]]
    processing_level: str
    available_bands: frozenset[str]

    def write(self, path: Path) -> None:
        document = {
            "processing_level": self.processing_level,
            "available_bands": sorted(self.available_bands),
            "groups": {
                day.isoformat(): [scene_to_json(s) for s in scenes] for day, scenes in self.groups.items()
            },
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(document))
        tmp.replace(path)

    @classmethod
    def read(cls, path: Path) -> "ChunkInputs":
        document = json.loads(path.read_text())
        groups = {
            date.fromisoformat(day): [scene_from_json(s) for s in scenes]
            for day, scenes in document["groups"].items()
        }
        return cls(groups, document["processing_level"], frozenset(document["available_bands"]))
