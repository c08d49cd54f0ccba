"""Map overlays from local result files: a COG -> a PNG in Web Mercator with its lat/lon bounds.

Leaflet stretches an image overlay linearly between two corners in Web Mercator, so the PNG is warped to
EPSG:3857 first; the map then needs no tile server and no internet for the results themselves.
"""

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.enums import ColorInterp, Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform, transform_bounds

from core.types import ClassInfo

WEB_MERCATOR = "EPSG:3857"
OVERLAY_MAX_PX = 1024


@dataclass(frozen=True)
class Overlay:
    """A PNG (RGBA, transparent where there is no data) and its ((south, west), (north, east)) in degrees."""

    png: bytes
    bounds_latlon: tuple[tuple[float, float], tuple[float, float]]
    width: int
    height: int


def render_overlay(cog: Path, max_px: int = OVERLAY_MAX_PX) -> Overlay:
    """Warp a class COG (paletted, 1 band) or an RGB COG (3 bands, nodata 0) to an RGBA PNG in Web Mercator.

    Class maps are resampled with nearest neighbour so no invented classes appear at class borders.
    """
    with rasterio.open(cog) as src:
        paletted = src.count == 1 and src.colorinterp[0] == ColorInterp.palette
        transform, width, height = calculate_default_transform(
            src.crs, WEB_MERCATOR, src.width, src.height, *src.bounds
        )
        # Shrink big rasters to max_px on the long side; never enlarge (Leaflet scales the image itself).
        factor = max(1.0, max(width, height) / max_px)
        width, height = max(1, round(width / factor)), max(1, round(height / factor))
        transform = transform @ transform.scale(factor, factor)
        resampling = Resampling.nearest if paletted else Resampling.bilinear
        with WarpedVRT(
            src, crs=WEB_MERCATOR, transform=transform, width=width, height=height, resampling=resampling
        ) as vrt:
            data = vrt.read(out_shape=(src.count, height, width))
            mask = vrt.dataset_mask(out_shape=(height, width)) > 0
            bounds = vrt.bounds
        if paletted:
            rgba = _apply_colormap(data[0], src.colormap(1), src.nodata)
        else:
            rgba = np.dstack([*data[:3], np.where(mask, 255, 0).astype(np.uint8)])
    rgba[~mask, 3] = 0
    west, south, east, north = transform_bounds(WEB_MERCATOR, "EPSG:4326", *bounds)
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG", optimize=True)
    return Overlay(buffer.getvalue(), ((south, west), (north, east)), width, height)


DISPLAY_MIN_PX = 800  # about the width a side-by-side picture takes on a page


def display_pngs(*pngs: bytes, min_px: int = DISPLAY_MIN_PX) -> list[bytes]:
    """Overlays made into pictures for a page: cropped together to where any of them has data (the transparent
    margin around a small map left it a tiny square in white space), then enlarged by a whole factor with nearest
    neighbour to at least `min_px` on the long side, so the browser shrinks sharp pixels instead of smoothing a
    small image up (which blurred class borders and invented colours between classes). Overlays of one grid have
    one size, so they stay aligned side by side."""
    images = [Image.open(io.BytesIO(png)).convert("RGBA") for png in pngs]
    boxes = [box for image in images if (box := image.getchannel("A").getbbox()) is not None]
    if boxes:
        union = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
        images = [image.crop(union) for image in images]
    pictures = []
    for image in images:
        factor = max(1, -(-min_px // max(image.size)))  # ceil: at least min_px
        enlarged = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
        buffer = io.BytesIO()
        enlarged.save(buffer, format="PNG", optimize=True)
        pictures.append(buffer.getvalue())
    return pictures


def _apply_colormap(
    values: np.ndarray, colormap: dict[int, tuple[int, ...]], nodata: float | None
) -> np.ndarray:
    lut = np.zeros((256, 4), np.uint8)
    for value, color in colormap.items():
        lut[value] = color[:4] if len(color) >= 4 else (*color[:3], 255)
    if nodata is not None:
        lut[int(nodata)] = (0, 0, 0, 0)
    return lut[values]


def read_classes(classes_cog: Path) -> tuple[ClassInfo, ...]:
    """The classes (value, name, colour) a class COG carries in its tags (written by core.outputs.export)."""
    with rasterio.open(classes_cog) as src:
        tags = src.tags()
    names = json.loads(tags.get("CLASS_NAMES", "{}"))
    colors = json.loads(tags.get("CLASS_COLORS", "{}"))
    return tuple(ClassInfo(int(v), names[v], colors.get(v, "#000000")) for v in sorted(names, key=int))
