import numpy as np
import pytest
from affine import Affine
from rasterio.windows import Window

from core.geometry.grid import Grid
from core.geometry.tiling import (
    TileLayout,
    blend_weights,
    fill_nodata,
    grid_layout,
    lattice_layout,
    pad_tile,
    tile_windows,
)


@pytest.mark.parametrize(
    ("height", "width", "size", "overlap"),
    [(100, 90, 32, 8), (64, 64, 64, 0), (10, 300, 32, 4), (513, 257, 256, 32)],
)
def test_tile_windows_cover_every_pixel_within_the_grid(height, width, size, overlap):
    hits = np.zeros((height, width), int)
    for window in tile_windows(height, width, size, overlap):
        assert window.row_off >= 0 and window.col_off >= 0
        assert window.row_off + window.height <= height and window.col_off + window.width <= width
        hits[window.toslices()] += 1
    assert hits.min() >= 1


def test_tile_windows_are_row_major_and_edge_windows_shift_inward():
    windows = tile_windows(100, 100, 40, 10)
    starts = [(int(w.row_off), int(w.col_off)) for w in windows]
    assert starts == sorted(starts)
    assert {r for r, _ in starts} == {0, 30, 60}  # the last one shifted from 90 to 60 so it stays inside


def test_a_grid_smaller_than_a_tile_gets_one_window_of_its_own_size():
    [window] = tile_windows(101, 100, 256, 32)
    assert (window.height, window.width) == (101, 100)


@pytest.mark.parametrize("overlap", [-1, 32, 40])
def test_tile_windows_reject_bad_overlap(overlap):
    with pytest.raises(ValueError, match="overlap"):
        tile_windows(100, 100, 32, overlap)


def test_blend_weights_are_positive_and_sum_smoothly_across_an_overlap():
    size, overlap = 64, 16
    weights = blend_weights(size, overlap)
    assert weights.min() > 0 and weights.max() == 1
    line = np.zeros(size * 2 - overlap)
    line[:size] += weights[size // 2]
    line[size - overlap :] += weights[size // 2]
    seam = line[size - overlap : size]
    np.testing.assert_allclose(seam, 1.0, atol=1e-6)  # sin^2 + cos^2: no bump or dip at the seam


def test_pad_tile_mirrors_up_to_size_and_keeps_the_original_corner():
    tile = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
    padded = pad_tile(tile, 8)
    assert padded.shape == (2, 8, 8)
    np.testing.assert_array_equal(padded[:, :5, :3], tile)
    np.testing.assert_array_equal(padded[:, 5, :3], tile[:, 4])  # symmetric: the edge row repeats


def _global_tiles(layout: TileLayout) -> set[tuple[float, float]]:
    """Each tile's top-left corner in CRS metres."""
    context = layout.context.transform
    return {(context.c + t.read.col_off * 10, context.f - t.read.row_off * 10) for t in layout.tiles}


@pytest.mark.parametrize(("height", "width"), [(1, 1), (98, 97), (700, 650), (1000, 3)])
def test_lattice_tiles_cover_the_grid_once_cropped_and_read_whole_tiles_from_the_context(height, width):
    grid = Grid("EPSG:32633", Affine(10, 0, 465_200, 0, -10, 5_080_240), width, height)
    layout = lattice_layout(grid, 256, 32)
    hits = np.zeros((height, width), int)
    for tile in layout.tiles:
        assert (tile.read.width, tile.read.height) == (256, 256)
        assert tile.read.col_off >= 0 and tile.read.col_off + 256 <= layout.context.width
        assert tile.read.row_off >= 0 and tile.read.row_off + 256 <= layout.context.height
        hits[tile.out.toslices()] += 1
        # The output part is the same pixels as the tile part it is cut from.
        context_col = tile.read.col_off + tile.col_in_tile
        assert layout.context.transform.c + context_col * 10 == grid.transform.c + tile.out.col_off * 10
    assert hits.min() >= 1
    rows = [int(t.out.row_off) for t in layout.tiles]
    assert rows == sorted(rows)  # rows in order, as the streaming stitcher needs


def test_two_grids_sharing_pixels_get_the_same_tiles_there():
    """The tiles sit on a lattice of the CRS, not at the grid's corner: what a pixel's tile sees is fixed."""
    big = Grid("EPSG:32633", Affine(10, 0, 465_000, 0, -10, 5_081_000), 300, 300)
    small = Grid("EPSG:32633", Affine(10, 0, 466_230, 0, -10, 5_079_870), 17, 23)
    big_tiles, small_tiles = (
        _global_tiles(lattice_layout(big, 96, 24)),
        _global_tiles(lattice_layout(small, 96, 24)),
    )
    assert small_tiles <= big_tiles
    assert all(x % 720 == 0 and y % 720 == 0 for x, y in big_tiles)  # stride 72 px = 720 m


def test_grid_layout_keeps_tiles_inside_the_grid_for_per_pixel_models():
    grid = Grid("EPSG:32633", Affine(10, 0, 465_200, 0, -10, 5_080_240), 100, 101)
    layout = grid_layout(grid, 256, 32)
    assert layout.context == grid and [t.out for t in layout.tiles] == [Window(0, 0, 100, 101)]


def test_nearest_fill_copies_the_nearest_valid_pixel_and_zero_fill_zeroes():
    tile = np.arange(2 * 4 * 5, dtype=np.float32).reshape(2, 4, 5)
    valid = np.zeros((4, 5), bool)
    valid[1:3, 1:3] = True
    filled = fill_nodata(tile.copy(), valid, "nearest")
    np.testing.assert_array_equal(filled[:, valid], tile[:, valid])
    assert filled[0, 0, 0] == tile[0, 1, 1] and filled[1, 3, 4] == tile[1, 2, 2]
    zeroed = fill_nodata(tile.copy(), valid, "zero")
    assert (zeroed[:, ~valid] == 0).all() and (zeroed[:, valid] == tile[:, valid]).all()
    series_valid = np.stack([valid, np.zeros_like(valid)])  # the second date has no data in the tile
    series = fill_nodata(np.stack([tile, tile]), series_valid, "nearest")
    np.testing.assert_array_equal(series[0], filled)
    assert (series[1] == 0).all()
    with pytest.raises(ValueError, match="nodata_fill"):
        fill_nodata(tile.copy(), valid, "mirror")
