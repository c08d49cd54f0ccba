"""Training labels: polygons or points with a class column, read like an AOI file and rasterised on a job grid.

Pixels no label covers, and pixels that labels of two different classes cover, get `IGNORE`: they are never
counted as a class (the loss and the metrics skip them).
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyogrio
import shapely
from pyogrio.errors import DataLayerError, DataSourceError
from pyproj import Geod
from rasterio.features import rasterize
from shapely.geometry.base import BaseGeometry

from core.errors import AppError, plain_reason
from core.geometry.aoi import VECTOR_FORMATS, shapefile_in_zip, to_wgs84
from core.geometry.grid import Grid, project_geometry

IGNORE = 255  # label raster value of unlabelled (or contradictorily labelled) pixels
MAX_CLASSES = 254  # values 0..253 are classes, IGNORE is 255
LABEL_SUFFIXES = {".geojson": "GeoJSON file", ".json": "GeoJSON file", **VECTOR_FORMATS}


class LabelError(AppError):
    """The labels cannot be used for training: unreadable, no such class field, too few classes or samples."""


@dataclass(frozen=True)
class Labels:
    """Labelled features in EPSG:4326 and the legend their class names make (value i is `legend[i]`)."""

    geometries: tuple[BaseGeometry, ...]
    names: tuple[str, ...]  # each feature's class
    legend: tuple[str, ...]  # the distinct classes, sorted

    def values(self) -> list[int]:
        """Each feature's class value (its position in the legend)."""
        index = {name: value for value, name in enumerate(self.legend)}
        return [index[name] for name in self.names]


def read_labels(path: Path, label_field: str, max_vertices: int) -> Labels:
    """Read a GeoJSON, GeoPackage, zipped Shapefile, Shapefile or KML file of labelled polygons or points.

    Features without a class value are left out; lines are refused; the coordinates are reprojected to
    EPSG:4326 from the file's own CRS.
    """
    if not path.is_file():
        raise LabelError(f"The label file {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix not in LABEL_SUFFIXES:
        raise LabelError(
            f"{path.name} has the unsupported label format {suffix or '(no suffix)'!r}; use .geojson, .gpkg, "
            ".zip (Shapefile), .shp or .kml."
        )
    try:
        dataset = shapefile_in_zip(path) if suffix == ".zip" else str(path)
    except AppError as err:
        raise LabelError(str(err)) from None
    try:
        fields = [str(f) for f in pyogrio.read_info(dataset, layer=0)["fields"]]
        if label_field not in fields:
            known = ", ".join(fields) or "none"
            raise LabelError(
                f"{path.name} has no field {label_field!r}; its fields are: {known}. Name the one that holds "
                "the class with --label-field."
            )
        meta, _, wkb, field_data = pyogrio.raw.read(dataset, layer=0, columns=[label_field], force_2d=True)
    except (DataSourceError, DataLayerError, RuntimeError, OSError, ValueError) as err:
        reason = plain_reason(err)
        raise LabelError(
            f"{path.name} cannot be read as a {LABEL_SUFFIXES[suffix]} ({reason}); check that it is one."
        ) from err
    if meta.get("crs") is None:
        raise LabelError(f"{path.name} does not say which coordinate system it uses; save it with one.")
    geometries, names = [], []
    for geometry_wkb, value in zip(wkb, field_data[0], strict=True):
        if geometry_wkb is None or value is None or str(value).strip() == "":
            continue
        geometry = shapely.from_wkb(geometry_wkb)
        if geometry.geom_type in ("LineString", "MultiLineString", "LinearRing"):
            raise LabelError(f"{path.name} holds lines; label with polygons or points.")
        geometries.append(geometry)
        names.append(str(value).strip())
    vertices = sum(shapely.get_num_coordinates(g) for g in geometries)
    if vertices > max_vertices:
        raise LabelError(
            f"{path.name} has {vertices:,} vertices, more than the {max_vertices:,} TerraSeg reads "
            "(TERRASEG_MAX_LABEL_VERTICES); simplify the polygons (e.g. to the 10 m pixel size) first."
        )
    if not geometries:
        raise LabelError(f"{path.name} holds no feature with both a geometry and a {label_field!r} value.")
    legend = tuple(sorted(set(names)))
    if len(legend) > MAX_CLASSES:
        raise LabelError(f"{path.name} has {len(legend)} classes in {label_field!r}; at most {MAX_CLASSES}.")
    try:
        projected = to_wgs84(geometries, meta["crs"], path.name)
    except AppError as err:
        raise LabelError(str(err)) from None
    return Labels(tuple(projected), tuple(names), legend)


def rasterise_labels(labels: Labels, grid: Grid, aoi_grid: BaseGeometry) -> np.ndarray:
    """The labels on `grid` as (H, W) uint8 class values, IGNORE where unlabelled, contradicted or outside the AOI.

    A polygon labels the pixels whose centre it contains; a point labels the pixel it falls in.
    """
    shape = (grid.height, grid.width)
    raster = np.full(shape, IGNORE, np.uint8)
    conflict = np.zeros(shape, bool)
    by_value: dict[int, list[BaseGeometry]] = {}
    for geometry, value in zip(labels.geometries, labels.values(), strict=True):
        by_value.setdefault(value, []).append(project_geometry(geometry, "EPSG:4326", grid.crs))
    for value, geometries in by_value.items():
        covered = rasterize(
            ((g, 1) for g in geometries), out_shape=shape, transform=grid.transform, fill=0, dtype="uint8"
        ).astype(bool)
        conflict |= covered & (raster != IGNORE) & (raster != value)
        raster[covered] = value
    raster[conflict] = IGNORE
    inside = rasterize([(aoi_grid, 1)], out_shape=shape, transform=grid.transform, fill=0, dtype="uint8")
    raster[inside == 0] = IGNORE
    return raster


def label_fields(path: Path) -> list[str]:
    """The fields of a label file to choose the class field from, text fields first (classes are named in text far
    more often than numbered; a numeric `index` first made a poor default), or a LabelError saying why the file
    cannot be read."""
    suffix = path.suffix.lower()
    if suffix not in LABEL_SUFFIXES:
        raise LabelError(f"{path.name}: use .geojson, .gpkg, .zip (Shapefile), .shp or .kml for labels.")
    try:
        dataset = shapefile_in_zip(path) if suffix == ".zip" else str(path)
        info = pyogrio.read_info(dataset, layer=0)
        fields = [(str(name), str(dtype)) for name, dtype in zip(info["fields"], info["dtypes"], strict=True)]
        return [name for name, dtype in sorted(fields, key=lambda field: field[1] != "object")]
    except AppError as err:
        raise LabelError(str(err)) from None
    except (DataSourceError, DataLayerError, RuntimeError, OSError, ValueError) as err:
        reason = plain_reason(err)
        raise LabelError(f"{path.name} cannot be read as a {LABEL_SUFFIXES[suffix]} ({reason}).") from err


@dataclass(frozen=True)
class LabelClass:
    """One class of a label file, before it meets the imagery: how many features and how much ground."""

    name: str
    features: int
    area_ha: float  # geodesic area of its polygons (points count 0)

    @property
    def approx_pixels(self) -> int:
        """About how many 10 m pixels its polygons cover (points: one each)."""
        points = self.features if self.area_ha == 0 else 0
        return round(self.area_ha * 100) + points


def class_summary(labels: Labels) -> list[LabelClass]:
    """Features and area per class, in legend order (the training pre-flight's sample counts)."""
    geod = Geod(ellps="WGS84")
    features = dict.fromkeys(labels.legend, 0)
    area_m2 = dict.fromkeys(labels.legend, 0.0)
    for geometry, name in zip(labels.geometries, labels.names, strict=True):
        features[name] += 1
        if geometry.geom_type in ("Polygon", "MultiPolygon"):
            area_m2[name] += abs(geod.geometry_area_perimeter(geometry)[0])
    return [LabelClass(n, features[n], area_m2[n] / 1e4) for n in labels.legend]


UPLOAD_SUFFIXES = (
    ".geojson",
    ".json",
    ".gpkg",
    ".zip",
    ".kml",
)  # single files (a bare .shp needs its sidecars)
MAX_LABELS_FILE_BYTES = 20 * 2**20  # the app's own limit (server.maxUploadSize in .streamlit/config.toml)


def store_upload(
    name: str,
    data: bytes,
    folder: Path,
    suffixes: tuple[str, ...] = UPLOAD_SUFFIXES,
    max_bytes: int = MAX_LABELS_FILE_BYTES,
) -> Path:
    """Keep an uploaded file (labels, sample tables) as `<folder>/<sha256 prefix><suffix>`: the user's file name
    never becomes a path (only its suffix, from `suffixes`, is kept); the same content is stored once."""
    suffix = Path(name).suffix.lower()
    if suffix not in suffixes:
        raise LabelError(f"{Path(name).name}: upload {', '.join(suffixes)} files here.")
    if len(data) > max_bytes:
        raise LabelError(
            f"{Path(name).name} is {len(data) / 2**20:.1f} MB; the limit for an upload is "
            f"{max_bytes // 2**20} MB."
        )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(data).hexdigest()[:24]}{suffix}"
    if not path.exists():
        partial = path.with_suffix(suffix + ".part")
        partial.write_bytes(data)
        partial.replace(path)
    return path
