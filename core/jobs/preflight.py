"""The pre-flight estimate shown before a job is submitted: scenes found, data to fetch, rough run time."""

import dataclasses
import math
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import shapely
from shapely.geometry.base import BaseGeometry

from core.config import Settings
from core.errors import DateRangeError, NoScenesFound
from core.geometry.aoi import AOI
from core.geometry.grid import Grid, grid_for_aoi, project_geometry
from core.mapping import analysis
from core.mapping.inference import tile_layout
from core.mapping.presto_inputs import PRESTO_BUILDER
from core.sources import search_scenes
from core.sources.download import is_remote
from core.types import ModelCard, Scene

if TYPE_CHECKING:
    from core.sources.monthly_cube import MonthlyCube

# Reading, resampling, stitching and writing per million 10 m pixels and per date, on a 2-vCPU worker
# (the pipeline benchmark's whole-pipeline minus model time, rounded up): for models that map the grid itself
# (Presto) and monthly cubes.
_PIPELINE_S_PER_MPX = 0.5
# A model pass costs per tile, and tiles cover the AOI's context, which can be far more than the AOI (csmask's
# 7.7 km tiles over a 1 km2 AOI). Per tile: tile Mpx x (_MODEL_FACTOR x the card's cpu_s_per_mpx + _READ_S_PER_MPX
# x bands x the tile's share with data) + _TILE_S (filling no data, blending, writing). Fitted to real runs of
# the cloud and land-cover tasks on the sample and on a 300 km2 local source on an idle 2-vCPU worker
# (bench/estimates.py). The first fit (2026-12-02) was made while other work loaded the machine: on 2026-12-03,
# idle, the same jobs ran 2.6-2.8x faster than it said, so every figure was divided by 2.75. A worker that
# shares its cores with other work takes longer than the estimate by about that much.
_MODEL_FACTOR = 0.55
_READ_S_PER_MPX = 0.084
_TILE_S = 0.069
_EXPORT_S_PER_MPX = 0.69  # COGs with overviews, preview, statistics and every date's map, per Mpx of the grid
_FIXED_S = 0.36  # planning, search, model loading
_OVERLAP_PX = 32  # the default tile overlap (TERRASEG_TILE_OVERLAP_PX), model pixels
_BYTES_PER_SAMPLE = 2  # Sentinel-2 DN are uint16
# A deflate COG window of Sentinel-2 DN against its uncompressed size (bench/downloads.py: 311 KB for a 514 x 514
# px window, 0.59x); the window's 3-pixel margin is within the rounding.
_WINDOW_DEFLATE_RATIO = 0.6
# Work rasters per date and model run: classes + confidence, uint8, uncompressed (core.mapping.inference).
_WORK_BYTES_PER_PX = 2
# Published outputs: classes, confidence and 3-band true colour (uint8) with overviews, before compression.
_OUTPUT_BYTES_PER_PX = 7


@dataclass(frozen=True)
class Estimate:
    """What a job will roughly cost; every number is an estimate and the page says so."""

    scenes: int
    dates: int
    pixels: int  # on the 10 m target grid
    download_mb: float  # bytes to fetch over the network (0 for local sources)
    read_mb: float  # uncompressed band data the job reads
    run_s: float | None  # None when the model has no throughput figure
    coverage_fraction: float = 1.0  # share of the AOI inside at least one scene's footprint (range: [0, 1])
    work_mb: float = 0.0  # per-date rasters in the cache while the job runs
    output_mb: float = 0.0  # the published outputs (upper bound: before compression)
    inputs_note: str = ""  # what the job reads when it is not scenes (a monthly cube), for the summary
    radar_scenes: int = 0  # Sentinel-1 acquisitions a crop job composites (inside `scenes` and `download_mb`)
    radar_note: str = ""  # why a crop job on scenes will have no Sentinel-1
    scene_dates: tuple[str, ...] = ()  # the dates found (YYYY-MM-DD), one of which a job may map
    caveats: tuple[str, ...] = ()  # a model that will run on scenes of a level it was not trained on

    @property
    def cache_mb(self) -> float:
        """Space the job needs in the cache folder: downloads and work rasters (outputs are published there
        too for queued jobs)."""
        return self.download_mb + self.work_mb

    def summary(self) -> str:
        """One plain sentence for the page."""
        run = f"about {format_duration(self.run_s)} on a CPU worker" if self.run_s is not None else "unknown"
        if self.radar_scenes or self.radar_note:  # monthly composites of a crop job's own scenes
            radar = (
                f"and {self.radar_scenes} Sentinel-1 acquisition(s)"
                if self.radar_scenes
                else f"(no Sentinel-1: {self.radar_note.rstrip('.')})"
            )
            return (
                f"12 monthly composites of {self.scenes - self.radar_scenes} Sentinel-2 scenes on {self.dates} dates "
                f"{radar} cover {format_share(self.coverage_fraction)} of the area; {self.download_mb:,.0f} MB to "
                f"download, {self.read_mb:,.1f} MB of bands to read; run time {run}."
            )
        if self.inputs_note:
            return (
                f"{self.inputs_note} covers {format_share(self.coverage_fraction)} of the area; nothing to download, "
                f"{self.read_mb:,.1f} MB to read; run time {run}."
            )
        return (
            f"{self.scenes} scenes on {self.dates} dates cover {format_share(self.coverage_fraction)} of the area; "
            f"{self.download_mb:,.0f} MB to download, {self.read_mb:,.1f} MB of bands to read; run time {run}."
        )

    def coverage_warning(self) -> str | None:
        """A sentence to show before submitting when part of the area has no scene (its map will be no data)."""
        if self.coverage_fraction >= FULL_COVERAGE_FRACTION:
            return None
        return (
            f"The scenes found cover only {format_share(self.coverage_fraction)} of the area; the rest of the map "
            "will be no data. Draw the area inside the imagery or choose another source."
        )


# Below this share a footprint gap is worth a warning (footprints are outlines: 0.5 % absorbs their rounding).
FULL_COVERAGE_FRACTION = 0.995


def format_share(fraction: float) -> str:
    """0.003 -> '0.3 %', 0.89 -> '89 %', 1.0 -> '100 %'."""
    percent = 100 * fraction
    return f"{percent:.1f} %" if percent < 10 else f"{percent:.0f} %"


def coverage_fraction(aoi: BaseGeometry, scenes: list[Scene], crs: str) -> float:
    """Share of the AOI's area inside any scene's footprint (EPSG:4326 geometries, measured in `crs`, the
    job grid's UTM zone)."""
    if not scenes:
        return 0.0
    area = project_geometry(aoi, "EPSG:4326", crs)
    covered = project_geometry(shapely.union_all([s.footprint for s in scenes]), "EPSG:4326", crs)
    return float(area.intersection(covered).area / area.area) if area.area > 0 else 0.0


def find_scenes(
    sources: tuple[str, ...],
    aoi: BaseGeometry,
    start: date,
    end: date,
    max_cloud_pct: float | None,
    settings: Settings,
    levels: tuple[str, ...] = (),
) -> list[Scene]:
    """The scenes a job will use: the first source with matches, one processing level, under the cloud limit.

    `levels` are the processing levels the job's models were trained on (`JobModels.trained_levels`), in order of
    preference: a source that has them wins over an earlier one that has not, and within a source they win over
    the most common level; a model that runs on another level only with a caveat says so in its outputs.
    The worker's search stage and the page's pre-flight both call this, so the estimate counts what the job
    will really read.
    """
    scenes = search_scenes(sources, aoi, start, end, settings, max_cloud_pct=max_cloud_pct, levels=levels)
    return analysis.single_level(analysis.filter_cloud_cover(scenes, max_cloud_pct), levels)


def find_radar_scenes(
    sources: tuple[str, ...], aoi: BaseGeometry, start: date, end: date, settings: Settings
) -> tuple[list[Scene], str]:
    """The Sentinel-1 GRD scenes of the first source that has some over `aoi` in [start, end], or none and what
    the sources answered (a crop job then composites Sentinel-2 alone and says why). A source that is down still
    fails the search, so the job is retried rather than run without the radar it could have had."""
    try:
        return search_scenes(sources, aoi, start, end, settings, sensor="S1"), ""
    except NoScenesFound as err:
        return [], str(err)


def check_chosen_date(scenes: list[Scene], chosen: date | None) -> None:
    """DateRangeError when a date was chosen that none of the scenes found has (before anything runs: the job
    would otherwise compute every date and then fail)."""
    if chosen is None:
        return
    dates = sorted({s.date_iso for s in scenes})
    if chosen.isoformat() not in dates:
        raise DateRangeError(f"There is no scene on {chosen}; dates with scenes: {', '.join(dates)}.")


def estimate_job(
    aoi: AOI, scenes: list[Scene], card: ModelCard, cloud_card: ModelCard | None = None
) -> Estimate:
    """Estimate a job over `aoi` with the `scenes` a search found, for the model `card`.

    With `cloud_card` (tasks other than cloud), the cloud model runs on every date and `card` on one date, as
    the worker does. Local scenes (the sample, a folder) need no download; remote sources will report their
    asset sizes through `Scene.extra["download_bytes"]`.
    """
    grid = grid_for_aoi(aoi.geometry)
    pixels = grid.width * grid.height
    dates = len({s.date_iso for s in scenes})
    download_bytes = sum(int(s.extra.get("download_bytes", 0)) for s in scenes)
    every_date, one_date = (card, None) if cloud_card is None else (cloud_card, card)
    # COG sources (STAC) send only the AOI's window of each band a model reads: about this many bytes.
    window_dates = len({s.date_iso for s in scenes if any(is_remote(a) for a in s.bands.values())})
    window_bands = len(set(every_date.bands) | set(one_date.bands if one_date else ()))
    download_bytes += int(window_dates * window_bands * pixels * _BYTES_PER_SAMPLE * _WINDOW_DEFLATE_RATIO)
    read_bands = dates * len(every_date.bands) + (len(one_date.bands) if one_date else 0)
    read_bytes = pixels * read_bands * _BYTES_PER_SAMPLE
    run_s: float | None = None
    if every_date.cpu_s_per_mpx is not None and (one_date is None or one_date.cpu_s_per_mpx is not None):
        covered_px = pixels * coverage_fraction(aoi.geometry, scenes, grid.crs)
        run_s = _FIXED_S + dates * pass_s(every_date, grid, covered_px) + pixels / 1e6 * _EXPORT_S_PER_MPX
        if one_date is not None:
            run_s += pass_s(one_date, grid, covered_px)
    model_runs = dates + (3 if one_date else 0)  # the task's model, then masked, on one date (a series: once)
    return Estimate(
        len(scenes),
        dates,
        pixels,
        download_bytes / 1e6,
        read_bytes / 1e6,
        run_s,
        coverage_fraction(aoi.geometry, scenes, grid.crs),
        work_mb=pixels * model_runs * _WORK_BYTES_PER_PX / 1e6,
        output_mb=pixels * _OUTPUT_BYTES_PER_PX / 1e6,
        scene_dates=tuple(sorted({s.date_iso for s in scenes})),
        caveats=level_caveats(scenes, card, cloud_card),
    )


def level_caveats(scenes: list[Scene], *cards: ModelCard | None) -> tuple[str, ...]:
    """The caveats of the `cards` that will run on the scenes' processing level without having been trained on
    it (the same the job's outputs will carry)."""
    levels = sorted({s.processing_level for s in scenes})
    return tuple(
        caveat for card in cards if card is not None for lv in levels if (caveat := card.caveat_for(lv))
    )


def pass_s(card: ModelCard, grid: Grid, covered_px: float) -> float:
    """Seconds of one pass of `card` over `grid` on a 2-vCPU worker, per its tiles (see _MODEL_FACTOR);
    `covered_px`: grid pixels with data. A model that maps pixels, not tiles (Presto), costs per grid pixel."""
    cpu_s = card.cpu_s_per_mpx or 0.0
    if card.builder == PRESTO_BUILDER:
        return grid.width * grid.height / 1e6 * (cpu_s + _PIPELINE_S_PER_MPX)
    layout = tile_layout(card, grid, _OVERLAP_PX)
    tile_mpx = layout.size**2 / 1e6
    with_data = min(1.0, covered_px / max(1.0, len(layout.tiles) * layout.size**2))
    return len(layout.tiles) * (
        tile_mpx * (_MODEL_FACTOR * cpu_s + _READ_S_PER_MPX * len(card.bands) * with_data) + _TILE_S
    )


def cloud_share(cloud_card: ModelCard, dates: int, card: ModelCard, grid: Grid) -> float:
    """The share of a job's prediction time the cloud model's passes over every date take, the task's model's
    one pass the rest (from `pass_s`): how a job splits its progress bar between them, so that the fraction
    grows with time and an ETA from the rate does not climb when the slower model starts."""
    cloud_s = dates * pass_s(cloud_card, grid, grid.width * grid.height)
    model_s = pass_s(card, grid, grid.width * grid.height)
    return cloud_s / (cloud_s + model_s) if cloud_s + model_s > 0 else 0.5


def estimate_composite_job(
    aoi: AOI, scenes: list[Scene], radar: list[Scene], radar_note: str, card: ModelCard, cloud_card: ModelCard
) -> Estimate:
    """Estimate a crop job on a season of its own scenes: the cloud model on every Sentinel-2 date and Presto
    once (as estimate_job), plus the Sentinel-1 products it composites (a DHuS mirror sends each whole)."""
    estimate = estimate_job(aoi, scenes, card, cloud_card)
    radar_bytes = sum(int(s.extra.get("download_bytes", 0)) for s in radar)
    pixels = estimate.pixels
    return dataclasses.replace(
        estimate,
        scenes=estimate.scenes + len(radar),
        download_mb=estimate.download_mb + radar_bytes / 1e6,
        read_mb=estimate.read_mb + pixels * len(radar) * 2 * 4 / 1e6,  # VV and VH, float32 dB
        radar_scenes=len(radar),
        radar_note="" if radar else (radar_note or "no source has Sentinel-1 for the season"),
    )


def estimate_cube_job(aoi: AOI, cube: "MonthlyCube", card: ModelCard) -> Estimate:
    """Estimate a crop job over `aoi` that reads the monthly cube `cube` (no download, no cloud model)."""
    grid = grid_for_aoi(aoi.geometry)
    pixels = grid.width * grid.height
    footprint = project_geometry(shapely.box(*cube.bounds), cube.crs, "EPSG:4326")
    covered = aoi.geometry.intersection(footprint).area / aoi.geometry.area if aoi.geometry.area > 0 else 0.0
    run_s = None if card.cpu_s_per_mpx is None else pixels / 1e6 * (card.cpu_s_per_mpx + _PIPELINE_S_PER_MPX)
    return Estimate(
        scenes=len(cube.months),
        dates=len(cube.months),
        pixels=pixels,
        download_mb=0.0,
        read_mb=pixels * len(cube.months) * len(cube.subdatasets) * 2 / 1e6,  # uint16 values
        run_s=run_s,
        coverage_fraction=min(1.0, covered),
        work_mb=pixels * 3 / 1e6,  # classes, confidence, cropland
        output_mb=pixels * _OUTPUT_BYTES_PER_PX / 1e6,
        inputs_note=f"A monthly cube of 12 months ({cube.season}, {'S1 + S2' if cube.has_s1 else 'S2 only'})",
    )


def format_duration(seconds: float | None) -> str:
    """12 -> '12 s', 150 -> '3 min', 7300 -> '2.0 h'; None -> '-'."""
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{math.ceil(seconds)} s"
    if seconds < 5400:
        return f"{math.ceil(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"
