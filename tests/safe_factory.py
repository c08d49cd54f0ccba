"""Build small but real-format Sentinel-2 SAFE products from the real samples in tests/data (not a test).

Source: tests/data/s2_l1c_metadata_ukis/ (Apache-2.0, see its LICENSE): two real L1C product
metadata files (`*_MTD.xml`, tile T32UPC, baselines 02.09 and 04.00), a real DN crop of each product
(13 uint16 bands B01..B12 with B8A 9th) and the matching top-of-atmosphere reflectance (`*_toa.tif`).
Every band is written at the crop's own resolution (10 m for N0400, 60 m for N0209); real products
write 20 m and 60 m bands on coarser grids, which the reader does not depend on.
"""

import copy
import re
import shutil
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.io import MemoryFile

if TYPE_CHECKING:
    from core.geometry.grid import Grid
    from core.sources.sentinel1 import GeolocationGrid

DATA_DIR = Path(__file__).resolve().parent / "data" / "s2_l1c_metadata_ukis"
PRODUCTS = {
    "N0400": "S2B_MSIL1C_20220615T101559_N0400_R065_T32UPC_20220615T122549",
    "N0209": "S2B_MSIL1C_20200406T101559_N0209_R065_T32UPC_20200406T130159",
}
BAND_ORDER = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
L1C_BAND_RE = re.compile(r"_(B0[1-9]|B1[0-2]|B8A)$")
# What each resolution folder of a real L2A product holds (PSD 14.x); B08 is 10 m only, B10 is dropped.
L2A_FILES = {
    10: ("AOT", "B02", "B03", "B04", "B08", "TCI", "WVP"),
    20: ("AOT", "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B11", "B12", "B8A", "SCL", "TCI", "WVP"),
    60: ("AOT", "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B09", "B11", "B12", "B8A", "SCL", "TCI",
         "WVP"),
}  # fmt: skip


def real_mtd_path(which: str) -> Path:
    """The real L1C MTD of product `which` ('N0400' or 'N0209')."""
    return DATA_DIR / f"{PRODUCTS[which]}_MTD.xml"


def real_dn_path(which: str) -> Path:
    """The real (13, H, W) uint16 DN crop of product `which`."""
    return DATA_DIR / f"{PRODUCTS[which]}.tif"


def real_toa_path(which: str) -> Path:
    """The real (13, H, W) float32 TOA reflectance of the same crop."""
    return DATA_DIR / f"{PRODUCTS[which]}_toa.tif"


def build_s2_safe(dest_dir: Path, which: str = "N0400", level: str = "L1C", zipped: bool = False) -> Path:
    """Write `<PRODUCT_URI>` (a .SAFE folder) under dest_dir, or `<PRODUCT_URI>.zip`; return its path.

    L1C: the real MTD as MTD_MSIL1C.xml and one lossless single-band JP2 per IMAGE_FILE entry.
    L2A: a synthetic MTD_MSIL2A.xml (see `l2a_mtd`) and JP2s in IMG_DATA/R10m|R20m|R60m.
    """
    if which not in PRODUCTS or level not in ("L1C", "L2A"):
        raise ValueError(
            f"which must be one of {sorted(PRODUCTS)} and level L1C or L2A; got {which!r}, {level!r}"
        )
    mtd_bytes = real_mtd_path(which).read_bytes()
    if level == "L2A":
        mtd_bytes = l2a_mtd(ET.fromstring(mtd_bytes))
    mtd = ET.fromstring(mtd_bytes)
    safe = dest_dir / _text(mtd, "PRODUCT_URI")
    safe.mkdir(parents=True)
    (safe / f"MTD_MSI{level}.xml").write_bytes(mtd_bytes)
    with rasterio.open(real_dn_path(which)) as src:
        dn, profile = src.read(), {"crs": src.crs, "transform": src.transform}
    for image_file in (e.text or "" for e in mtd.iter() if e.tag.rpartition("}")[2] == "IMAGE_FILE"):
        write_lossless_jp2(safe / f"{image_file}.jp2", _pixels_for(image_file, dn), **profile)
    if not zipped:
        return safe
    archive = dest_dir / f"{safe.name}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(safe.rglob("*")):
            zf.write(file, file.relative_to(dest_dir).as_posix())
    shutil.rmtree(safe)
    return archive


def _pixels_for(image_file: str, dn: np.ndarray) -> np.ndarray:
    """(C, H, W) pixels for one IMAGE_FILE: the real DN band, or stand-ins for the L2A by-products."""
    name = image_file.rsplit("/", 1)[-1]
    band = next((b for b in BAND_ORDER if f"_{b}" in name), None)
    if band is not None:
        return dn[BAND_ORDER.index(band)][None]
    if "_TCI" in name:  # rough true colour, uint8, 3 bands as in real products
        return np.clip(dn[[3, 2, 1]] / 12, 0, 255).astype(np.uint8)
    if "_SCL" in name:
        return np.full((1, *dn.shape[1:]), 4, dtype=np.uint8)  # 4 = vegetation
    return np.full((1, *dn.shape[1:]), 150, dtype=np.uint16)  # AOT / WVP


def write_lossless_jp2(path: Path, pixels: np.ndarray, **profile: object) -> None:
    """Write (C, H, W) pixels to a reversible (lossless) JPEG 2000 file with the given crs and transform."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = pixels.shape
    with MemoryFile() as memfile:
        with memfile.open(
            driver="GTiff", width=width, height=height, count=count, dtype=pixels.dtype, **profile
        ) as tmp:
            tmp.write(pixels)
        with memfile.open() as tmp:
            rasterio.shutil.copy(tmp, path, driver="JP2OpenJPEG", QUALITY=100, REVERSIBLE="YES")


def _text(root: ET.Element, tag: str) -> str:
    """Text of the first element with local name `tag`."""
    return next(e.text or "" for e in root.iter() if e.tag.rpartition("}")[2] == tag)


def l2a_mtd(l1c: ET.Element) -> bytes:
    """A minimal but structurally faithful MTD_MSIL2A.xml derived from a real L1C MTD.

    SYNTHETIC: the test data holds no real L2A metadata. Element names, nesting and file naming follow
    PSD 14.x L2A products (QUANTIFICATION_VALUES_LIST/BOA_QUANTIFICATION_VALUE, BOA_ADD_OFFSET_VALUES_LIST,
    GRANULE/L2A_.../IMG_DATA/R10m/T.._B02_10m); the date, tile, footprint and cloud cover are the L1C ones,
    and the pixels the builder writes are the L1C DNs, not a real atmospheric correction.
    """
    uri = _text(l1c, "PRODUCT_URI").replace("MSIL1C", "MSIL2A")
    baseline = _text(l1c, "PROCESSING_BASELINE")
    first = _text(l1c, "IMAGE_FILE")  # GRANULE/L1C_T32UPC_A027547_20220615T102248/IMG_DATA/T32UPC_..._B01
    granule, stem = first.split("/")[1].replace("L1C_", "L2A_", 1), first.rsplit("/", 1)[1].rsplit("_", 1)[0]
    ns = "https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd"
    root = ET.Element(f"{{{ns}}}Level-2A_User_Product")
    general = ET.SubElement(root, f"{{{ns}}}General_Info")
    info = ET.SubElement(general, "Product_Info")
    for tag, value in (
        ("PRODUCT_START_TIME", _text(l1c, "PRODUCT_START_TIME")),
        ("PRODUCT_STOP_TIME", _text(l1c, "PRODUCT_STOP_TIME")),
        ("PRODUCT_URI", uri),
        ("PROCESSING_LEVEL", "Level-2A"),
        ("PRODUCT_TYPE", "S2MSI2A"),
        ("PROCESSING_BASELINE", baseline),
        ("GENERATION_TIME", _text(l1c, "GENERATION_TIME")),
    ):
        ET.SubElement(info, tag).text = value
    granule_el = ET.SubElement(
        ET.SubElement(ET.SubElement(info, "Product_Organisation"), "Granule_List"),
        "Granule",
        imageFormat="JPEG2000",
    )
    for resolution_m, names in L2A_FILES.items():
        for name in names:
            ET.SubElement(
                granule_el, "IMAGE_FILE"
            ).text = f"GRANULE/{granule}/IMG_DATA/R{resolution_m}m/{stem}_{name}_{resolution_m}m"
    image = ET.SubElement(general, "Product_Image_Characteristics")
    for text, index in (("NODATA", "0"), ("SATURATED", "65535")):
        special = ET.SubElement(image, "Special_Values")
        ET.SubElement(special, "SPECIAL_VALUE_TEXT").text = text
        ET.SubElement(special, "SPECIAL_VALUE_INDEX").text = index
    quantification = ET.SubElement(image, "QUANTIFICATION_VALUES_LIST")
    ET.SubElement(quantification, "BOA_QUANTIFICATION_VALUE", unit="none").text = "10000"
    ET.SubElement(quantification, "AOT_QUANTIFICATION_VALUE", unit="none").text = "1000.0"
    ET.SubElement(quantification, "WVP_QUANTIFICATION_VALUE", unit="cm").text = "1000.0"
    if baseline >= "04.00":
        offsets = ET.SubElement(image, "BOA_ADD_OFFSET_VALUES_LIST")
        for band_id in range(len(BAND_ORDER)):
            ET.SubElement(offsets, "BOA_ADD_OFFSET", band_id=str(band_id)).text = "-1000"
    geometric = ET.SubElement(root, f"{{{ns}}}Geometric_Info")
    footprint = ET.SubElement(
        ET.SubElement(ET.SubElement(geometric, "Product_Footprint"), "Product_Footprint"), "Global_Footprint"
    )
    ET.SubElement(footprint, "EXT_POS_LIST").text = _text(l1c, "EXT_POS_LIST")
    quality = ET.SubElement(root, f"{{{ns}}}Quality_Indicators_Info")
    ET.SubElement(quality, "Cloud_Coverage_Assessment").text = _text(l1c, "Cloud_Coverage_Assessment")
    ET.register_namespace("n1", ns)
    ET.indent(root)
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def build_sample_safe(scene_tif: Path, dest_dir: Path) -> Path:
    """A zipped L1C SAFE product holding one embedded sample scene (core/sample/*.tif), for the DHuS test server.

    The pixels are the sample's real DNs (one lossless JP2 per band, on the sample's grid); the MTD is the real
    baseline-02.09 one with the product name, dates, band file names and footprint of the sample scene.
    SYNTHETIC: the cloud cover written is the share of pixels whose B02 reflectance exceeds 0.2 (bright:
    cloud or snow), a stand-in for the real assessment, which the sample does not carry.
    """
    with rasterio.open(scene_tif) as src:
        dn, profile = src.read(), {"crs": src.crs, "transform": src.transform}
        stamp = src.tags()["ACQUISITION_DATETIME"]  # 2015-07-11T10:00:08Z
        bounds, crs = src.bounds, src.crs
    day = stamp[:10].replace("-", "")
    compact = f"{day}T{stamp[11:19].replace(':', '')}"
    uri = f"S2A_MSIL1C_{compact}_N0209_R122_T33TVM_{compact}"
    from rasterio.warp import transform_bounds

    west, south, east, north = transform_bounds(crs, "EPSG:4326", *bounds)
    footprint = f"{north} {west} {north} {east} {south} {east} {south} {west} {north} {west}"
    cloud_pct = float((dn[BAND_ORDER.index("B02")] > 2000).mean() * 100)
    mtd = real_mtd_path("N0209").read_text()
    mtd = re.sub(r"<PRODUCT_URI>[^<]+</PRODUCT_URI>", f"<PRODUCT_URI>{uri}.SAFE</PRODUCT_URI>", mtd)
    for tag in ("PRODUCT_START_TIME", "PRODUCT_STOP_TIME", "DATATAKE_SENSING_START"):
        mtd = re.sub(rf"<{tag}>[^<]+</{tag}>", f"<{tag}>{stamp[:19]}.000Z</{tag}>", mtd)
    mtd = mtd.replace("L1C_T32UPC_A016107_20200406T101807", f"L1C_T33TVM_A000000_{compact}")
    mtd = mtd.replace("T32UPC_20200406T101559", f"T33TVM_{compact}")
    mtd = re.sub(r"<EXT_POS_LIST>[^<]+</EXT_POS_LIST>", f"<EXT_POS_LIST>{footprint}</EXT_POS_LIST>", mtd)
    mtd = re.sub(
        r"<Cloud_Coverage_Assessment>[^<]+</Cloud_Coverage_Assessment>",
        f"<Cloud_Coverage_Assessment>{cloud_pct:.4f}</Cloud_Coverage_Assessment>",
        mtd,
    )
    safe = dest_dir / f"{uri}.SAFE"
    safe.mkdir(parents=True)
    (safe / "MTD_MSIL1C.xml").write_text(mtd)
    root = ET.fromstring(mtd.encode())
    for image_file in (e.text or "" for e in root.iter() if e.tag.rpartition("}")[2] == "IMAGE_FILE"):
        write_lossless_jp2(safe / f"{image_file}.jp2", _pixels_for(image_file, dn), **profile)
    archive = dest_dir / f"{uri}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(safe.rglob("*")):
            zf.write(file, file.relative_to(dest_dir).as_posix())
    shutil.rmtree(safe)
    return archive


S1_DIR = Path(__file__).resolve().parent / "data" / "s1_pyrosar"
S1_PRODUCT = "S1A_IW_GRDH_1SDV_20210119T031653_20210119T031718_036201_043ED0_8255"
S1_DB_FILE = S1_DIR / "S1A__IW___A_20150309T173017_VV_grd_mli_geo_norm_db.tif"


def build_s1_grd(
    dest_dir: Path,
    window: tuple[int, int, int, int],
    sigma0_db: "Callable[[np.ndarray, np.ndarray, str], np.ndarray]",
) -> Path:
    """The real S1 GRDH SAFE zip of tests/data/s1_pyrosar (MIT, pyroSAR) with measurement TIFFs added.

    The real product's measurement folder is empty; each polarisation gets a TIFF of the real size
    (annotation numberOfSamples x numberOfLines, uint16, tiled, sparse) in which only `window` (row0, col0,
    height, width) holds data: the amplitude DN that gives `sigma0_db(rows, cols, polarisation)` (dB) through
    the product's real sigmaNought LUT, rounded as the processor rounds. SYNTHETIC pixels; the metadata,
    geolocation grid and calibration tables are the real ones.
    """
    from core.sources.sentinel1 import parse_annotation, parse_calibration

    real = S1_DIR / f"{S1_PRODUCT}.zip"
    archive = dest_dir / real.name
    dest_dir.mkdir(parents=True, exist_ok=True)
    row0, col0, height, width = window
    rows, cols = np.arange(row0, row0 + height), np.arange(col0, col0 + width)
    with zipfile.ZipFile(real) as src, zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            out.writestr(copy.copy(info), src.read(info))  # a copy: writestr rewrites the info's offsets
        for polarisation, number in (("vh", "002"), ("vv", "001")):
            stem = f"s1a-iw-grd-{polarisation}-20210119t031653-20210119t031718-036201-043ed0-{number}"
            safe = f"{S1_PRODUCT}.SAFE"
            geolocation = parse_annotation(src.read(f"{safe}/annotation/{stem}.xml"))
            lut = parse_calibration(src.read(f"{safe}/annotation/calibration/calibration-{stem}.xml"))
            power = 10.0 ** (sigma0_db(rows[:, None], cols[None, :], polarisation.upper()) / 10.0)
            dn = np.clip(np.round(np.sqrt(power) * lut.interpolate(rows, cols)), 1, 65535).astype(np.uint16)
            tiff = dest_dir / f"{stem}.tiff"
            with rasterio.open(
                tiff, "w", driver="GTiff", width=geolocation.samples, height=geolocation.lines, count=1,
                dtype="uint16", tiled=True, blockxsize=512, blockysize=512, compress="deflate", sparse_ok=True,
                gcps=geolocation.gcps(), crs="EPSG:4326",
            ) as measurement:  # fmt: skip
                measurement.write(dn, 1, window=rasterio.windows.Window(col0, row0, width, height))
            out.write(tiff, f"{safe}/measurement/{stem}.tiff", compress_type=zipfile.ZIP_STORED)
            tiff.unlink()
    return archive


# The synthetic GRD's data window (row0, col0, height, width) and the backscatter it encodes.
S1_WINDOW = (8000, 12000, 600, 600)


def s1_target_db(rows: np.ndarray, cols: np.ndarray, polarisation: str) -> np.ndarray:
    """Smooth ramps over the data window, VH 7 dB below VV."""
    return (
        -14.0
        + 6.0 * (cols - 12000) / 600
        - 4.0 * (rows - 8000) / 600
        - (7.0 if polarisation == "VH" else 0.0)
    )


def s1_geolocation() -> "GeolocationGrid":
    """The real VV annotation's geolocation grid (VV and VH share it)."""
    from core.sources.sentinel1 import parse_annotation

    stem = "s1a-iw-grd-vv-20210119t031653-20210119t031718-036201-043ed0-001"
    with zipfile.ZipFile(S1_DIR / f"{S1_PRODUCT}.zip") as archive:
        return parse_annotation(archive.read(f"{S1_PRODUCT}.SAFE/annotation/{stem}.xml"))


def s1_aoi_geojson() -> dict[str, object]:
    """An AOI well inside the synthetic data: the lon/lat outline of radar rows 8150-8450, columns 12150-12450."""
    corners = [(8150, 12150), (8150, 12450), (8450, 12450), (8450, 12150)]
    transformer = rasterio.transform.GCPTransformer(s1_geolocation().gcps())
    lons, lats = transformer.xy([r for r, _ in corners], [c for _, c in corners], offset="ul")
    ring = [[float(x), float(y)] for x, y in zip(lons, lats, strict=True)]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


def s1_expected_db(grid: "Grid", polarisation: str) -> tuple[np.ndarray, np.ndarray]:
    """(expected dB (H, W), inside mask) on `grid`: the target at each pixel centre's radar (row, col) through the
    real tie points, and where that lies at least 10 px inside the AOI's radar rectangle."""
    from rasterio.transform import rowcol
    from rasterio.warp import transform as transform_points

    cols_px, rows_px = np.meshgrid(np.arange(grid.width) + 0.5, np.arange(grid.height) + 0.5)
    xs, ys = grid.transform @ (cols_px.ravel(), rows_px.ravel())
    lon, lat = transform_points(grid.crs, "EPSG:4326", xs, ys)
    rows, cols = (np.array(v).reshape(grid.height, grid.width) for v in rowcol(s1_geolocation().gcps(), lon, lat,
                                                                                 op=float))  # fmt: skip
    inside = (np.abs(rows - 8300) < 140) & (np.abs(cols - 12300) < 140)
    return s1_target_db(rows - 0.5, cols - 0.5, polarisation), inside
