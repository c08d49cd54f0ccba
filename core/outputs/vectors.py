"""Vector outputs of a class map: its patches as polygons (GeoPackage, GeoParquet) and class areas per zone.

`polygonise` first applies a minimum mapping unit with `rasterio.features.sieve` (patches smaller than it take the
class of their largest neighbour, as GIS tools' sieve filters do), then traces every patch of one class with
`rasterio.features.shapes` (4-connected, as the sieve) and simplifies each polygon on its own (Douglas-Peucker with
its topology kept; neighbours may then overlap or leave slivers of at most the tolerance between them). No-data
pixels (outside the AOI or the imagery, masked clouds) become no polygon. Geometries stay in the map's CRS (the
job's UTM grid), so areas and the tolerance are in metres.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio.raw
import rasterio
import rasterio.features
import shapely
from pyproj import CRS
from rasterio.warp import transform_geom
from shapely.geometry import Polygon, mapping, shape
from shapely.geometry.base import BaseGeometry

from core.errors import AppError
from core.outputs.overlay import read_classes

MAX_POLYGONS = 200_000  # more is not a map anyone reads as vectors: raise the minimum mapping unit instead


@dataclass(frozen=True)
class VectorOptions:
    """How to turn the class map into polygons: the minimum mapping unit and the simplification tolerance."""

    min_area_m2: float = 0.0
    simplify_m: float = 0.0

    def __post_init__(self) -> None:
        if self.min_area_m2 < 0 or self.simplify_m < 0:
            raise AppError("The minimum mapping unit and the simplification tolerance cannot be negative.")


@dataclass(frozen=True)
class ClassPolygons:
    """The class map's patches: one polygon per patch with its class value, name and area."""

    crs_wkt: str
    geometries: list[Polygon]
    values: list[int]
    names: list[str]

    @property
    def area_m2(self) -> list[float]:
        return [g.area for g in self.geometries]


def polygonise(classes_path: Path, options: VectorOptions) -> ClassPolygons:
    """The patches of a class COG as polygons, after the minimum mapping unit and the simplification."""
    names = {c.value: c.name for c in read_classes(classes_path)}
    with rasterio.open(classes_path) as src:
        classes = src.read(1)
        transform, crs, nodata = src.transform, src.crs, src.nodata
    valid = classes != nodata if nodata is not None else np.ones(classes.shape, dtype=bool)
    pixel_m2 = abs(transform.a * transform.e - transform.b * transform.d)
    min_pixels = int(np.ceil(options.min_area_m2 / pixel_m2)) if options.min_area_m2 > 0 else 0
    if min_pixels > 1:
        sieved = rasterio.features.sieve(classes, size=min_pixels, mask=valid, connectivity=4)
        # A patch enclosed by no-data keeps its class: the sieve must not turn valid pixels into no-data.
        classes = np.where(valid & (sieved != nodata), sieved, classes) if nodata is not None else sieved
    geometries: list[Polygon] = []
    values: list[int] = []
    for geojson, value in rasterio.features.shapes(classes, mask=valid, transform=transform, connectivity=4):
        polygon = shape(geojson)
        if options.simplify_m > 0:
            polygon = polygon.simplify(options.simplify_m, preserve_topology=True)
        if polygon.is_empty:
            continue
        geometries.append(polygon)
        values.append(int(value))
        if len(geometries) > MAX_POLYGONS:
            raise AppError(
                f"The map has more than {MAX_POLYGONS:,} patches; set a larger minimum mapping unit "
                f"(now {options.min_area_m2:,.0f} m²)."
            )
    return ClassPolygons(crs.to_wkt(), geometries, values, [names.get(v, f"class {v}") for v in values])


def write_geopackage(polygons: ClassPolygons, path: Path) -> None:
    """One layer 'classes' (value, class, area_m2, Polygon geometry in the map's CRS)."""
    pyogrio.raw.write(
        str(path),
        geometry=shapely.to_wkb(np.array(polygons.geometries, dtype=object)),
        field_data=[
            np.array(polygons.values, dtype=np.int32),
            np.array(polygons.names, dtype=object),
            np.array(polygons.area_m2, dtype=np.float64),
        ],
        fields=["value", "class", "area_m2"],
        layer="classes",
        driver="GPKG",
        geometry_type="Polygon",
        crs=polygons.crs_wkt,
    )


def write_geoparquet(polygons: ClassPolygons, path: Path) -> None:
    """GeoParquet 1.0: the same columns, the geometry as WKB, the CRS as PROJJSON in the 'geo' metadata."""
    geometries = np.array(polygons.geometries, dtype=object)
    bounds = shapely.total_bounds(geometries) if len(geometries) else [0.0, 0.0, 0.0, 0.0]
    geo = {
        "version": "1.0.0",
        "primary_column": "geometry",
        "columns": {
            "geometry": {
                "encoding": "WKB",
                "geometry_types": ["Polygon"],
                "crs": CRS.from_wkt(polygons.crs_wkt).to_json_dict(),
                "bbox": [float(b) for b in bounds],
            }
        },
    }
    table = pa.table(
        {
            "value": pa.array(polygons.values, pa.int32()),
            "class": pa.array(polygons.names, pa.string()),
            "area_m2": pa.array(polygons.area_m2, pa.float64()),
            "geometry": pa.array(list(shapely.to_wkb(geometries)), pa.binary()),
        }
    ).replace_schema_metadata({"geo": json.dumps(geo)})
    pq.write_table(table, path)


@dataclass(frozen=True)
class ZoneArea:
    """The area of one class inside one zone (a feature of the AOI)."""

    zone: str
    value: int
    name: str
    pixels: int
    area_ha: float
    percent: float  # of the zone's mapped (valid) pixels


def zonal_areas(classes_path: Path, zones: list[tuple[str, BaseGeometry]]) -> list[ZoneArea]:
    """Per zone (name, geometry in EPSG:4326), the pixels, hectares and share of each class whose pixel centre
    lies in it (the same rule the map's own areas use); no-data pixels count for no class."""
    classes_info = read_classes(classes_path)
    with rasterio.open(classes_path) as src:
        classes = src.read(1)
        transform, crs, nodata = src.transform, src.crs, src.nodata
    pixel_ha = abs(transform.a * transform.e - transform.b * transform.d) / 1e4
    rows: list[ZoneArea] = []
    for name, geometry in zones:
        projected = transform_geom("EPSG:4326", crs, mapping(geometry))
        inside = rasterio.features.geometry_mask(
            [projected], out_shape=classes.shape, transform=transform, invert=True
        )
        if nodata is not None:
            inside &= classes != nodata
        counts = np.bincount(classes[inside].ravel(), minlength=256)
        total = int(counts.sum())
        for info in classes_info:
            pixels = int(counts[info.value])
            rows.append(
                ZoneArea(
                    name,
                    info.value,
                    info.name,
                    pixels,
                    round(pixels * pixel_ha, 4),
                    round(100 * pixels / total, 2) if total else 0.0,
                )
            )
    return rows
