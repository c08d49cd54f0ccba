"""The target grid of a job: the UTM zone of the AOI centroid, 10 m pixels, snapped to a 10 m lattice."""

import math
from dataclasses import dataclass

import shapely
from affine import Affine
from pyproj import CRS, Transformer
from shapely.geometry.base import BaseGeometry


@dataclass(frozen=True)
class Grid:
    """A north-up raster grid: `crs` (EPSG code string), `transform` of the top-left corner, size in pixels."""

    crs: str
    transform: Affine
    width: int
    height: int

    @property
    def resolution_m(self) -> float:
        """Pixel size in metres (square pixels)."""
        return float(self.transform.a)

    @property
    def pixel_area_m2(self) -> float:
        """Area of one pixel in square metres."""
        return float(abs(self.transform.a * self.transform.e))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the grid's CRS."""
        left, top = self.transform.c, self.transform.f
        return left, top + self.height * self.transform.e, left + self.width * self.transform.a, top

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready description for run records."""
        return {
            "crs": self.crs,
            "transform": list(self.transform)[:6],
            "width": self.width,
            "height": self.height,
            "resolution_m": self.resolution_m,
        }


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS84 UTM zone holding (lon, lat): 326zz north, 327zz south."""
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    return (32600 if lat >= 0 else 32700) + zone


def project_geometry(geometry: BaseGeometry, src_crs: str, dst_crs: str) -> BaseGeometry:
    """Reproject a shapely geometry between two CRSs (x = easting/longitude first)."""
    transformer = Transformer.from_crs(
        CRS.from_user_input(src_crs), CRS.from_user_input(dst_crs), always_xy=True
    )
    return shapely.transform(geometry, transformer.transform, interleaved=False)


def grid_for_aoi(aoi_geometry_4326: BaseGeometry, resolution_m: float = 10.0) -> Grid:
    """Cover an AOI (lon/lat) with a grid in its centroid's UTM zone, edges snapped outward to the lattice.

    An AOI spanning two zones still gets one grid, in the centroid's zone; the far side is slightly skewed
    relative to its own zone, which rasterio's warping handles when reading.
    """
    centroid = aoi_geometry_4326.centroid
    crs = f"EPSG:{utm_epsg(centroid.x, centroid.y)}"
    left, bottom, right, top = project_geometry(aoi_geometry_4326, "EPSG:4326", crs).bounds
    left = math.floor(left / resolution_m) * resolution_m
    bottom = math.floor(bottom / resolution_m) * resolution_m
    right = math.ceil(right / resolution_m) * resolution_m
    top = math.ceil(top / resolution_m) * resolution_m
    width = max(1, round((right - left) / resolution_m))
    height = max(1, round((top - bottom) / resolution_m))
    return Grid(
        crs=crs,
        transform=Affine(resolution_m, 0.0, left, 0.0, -resolution_m, top),
        width=width,
        height=height,
    )
