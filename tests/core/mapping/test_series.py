"""Series stacks for series models, on the real 21-date Tanzania series through the real reading path and the
real cloud model, with an untrained U-TAE (a test-only path: no series model has trained weights yet)."""

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from rasterio.windows import Window
from shapely.geometry import box

from core.geometry.grid import grid_for_aoi, project_geometry
from core.jobs.progress import RunContext, TilingOptions
from core.mapping.analysis import group_by_date, predict_dates
from core.mapping.reading import SceneReader
from core.mapping.series import choose_dates, read_series_tile
from core.sources.local import LocalSource
from models import utae
from models.catalogue import catalogue
from tests.conftest import load_model

# Real jobs and model runs: left out of `make check`'s quick loop (see the Makefile).
pytestmark = pytest.mark.slow


def test_few_dates_are_all_kept_and_cloudy_ones_dropped():
    dates = [date(2020, 1, 1) + timedelta(days=10 * i) for i in range(5)]
    assert choose_dates(dates, [0.9, 0.0, 0.5, 0.8, 0.2], max_dates=10) == [0, 2, 3, 4]
    assert choose_dates(dates, [0.9, 0.0, 0.5, 0.8, 0.2], max_dates=10, min_clear=0.3) == [0, 2, 3]


def test_many_dates_are_spread_over_the_range_preferring_clear_ones():
    dates = [date(2020, 1, 1) + timedelta(days=7 * i) for i in range(52)]  # a year, weekly
    clear = [1.0 if i % 4 == 1 else 0.3 for i in range(52)]  # every 4th week (from week 1) is clear
    chosen = choose_dates(dates, clear, max_dates=12)
    assert len(chosen) == 12 and chosen == sorted(chosen)
    assert all(clear[i] == 1.0 for i in chosen)  # only clear dates
    gaps = np.diff([dates[i].toordinal() for i in chosen])
    assert (
        gaps.max() <= 56
    )  # 13 clear dates 28 days apart, 12 kept: at most one skipped, no season left empty


def test_the_same_input_gives_the_same_choice_whatever_the_order():
    dates = [date(2020, 1, 1) + timedelta(days=5 * i) for i in range(30)]
    clear = list(np.random.default_rng(0).random(30))
    chosen = choose_dates(dates, clear, max_dates=8)
    permutation = list(np.random.default_rng(1).permutation(30))
    shuffled = choose_dates([dates[i] for i in permutation], [clear[i] for i in permutation], max_dates=8)
    assert [dates[i] for i in chosen] == [dates[permutation[i]] for i in shuffled]


def test_a_series_tile_from_real_masked_dates_feeds_utae_and_masked_observations_do_not_matter(
    tanzania_source, tmp_path
):
    folder, series = tanzania_source
    source = LocalSource(folder, "tanzania")
    scenes = source.scan()
    assert len(scenes) == 21
    footprint = scenes[0].footprint.intersection(box(*scenes[0].footprint.bounds))
    grid = grid_for_aoi(footprint)
    aoi_grid = project_geometry(footprint, "EPSG:4326", grid.crs)
    groups = group_by_date(scenes)

    # The cloud model on every date gives each date's clear mask and fraction (on top of the data's own masking).
    cloud = load_model("cloud-csmask", processing_level="L2A", available_bands=set(scenes[0].bands))
    cloud_results = predict_dates(
        groups, cloud, grid, aoi_grid, RunContext(tmp_path / "cloud"), TilingOptions(4, 16)
    )
    clear_fractions = [r.inference.class_counts[0] / r.inference.aoi_px for r in cloud_results]
    assert min(clear_fractions) < 0.1 and max(clear_fractions) > 0.9  # some dates mostly masked, some clear
    chosen = choose_dates([r.date for r in cloud_results], clear_fractions, max_dates=12)
    assert 0 < len(chosen) <= 12

    import rasterio

    def clear_reader(path: Path):  # noqa: ANN202
        def read(window: Window) -> np.ndarray:
            with rasterio.open(path) as dataset:
                return dataset.read(1, window=window) == 0

        return read

    card = catalogue().get("crop-utae-pastis")
    # The stack below keeps every date, so that dates empty in a tile (clouds, swath edge) appear as padding.
    everything = list(range(len(cloud_results)))
    readers = [SceneReader(list(cloud_results[i].scenes), card.bands, grid) for i in everything]
    for reader in readers:
        reader.__enter__()
    try:
        dates = [cloud_results[i].date for i in everything]
        masks = [clear_reader(cloud_results[i].classes_path) for i in everything]
        windows = [
            Window(c, r, 64, 64)
            for r in range(0, grid.height - 63, 32)
            for c in range(0, grid.width - 63, 32)
        ]
        for window in windows:  # the first tile where some, not all, dates are empty
            tile = read_series_tile([r.read for r in readers], masks, dates, window)
            if tile.pad_mask.any() and not tile.pad_mask.all():
                break
        else:
            pytest.fail("no tile of the real series has an empty date")

        def with_garbage(read):  # noqa: ANN001, ANN202
            def read_garbage(w: Window) -> tuple[np.ndarray, np.ndarray]:
                values, valid = read(w)
                values = values.copy()
                values[:, ~valid] = 1e4  # whatever lies under the masks
                return values, valid

            return read_garbage

        garbage_tile = read_series_tile([with_garbage(r.read) for r in readers], masks, dates, window)
    finally:
        for reader in readers:
            reader.__exit__(None, None, None)

    assert tile.values.shape == (21, 10, 64, 64) and tile.valid.shape == (21, 64, 64)
    assert tile.positions[0] == 0 and np.all(np.diff(tile.positions) > 0)
    assert (tile.values[~np.broadcast_to(tile.valid[:, None], tile.values.shape)] == 0).all()
    np.testing.assert_array_equal(tile.values, garbage_tile.values)

    torch.manual_seed(0)
    net = utae.UTAE().eval()

    def run(values: np.ndarray, positions: np.ndarray, pad: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            return net(
                torch.from_numpy(values)[None],
                torch.from_numpy(positions)[None],
                pad_mask=torch.from_numpy(pad)[None],
            )

    output = run(tile.values, tile.positions, tile.pad_mask)
    assert output.shape == (1, 20, 64, 64) and torch.isfinite(output).all()
    torch.testing.assert_close(
        run(garbage_tile.values, garbage_tile.positions, garbage_tile.pad_mask), output
    )
    keep = ~tile.pad_mask  # dropping the dates that are empty in this tile changes nothing
    torch.testing.assert_close(run(tile.values[keep], tile.positions[keep], tile.pad_mask[keep]), output)
    # ... while the same all-zero dates left unmasked would change it: the padding mask is what hides them.
    assert not torch.allclose(run(tile.values, tile.positions, np.zeros_like(tile.pad_mask)), output)
