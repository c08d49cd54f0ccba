"""A crop job with a Presto model, as a list of stage calls: open the monthly cube, load the crop-type model and
its cropland companion, map the AOI strip by strip (one Presto pass feeds both heads), export.

Its input is a ready monthly cube (`--source cube:FILE.nc`: 12 monthly composites of S2 L2A, S1, DEM and
weather, as WorldCereal makes them with openEO), or monthly composites made from the job's own Sentinel-2 L2A
scenes (core.mapping.composites: the cloud model masks each date, the median of each month's clear observations).
"""

import logging
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Protocol

import numpy as np
import rasterio
from pyproj import Transformer
from rasterio.features import rasterize

from core.config import Settings
from core.errors import AppError
from core.geometry.grid import Grid
from core.jobs import report
from core.jobs.preflight import find_radar_scenes, find_scenes
from core.jobs.progress import RunContext, TilingOptions
from core.jobs.request import JobArea, JobSpec
from core.jobs.store import utc_now
from core.mapping import analysis
from core.mapping.blocks import BlockStore
from core.mapping.composites import (
    S1_CHANNELS,
    S2_CHANNELS,
    CompositeDate,
    RadarDate,
    SceneComposites,
    check_composite_scenes,
    choose_radar,
    season_months,
    season_start,
)
from core.mapping.inference import context_area, tile_layout
from core.mapping.presto_inputs import CHANNELS, normalise
from core.outputs import export
from core.sources.download import fetch_scenes
from core.sources.monthly_cube import ready_cube
from core.types import ModelCard
from models import presto
from models.catalogue import Catalogue
from models.presto_heads import PrestoHead, load_head_model
from models.registry import LoadOptions, load

log = logging.getLogger(__name__)
STRIP_ROWS = 32  # grid rows read, embedded and written at once: ~40 MB of inputs on a 1,000-pixel-wide grid
S2_BANDS = [CHANNELS.index(b) for b in ("B02", "B03", "B04", "B08")]


class MonthlyInputs(Protocol):
    """What the crop mapper reads: a season of 12 monthly steps, strip by strip (a cube, or scene composites)."""

    @property
    def months(self) -> tuple[date, ...]: ...

    @property
    def season(self) -> str: ...

    @property
    def start_month(self) -> int: ...

    @property
    def has_s1(self) -> bool: ...

    def read_strip(self, grid: Grid, rows: slice) -> tuple[np.ndarray, np.ndarray]: ...

    def input_records(self) -> list[report.InputRecord]: ...


@dataclass(frozen=True)
class CropMap:
    """What mapping found: crop-type and cropland class counts, the AOI's pixels and the pixels mapped."""

    counts: np.ndarray
    cropland_counts: np.ndarray
    aoi_px: int
    mapped_px: int


@dataclass(frozen=True)
class CropModels:
    crop_type: PrestoHead
    cropland: PrestoHead | None


def load_crop_models(cards: Catalogue, spec: JobSpec) -> CropModels:
    card = cards.require_weights(spec.model_id)
    crop_type = load_head_model(card, cards.folder(spec.model_id))
    companion = str(card.builder_args.get("cropland_model", ""))
    cropland = None
    if companion and companion != card.id:
        cropland = load_head_model(cards.require_weights(companion), cards.folder(companion))
    return CropModels(crop_type, cropland)


def lat_lon_of(grid_crs: str, transform: rasterio.Affine, rows: slice, width: int) -> np.ndarray:
    """[rows x width, 2] latitude and longitude (degrees) of the pixel centres."""
    row_index, col_index = np.mgrid[rows, 0:width]
    xs, ys = rasterio.transform.xy(transform, row_index.ravel(), col_index.ravel())
    lon, lat = Transformer.from_crs(grid_crs, "EPSG:4326", always_xy=True).transform(
        np.asarray(xs), np.asarray(ys)
    )
    return np.stack([lat, lon], axis=1)


def classify_pixels(
    values: np.ndarray,
    missing: np.ndarray,
    latlon: np.ndarray,
    start_month: int,
    models: CropModels,
    settings: Settings,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Crop type, its confidence (255 x probability, 1..255) and cropland (None without a cropland model), uint8,
    of pixels with a season each (`values`/`missing` rows as `MonthlyInputs.read_strip` gives them)."""
    x, mask = normalise(values, missing)
    months = presto.months_from(np.full(len(values), start_month), 12)
    embedded = presto.embed(models.crop_type.encoder, x, mask, latlon, months, device=settings.device)
    probabilities = models.crop_type.head(embedded)
    classes = probabilities.argmax(axis=1).astype(np.uint8)
    confidence = np.clip(np.rint(probabilities.max(axis=1) * 255), 1, 255).astype(np.uint8)
    if models.cropland is None:
        return classes, confidence, None
    if models.cropland.encoder_file != models.crop_type.encoder_file:  # else one Presto pass feeds both heads
        embedded = presto.embed(models.cropland.encoder, x, mask, latlon, months, device=settings.device)
    return classes, confidence, models.cropland.head(embedded).argmax(axis=1).astype(np.uint8)


def map_crops(
    cube: MonthlyInputs, area: JobArea, models: CropModels, run: RunContext, settings: Settings
) -> CropMap:
    """Write classes, confidence and cropland rasters to `run.work_dir`.

    Each strip's rows are checkpointed in `run.work_dir/crop-blocks/` and `cropland-blocks/` (core.mapping.blocks) as
    they are mapped; a call that finds strips there from an interrupted run (a cancel, a killed worker) maps
    only the rows after them. Presto maps each pixel on its own, so the pixels are those of an uninterrupted run.
    """
    grid = area.grid
    inside_aoi = rasterize(
        [(area.aoi_grid, 1)],
        out_shape=(grid.height, grid.width),
        transform=grid.transform,
        fill=0,
        dtype="uint8",
    ).astype(bool)
    nodata = models.crop_type.card.nodata_value
    n_classes = models.crop_type.card.n_classes
    n_cropland = models.cropland.card.n_classes if models.cropland else 0
    crop_blocks = BlockStore(run.work_dir / "crop-blocks")
    cropland_blocks = BlockStore(run.work_dir / "cropland-blocks")
    # The crop-type strip is saved first: where a run stopped between the two, that strip is mapped again.
    resume_row = min(crop_blocks.finished_rows(), cropland_blocks.finished_rows())
    if resume_row:
        log.info("Crop mapping resumes after %d finished rows of %d", resume_row, grid.height)
    strips = range(0, grid.height, STRIP_ROWS)
    for number, row0 in enumerate(strips):
        if row0 + STRIP_ROWS <= resume_row:
            continue  # saved by an earlier run
        run.check_cancelled()
        rows = slice(row0, min(row0 + STRIP_ROWS, grid.height))
        height = rows.stop - rows.start
        run.report(
            number / len(strips),
            f"rows {row0}-{rows.stop} of {grid.height}: 12 months {cube.season}, Presto on each pixel",
        )
        values, missing = cube.read_strip(grid, rows)
        # A pixel is mapped when it is inside the AOI and the cube has one clear S2 month for it at least.
        has_s2 = np.any(~np.any(missing[:, :, S2_BANDS], axis=2), axis=1)
        todo = inside_aoi[rows].ravel() & has_s2
        classes = np.full(height * grid.width, nodata, np.uint8)
        confidence = np.zeros(height * grid.width, np.uint8)
        cropland = np.full(height * grid.width, nodata, np.uint8)
        if todo.any():
            latlon = lat_lon_of(grid.crs, grid.transform, rows, grid.width)[todo]
            classes[todo], confidence[todo], land = classify_pixels(
                values[todo], missing[todo], latlon, cube.start_month, models, settings
            )
            if land is not None:
                cropland[todo] = land
        mapped_px = int(todo.sum())
        # The crop-type blocks' pixel count is of the pixels mapped (the AOI's pixels are counted above).
        crop_blocks.save(
            row0,
            classes.reshape(height, grid.width),
            confidence.reshape(height, grid.width),
            np.bincount(classes[todo], minlength=n_classes)[:n_classes],
            mapped_px,
        )
        cropland_blocks.save(
            row0,
            cropland.reshape(height, grid.width),
            None,
            np.bincount(cropland[todo], minlength=n_cropland)[:n_cropland],
            mapped_px,
        )
    run.check_cancelled()  # a cancel during the last strip stops before the rasters are written
    with (
        export.open_intermediate(run.work_dir / "classes.tif", grid, nodata) as classes_out,
        export.open_intermediate(run.work_dir / "confidence.tif", grid, 0) as confidence_out,
        export.open_intermediate(run.work_dir / "cropland.tif", grid, nodata) as cropland_out,
    ):
        crop_blocks.write_to(classes_out, confidence_out)
        cropland_blocks.write_to(cropland_out, None)
    counts, mapped_px = crop_blocks.totals(n_classes)
    cropland_counts, _ = cropland_blocks.totals(n_cropland)
    return CropMap(counts, cropland_counts, int(inside_aoi.sum()), mapped_px)


FAR_DEG = 5.0  # this far (about 500 km) beyond the training parcels' box: another farming region


def far_from_training(card: ModelCard, area: JobArea) -> str | None:
    """A warning when the AOI lies far from the parcels the head learnt from (the card's training box)."""
    box = card.builder_args.get("training_bbox_deg")
    if not isinstance(box, list) or len(box) != 4:
        return None
    west, south, east, north = (float(v) for v in box)
    centre = area.aoi.geometry.centroid
    lon, lat = centre.x, centre.y
    if west - FAR_DEG <= lon <= east + FAR_DEG and south - FAR_DEG <= lat <= north + FAR_DEG:
        return None
    return (
        f"{card.id} learnt its classes from parcels within {south:g}..{north:g} N, {west:g}..{east:g} E; this "
        f"area ({lat:.1f}, {lon:.1f}) is far from them, where other crops and calendars may make its map wrong."
    )


def crop_warnings(
    cube: MonthlyInputs,
    aoi_px: int,
    mapped_px: int,
    models: CropModels | None = None,
    area: JobArea | None = None,
) -> list[str]:
    warnings = []
    if models is not None and area is not None:
        for head in (models.crop_type, models.cropland):
            if head is not None and (far := far_from_training(head.card, area)):
                warnings.append(far)
    if isinstance(cube, SceneComposites):
        if cube.has_s1:
            warnings.append(
                "Monthly composites of the job's Sentinel-2 and Sentinel-1 scenes: weather and elevation are not "
                "made from scenes yet, so Presto saw them masked (on WorldCereal's reference samples, masking "
                "them changes crop types' OA from 0.77 to 0.78 and macro F1 from 0.74 to 0.70)."
            )
            no_radar = len(cube.months) - len(cube.months_with_radar())
            if no_radar:
                warnings.append(
                    f"{no_radar} of the season's 12 months have no Sentinel-1; Presto saw them masked."
                )
        else:
            warnings.append(
                "Monthly composites of the job's Sentinel-2 scenes alone: no source gave Sentinel-1 for the season"
                f" ({cube.radar_note.rstrip('.')}), and weather and elevation are not made from scenes yet, so "
                "Presto saw them masked (on WorldCereal's reference samples, Sentinel-2 alone gives crop types an "
                "OA of 0.72 against 0.77 with every input)."
            )
        empty = len(cube.months) - len(cube.months_with_data())
        if empty:
            warnings.append(
                f"{empty} of the season's 12 months have no Sentinel-2 scene; Presto saw them masked."
            )
    elif not cube.has_s1:
        warnings.append("The cube has no Sentinel-1: crops were mapped from Sentinel-2 alone (S1 masked).")
    if mapped_px < aoi_px:
        share = 100 * (1 - mapped_px / max(aoi_px, 1))
        warnings.append(
            f"{share:.1f} % of the AOI has no class: no clear Sentinel-2 month there (or outside the data)."
        )
    return warnings


def run_crop(
    spec: JobSpec, area: JobArea, cards: Catalogue, run: RunContext, out_dir: Path, settings: Settings
) -> tuple[list[Path], report.Stats]:
    """The crop stages after planning; returns the published outputs and the statistics.

    The work folder (the cloud model's rasters per date, the mapped strips) outlives a failure or a cancel, so a
    retry resumes there; it is removed once the outputs are published.
    """
    run.work_dir.mkdir(parents=True, exist_ok=True)
    inputs: MonthlyInputs
    with run.stage("search"):
        cube = ready_cube(spec.sources, spec.model_id, spec.start, spec.end)
    if cube is not None:
        inputs = cube
        where = f"Monthly cube {cube.path.name}"
    else:
        inputs = scene_composites(spec, area, cards, run.within(0.0, 0.4, "Compositing"), settings)
        where = f"Monthly composites of {len(inputs.dates)} dates"
    run.report(0.4, f"{where}: {inputs.season}, {'S1 + S2' if inputs.has_s1 else 'S2 only'}")
    with run.stage("load_model"):
        models = load_crop_models(cards, spec)
    with run.stage("predict"):
        mapped = map_crops(inputs, area, models, run.within(0.4, 0.88, "Mapping crops"), settings)
    if mapped.mapped_px == 0:
        raise AppError(
            f"No pixel of the AOI has a clear Sentinel-2 month in {inputs.season}: the AOI lies outside the "
            "data, or every month is cloudy there. Nothing was written."
        )
    run.report(0.9, "Exporting: writing COGs")
    staging = export.make_staging_dir(out_dir)
    try:
        with run.stage("export"):
            stats = write_crop_outputs(spec, area, inputs, models, mapped, run.work_dir, staging)
        record = crop_run_record(spec, area, inputs, models, stats, run, settings)
        export.write_json(staging / "run.json", record.model_dump(mode="json"))
        run.check_cancelled()
        outputs = export.publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(run.work_dir, ignore_errors=True)
    return outputs, stats


def scene_composites(
    spec: JobSpec, area: JobArea, cards: Catalogue, run: RunContext, settings: Settings
) -> SceneComposites:
    """Search the season's Sentinel-2 L2A scenes, fetch what the composites and the cloud model read, run the
    cloud model on every date (on the job grid, resumable), and return the season's composites of them."""
    months = season_months(spec.end)
    first_day = season_start(spec.start, spec.end)
    with run.stage("search"):
        levels = cards.get(spec.model_id).processing_levels  # Presto: L2A
        scenes = find_scenes(
            spec.sources, area.aoi.geometry, first_day, spec.end, spec.max_cloud_pct, settings, levels
        )
        check_composite_scenes(scenes, spec.sources)
        found, radar_note = find_radar_scenes(spec.sources, area.aoi.geometry, first_day, spec.end, settings)
        radar_scenes = choose_radar(found, months)
    run.report(
        0.02,
        f"{len(scenes)} Sentinel-2 and {len(radar_scenes)} Sentinel-1 scenes in {months[0]:%Y-%m}..{months[-1]:%Y-%m}",
    )
    cloud_card = cards.job_models("cloud", None).model
    with run.stage("load_model"):
        cloud = load(
            cards,
            cloud_card.id,
            LoadOptions(
                "L2A",
                frozenset.intersection(*(frozenset(s.bands) for s in scenes)),
                device=settings.device,
                cache_dir=settings.cache_dir,
            ),
        )
    tiling = TilingOptions(settings.batch_size, settings.tile_overlap_px)
    layout = tile_layout(cloud.card, area.grid, tiling.overlap_px)
    with run.stage("download"):
        fetched = fetch_scenes(
            scenes,
            set(S2_CHANNELS) | set(cloud.card.bands),
            context_area([layout]),
            settings,
            run.within(0.02, 0.2, "Downloading"),
        )
        # Sentinel-1: GRD products calibrated to sigma0 dB on the job's grid (dB GeoTIFFs are read as they are)
        radar = fetch_scenes(
            radar_scenes, set(S1_CHANNELS), area.aoi.geometry, settings, run.within(0.2, 0.3, "Sentinel-1")
        )
    groups = analysis.group_by_date(fetched)
    with run.stage("cloud"):
        dates = analysis.predict_dates(
            groups,
            cloud,
            area.grid,
            area.aoi_grid,
            run.within(0.3, 1.0, "Cloud masking", run.work_dir / "cloud"),
            tiling,
            clip_to_aoi=False,
        )
    clear = next(c.value for c in cloud.card.classes if c.name == "clear")
    return SceneComposites(
        tuple(CompositeDate(d.date, d.scenes, d.classes_path, clear) for d in dates),
        months,
        cloud_model=report.CloudModelRecord(
            id=cloud.card.id,
            version=cloud.card.version,
            weights_file=cloud.weights_file,
            weights_sha256=cloud.weights_sha256,
            use="masked each date's clouds and shadows out of the monthly composites",
        ),
        radar=tuple(RadarDate(day, tuple(group)) for day, group in analysis.group_by_date(radar).items()),
        radar_note=radar_note,
    )


def write_crop_outputs(
    spec: JobSpec,
    area: JobArea,
    cube: MonthlyInputs,
    models: CropModels,
    mapped: CropMap,
    work_dir: Path,
    staging: Path,
) -> report.Stats:
    """classes.tif, confidence.tif, preview.png, cropland.tif and the statistics, into `staging`."""
    card, nodata = models.crop_type.card, models.crop_type.card.nodata_value
    title = f"{card.id} {cube.season}"
    export.write_class_cog(work_dir / "classes.tif", staging / "classes.tif", card.classes, nodata, title)
    export.write_confidence_cog(work_dir / "confidence.tif", staging / "confidence.tif")
    export.write_preview_png(staging / "classes.tif", staging / "preview.png", card.classes, nodata, title)
    cropland_areas = None
    if models.cropland is not None:
        land = models.cropland.card
        export.write_class_cog(
            work_dir / "cropland.tif", staging / "cropland.tif", land.classes, land.nodata_value, land.id
        )
        cropland_areas = report.class_areas(mapped.cropland_counts, land, area.grid.pixel_area_m2)
    stats = report.Stats(
        task=spec.task,
        model_id=card.id,
        selected_date=f"{cube.season} (12 monthly composites)",
        aoi_area_km2=round(area.aoi.area_km2, 6),
        pixel_area_m2=area.grid.pixel_area_m2,
        aoi_pixels=mapped.aoi_px,
        valid_pixels=mapped.mapped_px,
        classes=report.class_areas(mapped.counts, card, area.grid.pixel_area_m2),
        dates=[],
        warnings=crop_warnings(cube, mapped.aoi_px, mapped.mapped_px, models, area),
        series_dates=[m.isoformat() for m in cube.months],
        cropland_model_id=models.cropland.card.id if models.cropland is not None else None,
        cropland=cropland_areas,
    )
    export.write_json(staging / "stats.json", stats.model_dump(mode="json"))
    (staging / "stats.csv").write_text(stats.csv())
    return stats


def crop_run_record(
    spec: JobSpec,
    area: JobArea,
    cube: MonthlyInputs,
    models: CropModels,
    stats: report.Stats,
    run: RunContext,
    settings: Settings,
) -> report.RunRecord:
    card = models.crop_type.card
    head_file = card.weights[0]
    inputs = cube.input_records()
    return report.RunRecord(
        terraseg_version=report.terraseg_version(),
        finished_at=utc_now(),
        spec=spec.model_dump(mode="json"),
        spec_hash=spec.spec_hash(card.version),
        aoi=report.AOIRecord(geometry=area.aoi.to_geojson(), area_km2=round(area.aoi.area_km2, 6)),
        grid=area.grid.to_dict(),
        selected_date=stats.selected_date,
        series_dates=stats.series_dates,
        inputs=inputs,
        model=report.ModelRecord(
            id=card.id,
            version=card.version,
            status=card.status,
            weights_file=head_file,
            weights_sha256=card.weights_sha256[head_file],
            bands=list(card.bands),
            resolution_m=card.resolution_m,
            licence=card.licence,
            provenance=card.provenance,
        ),
        cloud_model=cube.cloud_model if isinstance(cube, SceneComposites) else None,
        settings={"device": settings.device, "strip_rows": STRIP_ROWS, "sentinel1": cube.has_s1},
        timings_s=dict(run.timings_s),
        versions=report.software_versions(),
        notes=stats.warnings,
    )
