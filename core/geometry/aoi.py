"""AOILike (GeoJSON text/dict/file, zipped Shapefile, GeoPackage, KML, bbox text, shapely) -> a validated AOI.

Everything is brought to one Polygon or MultiPolygon in EPSG:4326 and checked once, here, at the boundary.
Each failure is an AOIError whose message says what is wrong, with numbers, and what to do.
"""

import json
import logging
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pyogrio
import shapely
from pyogrio.errors import DataLayerError, DataSourceError
from pyproj import CRS, Geod, Transformer
from pyproj.exceptions import CRSError
from shapely.geometry import MultiPolygon, Polygon, box, mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from core.errors import AOIError, InvalidPolygon, plain_reason

log = logging.getLogger(__name__)

AOILike: TypeAlias = str | Path | dict[str, Any] | BaseGeometry
VECTOR_FORMATS = {".gpkg": "GeoPackage", ".kml": "KML file", ".shp": "Shapefile", ".zip": "zipped Shapefile"}
_GEOJSON_SUFFIXES = (".geojson", ".json")
_GEOJSON_KINDS = "a GeoJSON Geometry, Feature or FeatureCollection"
MAX_AOI_FILE_BYTES = 10 * 1024 * 1024
_WGS84 = CRS.from_epsg(4326)
_GEOD = Geod(ellps="WGS84")


@dataclass(frozen=True)
class AOI:
    """A validated area of interest."""

    geometry: Polygon | MultiPolygon  # EPSG:4326, (lon, lat), valid
    area_km2: float  # geodesic, on the WGS84 ellipsoid
    label: str  # where it came from: a file name, "bbox", "GeoJSON text"

    def to_geojson(self) -> dict[str, Any]:
        """A GeoJSON geometry dict, (lon, lat) in degrees."""
        return dict(mapping(self.geometry))


def parse_aoi(
    value: AOILike, *, max_area_km2: float = 50_000.0, max_vertices: int = 10_000, fix_invalid: bool = False
) -> AOI:
    """Read `value`, reproject it to EPSG:4326, union its parts into one (Multi)Polygon and validate it.

    Args:
        value: bbox text "west,south,east,north" in degrees; GeoJSON text or dict (Geometry, Feature or
            FeatureCollection, optionally with a legacy `crs` member); a path to a .geojson/.json, zipped
            Shapefile, .gpkg, .kml or .shp file; or a shapely geometry in EPSG:4326.
        max_area_km2: the largest geodesic area accepted.
        max_vertices: the most coordinates accepted, over all rings.
        fix_invalid: repair invalid polygons with `shapely.make_valid` instead of refusing them.

    Raises:
        AOIError: the input cannot be read, or the area breaks one of the rules.
    """
    with refusing_deep_nesting("The area"):
        parts, label = read_aoi(value)
        return validate_aoi(
            parts, label, max_area_km2=max_area_km2, max_vertices=max_vertices, fix_invalid=fix_invalid
        )


@contextmanager
def refusing_deep_nesting(what: str) -> Iterator[None]:
    """A GeoJSON nested hundreds of levels deep (a GeometryCollection in a GeometryCollection ...) exhausts
    Python's recursion in the JSON parser or in shapely's builders: that is bad input, not an internal error."""
    try:
        yield
    except RecursionError as err:
        raise AOIError(
            f"{what} is nested too deeply to read (collections inside collections); give a plain Polygon, "
            "MultiPolygon, Feature or FeatureCollection."
        ) from err


def parse_aoi_upload(
    name: str,
    data: bytes,
    *,
    max_bytes: int = MAX_AOI_FILE_BYTES,
    max_area_km2: float = 50_000.0,
    max_vertices: int = 10_000,
) -> AOI:
    """An uploaded file's name and bytes (GeoJSON, zipped Shapefile, GeoPackage, KML) -> a validated AOI.

    The size is checked before anything is parsed; the bytes go to a private temporary folder under their
    own file name (only the suffix matters to the readers), which is removed afterwards.
    """
    if len(data) > max_bytes:
        raise AOIError(
            f"{name} is {len(data) / 2**20:.1f} MB; the limit for an AOI file is {max_bytes / 2**20:.0f} MB. "
            "Simplify the geometry or upload only the area you need."
        )
    safe_name = Path(name).name or "upload"
    with tempfile.TemporaryDirectory(prefix="terraseg-aoi-") as folder:
        path = Path(folder) / safe_name
        path.write_bytes(data)
        with refusing_deep_nesting(safe_name):
            return validate_aoi(
                read_aoi_file(path), safe_name, max_area_km2=max_area_km2, max_vertices=max_vertices
            )


def parse_bbox(text: str, *, max_area_km2: float = 50_000.0, max_vertices: int = 10_000) -> AOI:
    """'west,south,east,north' in degrees (commas and/or spaces) -> a validated AOI; never reads a file."""
    numbers = _numbers(text.strip())
    if not numbers:
        raise AOIError(
            f"{text.strip()!r} is not a bounding box; type four numbers: west, south, east, north in degrees."
        )
    return validate_aoi(
        [_bbox_polygon(numbers, text)], "bbox", max_area_km2=max_area_km2, max_vertices=max_vertices
    )


def read_aoi(value: AOILike) -> tuple[list[BaseGeometry], str]:
    """Any accepted input -> (its geometries in EPSG:4326, not yet unioned or checked; a label)."""
    if isinstance(value, BaseGeometry):
        return [value], "geometry"
    if isinstance(value, dict):
        return _geojson_parts(value, "GeoJSON"), "GeoJSON"
    if isinstance(value, Path):
        return read_aoi_file(value.expanduser()), value.name
    if not isinstance(value, str):
        raise TypeError(
            "parse_aoi takes bbox or GeoJSON text, a GeoJSON dict, a file path or a shapely geometry; "
            f"got {type(value).__name__}"
        )
    text = value.strip()
    if not text:
        raise AOIError(
            "No area was given; enter 'west,south,east,north' in degrees, GeoJSON, or a file to upload."
        )
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as err:
            raise AOIError(
                f"The area is not valid GeoJSON ({err.msg} at line {err.lineno}, column {err.colno}); "
                f"give {_GEOJSON_KINDS}."
            ) from err
        return _geojson_parts(document, "GeoJSON text"), "GeoJSON text"
    numbers = _numbers(text)
    if numbers is not None:
        return [_bbox_polygon(numbers, text)], "bbox"
    path = Path(text).expanduser()
    return read_aoi_file(path), path.name


def _numbers(text: str) -> list[float] | None:
    """The numbers in text separated by commas and/or whitespace, or None if any token is not one."""
    try:
        return [float(token) for token in text.replace(",", " ").split()]
    except ValueError:
        return None


def _bbox_polygon(numbers: list[float], text: str) -> Polygon:
    """[west, south, east, north] in degrees -> a rectangle."""
    if len(numbers) != 4 or not np.all(np.isfinite(numbers)):
        raise AOIError(
            f"The bbox {text!r} has {len(numbers)} numbers; give four finite ones, "
            "west,south,east,north in degrees."
        )
    west, south, east, north = numbers
    if not (-180 <= west <= 180 and -180 <= east <= 180 and -90 <= south <= 90 and -90 <= north <= 90):
        swapped = (south, west, north, east)  # typed as south,west,north,east (latitude first)?
        hint = (
            f" Latitude and longitude look swapped: did you mean {','.join(str(n) for n in swapped)}?"
            if -90 <= west < east <= 90 and -180 <= south < north <= 180
            else ""
        )
        raise AOIError(
            f"The bbox {text!r} is outside longitude -180..180 / latitude -90..90; give "
            f"west,south,east,north in degrees.{hint}"
        )
    if west > east and west - east < 180:  # a box that short the other way round: typed east first
        raise AOIError(
            f"The bbox {text!r} has west {west} east of east {east}: west and east look swapped; did you mean "
            f"{east},{south},{west},{north}?"
        )
    if west > east:
        raise AOIError(
            f"The bbox {text!r} has west {west} > east {east}, so it crosses the 180° meridian "
            "(antimeridian); split it into two parts, one on each side."
        )
    if south >= north or west == east:
        raise AOIError(
            f"The bbox {text!r} has no area (south {south}, north {north}, west {west}, east {east}); "
            "give west,south,east,north with south < north and west < east."
        )
    return box(west, south, east, north)


def _geojson_parts(document: dict[str, Any], where: str) -> list[BaseGeometry]:
    """A GeoJSON Geometry, Feature or FeatureCollection (with an optional legacy `crs` member) -> EPSG:4326."""
    kind = document.get("type")
    if kind == "FeatureCollection":
        features = document.get("features")
        if not isinstance(features, list) or not features:
            raise AOIError(f"{where} is a FeatureCollection with no features; add at least one polygon.")
        geometries = [f.get("geometry") if isinstance(f, dict) else f for f in features]
    elif kind == "Feature":
        geometries = [document.get("geometry")]
    elif isinstance(kind, str):
        geometries = [document]
    else:
        raise AOIError(f"{where} has no 'type' member; give {_GEOJSON_KINDS}.")
    try:
        parts = [shape(g) for g in geometries if g is not None]
    except (shapely.errors.ShapelyError, KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise AOIError(
            f"{where} holds a geometry that is not valid GeoJSON ({err}); give {_GEOJSON_KINDS}."
        ) from err
    crs = document.get("crs")
    name = crs.get("properties", {}).get("name") if isinstance(crs, dict) else None
    return to_wgs84(parts, name, where) if name else parts


def to_wgs84(geometries: list[BaseGeometry], crs: object, where: str) -> list[BaseGeometry]:
    """Reproject from `crs` (anything pyproj understands) to EPSG:4326 in (lon, lat) order."""
    try:
        source = CRS.from_user_input(crs)
    except (CRSError, TypeError) as err:
        raise AOIError(
            f"{where} has a coordinate system TerraSeg does not understand ({crs}); save it in EPSG:4326."
        ) from err
    if source.equals(_WGS84) or not geometries:
        return geometries
    transformer = Transformer.from_crs(source, _WGS84, always_xy=True)
    projected = shapely.transform(
        np.asarray(geometries, dtype=object), transformer.transform, interleaved=False
    )
    return list(projected)


def read_aoi_file(path: Path) -> list[BaseGeometry]:
    """Every feature's geometry of a GeoJSON, zipped Shapefile, GeoPackage (first layer), KML or Shapefile.

    Returns:
        The geometries in EPSG:4326, (lon, lat), not yet unioned or checked.
    """
    if not path.exists():
        raise AOIError(
            f"The AOI file {path} does not exist; give a GeoJSON, zipped Shapefile, GeoPackage or KML "
            "file, or 'west,south,east,north' in degrees."
        )
    suffix = path.suffix.lower()
    if suffix in _GEOJSON_SUFFIXES:
        return _read_geojson_file(path)
    if suffix not in VECTOR_FORMATS:
        raise AOIError(
            f"{path.name} has the unsupported AOI format {suffix or '(no suffix)'!r}; use .geojson, "
            ".zip (Shapefile), .gpkg or .kml."
        )
    kind = VECTOR_FORMATS[suffix]
    dataset = shapefile_in_zip(path) if suffix == ".zip" else str(path)
    try:
        meta, _, wkb, _ = pyogrio.raw.read(dataset, layer=0, columns=[], force_2d=True)
    except (DataSourceError, DataLayerError, RuntimeError, OSError, ValueError) as err:
        reason = plain_reason(err)
        raise AOIError(
            f"{path.name} cannot be read as a {kind} ({reason}); check that it is one, or export the "
            "area as GeoJSON."
        ) from err
    parts = [shapely.from_wkb(g) for g in wkb if g is not None]
    if not parts:
        raise AOIError(f"{path.name} holds no features with a geometry; add a polygon to it.")
    if meta.get("crs") is None:
        raise AOIError(f"{path.name} does not say which coordinate system it uses; save it with one.")
    return to_wgs84(parts, meta["crs"], path.name)


def _read_geojson_file(path: Path) -> list[BaseGeometry]:
    """A .geojson/.json file -> its geometries in EPSG:4326."""
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise AOIError(
            f"{path.name} is not valid GeoJSON ({err.msg} at line {err.lineno}); it should hold "
            f"{_GEOJSON_KINDS}."
        ) from err
    except UnicodeDecodeError as err:
        raise AOIError(
            f"{path.name} is not valid GeoJSON (not UTF-8 text); it should hold {_GEOJSON_KINDS}."
        ) from err
    if not isinstance(document, dict):
        raise AOIError(
            f"{path.name} is not valid GeoJSON (its top level is a {type(document).__name__}); it should "
            f"hold {_GEOJSON_KINDS}."
        )
    return _geojson_parts(document, path.name)


def shapefile_in_zip(path: Path) -> str:
    """The GDAL path of the Shapefile inside a zip; its .prj must be there."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise AOIError(
            f"{path.name} is not a readable zip file; zip the Shapefile's .shp, .shx, .dbf and .prj together."
        ) from err
    shapefiles = [n for n in names if n.lower().endswith(".shp")]
    if not shapefiles:
        raise AOIError(
            f"{path.name} holds no .shp file; zip the Shapefile's .shp, .shx, .dbf and .prj together."
        )
    stem = shapefiles[0][:-4].lower()
    if f"{stem}.prj" not in {n.lower() for n in names}:
        raise AOIError(
            f"The shapefile in {path.name} has no .prj file, so its coordinate system is unknown; add "
            "the .prj to the zip."
        )
    return f"/vsizip/{path.resolve()}/{shapefiles[0]}"


def validate_aoi(
    geometries: list[BaseGeometry],
    label: str,
    *,
    max_area_km2: float,
    max_vertices: int,
    fix_invalid: bool = False,
) -> AOI:
    """Check geometries in EPSG:4326 against every rule, union them, and return the AOI or raise AOIError.

    Collections are reduced to their polygons. Each polygon must be valid (or is repaired with
    `fix_invalid`); overlaps between polygons are allowed, since the union removes them.
    """
    polygons = _polygons(geometries, label)
    _check_lon_lat_range(polygons, label)
    # Before the union, whose cost grows with the vertices: the parts may not hold more than the limit either.
    _check_vertices(int(sum(shapely.get_num_coordinates(p) for p in polygons)), max_vertices, label)
    polygons = _valid_polygons(polygons, label, fix_invalid)
    merged = shapely.union_all(polygons)
    if not isinstance(merged, Polygon | MultiPolygon) or merged.is_empty:
        raise AOIError(f"The area from {label} has no area; draw or upload a polygon.")
    west, _, east, _ = merged.bounds
    if east - west > 180:
        raise AOIError(
            f"The area from {label} spans {east - west:.1f}° of longitude, so it crosses the 180° meridian "
            "(antimeridian); split it into two parts, one on each side."
        )
    vertices = int(shapely.get_num_coordinates(merged))
    _check_vertices(vertices, max_vertices, label)
    area_km2 = abs(_GEOD.geometry_area_perimeter(merged)[0]) / 1e6
    if area_km2 > max_area_km2:
        area_text, limit_text = _format_km2(area_km2, max_area_km2)
        raise AOIError(
            f"The area is {area_text} km²; the limit is {limit_text} km². Draw a smaller area or split it "
            "into parts."
        )
    log.info("AOI from %s: %.3f km2, %d vertices", label, area_km2, vertices)
    return AOI(geometry=merged, area_km2=area_km2, label=label)


def _check_vertices(vertices: int, max_vertices: int, label: str) -> None:
    if vertices > max_vertices:
        raise AOIError(
            f"The area from {label} has {vertices:,} vertices; the limit is {max_vertices:,}. Simplify "
            "it (e.g. to a 10 m tolerance) and try again."
        )


def _single_parts(geometries: list[BaseGeometry]) -> list[BaseGeometry]:
    """Multi-part geometries and collections, at any depth, exploded into non-empty single parts."""
    parts = shapely.get_parts(np.asarray(geometries, dtype=object))
    while parts.size and (shapely.get_type_id(parts) >= 4).any():  # 4..7: Multi* and GeometryCollection
        parts = shapely.get_parts(parts)
    return [p for p in parts if not p.is_empty]


def _polygons(geometries: list[BaseGeometry], label: str) -> list[Polygon]:
    """The non-empty polygons among the geometries; an AOIError if there are none."""
    parts = _single_parts(geometries)
    if not parts:
        raise AOIError(f"The area from {label} is empty; draw or upload a polygon.")
    polygons = [shapely.force_2d(p) for p in parts if isinstance(p, Polygon)]
    kinds = ", ".join(sorted({p.geom_type for p in parts if not isinstance(p, Polygon)}))
    if not polygons:
        raise AOIError(f"The area from {label} is not a polygon (found {kinds}); draw or upload a polygon.")
    if len(polygons) < len(parts):
        log.warning(
            "AOI from %s: dropped %d non-polygonal parts (%s)", label, len(parts) - len(polygons), kinds
        )
    return polygons


def _check_lon_lat_range(polygons: list[Polygon], label: str) -> None:
    """AOIError unless every coordinate is a finite longitude in -180..180 and latitude in -90..90."""
    coords = shapely.get_coordinates(np.asarray(polygons, dtype=object))
    lon, lat = coords[:, 0], coords[:, 1]
    if np.all(np.isfinite(coords)) and np.all(np.abs(lon) <= 180) and np.all(np.abs(lat) <= 90):
        return
    bounds = ", ".join(f"{v:.4f}" for v in (np.nanmin(lon), np.nanmin(lat), np.nanmax(lon), np.nanmax(lat)))
    raise AOIError(
        f"The area from {label} lies outside longitude -180..180 / latitude -90..90 (bounds {bounds}); "
        "is its coordinate system declared correctly?"
    )


def _valid_polygons(polygons: list[Polygon], label: str, fix_invalid: bool) -> list[Polygon]:
    """The polygons unchanged if valid; else an AOIError, or with `fix_invalid` their make_valid repair."""
    invalid = [p for p in polygons if not p.is_valid]
    if not invalid:
        return polygons
    reason = explain_validity(invalid[0])
    if not fix_invalid:
        which = "" if len(polygons) == 1 else f" ({len(invalid)} of its {len(polygons)} polygons)"
        raise InvalidPolygon(f"The area from {label} is invalid{which}: {reason}. Fix the polygon.")
    repaired = [p for p in _single_parts([shapely.make_valid(p) for p in invalid]) if isinstance(p, Polygon)]
    if not repaired:
        raise AOIError(
            f"The area from {label} is invalid ({reason}) and repairing it leaves no polygon; draw it again."
        )
    log.warning("AOI from %s: repaired %d invalid polygons (%s)", label, len(invalid), reason)
    return [p for p in polygons if p.is_valid] + repaired


def _format_km2(area_km2: float, limit_km2: float) -> tuple[str, str]:
    """Both numbers with thousands separators; decimals only for small numbers or where whole ones look equal."""
    decimals = 0 if min(area_km2, limit_km2) >= 10 else 2
    while decimals < 4 and f"{area_km2:.{decimals}f}" == f"{limit_km2:.{decimals}f}":
        decimals += 1
    return f"{area_km2:,.{decimals}f}", f"{limit_km2:,.{decimals}f}"
