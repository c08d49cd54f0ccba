"""AOILike (GeoJSON text/dict/file, zipped Shapefile, GeoPackage, KML, bbox text, shapely) -> a validated AOI.

Everything is brought to one Polygon or MultiPolygon in EPSG:4326 and checked once, here, at the boundary.
Each failure is an AOIError whose message says what is wrong, with numbers, and what to do.
"""

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pyogrio
import shapely
from pyogrio.errors import DataLayerError, DataSourceError
from pyproj import CRS, Geod
from shapely.geometry import MultiPolygon, Polygon, box, mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from core.errors import AOIError
from core.grid import project_geometry

AOILike: TypeAlias = str | Path | dict[str, Any] | BaseGeometry
VECTOR_SUFFIXES = (".gpkg", ".kml", ".shp", ".zip")
_GEOD = Geod(ellps="WGS84")


@dataclass(frozen=True)
class AOI:
    """A validated area of interest."""

    geometry: Polygon | MultiPolygon  # EPSG:4326, (lon, lat)
    area_km2: float  # geodesic, on the WGS84 ellipsoid
    label: str  # where it came from: a file name, "bbox", "GeoJSON text"

    def to_geojson(self) -> dict[str, Any]:
        """A GeoJSON geometry dict."""
        return dict(mapping(self.geometry))


def parse_aoi(
    value: AOILike, *, max_area_km2: float = 2500.0, max_vertices: int = 10_000, fix_invalid: bool = False
) -> AOI:
    """Read `value`, reproject it to EPSG:4326, union its parts into one (Multi)Polygon and validate it."""
    geometry, label = read_aoi(value)
    return validate_aoi(
        geometry, label, max_area_km2=max_area_km2, max_vertices=max_vertices, fix_invalid=fix_invalid
    )


def read_aoi(value: AOILike) -> tuple[BaseGeometry, str]:
    """Any accepted input -> (geometry in EPSG:4326, label). Validation comes after."""
    if isinstance(value, BaseGeometry):
        return value, "geometry"
    if isinstance(value, dict):
        return geojson_geometry(value, "GeoJSON"), "GeoJSON"
    text = str(value).strip()
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as err:
            raise AOIError(f"The area is not valid GeoJSON: {err.msg} at line {err.lineno}.") from err
        return geojson_geometry(document, "GeoJSON text"), "GeoJSON text"
    if looks_like_bbox(text):
        return bbox_geometry(text), "bbox"
    return read_aoi_file(Path(text).expanduser()), Path(text).name


def looks_like_bbox(text: str) -> bool:
    """Four numbers separated by commas and/or spaces."""
    parts = text.replace(",", " ").split()
    try:
        return len(parts) == 4 and all(np.isfinite(float(p)) for p in parts)
    except ValueError:
        return False


def bbox_geometry(text: str) -> Polygon:
    """'west,south,east,north' in degrees -> a rectangle."""
    west, south, east, north = (float(p) for p in text.replace(",", " ").split())
    if not (-180 <= west <= 180 and -180 <= east <= 180 and -90 <= south <= 90 and -90 <= north <= 90):
        raise AOIError(
            f"The bbox {text!r} is outside longitude -180..180 / latitude -90..90; give "
            "west,south,east,north in degrees."
        )
    if west > east:
        raise AOIError(
            f"The bbox {text!r} has west > east, so it crosses the antimeridian (180°); split it into "
            "two parts, one on each side."
        )
    if south >= north or west == east:
        raise AOIError(f"The bbox {text!r} is empty or has south >= north; give west,south,east,north.")
    return box(west, south, east, north)


def geojson_geometry(document: dict[str, Any], where: str) -> BaseGeometry:
    """A GeoJSON Geometry, Feature or FeatureCollection (with an optional legacy `crs` member) -> EPSG:4326."""
    kind = document.get("type")
    try:
        if kind == "FeatureCollection":
            parts = [shape(f["geometry"]) for f in document.get("features", []) if f.get("geometry")]
            geometry = shapely.union_all(parts) if parts else Polygon()
        elif kind == "Feature":
            geometry = shape(document["geometry"]) if document.get("geometry") else Polygon()
        elif kind is not None:
            geometry = shape(document)
        else:
            raise AOIError(
                f"{where} has no 'type'; expected a GeoJSON Geometry, Feature or FeatureCollection."
            )
    except (KeyError, TypeError, ValueError, AttributeError, shapely.errors.GEOSException) as err:
        raise AOIError(f"{where} is not valid GeoJSON geometry ({err}).") from err
    crs_name = (
        document.get("crs", {}).get("properties", {}).get("name")
        if isinstance(document.get("crs"), dict)
        else None
    )
    if crs_name and not geometry.is_empty:
        geometry = to_wgs84(geometry, crs_name, where)
    return geometry


def to_wgs84(geometry: BaseGeometry, crs: object, where: str) -> BaseGeometry:
    """Reproject from `crs` (anything pyproj understands) to EPSG:4326, lon/lat order."""
    try:
        source = CRS.from_user_input(crs)
    except Exception as err:  # pyproj's CRSError, or a type it does not take
        raise AOIError(f"{where} has a coordinate system TerraSeg does not understand: {crs}.") from err
    if source.equals(CRS.from_epsg(4326)):
        return geometry
    return project_geometry(geometry, source.to_wkt(), "EPSG:4326")


def read_aoi_file(path: Path) -> BaseGeometry:
    """Read every feature of a GeoJSON, zipped Shapefile, GeoPackage, KML or Shapefile; union them in EPSG:4326."""
    if not path.exists():
        raise AOIError(
            f"The AOI file {path} does not exist; give a GeoJSON, zipped Shapefile, GeoPackage or KML "
            "file, or 'west,south,east,north' in degrees."
        )
    suffix = path.suffix.lower()
    if suffix in (".geojson", ".json"):
        try:
            document = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise AOIError(f"{path.name} is not valid GeoJSON ({err}).") from err
        if not isinstance(document, dict):
            raise AOIError(f"{path.name} is not a GeoJSON object.")
        return geojson_geometry(document, path.name)
    if suffix not in VECTOR_SUFFIXES:
        raise AOIError(
            f"{path.name}: unsupported AOI format {suffix!r}; use .geojson, .zip (Shapefile), .gpkg or .kml."
        )
    dataset = str(path)
    if suffix == ".zip":
        dataset = _shapefile_in_zip(path)
    try:
        meta, _, wkb, _ = pyogrio.raw.read(dataset, read_geometry=True, columns=[])
    except (DataSourceError, DataLayerError, OSError, ValueError) as err:
        raise AOIError(f"{path.name} cannot be read as a vector file ({str(err).splitlines()[0]}).") from err
    parts = [shapely.from_wkb(g) for g in wkb if g is not None]
    if not parts:
        raise AOIError(f"{path.name} holds no features with a geometry.")
    geometry = shapely.union_all([shapely.force_2d(p) for p in parts])
    crs = meta.get("crs")
    if crs is None:
        raise AOIError(f"{path.name} does not say which coordinate system it uses; save it with one.")
    return to_wgs84(geometry, crs, path.name)


def _shapefile_in_zip(path: Path) -> str:
    """The GDAL path of the Shapefile inside a zip; its .prj must be there."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile as err:
        raise AOIError(f"{path.name} is not a readable zip file.") from err
    shapefiles = [n for n in names if n.lower().endswith(".shp")]
    if not shapefiles:
        raise AOIError(
            f"{path.name} holds no .shp file; zip the Shapefile's .shp, .shx, .dbf and .prj together."
        )
    stem = shapefiles[0][:-4]
    if not any(n.lower() == f"{stem.lower()}.prj" for n in names):
        raise AOIError(
            f"The shapefile in {path.name} has no .prj file, so its coordinate system is unknown; add "
            "the .prj to the zip."
        )
    return f"/vsizip/{path.resolve()}/{shapefiles[0]}"


def count_vertices(geometry: BaseGeometry) -> int:
    """Coordinates in all rings of all polygons."""
    return int(shapely.get_num_coordinates(geometry))


def validate_aoi(
    geometry: BaseGeometry, label: str, *, max_area_km2: float, max_vertices: int, fix_invalid: bool = False
) -> AOI:
    """Check a geometry in EPSG:4326 against every rule; return the AOI or raise AOIError."""
    if geometry.is_empty:
        raise AOIError(f"The area from {label} is empty; draw or upload a polygon.")
    geometry = polygonal_part(geometry, label)
    if not geometry.is_valid:
        if not fix_invalid:
            raise AOIError(
                f"The area from {label} is invalid: {explain_validity(geometry)}. Fix the polygon, or "
                "repair it automatically with --fix-aoi."
            )
        geometry = polygonal_part(shapely.make_valid(geometry), label)
    west, south, east, north = geometry.bounds
    if west < -180 or east > 180 or south < -90 or north > 90:
        raise AOIError(
            f"The area from {label} lies outside longitude -180..180 / latitude -90..90 "
            f"(bounds {west:.4f}, {south:.4f}, {east:.4f}, {north:.4f}); is its coordinate system "
            "declared correctly?"
        )
    if east - west > 180:
        raise AOIError(
            f"The area from {label} spans {east - west:.1f}° of longitude, so it crosses the antimeridian "
            "(180°); split it into two parts, one on each side."
        )
    vertices = count_vertices(geometry)
    if vertices > max_vertices:
        raise AOIError(
            f"The area from {label} has {vertices:,} vertices; the limit is {max_vertices:,}. Simplify "
            "it (e.g. to 10 m tolerance) and try again."
        )
    area_km2 = abs(_GEOD.geometry_area_perimeter(geometry)[0]) / 1e6
    if area_km2 > max_area_km2:
        raise AOIError(
            f"The area is {area_km2:,.0f} km²; the limit is {max_area_km2:,.0f} km². Draw a smaller "
            "area or split it into parts."
        )
    return AOI(geometry=geometry, area_km2=area_km2, label=label)


def polygonal_part(geometry: BaseGeometry, label: str) -> Polygon | MultiPolygon:
    """The polygons of a geometry (collections are reduced to them); an error if there are none."""
    if isinstance(geometry, Polygon | MultiPolygon):
        return geometry
    parts = [
        g for g in getattr(geometry, "geoms", []) if isinstance(g, Polygon | MultiPolygon) and not g.is_empty
    ]
    if not parts:
        kinds = sorted({g.geom_type for g in getattr(geometry, "geoms", [geometry])})
        raise AOIError(
            f"The area from {label} is not a polygon (found {', '.join(kinds)}); draw or upload a polygon."
        )
    merged = shapely.union_all(parts)
    if not isinstance(merged, Polygon | MultiPolygon):
        raise AOIError(f"The area from {label} is not a polygon.")
    return merged
