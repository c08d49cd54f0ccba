"""An interrupted pass over the grid resumes from its last saved strip and gives the same pixels."""

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window
from shapely.geometry import Polygon

from core.geometry.grid import Grid
from core.jobs.progress import RunContext
from core.mapping.inference import CardModel, predict_grid, tile_layout
from models.catalogue import catalogue

PER_PIXEL_CARD = catalogue().get(
    "cloud-s2cloudless"
)  # 2 classes, 256 px tiles at 10 m, tiles inside the grid
LATTICE_CARD = PER_PIXEL_CARD.replace(per_pixel=False)  # the same with context tiles
GRID = Grid("EPSG:32633", Affine(10.0, 0, 465_000.0, 0, -10.0, 5_080_000.0), 700, 650)
# A triangle, so that pixels outside the AOI take part as well.
AOI = Polygon([(465_000, 5_080_000), (471_500, 5_080_000), (465_000, 5_073_000)])


def reader(grid: Grid):
    """Reads windows of `grid` from an endless image whose values depend on the global pixel position."""
    col0, row0 = round(grid.transform.c / 10), round(-grid.transform.f / 10)

    def read(window: Window) -> tuple[np.ndarray, np.ndarray]:
        rows = np.arange(int(window.height))[:, None] + int(window.row_off) + row0
        cols = np.arange(int(window.width))[None, :] + int(window.col_off) + col0
        bands = np.arange(len(PER_PIXEL_CARD.bands))[:, None, None]
        values = (np.sin(rows * 0.37 + cols * 0.11 + bands) * np.cos(cols * 0.05 - rows * 0.03)).astype(
            np.float32
        )
        valid = ((rows % 17) != 0) | ((cols % 13) != 0)  # some nodata pixels
        return values, valid

    return read


def smooth_model(batch: np.ndarray) -> np.ndarray:
    """A deterministic 2-class 'model' whose output depends on the pixel values (so seams would show)."""
    p = 1 / (1 + np.exp(-4 * (batch[:, 0] - batch[:, 1])))
    return np.stack([p, 1 - p], axis=1).astype(np.float32)


class Crash(Exception):
    pass


def run(
    folder: Path, fail_after_batches: int | None = None, card=PER_PIXEL_CARD
) -> tuple[np.ndarray, np.ndarray, object]:
    calls = {"n": 0}

    def model(batch: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if fail_after_batches is not None and calls["n"] > fail_after_batches:
            raise Crash
        return smooth_model(batch)

    folder.mkdir(exist_ok=True)
    layout = tile_layout(card, GRID, overlap_px=32)
    result = predict_grid(
        reader(layout.context), CardModel(card, model), layout, AOI, RunContext(folder), batch_size=2
    )
    with rasterio.open(folder / "classes.tif") as c, rasterio.open(folder / "confidence.tif") as p:
        return c.read(1), p.read(1), (result, calls["n"])


@pytest.mark.parametrize("card", [PER_PIXEL_CARD, LATTICE_CARD], ids=["grid tiles", "lattice tiles"])
@pytest.mark.parametrize("fail_after_batches", [1, 2, 4])
def test_a_resumed_pass_matches_an_uninterrupted_one(tmp_path: Path, fail_after_batches: int, card):
    classes, confidence, (whole, whole_calls) = run(tmp_path / "whole", card=card)
    with pytest.raises(Crash):
        run(tmp_path / "resumed", fail_after_batches, card=card)
    saved = sorted(p.name for p in (tmp_path / "resumed" / "blocks").glob("*.npz"))
    resumed_classes, resumed_confidence, (resumed, resumed_calls) = run(tmp_path / "resumed", card=card)
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
