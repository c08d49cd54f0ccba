"""An interrupted pass over the grid resumes from its last saved strip and gives the same pixels."""

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window
from shapely.geometry import Polygon

from core.grid import Grid
from core.inference import predict_grid
from models.registry import get_card

CARD = get_card("cloud-s2cloudless")  # 2 classes, 256 px tiles at 10 m
GRID = Grid("EPSG:32633", Affine(10.0, 0, 465_000.0, 0, -10.0, 5_080_000.0), 700, 650)
IMAGE = np.random.default_rng(7).random((len(CARD.bands), GRID.height, GRID.width), dtype=np.float32)
# A triangle, so that pixels outside the AOI take part as well.
AOI = Polygon([(465_000, 5_080_000), (471_500, 5_080_000), (465_000, 5_073_000)])


def read(window: Window) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = window.toslices()
    valid = np.ones((int(window.height), int(window.width)), bool)
    valid[::17, ::13] = False  # some nodata pixels
    return IMAGE[:, rows, cols], valid


def smooth_model(batch: np.ndarray) -> np.ndarray:
    """A deterministic 2-class 'model' whose output depends on the pixel values (so seams would show)."""
    p = 1 / (1 + np.exp(-4 * (batch[:, 0] - batch[:, 1])))
    return np.stack([p, 1 - p], axis=1).astype(np.float32)


class Crash(Exception):
    pass


def run(folder: Path, fail_after_batches: int | None = None) -> tuple[np.ndarray, np.ndarray, object]:
    calls = {"n": 0}

    def model(batch: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if fail_after_batches is not None and calls["n"] > fail_after_batches:
            raise Crash
        return smooth_model(batch)

    folder.mkdir(exist_ok=True)
    result = predict_grid(
        read, model, CARD, GRID, AOI, folder / "c.tif", folder / "p.tif", batch_size=2, overlap_px=32
    )
    with rasterio.open(folder / "c.tif") as c, rasterio.open(folder / "p.tif") as p:
        return c.read(1), p.read(1), (result, calls["n"])


@pytest.mark.parametrize("fail_after_batches", [1, 2, 4])
def test_a_resumed_pass_matches_an_uninterrupted_one(tmp_path: Path, fail_after_batches: int):
    classes, confidence, (whole, whole_calls) = run(tmp_path / "whole")
    with pytest.raises(Crash):
        run(tmp_path / "resumed", fail_after_batches)
    saved = sorted(p.name for p in (tmp_path / "resumed" / "blocks").glob("*.npz"))
    resumed_classes, resumed_confidence, (resumed, resumed_calls) = run(tmp_path / "resumed")
    np.testing.assert_array_equal(resumed_classes, classes)
    np.testing.assert_array_equal(resumed_confidence, confidence)
    np.testing.assert_array_equal(resumed.class_counts, whole.class_counts)
    assert resumed.aoi_px == whole.aoi_px
    # The row of tiles above the first unsaved strip is computed again, so work is saved from 2 strips on.
    if len(saved) >= 2:
        assert resumed_calls < whole_calls
    else:
        assert resumed_calls == whole_calls


def test_a_finished_pass_is_not_computed_again(tmp_path: Path):
    classes, _, (whole, _) = run(tmp_path / "once")
    again, _, (result, calls) = run(tmp_path / "once", fail_after_batches=0)  # any model call would raise
    np.testing.assert_array_equal(again, classes)
    assert calls == 0 and result.aoi_px == whole.aoi_px
