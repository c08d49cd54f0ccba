"""Tile -> normalise -> batch predict -> blend -> write, streaming over the grid. No UI, no model code.

The model comes in as a callable, so core stays free of the model layer: `predict(batch)` maps a
`(B, C, S, S)` float32 normalised batch to `(B, K, S, S)` class probabilities (range: [0, 1]).
"""

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import shapely
from affine import Affine
from rasterio.features import geometry_mask
from rasterio.windows import Window
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from core.geometry.grid import Grid, project_geometry
from core.geometry.tiling import (
    Tile,
    TileLayout,
    blend_weights,
    fill_nodata,
    grid_layout,
    lattice_layout,
    pad_tile,
)
from core.jobs.progress import RunContext
from core.mapping.blocks import BlockStore
from core.mapping.stitch import StripStitcher
from core.outputs.export import open_intermediate
from core.types import (
    LogSigmoidNormalisation,
    ModelCard,
    NoNormalisation,
    Normalisation,
    ScaleClipNormalisation,
    StandardNormalisation,
)

log = logging.getLogger(__name__)

Predict = Callable[[np.ndarray], np.ndarray]


class Model(Protocol):
    """What a model pass needs of a model (models.registry.LoadedModel is one)."""

    @property
    def card(self) -> ModelCard: ...

    @property
    def predict(self) -> Predict: ...


@dataclass(frozen=True)
class CardModel:
    """A card and a predict callable, as a Model."""

    card: ModelCard
    predict: Predict


ReadWindow = Callable[[Window], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class InferenceResult:
    """What one pass over the grid produced, besides the two rasters."""

    class_counts: np.ndarray  # (K,) int64 pixels per class over valid pixels inside the AOI
    aoi_px: int  # pixels inside the AOI
    tiles: int
    model_s: float  # time spent inside `predict`
    total_s: float


def normalise(reflectance: np.ndarray, normalisation: Normalisation) -> np.ndarray:
    """Apply a model card's normalisation to (..., C, h, w) reflectance; returns float32."""
    match normalisation:
        case NoNormalisation():  # a copy: callers blank nodata in place and must not touch the reader's array
            return reflectance.astype(np.float32, copy=True)
        case StandardNormalisation(mean=mean, std=std) if mean:
            mean_c = np.asarray(mean, np.float32)[:, None, None]
            std_c = np.asarray(std, np.float32)[:, None, None]
            return ((reflectance - mean_c) / std_c).astype(np.float32, copy=False)
        case LogSigmoidNormalisation() as n:
            dn = reflectance.astype(np.float64) * n.dn_scale
            low = np.asarray(n.low, np.float64)[:, None, None]
            spread = np.asarray(n.spread, np.float64)[:, None, None]
            scaled = (np.log1p(n.log_factor * dn) - low) / spread
            return (1.0 / (1.0 + np.exp(-(n.slope * scaled - n.shift)))).astype(np.float32)
        case ScaleClipNormalisation() as c:
            scale = np.asarray(c.scale, np.float32)[:, None, None]
            offset = np.asarray(c.offset, np.float32)[:, None, None]
            return np.clip(reflectance * scale + offset, c.low, c.high).astype(np.float32, copy=False)
    # An untrained card's placeholder, or csmask's card before its loader chose the variant's statistics.
    raise ValueError(f"normalisation {normalisation.kind!r} has no statistics to apply")


def model_scale_factor(card: ModelCard, grid: Grid) -> int:
    """How many grid pixels make one model pixel along each axis (1 when the model runs at grid resolution)."""
    return max(1, round(card.resolution_m / grid.resolution_m))


def tile_layout(card: ModelCard, grid: Grid, overlap_px: int) -> TileLayout:
    """The tiles a model sees over `grid`: CRS-anchored with context, or the grid's own for per-pixel models.

    `overlap_px` is in model pixels; tiles are `card.tile_px` model pixels, so lattice positions are whole
    model pixels and the averaging down to the model's resolution uses the same blocks for every grid.
    """
    factor = model_scale_factor(card, grid)
    size = card.tile_px * factor
    if card.per_pixel:
        return grid_layout(grid, size, min(overlap_px * factor, size - factor))
    return lattice_layout(grid, size, min(overlap_px, card.tile_px - 1) * factor)


def context_area(layouts: list[TileLayout]) -> BaseGeometry:
    """The area (EPSG:4326) whose pixels these layouts read: what a job must fetch beyond its AOI."""
    areas = [
        project_geometry(box(*layout.context.bounds), layout.context.crs, "EPSG:4326") for layout in layouts
    ]
    return shapely.union_all(areas)


def prepare_tile(
    read: ReadWindow, window: Window, card: ModelCard, size: int, factor: int
) -> tuple[np.ndarray, np.ndarray]:
    """Read, normalise, fill invalid pixels (see core.geometry.tiling.fill_nodata) and pad one tile to `size`.

    A single-date read gives (C, h, w) values and (h, w) validity; a series read (core.mapping.series) gives
    (T, C, h, w) and (T, h, w). The tile's output validity is (h, w): valid on at least one date.
    """
    reflectance, valid = read(window)
    tile = fill_nodata(normalise(reflectance, card.normalisation), valid, card.nodata_fill)
    if valid.ndim == 3:  # a series: pixels seen on at least one date are valid output
        valid = np.asarray(valid.any(axis=0))
    tile = pad_tile(tile, size)  # only per-pixel layouts have tiles smaller than `size`
    if factor > 1:  # average down to the model's resolution
        if tile.ndim != 3:
            raise ValueError("series models must run at the grid's resolution")
        c, s = tile.shape[0], size // factor
        tile = tile.reshape(c, s, factor, s, factor).mean(axis=(2, 4))
    return tile, valid


def _upsample(probs: np.ndarray, factor: int) -> np.ndarray:
    """Bilinear upsampling of (B, K, s, s) probabilities back to grid resolution."""
    if factor == 1:
        return probs
    import torch  # here: processes that only plan or list jobs (the web app) never load torch

    tensor = torch.nn.functional.interpolate(
        torch.from_numpy(probs), scale_factor=factor, mode="bilinear", align_corners=False
    )
    return tensor.numpy()


def predict_grid(
    read: ReadWindow,
    model: Model,
    layout: TileLayout,
    aoi: BaseGeometry,
    run: RunContext,
    *,
    batch_size: int = 4,
    clip_to_aoi: bool = True,
) -> InferenceResult:
    """Run a model over `layout`'s tiles and write class and confidence rasters on its grid, strip by strip.

    The rasters are `run.work_dir/classes.tif` and `confidence.tif` (uncompressed tiled GeoTIFFs, uint8;
    confidence is 255 * max probability, 0 = no data). Finished strips are checkpointed in `run.work_dir/blocks/`
    (see core.mapping.blocks); a call that finds strips there from an interrupted run resumes after them and gives the
    same pixels.

    Args:
        read: window of `layout.context` -> reflectance (C, h, w) float32 in `model.card.bands` order, valid
            (h, w) bool; or, for series models, (T, C, h, w) and (T, h, w) (see core.mapping.series.SeriesReader).
        model: its card and predict callable (see module docstring).
        layout: from `tile_layout(card, grid, overlap_px)`; the rasters are written on `layout.grid`.
        aoi: the area of interest in the grid's CRS; class counts cover the pixels whose centre lies inside.
        clip_to_aoi: pixels outside `aoi` get the nodata class (False keeps every valid pixel, for a cloud mask
            that a series model reads as context).
    """
    started = time.perf_counter()
    card, predict = model.card, model.predict
    run.work_dir.mkdir(parents=True, exist_ok=True)
    classes_path, confidence_path = run.work_dir / "classes.tif", run.work_dir / "confidence.tif"
    grid = layout.grid
    factor = model_scale_factor(card, grid)
    size = layout.size
    tiles = list(layout.tiles)
    weights = blend_weights(size, min(layout.overlap, size // 2))
    blocks = BlockStore(classes_path.parent / "blocks")
    resume_row = blocks.finished_rows()
    # A strip is final once the next row of tiles starts, so resuming at a tile row R means recomputing the
    # row of tiles above it (its overlap reaches below R); batches keep their original make-up, so the model
    # sees exactly the inputs of an uninterrupted run.
    first_row = max((int(t.out.row_off) for t in tiles if t.out.row_off < resume_row), default=0)
    batches = [tiles[i : i + batch_size] for i in range(0, len(tiles), batch_size)]
    start_batch = next(
        (i for i, b in enumerate(batches) if any(t.out.row_off >= first_row for t in b)), len(batches)
    )
    if resume_row:
        log.info("Resuming after %d finished rows of %d", resume_row, grid.height)
    pending_rows: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, int]] = []
    model_s = 0.0

    def keep_rows(row0: int, col0: int, scores: np.ndarray, valid: np.ndarray) -> None:
        inside = geometry_mask(
            [aoi],
            out_shape=valid.shape,
            invert=True,
            transform=grid.transform @ Affine.translation(col0, row0),
        )
        keep = valid & inside
        classes = np.argmax(scores, axis=0).astype(np.uint8)
        confidence = np.clip(np.rint(scores.max(axis=0) * 255), 1, 255).astype(np.uint8)
        shown = keep if clip_to_aoi else valid
        classes[~shown] = card.nodata_value
        confidence[~shown] = 0
        counts = np.bincount(classes[keep], minlength=card.n_classes)[: card.n_classes]
        pending_rows.append((row0, classes, confidence, counts, int(inside.sum())))

    def flush(stitcher: StripStitcher, row: int) -> None:
        """Finish rows above `row` and checkpoint them as one strip (unless a previous run saved them)."""
        stitcher.flush_until(row)
        if pending_rows and pending_rows[0][0] >= resume_row:
            blocks.save(
                pending_rows[0][0],
                np.concatenate([p[1] for p in pending_rows], axis=1),
                np.concatenate([p[2] for p in pending_rows], axis=1),
                np.sum([p[3] for p in pending_rows], axis=0),
                sum(p[4] for p in pending_rows),
            )
        pending_rows.clear()

    if resume_row < grid.height:
        stitcher = StripStitcher(
            card.n_classes, grid.height, grid.width, min(size, grid.height), keep_rows, top=first_row
        )
        done = sum(len(b) for b in batches[:start_batch])
        # One reader thread overlaps GDAL decoding (which releases the GIL) with the model's compute.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="terraseg-read") as pool:

            def submit(batch: list[Tile]) -> Future[list[tuple[np.ndarray, np.ndarray]]]:
                return pool.submit(lambda: [prepare_tile(read, t.read, card, size, factor) for t in batch])

            pending = submit(batches[start_batch])
            for index in range(start_batch, len(batches)):
                batch = batches[index]
                prepared = pending.result()
                if index + 1 < len(batches):
                    pending = submit(batches[index + 1])
                run.check_cancelled()
                tic = time.perf_counter()
                probs = _upsample(predict(np.stack([tile for tile, _ in prepared])), factor)
                model_s += time.perf_counter() - tic
                run.check_cancelled()  # a cancel during the forward pass stops before the stitching and saving
                for tile, (_, valid), tile_probs in zip(batch, prepared, probs, strict=True):
                    if tile.out.row_off < first_row:
                        continue  # part of a strip a previous run saved
                    if tile.out.row_off > stitcher.top:
                        flush(stitcher, int(tile.out.row_off))
                    rows = slice(tile.row_in_tile, tile.row_in_tile + int(tile.out.height))
                    cols = slice(tile.col_in_tile, tile.col_in_tile + int(tile.out.width))
                    stitcher.add(tile.out, tile_probs[:, rows, cols], weights[rows, cols], valid[rows, cols])
                done += len(batch)
                run.report(done / len(tiles), f"tiles {done}/{len(tiles)}")
        flush(stitcher, grid.height)
    # Writing the rasters out takes a while on big grids; a cancel that came during the last batch stops here
    # (the saved strips stay, so a retry resumes from them).
    run.check_cancelled()
    with (
        open_intermediate(classes_path, grid, card.nodata_value) as classes_out,
        open_intermediate(confidence_path, grid, 0) as confidence_out,
    ):
        blocks.write_to(classes_out, confidence_out)
    counts, aoi_px = blocks.totals(card.n_classes)
    log.debug("predict_grid: %d tiles, model %.2fs", len(tiles), model_s)
    return InferenceResult(
        class_counts=counts,
        aoi_px=aoi_px,
        tiles=len(tiles),
        model_s=model_s,
        total_s=time.perf_counter() - started,
    )
