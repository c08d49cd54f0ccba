import pytest
from shapely.geometry import box

from core.geometry.grid import grid_for_aoi, project_geometry, utm_epsg


@pytest.mark.parametrize(
    ("lon", "lat", "epsg"),
    [
        (14.5, 45.9, 32633),
        (9.0, 48.0, 32632),
        (-70.5, -33.4, 32719),
        (179.9, 10.0, 32660),
        (-180.0, 0.0, 32601),
    ],
)
def test_utm_epsg_picks_the_zone_and_hemisphere(lon, lat, epsg):
    assert utm_epsg(lon, lat) == epsg


def test_grid_is_10m_snapped_to_the_lattice_and_covers_the_aoi():
    aoi = box(14.5516, 45.8661, 14.5640, 45.8748)
    grid = grid_for_aoi(aoi)
    assert grid.crs == "EPSG:32633" and grid.resolution_m == 10.0
    left, bottom, right, top = grid.bounds
    assert all(v % 10 == 0 for v in (left, bottom, right, top))
    aoi_utm = project_geometry(aoi, "EPSG:4326", grid.crs)
    assert box(left, bottom, right, top).contains(aoi_utm)
    assert (right - left) - (
        aoi_utm.bounds[2] - aoi_utm.bounds[0]
    ) < 20  # snapped outward by < 1 px each side


def test_an_aoi_spanning_two_utm_zones_gets_one_grid_in_its_centroid_zone():
    aoi = box(11.9, 47.0, 12.3, 47.2)  # zones 32 and 33 meet at 12 E; centroid at 12.1 E is in zone 33
    grid = grid_for_aoi(aoi)
    assert grid.crs == "EPSG:32633"
    assert box(*grid.bounds).contains(project_geometry(aoi, "EPSG:4326", grid.crs))
    assert grid.width > 3000  # ~30 km at 10 m, one grid across the zone boundary
