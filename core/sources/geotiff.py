"""GeoTIFF/COG scenes in the local-source format: band descriptions name the bands, tags say when and what.

Format (also in the README): one file per scene; each band's description is its name (`B01`..`B12`, `B8A` for
Sentinel-2; `VV`, `VH` for Sentinel-1); dataset tags `ACQUISITION_DATETIME` (ISO-8601, UTC if no zone) and
`PROCESSING_LEVEL` (`L1C`, `L2A` or `GRD`); values become physical units through each band's GDAL scale and
offset (reflectance = DN * scale + offset). Integer Sentinel-2 bands without a scale are taken as DN with the
usual quantification of 10000 (a WARNING says so); float bands without a scale are taken as reflectance.
Sentinel-1 bands hold backscatter in dB. A single-band file named as pyroSAR names its dB products
(`S1A__IW___A_20150309T173017_VV_grd_mli_geo_norm_db.tif`) needs no tags: the name gives date and polarisation.
"""

import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.warp import transform_geom
from rasterio.windows import Window
from shapely.geometry import box, shape

from core.errors import SourceError
from core.sources.sentinel1 import pyrosar_name
from core.types import S1_BANDS, S2_BANDS, BandAsset, Scene

log = logging.getLogger(__name__)

LEVELS = ("L1C", "L2A", "GRD")
DEFAULT_S2_QUANTIFICATION = 10_000.0


def parse_acquisition_datetime(text: str) -> datetime:
    """ISO-8601 text -> aware UTC datetime; a naive time is taken as UTC."""
    acquired = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return acquired.replace(tzinfo=UTC) if acquired.tzinfo is None else acquired.astimezone(UTC)


def check_readable(dataset: rasterio.DatasetReader) -> None:
    """Decode the first and last block of the last band, so truncated files fail now, not mid-job."""
    last_row, last_col = dataset.height - 1, dataset.width - 1
    for row, col in ((0, 0), (last_row, last_col)):
        dataset.read(dataset.count, window=Window(col, row, 1, 1))


def read_geotiff_scene(path: Path, source: str = "local") -> Scene:
    """Describe one GeoTIFF scene file as a Scene; raise SourceError saying what is missing or broken."""
    try:
        with rasterio.open(path) as dataset:
            check_readable(dataset)
            names = [(d or "").strip().upper() for d in dataset.descriptions]
            tags = {k.upper(): v for k, v in dataset.tags().items()}
            bounds, crs = dataset.bounds, dataset.crs
            scales, offsets, dtype, nodata = (
                dataset.scales,
                dataset.offsets,
                dataset.dtypes[0],
                dataset.nodata,
            )
            resolution_m = float(dataset.res[0]) if crs is not None and crs.is_projected else None
    except RasterioError as err:
        raise SourceError(
            f"{path.name} cannot be read as a raster ({err}); it may be truncated or corrupt."
        ) from err
    if crs is None:
        raise SourceError(f"{path.name} has no coordinate reference system; georeference it first.")
    pyrosar = pyrosar_name(path.name) if not any(names) and len(names) == 1 else None
    if pyrosar is not None:  # pyroSAR's dB product: the file name says what the tags would
        names = [pyrosar[2]]
        tags.setdefault("PROCESSING_LEVEL", "GRD")
        tags.setdefault("ACQUISITION_DATETIME", pyrosar[1].isoformat())
    unknown = [n for n in names if n not in S2_BANDS + S1_BANDS]
    if not names or unknown:
        raise SourceError(
            f"{path.name}: band descriptions must name the bands (B01..B12, B8A, VV, VH); found {names}."
        )
    level = tags.get("PROCESSING_LEVEL", "").upper()
    if level not in LEVELS:
        raise SourceError(
            f"{path.name}: tag PROCESSING_LEVEL must be one of {', '.join(LEVELS)}; got {level!r}."
        )
    if "ACQUISITION_DATETIME" not in tags:
        raise SourceError(f"{path.name}: tag ACQUISITION_DATETIME (ISO-8601) is missing.")
    try:
        acquired = parse_acquisition_datetime(tags["ACQUISITION_DATETIME"])
    except ValueError as err:
        raise SourceError(
            f"{path.name}: ACQUISITION_DATETIME {tags['ACQUISITION_DATETIME']!r} is not ISO-8601."
        ) from err
    sensor = "S1" if level == "GRD" else "S2"
    is_integer = np.issubdtype(np.dtype(dtype), np.integer)
    bands = {}
    for index, (name, scale, offset) in enumerate(zip(names, scales, offsets, strict=True), start=1):
        if sensor == "S2" and is_integer and scale == 1.0 and offset == 0.0:
            log.warning(
                "%s: band %s has no scale; taking DN / %.0f as reflectance",
                path.name,
                name,
                DEFAULT_S2_QUANTIFICATION,
            )
            scale = 1.0 / DEFAULT_S2_QUANTIFICATION
        bands[name] = BandAsset(
            path=str(path),
            band_index=index,
            scale=scale,
            add_offset=offset / scale,
            nodata=nodata,
            resolution_m=resolution_m,
        )
    footprint = shape(
        transform_geom(crs, "EPSG:4326", box(*bounds).__geo_interface__, antimeridian_cutting=True)
    )
    return Scene(
        id=tags.get("SCENE_ID", path.stem),
        source=source,
        sensor=sensor,
        acquired=acquired,
        footprint=footprint,
        processing_level=level,
        bands=bands,
        processing_baseline=tags.get("PROCESSING_BASELINE"),
        cloud_cover_pct=float(tags["CLOUD_COVER"]) if "CLOUD_COVER" in tags else None,
        path=str(path),
    )
