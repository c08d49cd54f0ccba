"""Sentinel-1 GRD: SAFE products (a `*.SAFE` folder or a `.zip` holding one) -> calibrated sigma0 in dB.

A GRD product holds, per polarisation, a measurement TIFF of amplitude DN in radar geometry (line, pixel),
an annotation XML (image size, a geolocation grid of line/pixel -> lon/lat tie points) and a calibration XML
(a sigmaNought look-up table on a coarse line/pixel grid). The reader:

1. `read_s1_safe` parses the manifest (date, platform, pass, polarisations, footprint) and checks that the
   measurement, annotation and calibration files of each polarisation exist. No pixels are read.
2. `calibrate_to_grid` (the download stage, once the AOI is known) reads only the measurement window that
   covers the AOI, computes sigma0 = DN^2 / A^2 with A the sigmaNought LUT interpolated bilinearly to every
   pixel (ESA's radiometric calibration of Level-1 products; thermal-noise removal is not applied), warps the
   linear power onto the job's 10 m UTM grid with the geolocation grid as ground control points (bilinear),
   converts to dB (10 log10) and writes one float32 GeoTIFF per polarisation into the cache. Pixels with DN 0
   (no data at the swath edges) and non-positive power are nodata.

Ready dB GeoTIFFs need none of this: `core.sources.geotiff` reads them (tags PROCESSING_LEVEL=GRD, bands VV/VH),
and pyroSAR's file names (`S1A__IW___A_20150309T173017_VV_grd_mli_geo_norm_db.tif`) are understood too.
"""

import dataclasses
import hashlib
import logging
import math
import re
import xml.etree.ElementTree as ET
import zipfile
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import rasterio
import shapely
from rasterio.control import GroundControlPoint
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.transform import rowcol
from rasterio.warp import reproject
from rasterio.warp import transform as transform_points
from rasterio.windows import Window
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from core.errors import SourceError
from core.geometry.grid import Grid
from core.sources.transfer import cache_name
from core.types import S1_BANDS, BandAsset, Scene

log = logging.getLogger(__name__)

NODATA_DB = -9999.0
MARGIN_PX = 8  # radar pixels kept around the AOI so that warping has neighbours at its edge
CALIBRATED_KEY = "s1_calibrated"  # Scene.extra flag: bands are sigma0 dB on the job grid
PYROSAR_NAME_RE = re.compile(
    r"^(S1[ABCD])_+(IW|EW|SM\d?|WV)_+([AD])_(\d{8}T\d{6})_(VV|VH|HH|HV)_.*_db\.tiff?$", re.IGNORECASE
)


@dataclass(frozen=True)
class CalibrationLut:
    """A sigmaNought table: values (n_lines, n_pixels) at the given line and pixel positions (ascending)."""

    lines: np.ndarray  # (n_lines,) int
    pixels: np.ndarray  # (n_pixels,) int
    sigma_nought: np.ndarray  # (n_lines, n_pixels) float64
    absolute_constant: float = 1.0

    def interpolate(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The LUT at every (row, col) of the outer product of `rows` and `cols`: (len(rows), len(cols)), bilinear.

        The table is rectilinear, so bilinear interpolation is two 1-D passes: along pixels, then along lines;
        outside the table the edge values hold (as np.interp does).
        """
        col_index, col_t = _bracket(cols, self.pixels)
        along_pixels = (
            self.sigma_nought[:, col_index] * (1 - col_t) + self.sigma_nought[:, col_index + 1] * col_t
        )
        row_index, row_t = _bracket(rows, self.lines)
        return along_pixels[row_index] * (1 - row_t)[:, None] + along_pixels[row_index + 1] * row_t[:, None]


def _bracket(positions: np.ndarray, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each position, the index i of the node interval [nodes[i], nodes[i+1]] and the weight of nodes[i+1]."""
    index = np.clip(np.searchsorted(nodes, positions, side="right") - 1, 0, len(nodes) - 2)
    weight = (positions - nodes[index]) / (nodes[index + 1] - nodes[index])
    return index, np.clip(weight, 0.0, 1.0)


@dataclass(frozen=True)
class GeolocationGrid:
    """The annotation's image size and tie points: (line, pixel, lon, lat, height) per point."""

    lines: int
    samples: int
    points: np.ndarray  # (n, 5) float64

    def gcps(self, row_off: int = 0, col_off: int = 0) -> list[GroundControlPoint]:
        """The tie points as GDAL GCPs (pixel centres at +0.5) for a window starting at (row_off, col_off)."""
        return [
            GroundControlPoint(row=line - row_off + 0.5, col=pixel - col_off + 0.5, x=lon, y=lat, z=height)
            for line, pixel, lon, lat, height in self.points
        ]


@dataclass(frozen=True)
class GrdFiles:
    """GDAL paths of one polarisation's measurement, and archive/folder paths of its two XMLs."""

    measurement: str
    annotation: str
    calibration: str


def _local_children(root: ET.Element) -> dict[str, list[ET.Element]]:
    found: dict[str, list[ET.Element]] = {}
    for element in root.iter():
        found.setdefault(element.tag.rpartition("}")[2], []).append(element)
    return found


def parse_calibration(xml: bytes) -> CalibrationLut:
    """A calibration-s1?-*.xml -> its sigmaNought LUT. Raises SourceError when the table is missing or ragged."""
    try:
        root = ET.fromstring(xml)
        vectors = root.findall("./calibrationVectorList/calibrationVector")
        lines = np.array([int(str(v.findtext("line"))) for v in vectors])
        pixel_lists = [np.array(str(v.findtext("pixel")).split(), dtype=np.int64) for v in vectors]
        values = [np.array(str(v.findtext("sigmaNought")).split(), dtype=np.float64) for v in vectors]
        constant = float(root.findtext("./calibrationInformation/absoluteCalibrationConstant") or 1.0)
    except (ET.ParseError, ValueError) as err:
        raise SourceError(f"A Sentinel-1 calibration file cannot be read ({err}).") from err
    if not vectors or any(len(p) != len(pixel_lists[0]) or (p != pixel_lists[0]).any() for p in pixel_lists):
        raise SourceError(
            "A Sentinel-1 calibration file has no sigmaNought table, or its vectors differ in pixels."
        )
    if any(len(v) != len(pixel_lists[0]) for v in values) or (np.diff(lines) <= 0).any():
        raise SourceError("A Sentinel-1 calibration file has a malformed sigmaNought table.")
    return CalibrationLut(lines, pixel_lists[0], np.stack(values), constant)


def parse_annotation(xml: bytes) -> GeolocationGrid:
    """An annotation s1?-*.xml -> image size and geolocation grid. Raises SourceError when missing."""
    try:
        root = ET.fromstring(xml)
        info = root.find("./imageAnnotation/imageInformation")
        points = [
            [float(str(p.findtext(tag))) for tag in ("line", "pixel", "longitude", "latitude", "height")]
            for p in root.findall("./geolocationGrid/geolocationGridPointList/geolocationGridPoint")
        ]
        lines = int(str(info.findtext("numberOfLines"))) if info is not None else 0
        samples = int(str(info.findtext("numberOfSamples"))) if info is not None else 0
    except (ET.ParseError, ValueError) as err:
        raise SourceError(f"A Sentinel-1 annotation file cannot be read ({err}).") from err
    if len(points) < 4 or lines <= 0 or samples <= 0:
        raise SourceError("A Sentinel-1 annotation file has no image size or geolocation grid.")
    return GeolocationGrid(lines, samples, np.array(points))


def sigma0_linear(dn: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Amplitude DN (h, w) and the interpolated sigmaNought LUT (h, w) -> sigma0 power, float32; NaN where DN is 0."""
    power = (dn.astype(np.float64) ** 2) / (lut**2)
    power[dn == 0] = np.nan
    return power.astype(np.float32)


def to_db(power: np.ndarray) -> np.ndarray:
    """Linear power -> dB (10 log10), float32; NODATA_DB where power is NaN or not positive."""
    out = np.full(power.shape, NODATA_DB, np.float32)
    good = np.isfinite(power) & (power > 0)
    out[good] = 10.0 * np.log10(power[good])
    return out


def _open_safe(path: Path) -> tuple[str, bytes, list[str]]:
    """(GDAL prefix of the SAFE root, manifest.safe bytes, relative names of all files); the annotation and
    calibration XMLs are read later, by `calibrate_band`, for the polarisations a job uses."""
    if path.is_dir():
        if not (path / "manifest.safe").is_file():
            raise SourceError(f"{path} has no manifest.safe; it is not a Sentinel-1 SAFE product.")
        names = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
        return f"{path}/", (path / "manifest.safe").read_bytes(), names
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.namelist()
            manifest = next((m for m in members if m.endswith("manifest.safe") and m.count("/") <= 1), None)
            if manifest is None:
                raise SourceError(f"The zip {path} holds no Sentinel-1 SAFE product (no manifest.safe).")
            prefix = manifest.removesuffix("manifest.safe")
            names = [m.removeprefix(prefix) for m in members if m.startswith(prefix) and not m.endswith("/")]
            manifest_xml = archive.read(manifest)
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise SourceError(f"The zip {path} is truncated or corrupt ({err}); download it again.") from err
    return f"/vsizip/{path}/{prefix}", manifest_xml, names


def read_s1_safe(path: Path, source: str = "local") -> Scene:
    """Parse a Sentinel-1 GRD SAFE product (folder or zip) into a Scene whose bands still need calibration.

    IO: reads the manifest and XMLs only. Raises SourceError, naming the product and file, when the product
    is not a GRD, or a polarisation's measurement, annotation or calibration file is missing.
    """
    path = path.absolute()
    root, manifest_xml, names = _open_safe(path)
    try:
        manifest = _local_children(ET.fromstring(manifest_xml))
    except ET.ParseError as err:
        raise SourceError(f"The manifest of the Sentinel-1 product {path} is not valid XML ({err}).") from err
    product_type = (manifest.get("productType") or [ET.Element("x")])[0].text or ""
    if product_type.strip() != "GRD":
        raise SourceError(
            f"{path} is a Sentinel-1 {product_type or 'unknown'} product; only GRD can be read."
        )
    polarisations = [p.text.strip() for p in manifest.get("transmitterReceiverPolarisation", []) if p.text]
    files: dict[str, GrdFiles] = {}
    for polarisation in (p for p in polarisations if p in S1_BANDS):
        tag = f"-{polarisation.lower()}-"
        measurement = next((n for n in names if n.startswith("measurement/") and tag in n), None)
        annotation = next((n for n in names if re.fullmatch(rf"annotation/s1.*{tag}.*\.xml", n)), None)
        calibration = next((n for n in names if n.startswith("annotation/calibration/calibration-") and tag in n),
                           None)  # fmt: skip
        missing = [kind for kind, name in (("measurement", measurement), ("annotation", annotation),
                                           ("calibration", calibration)) if name is None]  # fmt: skip
        if missing:
            raise SourceError(
                f"The Sentinel-1 product {path} lacks the {' and '.join(missing)} file of {polarisation}; "
                "it is incomplete: download it again."
            )
        files[polarisation] = GrdFiles(root + str(measurement), str(annotation), str(calibration))
    if not files:
        raise SourceError(f"The Sentinel-1 product {path} has no VV or VH polarisation.")
    start = (manifest.get("startTime") or [ET.Element("x")])[0].text or ""
    coordinates = (manifest.get("coordinates") or [ET.Element("x")])[0].text or ""
    try:
        acquired = datetime.fromisoformat(start.strip()).replace(tzinfo=UTC)
        lat_lon = [tuple(float(v) for v in pair.split(",")) for pair in coordinates.split()]
        footprint: BaseGeometry = shapely.make_valid(Polygon([(lon, lat) for lat, lon in lat_lon]))
    except ValueError as err:
        raise SourceError(
            f"The manifest of the Sentinel-1 product {path} has no readable date or footprint."
        ) from err
    extra = {"safe_root": root, "pass": ((manifest.get("pass") or [ET.Element("x")])[0].text or "").strip()}
    for polarisation, grd in files.items():
        extra[f"annotation_{polarisation}"] = grd.annotation
        extra[f"calibration_{polarisation}"] = grd.calibration
    return Scene(
        id=path.name.removesuffix(".zip").removesuffix(".SAFE"),
        source=source,
        sensor="S1",
        acquired=acquired,
        footprint=footprint,
        processing_level="GRD",
        bands={p: BandAsset(path=grd.measurement, nodata=0) for p, grd in files.items()},
        path=str(path),
        extra=extra,
    )


def needs_calibration(scene: Scene) -> bool:
    """A Sentinel-1 SAFE scene whose bands are still amplitude DN in radar geometry."""
    return scene.sensor == "S1" and "safe_root" in scene.extra and CALIBRATED_KEY not in scene.extra


def _read_xml(scene: Scene, relative: str) -> bytes:
    path = Path(scene.path)
    if path.is_dir():
        return (path / relative).read_bytes()
    prefix = scene.extra["safe_root"].removeprefix(f"/vsizip/{path}/")
    with zipfile.ZipFile(path) as archive:
        return archive.read(prefix + relative)


def radar_window(geolocation: GeolocationGrid, grid: Grid) -> Window:
    """The measurement window (line, pixel) covering the grid's footprint, plus a margin, clipped to the image."""
    left, top = grid.transform @ (0, 0)
    right, bottom = grid.transform @ (grid.width, grid.height)
    xs = np.linspace(left, right, 9)
    ys = np.linspace(top, bottom, 9)
    edge_x = np.concatenate([xs, xs, np.full(9, left), np.full(9, right)])
    edge_y = np.concatenate([np.full(9, top), np.full(9, bottom), ys, ys])
    lons, lats = transform_points(grid.crs, "EPSG:4326", edge_x.tolist(), edge_y.tolist())
    rows, cols = rowcol(geolocation.gcps(), lons, lats, op=float)
    row0 = max(0, math.floor(min(rows)) - MARGIN_PX)
    col0 = max(0, math.floor(min(cols)) - MARGIN_PX)
    row1 = min(geolocation.lines, math.ceil(max(rows)) + MARGIN_PX)
    col1 = min(geolocation.samples, math.ceil(max(cols)) + MARGIN_PX)
    if row1 <= row0 or col1 <= col0:
        raise SourceError("The Sentinel-1 scene does not cover the area of interest.")
    return Window(col0, row0, col1 - col0, row1 - row0)


def calibrate_band(scene: Scene, polarisation: str, grid: Grid, out_path: Path) -> Path:
    """Calibrate one polarisation's AOI window to sigma0, warp it onto `grid`, write it in dB (IO, atomic)."""
    geolocation = parse_annotation(_read_xml(scene, scene.extra[f"annotation_{polarisation}"]))
    lut = parse_calibration(_read_xml(scene, scene.extra[f"calibration_{polarisation}"]))
    window = radar_window(geolocation, grid)
    try:
        with rasterio.open(scene.bands[polarisation].path) as measurement:
            if (measurement.height, measurement.width) != (geolocation.lines, geolocation.samples):
                raise SourceError(
                    f"The {polarisation} measurement of {scene.id} is {measurement.width}x{measurement.height} px "
                    f"but its annotation says {geolocation.samples}x{geolocation.lines}; the product is inconsistent."
                )
            dn = measurement.read(1, window=window)
    except RasterioError as err:
        raise SourceError(
            f"The {polarisation} measurement of {scene.id} cannot be read ({err}); download it again."
        ) from err
    rows = np.arange(window.row_off, window.row_off + window.height)
    cols = np.arange(window.col_off, window.col_off + window.width)
    power = sigma0_linear(dn, lut.interpolate(rows, cols))
    warped = np.full((grid.height, grid.width), np.nan, np.float32)
    reproject(
        power, warped, gcps=geolocation.gcps(int(window.row_off), int(window.col_off)), src_crs="EPSG:4326",
        src_nodata=np.nan, dst_transform=grid.transform, dst_crs=grid.crs, dst_nodata=np.nan,
        resampling=Resampling.bilinear,
    )  # fmt: skip
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(f".{out_path.name}.part")
    profile = {
        "driver": "GTiff", "width": grid.width, "height": grid.height, "count": 1, "dtype": "float32",
        "crs": grid.crs, "transform": grid.transform, "nodata": NODATA_DB, "compress": "deflate",
    }  # fmt: skip
    with rasterio.open(partial, "w", **profile) as out:
        out.write(to_db(warped), 1)
        out.set_band_description(1, polarisation)
        out.update_tags(1, UNITS="dB", QUANTITY="sigma0")
    partial.replace(out_path)
    return out_path


def calibrate_to_grid(scene: Scene, grid: Grid, cache_dir: Path) -> Scene:
    """The scene with every polarisation replaced by its sigma0-dB GeoTIFF on `grid` (cached by scene and grid)."""
    key = hashlib.sha256(
        f"{grid.crs}|{tuple(grid.transform)}|{grid.width}x{grid.height}".encode()
    ).hexdigest()[:16]
    source = cache_name(scene.source)
    bands = {}
    for polarisation in scene.bands:
        out_path = cache_dir / "products" / source / scene.id / f"{polarisation}-sigma0-db-{key}.tif"
        if not out_path.exists():
            calibrate_band(scene, polarisation, grid, out_path)
        bands[polarisation] = BandAsset(
            path=str(out_path), nodata=NODATA_DB, resolution_m=abs(grid.transform.a)
        )
    return dataclasses.replace(scene, bands=bands, extra={**scene.extra, CALIBRATED_KEY: "sigma0 dB"})


def pyrosar_name(name: str) -> tuple[str, datetime, str] | None:
    """(platform, acquisition time, polarisation) from a pyroSAR dB file name; None when it is not one."""
    match = PYROSAR_NAME_RE.match(name)
    if match is None:
        return None
    return (
        match[1].upper(),
        datetime.strptime(match[4], "%Y%m%dT%H%M%S").replace(tzinfo=UTC),
        match[5].upper(),
    )


def merge_polarisations(scenes: list[Scene]) -> list[Scene]:
    """Join single-polarisation Sentinel-1 dB scenes of one acquisition (pyroSAR writes one file per
    polarisation) into one scene with both bands; every other scene passes unchanged. Pure."""
    merged: dict[tuple[str, datetime], Scene] = {}
    others = []
    for scene in scenes:
        if scene.sensor != "S1" or "safe_root" in scene.extra:
            others.append(scene)
            continue
        key = (scene.source, scene.acquired)
        if key in merged and not set(merged[key].bands) & set(scene.bands):
            first = merged[key]
            scene_id = first.id
            for polarisation in first.bands:
                scene_id = scene_id.replace(f"_{polarisation}_", "_")
            merged[key] = dataclasses.replace(
                first,
                id=scene_id,
                bands={**first.bands, **scene.bands},
                footprint=first.footprint.union(scene.footprint),
            )
        elif key in merged:
            others.append(scene)
        else:
            merged[key] = scene
    return sorted([*others, *merged.values()], key=lambda s: (s.acquired, s.id))
