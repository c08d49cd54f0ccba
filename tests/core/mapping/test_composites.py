"""Monthly composites of a job's own scenes, as Presto reads them: the median of each month's clear observations,
months without one and inputs without a source masked."""

import dataclasses
from datetime import date

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from core.config import Settings
from core.errors import AppError
from core.geometry.grid import Grid
from core.mapping.composites import (
    S2_CHANNELS,
    CompositeDate,
    SceneComposites,
    check_composite_scenes,
    season_months,
)
from core.mapping.presto_inputs import CHANNELS
from core.sources import parse_source
from tests.conftest import write_scene

ORIGIN = (465_000.0, 5_080_000.0)
SIZE = 20
GRID = Grid("EPSG:32633", from_origin(*ORIGIN, 10, 10), SIZE, SIZE)


def test_the_season_is_the_12_months_ending_with_the_end_dates_month():
    months = season_months(date(2018, 9, 14))
    assert months[0] == date(2017, 10, 1) and months[-1] == date(2018, 9, 1) and len(months) == 12


def test_each_month_is_the_median_of_its_clear_observations_and_empty_months_are_masked(tmp_path):
    rng = np.random.default_rng(0)
    days = {"2018-06-05": 0, "2018-06-20": 1, "2018-08-10": 2}
    data = {day: rng.integers(100, 4000, (len(S2_CHANNELS), SIZE, SIZE)).astype(np.uint16) for day in days}
    folder = tmp_path / "scenes"
    folder.mkdir()
    for day, values in data.items():
        write_scene(
            folder / f"S2_{day}.tif", values, bands=S2_CHANNELS, origin=ORIGIN, acquired=f"{day}T10:00:00Z",
            level="L2A",
        )  # fmt: skip
    scenes = parse_source(f"local:{folder}", Settings()).search(_area(), date(2018, 1, 1), date(2018, 12, 31))
    by_day = {s.acquired.date().isoformat(): s for s in scenes}
    cloudy_left = np.zeros((SIZE, SIZE), np.uint8)
    cloudy_left[:, : SIZE // 2] = 1  # the cloud model's class 1 (cloud) on the left half of the second date
    layers = []
    for day in days:
        classes = tmp_path / f"classes-{day}.tif"
        with rasterio.open(
            classes, "w", driver="GTiff", width=SIZE, height=SIZE, count=1, dtype="uint8", crs=GRID.crs,
            transform=GRID.transform,
        ) as out:  # fmt: skip
            out.write((cloudy_left if day == "2018-06-20" else np.zeros_like(cloudy_left))[None])
        layers.append(CompositeDate(date.fromisoformat(day), (by_day[day],), classes, 0))
    composites = SceneComposites(tuple(layers), season_months(date(2018, 12, 31)))
    assert [m.month for m in composites.months_with_data()] == [
        6,
        8,
    ] and composites.season == "2018-01..2018-12"

    values, missing = composites.read_strip(GRID, slice(0, SIZE))
    assert values.shape == (SIZE * SIZE, 12, len(CHANNELS))
    s2 = [CHANNELS.index(b) for b in S2_CHANNELS]
    june = (
        np.where(
            cloudy_left[None],
            data["2018-06-05"],  # the cloudy observation is left out
            np.median(np.stack([data["2018-06-05"], data["2018-06-20"]]), axis=0),
        )
        .reshape(len(S2_CHANNELS), -1)
        .T
    )
    assert np.allclose(values[:, 5, s2], june, atol=0.5) and not missing[:, 5, s2].any()
    august = data["2018-08-10"].reshape(len(S2_CHANNELS), -1).T
    assert np.allclose(values[:, 7, s2], august, atol=0.5)
    assert missing[:, [0, 1, 2, 3, 4, 6, 8, 9, 10, 11], :].all()  # months without a scene
    others = [i for i in range(len(CHANNELS)) if i not in s2]
    assert missing[:, :, others].all()  # S1 (no GRD scene here), weather, elevation: no source for them
    # A strip in the middle reads the same pixels as the whole grid does.
    strip, _ = composites.read_strip(GRID, slice(7, 13))
    assert np.array_equal(strip, values.reshape(SIZE, SIZE, 12, -1)[7:13].reshape(-1, 12, len(CHANNELS)))

    assert composites.input_records()[0].processing_level == "L2A"
    with pytest.raises(AppError, match="read monthly composites of Sentinel-2 L2A"):
        check_composite_scenes([dataclasses.replace(s, processing_level="L1C") for s in scenes], ("x",))


def test_sentinel1_months_are_the_median_of_their_acquisitions_in_db_and_months_without_one_are_masked(
    tmp_path,
):
    """VV/VH in dB GeoTIFFs (a source's GRD scenes, or products calibrated onto the job grid): per month the
    median of its acquisitions, no data left out, at most S1_PER_MONTH acquisitions a month."""
    from core.mapping.composites import S1_CHANNELS, S1_PER_MONTH, RadarDate, choose_radar

    rng = np.random.default_rng(1)
    days = ["2018-05-02", "2018-05-14", "2018-05-26", "2018-07-07"]
    folder = tmp_path / "s1"
    folder.mkdir()
    data = {}
    for k, day in enumerate(days):
        db = np.stack([rng.uniform(-20, -5, (SIZE, SIZE)), rng.uniform(-28, -12, (SIZE, SIZE))]).astype(
            np.float32
        )
        if k == 2:
            db[:, :, :5] = -9999.0  # outside the swath on the left
        data[day] = db
        write_scene(
            folder / f"S1A_{day}.tif", db, bands=S1_CHANNELS, origin=ORIGIN, acquired=f"{day}T05:30:00Z",
            level="GRD", scale=None, nodata=-9999.0,
        )  # fmt: skip
    found = parse_source(f"local:{folder}", Settings()).search(
        _area(), date(2018, 1, 1), date(2018, 12, 31), "S1"
    )
    assert len(found) == 4 and all(s.sensor == "S1" for s in found)
    months = season_months(date(2018, 12, 31))
    chosen = choose_radar(found, months)
    assert S1_PER_MONTH == 2 and [s.acquired.date().isoformat() for s in chosen] == [
        days[0],
        days[2],
        days[3],
    ]
    radar = tuple(RadarDate(s.acquired.date(), (s,)) for s in chosen)
    composites = SceneComposites((), months, radar=radar)
    assert composites.has_s1 and [m.month for m in composites.months_with_radar()] == [5, 7]
    values, missing = composites.read_strip(GRID, slice(0, SIZE))
    s1 = [CHANNELS.index(b) for b in S1_CHANNELS]
    may = (
        np.where(
            np.arange(SIZE)[None, None, :] < 5,  # only the first acquisition covers the left columns
            data[days[0]],
            np.median(np.stack([data[days[0]], data[days[2]]]), axis=0),
        )
        .reshape(2, -1)
        .T
    )
    assert np.allclose(values[:, 4, s1], may, atol=1e-4) and not missing[:, 4, s1].any()
    assert np.allclose(values[:, 6, s1], data[days[3]].reshape(2, -1).T, atol=1e-4)
    assert missing[:, [0, 1, 2, 3, 5, 7, 8, 9, 10, 11]][:, :, s1].all()
    assert [r.processing_level for r in composites.input_records()] == ["GRD"] * 3


def _area():  # noqa: ANN202 - the scenes' footprint, in EPSG:4326
    from shapely.geometry import box

    from core.geometry.grid import project_geometry

    left, bottom, right, top = GRID.bounds
    return project_geometry(box(left + 5, bottom + 5, right - 5, top - 5), GRID.crs, "EPSG:4326")
