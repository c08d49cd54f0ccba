"""Sentinel-2 SAFE products (a `*.SAFE` folder, or a `.zip` holding one) -> Scene, without unzipping.

The product metadata (`MTD_MSIL1C.xml` or `MTD_MSIL2A.xml` at the SAFE root) gives the date, level,
baseline, cloud cover, footprint, radiometry and the band files. Band files of a zip are GDAL `/vsizip/`
paths, so rasterio reads them in place. Only the 13 spectral bands become BandAssets; for L2A the finest
resolution folder (R10m, then R20m, then R60m) holding a band wins, and TCI, AOT, WVP and SCL are skipped.

Radiometry rule: reflectance = (DN + add_offset) * scale, with scale = 1 / QUANTIFICATION_VALUE (L1C) or
1 / BOA_QUANTIFICATION_VALUE (L2A) and add_offset taken, per band, in this order:

1. the RADIO_ADD_OFFSET (L1C) or BOA_ADD_OFFSET (L2A) that the MTD writes for the band's band_id;
2. -1000 if the processing baseline is 04.00 or later and the MTD writes none (a WARNING says so): since
   baseline 04.00 (25 January 2022) DNs carry a +1000 shift so that dark pixels are not clipped at 0;
3. 0 for baselines before 04.00, which have no shift.

`nodata` is the MTD's NODATA special value (0 in every baseline so far).
The footprint is the MTD footprint intersected with the bounds of the finest band's raster (in EPSG:4326),
which matters for products cropped after download; without an MTD footprint it is the raster bounds.
"""

import logging
import re
import xml.etree.ElementTree as ET
import zipfile
import zlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import rasterio
import shapely
from rasterio.errors import RasterioError
from rasterio.warp import transform
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

from core.errors import SourceError
from core.sources.geotiff import check_readable, parse_acquisition_datetime
from core.types import S2_BANDS, BandAsset, Scene

log = logging.getLogger(__name__)

MTD_LEVELS = {"MTD_MSIL1C.xml": "L1C", "MTD_MSIL2A.xml": "L2A"}
NOMINAL_RESOLUTION_M = {
    "B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20,
    "B08": 10, "B8A": 20, "B09": 60, "B10": 60, "B11": 20, "B12": 20,
}  # fmt: skip
OFFSET_BASELINE = (4, 0)  # first baseline whose DNs carry the +1000 shift
DEFAULT_OFFSET_FROM_N0400 = -1000.0
# L1C: ..._B8A; L2A: ..._B8A_20m. TCI, AOT, WVP and SCL do not match.
BAND_FILE_RE = re.compile(r"_(B0[1-9]|B1[0-2]|B8A)(?:_(10|20|60)m)?$")
BASELINE_IN_URI_RE = re.compile(r"_N(\d{2})(\d{2})_")


@dataclass(frozen=True)
class SafeMetadata:
    """What a Sentinel-2 MTD_MSIL1C/2A.xml says; `footprint` is lon/lat (EPSG:4326) or None."""

    product_id: str
    acquired: datetime
    processing_level: str
    processing_baseline: str
    cloud_cover_pct: float | None
    quantification: float
    offsets: dict[int, float]  # band_id (0..12, S2_BANDS order) -> add_offset in DN
    nodata: float
    image_files: tuple[str, ...]  # relative to the SAFE root, without extension
    footprint: BaseGeometry | None


@dataclass(frozen=True)
class SafeLayout:
    """Where a product's files are: `root` is the GDAL path prefix of the SAFE folder, ending in '/'.

    For a zip, `zip_members` lists the archive and `zip_prefix` is the SAFE folder's member prefix
    ('NAME.SAFE/', or '' when the zip holds the SAFE content at its root); both are None for a folder.
    """

    path: Path
    root: str
    mtd_name: str
    zip_members: frozenset[str] | None = None
    zip_prefix: str | None = None

    def has_file(self, relative: str) -> bool:
        """Whether `relative` (a path under the SAFE root) exists in the product; IO for a folder."""
        if self.zip_members is None:
            return (Path(self.root) / relative).is_file()
        return f"{self.zip_prefix}{relative}" in self.zip_members


def read_s2_safe(path: Path, source: str = "local") -> Scene:
    """Parse a Sentinel-2 SAFE product (a *.SAFE directory, or a .zip holding one) into a Scene.

    IO: reads the MTD XML and opens the finest band file for its bounds. Raises SourceError, naming the
    product, when the MTD is missing or malformed, a listed band file is missing, or the zip is corrupt.
    """
    path = path.absolute()
    layout, xml = read_safe_layout(path)
    meta = parse_s2_mtd(xml, where=str(path))
    if meta.processing_level != MTD_LEVELS[layout.mtd_name]:
        raise SourceError(
            f"The Sentinel-2 product {path} has a {layout.mtd_name} that describes a "
            f"{meta.processing_level} product; it may have been renamed or repackaged."
        )
    bands = locate_band_assets(meta, layout)
    footprint = read_footprint(meta.footprint, bands, path)
    log.debug("%s: %s %s, %d bands", path, meta.processing_level, meta.processing_baseline, len(bands))
    return Scene(
        id=meta.product_id,
        source=source,
        sensor="S2",
        acquired=meta.acquired,
        footprint=footprint,
        processing_level=meta.processing_level,
        bands=bands,
        processing_baseline=meta.processing_baseline,
        cloud_cover_pct=meta.cloud_cover_pct,
        path=str(path),
    )


def read_safe_layout(path: Path) -> tuple[SafeLayout, bytes]:
    """Find the MTD of the SAFE folder or zip at `path` (IO); return where the files are and the MTD bytes."""
    if path.is_dir():
        for name in MTD_LEVELS:
            if (path / name).is_file():
                return SafeLayout(path, f"{path}/", name), (path / name).read_bytes()
        raise SourceError(
            f"The Sentinel-2 product {path} has no MTD_MSIL1C.xml or MTD_MSIL2A.xml at its root; "
            "point to the .SAFE folder itself."
        )
    if not path.is_file():
        raise SourceError(f"The Sentinel-2 product {path} does not exist.")
    try:
        with zipfile.ZipFile(path) as archive:
            members = frozenset(archive.namelist())
            mtd = next((m for m in sorted(members) if _is_root_mtd(m)), None)
            if mtd is None:
                raise SourceError(
                    f"The zip {path} holds no Sentinel-2 SAFE product (no MTD_MSIL1C.xml or "
                    "MTD_MSIL2A.xml at the root of a .SAFE folder)."
                )
            xml = archive.read(mtd)
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise SourceError(f"The zip {path} is truncated or corrupt ({err}); download it again.") from err
    folder, _, name = mtd.rpartition("/")
    prefix = f"{folder}/" if folder else ""
    return SafeLayout(path, f"/vsizip/{path}/{prefix}", name, members, prefix), xml


def _is_root_mtd(member: str) -> bool:
    """A zip member that is the MTD at the root of the archive or of one top-level folder."""
    parts = member.split("/")
    return parts[-1] in MTD_LEVELS and len(parts) <= 2


def parse_s2_mtd(xml: bytes, where: str) -> SafeMetadata:
    """Parse MTD_MSIL1C/2A.xml bytes, matching local tag names; `where` names the product in errors."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise SourceError(
            f"The metadata of the Sentinel-2 product {where} is not valid XML ({err})."
        ) from err
    elements: dict[str, list[ET.Element]] = {}
    for element in root.iter():
        elements.setdefault(element.tag.rpartition("}")[2], []).append(element)

    def text(tag: str, required: bool = True) -> str | None:
        """The first non-empty text of an element named `tag`."""
        found = [e.text.strip() for e in elements.get(tag, []) if e.text and e.text.strip()]
        if not found and required:
            raise SourceError(f"The metadata of the Sentinel-2 product {where} has no {tag}.")
        return found[0] if found else None

    uri = str(text("PRODUCT_URI"))
    level = _parse_level(text("PROCESSING_LEVEL", False) or text("PRODUCT_TYPE", False) or "", where)
    quant_tag, offset_tag = (
        ("QUANTIFICATION_VALUE", "RADIO_ADD_OFFSET")
        if level == "L1C"
        else ("BOA_QUANTIFICATION_VALUE", "BOA_ADD_OFFSET")
    )
    baseline = text("PROCESSING_BASELINE", False) or _baseline_from_uri(uri, where)
    try:
        acquired = parse_acquisition_datetime(str(text("PRODUCT_START_TIME")))
        quantification = float(str(text(quant_tag)))
        cloud = text("Cloud_Coverage_Assessment", False)
        offsets = {int(e.attrib["band_id"]): float(str(e.text)) for e in elements.get(offset_tag, [])}
    except (ValueError, KeyError) as err:
        raise SourceError(
            f"The metadata of the Sentinel-2 product {where} has an unreadable date, "
            f"quantification, cloud cover or offset ({err})."
        ) from err
    return SafeMetadata(
        product_id=uri.removesuffix(".SAFE"),
        acquired=acquired,
        processing_level=level,
        processing_baseline=baseline,
        cloud_cover_pct=float(cloud) if cloud is not None else None,
        quantification=quantification,
        offsets=offsets,
        nodata=_nodata_value(elements),
        image_files=tuple(e.text.strip() for e in elements.get("IMAGE_FILE", []) if e.text),
        footprint=_parse_footprint(elements.get("EXT_POS_LIST", []), where),
    )


def _parse_level(text: str, where: str) -> str:
    """'Level-1C' / 'S2MSI1C' -> 'L1C'; 'Level-2A' / 'S2MSI2A' (and the 2017-18 '2Ap') -> 'L2A'."""
    for level in ("L1C", "L2A"):
        if level[1:] in text.upper():
            return level
    raise SourceError(f"The Sentinel-2 product {where} is of level {text!r}; only L1C and L2A can be read.")


def _baseline_from_uri(uri: str, where: str) -> str:
    """The baseline from a product name such as S2B_MSIL1C_..._N0400_... -> '04.00'."""
    match = BASELINE_IN_URI_RE.search(uri)
    if match is None:
        raise SourceError(f"The metadata of the Sentinel-2 product {where} gives no processing baseline.")
    return f"{match[1]}.{match[2]}"


def _nodata_value(elements: dict[str, list[ET.Element]]) -> float:
    """The NODATA special value; the format fixes it at 0 when (unusually) it is not written."""
    for special in elements.get("Special_Values", []):
        texts = {child.tag.rpartition("}")[2]: (child.text or "").strip() for child in special}
        if texts.get("SPECIAL_VALUE_TEXT") == "NODATA" and texts.get("SPECIAL_VALUE_INDEX"):
            return float(texts["SPECIAL_VALUE_INDEX"])
    return 0.0


def _parse_footprint(pos_lists: list[ET.Element], where: str) -> BaseGeometry | None:
    """EXT_POS_LIST texts ('lat lon lat lon ...') -> one lon/lat geometry; None if there is none usable."""
    rings = []
    for element in pos_lists:
        try:
            values = [float(v) for v in (element.text or "").split()]
        except ValueError:
            values = []
        if len(values) < 6 or len(values) % 2:
            log.warning("%s: ignoring a malformed MTD footprint %.60r", where, element.text)
            continue
        rings.append(Polygon(list(zip(values[1::2], values[0::2], strict=True))))
    return shapely.make_valid(shapely.union_all(rings)) if rings else None


def locate_band_assets(meta: SafeMetadata, layout: SafeLayout) -> dict[str, BandAsset]:
    """One BandAsset per spectral band at its finest resolution, S2_BANDS order; IO: checks files exist."""
    finest: dict[str, tuple[int, str]] = {}
    for image_file in meta.image_files:
        match = BAND_FILE_RE.search(image_file)
        if match is None:
            continue  # TCI, AOT, WVP, SCL, ...
        band = match[1]
        resolution_m = int(match[2]) if match[2] else NOMINAL_RESOLUTION_M[band]
        if band not in finest or resolution_m < finest[band][0]:
            finest[band] = (resolution_m, f"{image_file}.jp2")
    if not finest:
        raise SourceError(f"The metadata of the Sentinel-2 product {layout.path} lists no band files.")
    missing = [f"{band} ({rel})" for band, (_, rel) in finest.items() if not layout.has_file(rel)]
    if missing:
        raise SourceError(
            f"The Sentinel-2 product {layout.path} is missing {len(missing)} of its "
            f"{len(finest)} band files: {', '.join(missing)}; download it again."
        )
    default_offset = _default_offset(meta.processing_baseline, layout.path)
    guessed = [band for band in finest if S2_BANDS.index(band) not in meta.offsets]
    if guessed and default_offset:
        log.warning(
            "%s: baseline %s, but the MTD gives no radiometric offset for %s; using %.0f",
            layout.path,
            meta.processing_baseline,
            ", ".join(guessed),
            default_offset,
        )
    return {
        band: BandAsset(
            path=layout.root + finest[band][1],
            scale=1.0 / meta.quantification,
            add_offset=meta.offsets.get(band_id, default_offset),
            nodata=meta.nodata,
            resolution_m=float(finest[band][0]),
        )
        for band_id, band in enumerate(S2_BANDS)
        if band in finest
    }


def _default_offset(baseline_text: str, path: Path) -> float:
    """The add_offset of bands the MTD gives none: -1000 from baseline 04.00 on, else 0."""
    try:
        baseline = tuple(int(part) for part in baseline_text.split("."))
    except ValueError as err:
        raise SourceError(
            f"The Sentinel-2 product {path} has an unreadable processing baseline {baseline_text!r}."
        ) from err
    return DEFAULT_OFFSET_FROM_N0400 if baseline >= OFFSET_BASELINE else 0.0


def read_footprint(
    mtd_footprint: BaseGeometry | None, bands: dict[str, BandAsset], path: Path
) -> BaseGeometry:
    """The MTD footprint clipped to the finest band's raster bounds, lon/lat; IO: opens that band."""
    band = min(bands, key=lambda b: (bands[b].resolution_m or 0.0, S2_BANDS.index(b)))
    try:
        with rasterio.open(bands[band].path) as dataset:
            check_readable(dataset)
            bounds, crs = dataset.bounds, dataset.crs
    except RasterioError as err:
        raise SourceError(
            f"The {band} band of the Sentinel-2 product {path} cannot be read ({err}); "
            "it may be truncated or corrupt."
        ) from err
    if crs is None:
        raise SourceError(
            f"The {band} band of the Sentinel-2 product {path} has no coordinate reference system."
        )
    # densified, so that edges stay true after reprojection; 100 points a side is plenty for a 110 km tile
    longest_side = max(bounds.right - bounds.left, bounds.top - bounds.bottom)
    ring = shapely.segmentize(box(*bounds), max(longest_side / 100, 1e-9)).exterior
    xs, ys = transform(crs, "EPSG:4326", *zip(*ring.coords, strict=True))
    raster = Polygon(zip(xs, ys, strict=True))
    if mtd_footprint is None:
        return raster
    clipped = mtd_footprint.intersection(raster)
    if clipped.is_empty:
        log.warning("%s: the raster lies outside the MTD footprint; using the raster bounds", path)
        return raster
    return clipped
