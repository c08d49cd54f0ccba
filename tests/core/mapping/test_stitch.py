import numpy as np
import pytest

from core.geometry.tiling import blend_weights, tile_windows
from core.mapping.stitch import StripStitcher


def _stitch(image, size, overlap, strip_rows=None):
    k, height, width = image.shape
    out = np.full(image.shape, np.nan, np.float32)
    flushed = []

    def sink(row0, col0, scores, valid):
        flushed.append((row0, scores.shape[1]))
        out[:, row0 : row0 + scores.shape[1], col0 : col0 + scores.shape[2]] = scores

    stitcher = StripStitcher(k, height, width, strip_rows or min(size, height), sink)
    weights = blend_weights(size, overlap)
    for window in tile_windows(height, width, size, overlap):
        if window.row_off > stitcher.top:
            stitcher.flush_until(int(window.row_off))
        h, w = int(window.height), int(window.width)
        stitcher.add(window, image[:, *window.toslices()], weights[:h, :w], np.ones((h, w), bool))
    stitcher.flush_until(height)
    return out, flushed


def test_stitching_overlapping_tiles_of_one_image_reproduces_it():
    image = np.random.default_rng(0).random((3, 300, 1100), dtype=np.float32)  # wider than one sink chunk
    out, flushed = _stitch(image, size=64, overlap=16)
    np.testing.assert_allclose(out, image, rtol=1e-5)
    assert (
        sum(n for _, n in flushed) == 300 * 2
    )  # every row emitted once per column chunk  # every row emitted exactly once, in order
    assert [r for r, _ in flushed] == sorted(r for r, _ in flushed)


def test_the_strip_buffer_holds_one_tile_of_rows_whatever_the_grid_height():
    image = np.random.default_rng(1).random((2, 1000, 50), dtype=np.float32)
    rows_seen = []

    def sink(row0, col0, scores, valid):
        if col0 == 0:
            rows_seen.append(scores.shape[1])

    stitcher = StripStitcher(2, 1000, 50, 64, sink)
    assert stitcher.scores.shape == (2, 64, 50)
    weights = blend_weights(64, 16)
    for window in tile_windows(1000, 50, 64, 16):
        if window.row_off > stitcher.top:
            stitcher.flush_until(int(window.row_off))
        stitcher.add(window, image[:, *window.toslices()], weights[:, :50], np.ones((64, 50), bool))
    stitcher.flush_until(1000)
    assert sum(rows_seen) == 1000 and max(rows_seen) <= 64


def test_blending_disagreeing_tiles_leaves_no_step_at_the_seam():
    # Two tiles predicting 0 and 1 for the same class: the blend must ramp, not jump.
    height, width, size, overlap = 64, 112, 64, 16
    stitcher_out = np.zeros((1, height, width), np.float32)

    def sink(row0, col0, scores, valid):
        stitcher_out[:, row0 : row0 + scores.shape[1], col0 : col0 + scores.shape[2]] = scores

    stitcher = StripStitcher(1, height, width, size, sink)
    weights = blend_weights(size, overlap)
    for value, window in enumerate(tile_windows(height, width, size, overlap)):
        stitcher.add(
            window, np.full((1, size, size), float(value), np.float32), weights, np.ones((size, size), bool)
        )
    stitcher.flush_until(height)
    row = stitcher_out[0, height // 2]
    assert row[0] == 0 and row[-1] == 1
    assert np.all(np.diff(row) >= -1e-6) and np.abs(np.diff(row)).max() < 0.2


def test_adding_a_tile_above_the_flushed_rows_is_refused():
    stitcher = StripStitcher(1, 100, 10, 20, lambda *a: None)
    from rasterio.windows import Window

    stitcher.add(
        Window(0, 0, 10, 20),
        np.ones((1, 20, 10), np.float32),
        np.ones((20, 10), np.float32),
        np.ones((20, 10), bool),
    )
    stitcher.flush_until(10)
    with pytest.raises(ValueError, match="flush rows in order"):
        stitcher.add(
            Window(0, 0, 10, 20),
            np.ones((1, 20, 10), np.float32),
            np.ones((20, 10), np.float32),
            np.ones((20, 10), bool),
        )
