"""Sentinel-1 GRD: parsing the real SAFE metadata and calibration tables, calibrating and warping a measurement
of the real size to sigma0 dB on the job grid, and reading pyroSAR's real dB GeoTIFF."""

import shutil
import zipfile
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform as transform_points
from rasterio.windows import Window
from shapely.geometry import Point, Polygon

from core.config import Settings
from core.errors import SourceError
from core.geometry.aoi import parse_aoi
from core.geometry.grid import grid_for_aoi
from core.jobs.progress import RunContext
from core.mapping.reading import SceneReader
from core.sources.download import fetch_scenes
from core.sources.local import LocalSource
from core.sources.sentinel1 import (
    NODATA_DB,
    parse_annotation,
    parse_calibration,
    read_s1_safe,
    sigma0_linear,
    to_db,
)
from tests.safe_factory import (
    S1_DB_FILE,
    S1_DIR,
    S1_PRODUCT,
    S1_WINDOW,
    build_s1_grd,
    s1_aoi_geojson,
    s1_expected_db,
    s1_target_db,
)

REAL_ZIP = S1_DIR / f"{S1_PRODUCT}.zip"
STEM = "s1a-iw-grd-vv-20210119t031653-20210119t031718-036201-043ed0-001"


def real_xml(name: str) -> bytes:
    with zipfile.ZipFile(REAL_ZIP) as archive:
        return archive.read(f"{S1_PRODUCT}.SAFE/annotation/{name}")


@pytest.fixture(scope="module")
def grd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_s1_grd(tmp_path_factory.mktemp("s1") / "products", S1_WINDOW, s1_target_db)


def test_the_real_calibration_table_parses_and_interpolates_bilinearly():
    lut = parse_calibration(real_xml(f"calibration/calibration-{STEM}.xml"))
    assert lut.sigma_nought.shape == (27, 650) and lut.absolute_constant == 1.0
    assert lut.lines[0] == 0 and (np.diff(lut.lines) > 0).all() and lut.pixels[:3].tolist() == [0, 40, 80]
    assert 100 < lut.sigma_nought.min() < lut.sigma_nought.max() < 2000  # GRD sigmaNought gains
    at_nodes = lut.interpolate(lut.lines[:3].astype(float), lut.pixels[:4].astype(float))
    np.testing.assert_allclose(at_nodes, lut.sigma_nought[:3, :4])
    between = lut.interpolate(np.array([lut.lines[0] / 2 + lut.lines[1] / 2]), np.array([20.0]))
    np.testing.assert_allclose(between[0, 0], lut.sigma_nought[:2, :2].mean())


def test_the_real_annotation_gives_size_and_geolocation_grid_inside_the_footprint():
    geolocation = parse_annotation(real_xml(f"{STEM}.xml"))
    assert (geolocation.lines, geolocation.samples) == (16854, 25931)
    assert geolocation.points.shape == (210, 5)
    footprint = Polygon([(34.613232, -19.203491), (32.223114, -18.643482), (32.608009, -17.144775),
                         (34.979454, -17.698183)]).buffer(0.02)  # fmt: skip
    # the manifest's footprint is a simplified quadrilateral: one edge point lies 0.012 degrees outside it
    assert all(footprint.contains(Point(lon, lat)) for _, _, lon, lat, _ in geolocation.points)


def test_calibration_is_dn_squared_over_the_gain_squared_in_db():
    dn = np.array([[0, 100, 1000]], np.uint16)
    power = sigma0_linear(dn, np.full(dn.shape, 500.0))
    np.testing.assert_allclose(
        to_db(power)[0, 1:], 10 * np.log10(np.array([100, 1000]) ** 2 / 500**2), rtol=1e-6
    )
    assert to_db(power)[0, 0] == NODATA_DB


def test_the_real_product_without_measurements_is_refused_with_the_reason(tmp_path):
    shutil.copy(REAL_ZIP, tmp_path)
    with pytest.raises(SourceError, match="lacks the measurement file of VV.*download it again"):
        read_s1_safe(tmp_path / REAL_ZIP.name)


def test_a_grd_product_is_calibrated_and_warped_onto_the_job_grid(grd, tmp_path):
    scene = read_s1_safe(grd)
    assert scene.sensor == "S1" and scene.processing_level == "GRD" and set(scene.bands) == {"VV", "VH"}
    assert scene.acquired == datetime(2021, 1, 19, 3, 16, 53, 799379, tzinfo=UTC)
    assert scene.extra["pass"] == "DESCENDING"
    aoi = parse_aoi(s1_aoi_geojson())
    [found] = LocalSource(grd.parent, "s1-folder").search(
        aoi.geometry, date(2021, 1, 1), date(2021, 1, 31), "S1"
    )
    [calibrated] = fetch_scenes(
        [found], {"VV", "VH"}, aoi.geometry, Settings(cache_dir=tmp_path / "cache"), RunContext(tmp_path)
    )
    grid = grid_for_aoi(aoi.geometry)
    with SceneReader([calibrated], ("VV", "VH"), grid) as reader:
        db, valid = reader.read(Window(0, 0, grid.width, grid.height))
    expected, inside = s1_expected_db(grid, "VV")
    inside &= valid
    assert inside.sum() > 0.5 * valid.size
    error = np.abs(db[0][inside] - expected[inside])
    assert np.median(error) < 0.1 and np.percentile(error, 99) < 0.3
    # VH DNs are small (about 30), so their rounding costs up to 0.15 dB here and there
    difference = np.abs((db[0] - db[1])[inside] - 7.0)
    assert np.median(difference) < 0.05 and difference.max() < 0.2
    with rasterio.open(calibrated.bands["VV"].path) as cached:
        assert (
            cached.tags(1)["UNITS"] == "dB"
            and cached.nodata == NODATA_DB
            and cached.crs.to_string() == grid.crs
        )


def test_pyrosar_db_geotiffs_are_read_by_name_and_polarisations_join(tmp_path):
    shutil.copy(S1_DB_FILE, tmp_path)
    shutil.copy(S1_DB_FILE, tmp_path / S1_DB_FILE.name.replace("_VV_", "_VH_"))
    with rasterio.open(S1_DB_FILE) as src:
        bounds, crs = src.bounds, src.crs
        middle_x, middle_y = (bounds.left + bounds.right) / 2, (bounds.bottom + bounds.top) / 2
    xs, ys = [middle_x - 1500, middle_x + 1500], [middle_y - 1000, middle_y + 1000]
    lon, lat = transform_points(crs, "EPSG:4326", xs, ys)
    aoi = parse_aoi(f"{lon[0]},{lat[0]},{lon[1]},{lat[1]}")
    [scene] = LocalSource(tmp_path, "pyrosar").search(aoi.geometry, date(2015, 3, 1), date(2015, 3, 31), "S1")
    assert scene.processing_level == "GRD" and set(scene.bands) == {"VV", "VH"}
    assert scene.acquired == datetime(2015, 3, 9, 17, 30, 17, tzinfo=UTC)
    assert scene.bands["VV"].nodata == -99
    grid = grid_for_aoi(aoi.geometry)
    with SceneReader([scene], ("VV", "VH"), grid) as reader:
        db, valid = reader.read(Window(0, 0, grid.width, grid.height))
    assert valid.mean() > 0.99
    assert db[0][valid].min() > -27 and db[0][valid].max() < 1.5  # the file's own statistics (aux.xml)
    np.testing.assert_array_equal(db[0], db[1])
    with rasterio.open(S1_DB_FILE) as src:  # same values as the file over the AOI, to the resampling
        window = rasterio.windows.from_bounds(xs[0], ys[0], xs[1], ys[1], src.transform)
        direct = src.read(1, window=window)
    assert abs(np.mean(db[0][valid]) - np.mean(direct[direct != -99])) < 0.3
