"""Stages of an analysis between search and export: group scenes by date, run the model per date, choose one.

A cloud job runs the model on every date in the range (users want per-date cloud fractions); the published
class map is the chosen date: the one with the most clear area inside the AOI, or the date the user named.
"""

import dataclasses
import json
import logging
import os
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from core.errors import DateRangeError, NoScenesFound
from core.geometry.grid import Grid
from core.jobs.progress import RunContext, TilingOptions
from core.mapping.inference import InferenceResult, Model, predict_grid, tile_layout
from core.mapping.reading import SceneReader
from core.outputs.export import open_intermediate
from core.types import ModelCard, Scene

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DateResult:
    """The model's output for one acquisition date (a mosaic of that date's scenes)."""

    date: date
    scenes: tuple[Scene, ...]
    classes_path: Path
    confidence_path: Path
    inference: InferenceResult

    @property
    def valid_px(self) -> int:
        """Pixels inside the AOI with data on this date."""
        return int(self.inference.class_counts.sum())


def group_by_date(scenes: list[Scene]) -> dict[date, list[Scene]]:
    """Scenes keyed by UTC acquisition date, in date order (same-day tiles are mosaicked later)."""
    groups: dict[date, list[Scene]] = {}
    for scene in sorted(scenes, key=lambda s: s.acquired):
        groups.setdefault(scene.acquired.date(), []).append(scene)
    return groups


def usable_scenes(scenes: list[Scene], card: ModelCard) -> list[Scene]:
    """Scenes that carry every band and the processing level the model needs; the rest are logged and dropped."""
    usable = []
    for scene in scenes:
        missing = [b for b in card.bands if b not in scene.bands]
        if missing or not card.runs_on(scene.processing_level):
            log.warning(
                "Dropping scene %s: missing bands %s or level %s not in %s",
                scene.id,
                missing,
                scene.processing_level,
                card.runnable_levels,
            )
            continue
        usable.append(scene)
    if not usable:
        raise NoScenesFound(
            f"None of the {len(scenes)} scenes found has the bands ({', '.join(card.bands)}) and "
            f"processing level ({'/'.join(card.runnable_levels)}) that model {card.id} needs."
        )
    return usable


def predict_dates(
    groups: dict[date, list[Scene]],
    model: Model,
    grid: Grid,
    aoi_grid: BaseGeometry,
    run: RunContext,
    tiling: TilingOptions,
    *,
    clip_to_aoi: bool = True,
) -> list[DateResult]:
    """Run the model over the grid for each date; rasters go to `run.work_dir/<date>/`.

    The scenes are read over the layout's context (beyond the grid, where they have data), so a pixel's class
    does not depend on the grid around it (see core.geometry.tiling). With `clip_to_aoi` False the rasters keep every
    valid pixel of the grid (counts still cover the AOI only).

    A date whose `done.json` exists in `run.work_dir` (from an earlier, interrupted run of the same request) is
    taken as it is; a date that was interrupted resumes from its last saved strip (see core.mapping.blocks).
    """
    card = model.card
    layout = tile_layout(card, grid, tiling.overlap_px)
    results = []
    for index, (day, scenes) in enumerate(groups.items()):
        date_run = run.within(
            index / len(groups),
            (index + 1) / len(groups),
            f"date {index + 1}/{len(groups)} ({day})",
            run.work_dir / day.isoformat(),
        )
        date_dir = date_run.work_dir
        date_dir.mkdir(parents=True, exist_ok=True)
        inference = load_done(date_dir)
        if inference is None:
            date_run.check_cancelled()
            with SceneReader(scenes, card.bands, layout.context) as reader:
                inference = predict_grid(
                    reader.read,
                    model,
                    layout,
                    aoi_grid,
                    date_run,
                    batch_size=tiling.batch_size,
                    clip_to_aoi=clip_to_aoi,
                )
            save_done(date_dir, inference)
        else:
            date_run.report(1.0, "reused from an earlier run")
        log.info(
            "Date %s: %d tiles, %d valid px of %d in the AOI",
            day,
            inference.tiles,
            int(inference.class_counts.sum()),
            inference.aoi_px,
        )
        results.append(
            DateResult(day, tuple(scenes), date_dir / "classes.tif", date_dir / "confidence.tif", inference)
        )
    return results


def save_done(date_dir: Path, inference: InferenceResult) -> None:
    """Mark a date's rasters complete (written last, atomically) and drop its strip checkpoints."""
    record = {
        "class_counts": inference.class_counts.tolist(),
        "aoi_px": inference.aoi_px,
        "tiles": inference.tiles,
        "model_s": inference.model_s,
        "total_s": inference.total_s,
    }
    tmp = date_dir / "done.json.tmp"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, date_dir / "done.json")
    shutil.rmtree(date_dir / "blocks", ignore_errors=True)


def load_done(date_dir: Path) -> InferenceResult | None:
    """The result of a date finished by an earlier run, or None when there is none (or it is unreadable)."""
    try:
        record = json.loads((date_dir / "done.json").read_text())
        if not ((date_dir / "classes.tif").exists() and (date_dir / "confidence.tif").exists()):
            return None
        return InferenceResult(
            class_counts=np.asarray(record["class_counts"], np.int64),
            aoi_px=int(record["aoi_px"]),
            tiles=int(record["tiles"]),
            model_s=float(record["model_s"]),
            total_s=float(record["total_s"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def mask_clouds(
    result: DateResult,
    cloud: DateResult,
    card: ModelCard,
    grid: Grid,
    out_dir: Path,
    clear_class: int = 0,
    strip_rows: int = 512,
) -> DateResult:
    """`result`'s rasters with every pixel the cloud model did not call clear set to no data, and new counts.

    Both results must be on `grid` (they are: one job, one grid). Confidence becomes 0 (no data) there too.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = np.zeros(card.n_classes, np.int64)
    nodata = card.nodata_value
    classes_path, confidence_path = out_dir / "classes.tif", out_dir / "confidence.tif"
    with (
        rasterio.open(result.classes_path) as classes_in,
        rasterio.open(result.confidence_path) as confidence_in,
        rasterio.open(cloud.classes_path) as cloud_in,
        open_intermediate(classes_path, grid, nodata) as classes_out,
        open_intermediate(confidence_path, grid, 0) as confidence_out,
    ):
        for row in range(0, grid.height, strip_rows):
            window = Window(0, row, grid.width, min(strip_rows, grid.height - row))
            classes = classes_in.read(1, window=window)
            confidence = confidence_in.read(1, window=window)
            not_clear = cloud_in.read(1, window=window) != clear_class
            classes[not_clear] = nodata
            confidence[not_clear] = 0
            classes_out.write(classes, 1, window=window)
            confidence_out.write(confidence, 1, window=window)
            counts += np.bincount(classes[classes != nodata].ravel(), minlength=256)[: card.n_classes]
    masked_px = int(result.inference.class_counts.sum() - counts.sum())
    log.info("Masked %d cloud or shadow pixels of %s", masked_px, result.date)
    inference = dataclasses.replace(result.inference, class_counts=counts)
    return DateResult(result.date, result.scenes, classes_path, confidence_path, inference)


def select_date(results: list[DateResult], requested: date | None, clear_class: int = 0) -> DateResult:
    """The requested date, or the date with the most clear pixels inside the AOI (ties: the earlier date)."""
    if requested is not None:
        for result in results:
            if result.date == requested:
                return result
        available = ", ".join(r.date.isoformat() for r in results)
        raise DateRangeError(f"There is no scene on {requested}; dates with scenes: {available}.")
    best = max(results, key=lambda r: (int(r.inference.class_counts[clear_class]), -r.date.toordinal()))
    if best.valid_px == 0:
        raise NoScenesFound("The scenes found have no valid pixels inside the area of interest.")
    return best


# Below this share of the AOI with a class, a finished job says plainly that the map is (nearly) empty.
LOW_COVERAGE_FRACTION = 0.05


def coverage_warnings(
    aoi_px: int, data_px: int, mapped_px: int, day: date, masked_by: str | None = None
) -> list[str]:
    """Plain sentences for a map that covers little of the AOI: for stats.json, the job status and the page.

    Args:
        aoi_px: pixels inside the AOI.
        data_px: of those, pixels with data on the published date (before any cloud masking).
        mapped_px: pixels with a class in the published map.
        masked_by: the cloud model whose clouds and shadows were masked, if any.
    """
    if aoi_px == 0:
        return ["The area of interest covers no pixel of the 10 m grid; draw a larger area."]
    data_share, mapped_share = data_px / aoi_px, mapped_px / aoi_px
    if data_share < LOW_COVERAGE_FRACTION:
        return [
            f"The scenes of {day} cover only {100 * data_share:.1f} % of the area of interest; the rest of the "
            "map is no data. Choose a source or dates whose scenes cover the area."
        ]
    if masked_by is not None and mapped_share < LOW_COVERAGE_FRACTION:
        return [
            f"Clouds and shadows ({masked_by}) hide {100 * (data_px - mapped_px) / aoi_px:.1f} % of the area on "
            f"{day}, the clearest date; the map covers only {100 * mapped_share:.1f} % of it. Widen the dates "
            "or choose another season."
        ]
    return []


def single_level(scenes: list[Scene], preferred: tuple[str, ...] = ()) -> list[Scene]:
    """Keep the scenes of one processing level (a model runs on L1C or L2A, not a mix): the first of `preferred`
    (the levels the job's models were trained on) that some scene has, else the most common one."""
    levels = [s.processing_level for s in scenes]
    level = next((lv for lv in preferred if lv in levels), None) or max(sorted(set(levels)), key=levels.count)
    dropped = [s.id for s in scenes if s.processing_level != level]
    if dropped:
        log.warning("Using %s scenes only; dropping %d of another level: %s", level, len(dropped), dropped)
    return [s for s in scenes if s.processing_level == level]


def filter_cloud_cover(scenes: list[Scene], max_cloud_pct: float | None) -> list[Scene]:
    """Drop scenes whose metadata cloud cover exceeds the maximum (scenes without that metadata stay)."""
    if max_cloud_pct is None:
        return scenes
    kept = [s for s in scenes if s.cloud_cover_pct is None or s.cloud_cover_pct <= max_cloud_pct]
    if not kept:
        raise NoScenesFound(
            f"All {len(scenes)} scenes have more than {max_cloud_pct:g} % cloud cover. Raise the "
            "limit or widen the dates."
        )
    return kept
