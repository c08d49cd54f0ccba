import numpy as np
import pytest

from core.tiling import blend_weights, pad_tile, tile_windows


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
