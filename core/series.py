"""Time series for series models (U-TAE, ConvLSTM/GRU): choose the dates, build (T, C, h, w) stacks per tile.

A series model gets, per tile, every chosen date's bands on the grid, a validity mask per date and pixel (data
present and, where a cloud model ran, clear), a padding mask per date (no valid pixel in the tile: the model must
ignore that date) and the dates as day numbers for its positional encoding. Invalid observations are blanked to 0
before the model sees them, so what lies under a cloud or outside the swath cannot change the output.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
from rasterio.windows import Window

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
