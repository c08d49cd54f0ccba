"""Time series for series models (U-TAE, ConvLSTM/GRU): choose the dates, build (T, C, h, w) stacks per tile.

A series model gets, per tile, every chosen date's bands on the grid, a validity mask per date and pixel (data
present and, where a cloud model ran, clear), a padding mask per date (no valid pixel in the tile: the model must
ignore that date) and the dates as day numbers for its positional encoding. Invalid observations are blanked to 0
before the model sees them, so what lies under a cloud or outside the swath cannot change the output.
"""

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Protocol

import numpy as np
import rasterio
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from core.errors import NoScenesFound
from core.geometry.grid import Grid
from core.jobs.progress import RunContext, TilingOptions
from core.mapping.analysis import DateResult, load_done, save_done
from core.mapping.inference import CardModel, Predict, predict_grid, tile_layout
from core.mapping.reading import SceneReader
from core.types import ModelCard, Series

ReadWindow = Callable[[Window], tuple[np.ndarray, np.ndarray]]  # -> (C, h, w) values, (h, w) valid
ReadMask = Callable[[Window], np.ndarray]  # -> (h, w) bool, True where the pixel is clear


def choose_dates(
    dates: Sequence[date], clear_fractions: Sequence[float], max_dates: int, min_clear: float = 0.0
) -> list[int]:
    """Indices (in time order) of at most `max_dates` dates: the clear ones, spread evenly over the range.

    Dates whose clear fraction is at most `min_clear` are dropped. When more remain than `max_dates`, the range
    from the first to the last is split into `max_dates` equal parts and, for each part's centre, the remaining
    date with the best `clear fraction - distance / range` is taken: clear dates win, but not at the cost of
    leaving a season empty.
    """
    if max_dates < 1:
        raise ValueError("max_dates must be at least 1")
    order = sorted(range(len(dates)), key=lambda i: dates[i])
    candidates = [i for i in order if clear_fractions[i] > min_clear]
    if len(candidates) <= max_dates:
        return candidates
    first, last = dates[candidates[0]].toordinal(), dates[candidates[-1]].toordinal()
    span = max(last - first, 1)
    chosen: list[int] = []
    for part in range(max_dates):
        centre = first + span * (part + 0.5) / max_dates
        remaining = [i for i in candidates if i not in chosen]
        chosen.append(
            max(remaining, key=lambda i: (clear_fractions[i] - abs(dates[i].toordinal() - centre) / span, -i))
        )
    return sorted(chosen, key=lambda i: dates[i])


@dataclass(frozen=True)
class SeriesTile:
    """One tile of a series, ready for a series model (add the batch axis)."""

    values: np.ndarray  # (T, C, h, w) float32, 0 where not valid
    valid: np.ndarray  # (T, h, w) bool: data present and clear
    pad_mask: np.ndarray  # (T,) bool: True where the date has no valid pixel in this tile
    positions: np.ndarray  # (T,) float32 days since `reference`
    dates: tuple[date, ...]


def read_series_tile(
    readers: Sequence[ReadWindow],
    clear_masks: Sequence[ReadMask | None],
    dates: Sequence[date],
    window: Window,
    reference: date | None = None,
) -> SeriesTile:
    """Read `window` from each date's reader, mask what is missing or not clear, and mark empty dates as padding.

    Args:
        readers: one per date, e.g. `SceneReader(scenes, card.bands, grid).read`.
        clear_masks: one per date: a reader of the cloud model's clear mask on the same grid, or None (no cloud
            model: data presence alone decides).
        dates: the acquisition date of each reader.
        reference: day 0 of the positions (default: the first date); models trained with a fixed origin (PASTIS
            used 2018-09-01) need theirs.
    """
    if not (len(readers) == len(clear_masks) == len(dates)) or not readers:
        raise ValueError("give one reader, one clear mask (or None) and one date per date, at least one")
    stacks, valids = [], []
    for read, clear in zip(readers, clear_masks, strict=True):
        values, valid = read(window)
        if clear is not None:
            valid = valid & clear(window)
        stacks.append(np.where(valid[None], values, 0.0).astype(np.float32))
        valids.append(valid)
    valid_stack = np.stack(valids)
    origin = (reference or dates[0]).toordinal()
    return SeriesTile(
        values=np.stack(stacks),
        valid=valid_stack,
        pad_mask=np.asarray(~valid_stack.any(axis=(1, 2))),
        positions=np.array([d.toordinal() - origin for d in dates], np.float32),
        dates=tuple(dates),
    )


class SeriesReader:
    """`read(window)` -> (T, C, h, w) values (0 where invalid) and (T, h, w) validity, for core.mapping.inference.

    Wraps one reader and one clear-mask reader (or None) per chosen date; the caller keeps the date readers
    open (SceneReader is a context manager) while this one is used.
    """

    def __init__(
        self, readers: Sequence[ReadWindow], clear_masks: Sequence[ReadMask | None], dates: Sequence[date]
    ):
        self.readers, self.clear_masks, self.dates = list(readers), list(clear_masks), list(dates)

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        tile = read_series_tile(self.readers, self.clear_masks, self.dates, window)
        return tile.values, tile.valid


def clear_mask_reader(classes_path: Path, grid: Grid, clear_class: int = 0) -> ReadMask:
    """A reader of the cloud model's class raster as a clear mask (True where `clear_class`) on `grid`.

    `grid` must be on the raster's pixel lattice (same CRS and resolution); pixels the raster does not cover
    are not clear. The job runs the cloud model over the series model's context grid, so its context is known.
    """
    with rasterio.open(classes_path) as dataset:
        if dataset.crs is None or dataset.crs.to_string() != grid.crs or dataset.res[0] != grid.resolution_m:
            raise ValueError(f"{classes_path} is not on the lattice of {grid}")
        col0 = round((grid.transform.c - dataset.transform.c) / grid.resolution_m)
        row0 = round((dataset.transform.f - grid.transform.f) / grid.resolution_m)

    def read(window: Window) -> np.ndarray:
        shifted = Window(window.col_off + col0, window.row_off + row0, window.width, window.height)
        with rasterio.open(classes_path) as dataset:
            classes = dataset.read(1, window=shifted, boundless=True, fill_value=clear_class + 1)
        return np.asarray(classes == clear_class)

    return read


def clear_fraction(result: DateResult, clear_class: int = 0) -> float:
    """Share of the AOI the cloud model saw clear on this date (0 when the date has no pixel in the AOI)."""
    aoi_px = result.inference.aoi_px
    return float(result.inference.class_counts[clear_class]) / aoi_px if aoi_px else 0.0


class SeriesModel(Protocol):
    """What a series pass needs of a series model (models.registry.LoadedModel with `for_dates` is one)."""

    @property
    def card(self) -> ModelCard: ...

    @property
    def for_dates(self) -> Callable[[list[date]], Predict] | None: ...


def predict_series(
    cloud_results: list[DateResult],
    model: SeriesModel,
    grid: Grid,
    aoi_grid: BaseGeometry,
    run: RunContext,
    tiling: TilingOptions,
) -> DateResult:
    """Choose up to the card's `max_dates` dates by the cloud model's clear fractions, and run a series model
    over the grid; its rasters go to `run.work_dir`.

    The cloud results should cover the series model's context (`tile_layout(card, grid, overlap_px).context`,
    computed with `clip_to_aoi=False`); where they do not, observations count as not clear.

    Each tile stacks the chosen dates' bands with their clouds and missing data blanked; the model's dates come
    from `model.for_dates(chosen dates)`. The result's `date` is the last chosen date and its `scenes` every
    chosen date's scenes, in time order. Like predict_dates, a finished run is reused and an interrupted one
    resumes.
    """
    card = model.card
    if not isinstance(card.temporal, Series) or model.for_dates is None:
        raise ValueError(f"{card.id} is not a series model")
    chosen = [
        cloud_results[i]
        for i in choose_dates(
            [r.date for r in cloud_results],
            [clear_fraction(r) for r in cloud_results],
            card.temporal.max_dates,
        )
    ]
    if not chosen:
        raise NoScenesFound(
            "No date in the range has a clear pixel in the area of interest; widen the dates."
        )
    out_dir = run.work_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    dates = [r.date for r in chosen]
    classes_path, confidence_path = out_dir / "classes.tif", out_dir / "confidence.tif"
    inference = load_done(out_dir)
    layout = tile_layout(card, grid, tiling.overlap_px)
    if inference is None:
        with ExitStack() as stack:
            readers = [
                stack.enter_context(SceneReader(list(r.scenes), card.bands, layout.context)).read
                for r in chosen
            ]
            masks: list[ReadMask | None] = [clear_mask_reader(r.classes_path, layout.context) for r in chosen]
            series = SeriesReader(readers, masks, dates)
            inference = predict_grid(
                series.read,
                CardModel(card, model.for_dates(dates)),
                layout,
                aoi_grid,
                run,
                batch_size=tiling.batch_size,
            )
        save_done(out_dir, inference)
    else:
        run.report(1.0, "reused from an earlier run")
    scenes = tuple(s for r in chosen for s in r.scenes)
    return DateResult(dates[-1], scenes, classes_path, confidence_path, inference)
