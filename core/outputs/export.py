"""File IO at the end of the pipeline: intermediate rasters, COGs, PNG preview, JSON records, atomic publish."""

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from PIL import Image, ImageDraw, ImageFont
from rasterio.enums import Resampling
from rasterio.windows import Window

from core.errors import OutputError
from core.geometry.grid import Grid
from core.jobs import diskspace
from core.mapping.reading import SceneReader
from core.types import ClassInfo, Scene

log = logging.getLogger(__name__)

OUTPUT_FILES = (
    "classes.tif",
    "confidence.tif",
    "cropland.tif",  # crop jobs: the cropland model's map beside the crop types
    "scene.tif",
    "preview.png",
    "stats.json",
    "stats.csv",
    "run.json",
)
PREVIEW_MAX_PX = 1024
TRUE_COLOUR_BANDS = ("B04", "B03", "B02")
# Reflectance 0..0.3 spans the 8-bit range: the usual true-colour stretch for Sentinel-2 land scenes.
TRUE_COLOUR_MAX_REFLECTANCE = 0.3
_STRIP_ROWS = 512


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    """'#rrggbb' -> (r, g, b)."""
    value = color.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


@contextmanager
def open_intermediate(path: Path, grid: Grid, nodata: int) -> Iterator[rasterio.io.DatasetWriter]:
    """An uncompressed tiled uint8 GeoTIFF on `grid` for windowed writes (fast; turned into a COG later)."""
    profile = {
        "driver": "GTiff",
        "count": 1,
        "dtype": "uint8",
        "width": grid.width,
        "height": grid.height,
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "BIGTIFF": "IF_SAFER",
    }
    with rasterio.open(path, "w", **profile) as dataset:
        yield dataset


def write_class_cog(src: Path, dst: Path, classes: tuple[ClassInfo, ...], nodata: int, label: str) -> None:
    """Copy an intermediate class raster to a COG with a colour table, class names and nearest overviews."""
    with rasterio.open(src, "r+") as dataset:
        colormap = {c.value: (*hex_to_rgb(c.color), 255) for c in classes}
        colormap[nodata] = (0, 0, 0, 0)
        dataset.write_colormap(1, colormap)
        dataset.set_band_description(1, label)
        dataset.update_tags(
            CLASS_NAMES=json.dumps({c.value: c.name for c in classes}),
            CLASS_COLORS=json.dumps({c.value: c.color for c in classes}),
            NODATA_CLASS=str(nodata),
        )
    _to_cog(src, dst, "NEAREST")


def write_confidence_cog(src: Path, dst: Path) -> None:
    """Copy an intermediate confidence raster (255 * max probability; 0 = no data) to a COG."""
    with rasterio.open(src, "r+") as dataset:
        dataset.set_band_description(1, "confidence")
        dataset.scales = (1 / 255,)
        dataset.update_tags(UNITS="probability x 255", NODATA_MEANING="outside the AOI or no valid data")
    _to_cog(src, dst, "AVERAGE")


def _to_cog(src: Path, dst: Path, overview_resampling: str) -> None:
    rasterio.shutil.copy(
        src,
        dst,
        driver="COG",
        COMPRESS="DEFLATE",
        BLOCKSIZE=512,
        NUM_THREADS=2,
        OVERVIEW_RESAMPLING=overview_resampling,
        OVERVIEWS="AUTO",
    )


def write_true_colour_cog(scenes: list[Scene], grid: Grid, dst: Path) -> bool:
    """The date's scenes as an RGB uint8 COG on `grid` (0 = no data), read strip by strip; False if no RGB bands.

    This is the image analysts compare the class map with, so it shows the data as read, only stretched.
    """
    if not scenes or any(b not in s.bands for s in scenes for b in TRUE_COLOUR_BANDS):
        log.warning("No true-colour image: the scenes lack one of %s", TRUE_COLOUR_BANDS)
        return False
    intermediate = dst.with_name(dst.stem + ".intermediate.tif")
    profile = {
        "driver": "GTiff",
        "count": 3,
        "dtype": "uint8",
        "width": grid.width,
        "height": grid.height,
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": 0,
        "photometric": "RGB",
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    try:
        with (
            SceneReader(scenes, TRUE_COLOUR_BANDS, grid) as reader,
            rasterio.open(intermediate, "w", **profile) as out,
        ):
            for row in range(0, grid.height, _STRIP_ROWS):
                window = Window(0, row, grid.width, min(_STRIP_ROWS, grid.height - row))
                reflectance, valid = reader.read(window)
                scaled = np.clip(reflectance / TRUE_COLOUR_MAX_REFLECTANCE * 255.0, 1.0, 255.0)
                # 1..255 for data keeps 0 free as the no-data value.
                out.write(np.where(valid, np.rint(scaled), 0).astype(np.uint8), window=window)
        _to_cog(intermediate, dst, "AVERAGE")
    finally:
        intermediate.unlink(missing_ok=True)
    return True


def write_preview_png(
    classes_cog: Path, dst: Path, classes: tuple[ClassInfo, ...], nodata: int, title: str
) -> None:
    """A PNG of the class map (at most 1024 px on its long side, read from overviews) with a legend below."""
    with rasterio.open(classes_cog) as dataset:
        scale = max(dataset.width, dataset.height) / PREVIEW_MAX_PX
        # Tiny grids are blown up so the map is visible next to its legend.
        factor = max(1.0, scale) if scale >= 1 else max(1 / 8, scale)
        out_h, out_w = max(1, round(dataset.height / factor)), max(1, round(dataset.width / factor))
        values = dataset.read(1, out_shape=(out_h, out_w), resampling=Resampling.nearest)
    lut = np.zeros((256, 4), np.uint8)
    for info in classes:
        lut[info.value] = (*hex_to_rgb(info.color), 255)
    lut[nodata] = (0, 0, 0, 0)
    image = Image.fromarray(lut[values], "RGBA")
    font = ImageFont.load_default()
    row_h, pad = 18, 6
    width = max(out_w, 240)
    canvas = Image.new("RGBA", (width, out_h + pad * 3 + row_h * (len(classes) + 1)), (255, 255, 255, 255))
    canvas.paste(image, (0, 0), image)
    draw = ImageDraw.Draw(canvas)
    y = out_h + pad
    draw.text((pad, y), title, fill=(0, 0, 0, 255), font=font)
    for info in classes:
        y += row_h
        draw.rectangle(
            (pad, y + 2, pad + 14, y + 14), fill=(*hex_to_rgb(info.color), 255), outline=(0, 0, 0, 255)
        )
        draw.text((pad + 22, y + 2), f"{info.value}  {info.name}", fill=(0, 0, 0, 255), font=font)
    canvas.save(dst)


def write_json(path: Path, document: object) -> None:
    """Write pretty JSON (the caller makes it atomic by writing into a staging folder)."""
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")


def make_staging_dir(out_dir: Path) -> Path:
    """Create a hidden staging folder next to (or inside) `out_dir` on the same filesystem, for atomic renames."""
    parent = out_dir.parent if not out_dir.exists() else out_dir
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-", dir=parent))
    except OSError as err:
        raise OutputError(
            f"Cannot write outputs to {out_dir}: {err.strerror or err}. Choose another output "
            "folder or fix its permissions."
        ) from err
    return staging


DATE_MAP_PREFIX = "date-"  # date-YYYY-MM-DD.tif: the class map of every date a job computed


def date_map_name(day: date) -> str:
    return f"{DATE_MAP_PREFIX}{day.isoformat()}.tif"


def output_names(folder: Path) -> list[str]:
    """The output files in `folder`, in OUTPUT_FILES' order with the date maps before run.json (written last)."""
    names = [n for n in OUTPUT_FILES if (folder / n).exists() and n != "run.json"]
    names += sorted(p.name for p in folder.glob(f"{DATE_MAP_PREFIX}????-??-??.tif"))
    return names + (["run.json"] if (folder / "run.json").exists() else [])


def publish(staging: Path, out_dir: Path) -> list[Path]:
    """Move finished outputs from `staging` into `out_dir` so readers never see half a result.

    A new `out_dir` appears in one rename. An existing one gets each file replaced atomically, `run.json`
    last, after the previous `run.json` was removed first: a folder with a `run.json` is always complete.
    """
    names = output_names(staging)
    if not out_dir.exists():
        staging.rename(out_dir)
        return [out_dir / n for n in names]
    (out_dir / "run.json").unlink(missing_ok=True)
    for stale in out_dir.glob(f"{DATE_MAP_PREFIX}*.tif"):  # an earlier run's dates that this run has not
        if stale.name not in names:
            stale.unlink()
    for name in names:
        if name != "run.json":
            os.replace(staging / name, out_dir / name)
    if "run.json" in names:
        os.replace(staging / "run.json", out_dir / "run.json")
    shutil.rmtree(staging, ignore_errors=True)
    return [out_dir / n for n in names]


def published_outputs(out_dir: Path) -> list[Path] | None:
    """The outputs `publish` left in `out_dir`, or None when it holds no complete set (no run.json)."""
    if not (out_dir / "run.json").is_file():
        return None
    return [out_dir / n for n in output_names(out_dir)]


def check_writable(out_dir: Path) -> None:
    """Fail early, before any work, if `out_dir` cannot be created or written (tried for real, not guessed)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(
            f"The output path {out_dir} exists and is not a folder. Choose another output folder."
        )
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir if out_dir.exists() else out_dir.parent):
            pass
    except OSError as err:
        raise OutputError(
            f"Cannot write outputs to {out_dir}: {err.strerror or err}. Choose another output "
            "folder or fix its permissions."
        ) from err


def copy_outputs(source: Path, out_dir: Path) -> None:
    """Publish a copy of a job's outputs in `out_dir` (the CLI's `--out`), atomically like the job's own."""
    staging = make_staging_dir(out_dir)
    try:
        for path in source.iterdir():
            shutil.copy2(path, staging / path.name)
        publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def copy_failed_sentence(job_id: str, outputs_dir: Path, copy_to: Path, err: Exception) -> str:
    """Why the copy to --out failed, and that a retry copies the published outputs without computing again."""
    folder = diskspace.Folder(copy_to, f"the output folder {copy_to}")
    if diskspace.full_folder(err, [folder]) is not None:
        needed_mb = sum(p.stat().st_size for p in outputs_dir.iterdir()) / 1e6
        free_mb = diskspace.free_mb(copy_to)
        reason = (
            f"no space left (the outputs take {diskspace.format_mb(needed_mb)}, "
            f"{diskspace.format_mb(free_mb)} are free)"
        )
    else:
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return (
        f"Copying the outputs to {copy_to} failed: {reason}. They are published in the job's folder; "
        f"'terraseg retry {job_id}' copies them there without computing again."
    )


def download_prefix(job_name: str, job_id: str) -> str:
    """What a job's downloaded files start with, so that two jobs' `classes.tif` do not collide in a user's
    downloads folder: its name made safe for any file system (letters, digits, '.', '_', '-'), else its id."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", job_name.strip()).strip(".-_")[:60]
    return safe or job_id
