import numpy as np
import pytest
from affine import Affine
from rasterio.windows import Window

from core.geometry.grid import Grid
from core.mapping.reading import SceneReader
from core.sources.geotiff import read_geotiff_scene
from tests.conftest import write_scene


def _grid(left=465_000.0, top=5_080_000.0, width=64, height=64, crs="EPSG:32633"):
    return Grid(crs, Affine(10.0, 0, left, 0, -10.0, top), width, height)


def test_aligned_read_gives_reflectance_from_dn_scale_and_offset(tmp_path):
    data = np.arange(13 * 8 * 8, dtype=np.uint16).reshape(13, 8, 8) + 1000
    scene = read_geotiff_scene(write_scene(tmp_path / "s.tif", data))
    with SceneReader([scene], ("B04", "B02"), _grid(width=8, height=8)) as reader:
        reflectance, valid = reader.read(Window(0, 0, 8, 8))
    np.testing.assert_allclose(reflectance[0], data[3] * 1e-4, rtol=1e-6)
    np.testing.assert_allclose(reflectance[1], data[1] * 1e-4, rtol=1e-6)
    assert valid.all()


def test_pixels_outside_the_scene_and_nodata_pixels_are_invalid_not_fake_values(tmp_path):
    data = np.full((13, 8, 8), 2000, np.uint16)
    data[:, 0, 0] = 0  # nodata
    scene = read_geotiff_scene(write_scene(tmp_path / "s.tif", data))
    grid = _grid(left=465_000.0 - 40, width=16, height=8)  # 4 px of grid left of the scene
    with SceneReader([scene], ("B02",), grid) as reader:
        reflectance, valid = reader.read(Window(0, 0, 16, 8))
    assert not valid[:, :4].any() and not valid[0, 4]
    assert valid[1:, 4:12].all() and not valid[:, 12:].any()
    np.testing.assert_allclose(reflectance[0, 1:, 4:12], 0.2, rtol=1e-6)


def test_a_scene_in_another_crs_is_warped_onto_the_grid(tmp_path):
    # The same field of constant reflectance, stored in UTM 33N and read onto a UTM 34N grid.
    data = np.full((13, 64, 64), 3000, np.uint16)
    scene = read_geotiff_scene(write_scene(tmp_path / "s.tif", data, origin=(700_000.0, 5_000_000.0)))
    grid = Grid("EPSG:32634", Affine(10.0, 0, 228_300.0, 0, -10.0, 5_002_500.0), 20, 20)
    with SceneReader([scene], ("B02", "B8A"), grid) as reader:
        reflectance, valid = reader.read(Window(0, 0, 20, 20))
    assert valid.sum() > 100
    np.testing.assert_allclose(reflectance[:, valid], 0.3, rtol=1e-5)


def test_a_warped_pixel_reads_the_same_whatever_the_grid_around_it(tmp_path):
    """A scene in UTM 34N read onto two UTM 33N grids, one inside the other at an odd offset, and in windows of
    different shapes: the common pixels get the very same values (GDAL warps block by block of its virtual
    raster, so that raster starts where the scene starts, not where the grid does)."""
    data = np.random.default_rng(0).integers(500, 5000, (13, 700, 600)).astype(np.uint16)
    scene = read_geotiff_scene(
        write_scene(tmp_path / "s34.tif", data, crs="EPSG:32634", origin=(264_000.0, 5_102_000.0))
    )
    big = Grid("EPSG:32633", Affine(10.0, 0, 729_000.0, 0, -10.0, 5_101_000.0), 700, 600)
    small = Grid(
        "EPSG:32633", Affine(10.0, 0, 729_000.0 + 10 * 137, 0, -10.0, 5_101_000.0 - 10 * 91), 333, 257
    )
    with SceneReader([scene], ("B02", "B11"), big) as reader:
        whole, whole_valid = reader.read(Window(0, 0, 700, 600))
    with SceneReader([scene], ("B02", "B11"), small) as reader:
        parts = [
            reader.read(Window(c, r, w, h))
            for r, c, h, w in ((0, 0, 100, 333), (100, 0, 157, 170), (100, 170, 157, 163))
        ]
    inside = (slice(None), slice(91, 91 + 257), slice(137, 137 + 333))
    assert whole_valid[inside[1:]].mean() > 0.5  # mostly inside the scene
    assert np.array_equal(parts[0][0], whole[inside][:, :100])
    assert np.array_equal(parts[1][0], whole[inside][:, 100:, :170])
    assert np.array_equal(parts[2][0], whole[inside][:, 100:, 170:])
    assert np.array_equal(np.concatenate([parts[1][1], parts[2][1]], axis=1), whole_valid[inside[1:]][100:])


def test_a_20m_band_is_resampled_onto_the_10m_grid(tmp_path):
    data = np.tile(np.linspace(1000, 3000, 16, dtype=np.float32), (13, 16, 1)).astype(np.uint16)
    scene = read_geotiff_scene(write_scene(tmp_path / "s20.tif", data, resolution_m=20.0))
    with SceneReader([scene], ("B11",), _grid(width=32, height=32)) as reader:
        reflectance, valid = reader.read(Window(0, 0, 32, 32))
    assert valid[2:-2, 2:-2].all()
    row = reflectance[0, 16, 2:-2]
    assert np.all(np.diff(row) >= -1e-6) and 0.1 <= row.min() < row.max() <= 0.3  # bilinear, monotonic


def test_same_day_scenes_are_mosaicked_first_valid_wins(tmp_path):
    left = np.full((13, 8, 8), 1000, np.uint16)
    right = np.full((13, 8, 8), 2000, np.uint16)
    a = read_geotiff_scene(write_scene(tmp_path / "a.tif", left))
    b = read_geotiff_scene(write_scene(tmp_path / "b.tif", right, origin=(465_040.0, 5_080_000.0)))
    with SceneReader([a, b], ("B03",), _grid(width=12, height=8)) as reader:
        reflectance, valid = reader.read(Window(0, 0, 12, 8))
    assert valid.all()
    np.testing.assert_allclose(reflectance[0, :, :8], 0.1, rtol=1e-6)
    np.testing.assert_allclose(reflectance[0, :, 8:], 0.2, rtol=1e-6)


def test_reader_refuses_scenes_without_the_needed_bands(tmp_path):
    scene = read_geotiff_scene(
        write_scene(tmp_path / "s.tif", np.ones((2, 8, 8), np.uint16), bands=("B02", "B03"))
    )
    with pytest.raises(ValueError, match="B04"):
        SceneReader([scene], ("B02", "B04"), _grid())
