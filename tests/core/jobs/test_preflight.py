"""The pre-flight estimate: counts from a real search of the embedded sample, sizes and times from the cards."""

from datetime import date

import pytest
from shapely.geometry import box

from core.config import Settings
from core.geometry.aoi import parse_aoi
from core.jobs.preflight import estimate_job, find_scenes, format_duration
from core.sources import SAMPLE_DIR
from models.catalogue import catalogue

SAMPLE_AOI = parse_aoi(SAMPLE_DIR / "aoi.geojson")


def sample_scenes(max_cloud_pct: float | None = None):  # noqa: ANN201
    return find_scenes(
        ("sample",), SAMPLE_AOI.geometry, date(2015, 7, 1), date(2015, 9, 30), max_cloud_pct, Settings()
    )


def test_the_estimate_counts_the_sample_and_adds_the_cloud_pass_for_landcover():
    scenes = sample_scenes()
    cloud = estimate_job(SAMPLE_AOI, scenes, catalogue().get("cloud-csmask"))
    assert (cloud.scenes, cloud.dates, cloud.download_mb) == (5, 5, 0.0)
    assert cloud.pixels == 97 * 98  # the sample AOI's 10 m grid
    assert cloud.read_mb == pytest.approx(97 * 98 * 6 * 2 * 5 / 1e6)  # 6 bands, uint16, 5 dates
    landcover = estimate_job(
        SAMPLE_AOI, scenes, catalogue().get("landcover-dynamic-world"), catalogue().get("cloud-csmask")
    )
    assert landcover.read_mb == pytest.approx(cloud.read_mb + 97 * 98 * 9 * 2 / 1e6)  # + 9 bands, one date
    assert cloud.run_s is not None and landcover.run_s is not None and landcover.run_s > cloud.run_s
    assert "5 scenes on 5 dates" in cloud.summary() and "run time about" in cloud.summary()


def test_cog_windows_and_a_seasons_sentinel1_products_are_counted_as_downloads():
    """A STAC source sends each band's window of the AOI (about 0.6 x its uncompressed size, as measured); a crop
    job on scenes adds the Sentinel-1 products it composites, whole (their size from the mirror's search)."""
    import dataclasses

    from core.jobs.preflight import estimate_composite_job
    from core.types import BandAsset

    scenes = sample_scenes()
    remote = [
        dataclasses.replace(
            s, bands={b: BandAsset(f"/vsicurl/https://example.test/{s.id}/{b}.tif") for b in s.bands}
        )
        for s in scenes
    ]
    csmask = catalogue().get("cloud-csmask")
    windows = estimate_job(SAMPLE_AOI, remote, csmask)
    assert windows.download_mb == pytest.approx(5 * 6 * 97 * 98 * 2 * 0.6 / 1e6)  # 5 dates x csmask's 6 bands
    assert estimate_job(SAMPLE_AOI, scenes, csmask).download_mb == 0.0  # a local folder downloads nothing

    crop = catalogue().get("crop-presto-croptype")
    grd = dataclasses.replace(
        scenes[0], id="S1A_GRD", sensor="S1", extra={"download_bytes": str(1_650_000_000)}
    )
    season = estimate_composite_job(SAMPLE_AOI, remote, [grd, grd], "", crop, csmask)
    assert season.scenes == 7 and season.radar_scenes == 2
    plain = estimate_job(SAMPLE_AOI, remote, crop, csmask)
    assert season.download_mb == pytest.approx(plain.download_mb + 3300.0)
    assert (
        "12 monthly composites of 5 Sentinel-2 scenes on 5 dates and 2 Sentinel-1 acquisition(s)"
        in season.summary()
    )
    alone = estimate_composite_job(SAMPLE_AOI, scenes, [], "No S1 scene in the folder.", crop, csmask)
    assert "(no Sentinel-1: No S1 scene in the folder)" in alone.summary()


def test_a_model_without_a_throughput_figure_gets_no_run_time():
    card = catalogue().get("cloud-csmask").replace(cpu_s_per_mpx=None)
    estimate = estimate_job(SAMPLE_AOI, sample_scenes(), card)
    assert estimate.run_s is None and "run time unknown" in estimate.summary()


def test_scenes_over_the_cloud_limit_are_not_counted(make_scene):
    import rasterio

    from core.errors import NoScenesFound

    for name, cloud_pct in (("clear.tif", 5), ("cloudy.tif", 80)):
        path = make_scene(
            name, size=32, acquired="2020-06-01T10:00:00Z" if name == "clear.tif" else "2020-06-11T10:00:00Z"
        )
        with rasterio.open(path, "r+") as dataset:
            dataset.update_tags(CLOUD_COVER=str(cloud_pct))
    folder = f"local:{path.parent}"
    with rasterio.open(path) as dataset:
        from rasterio.warp import transform_bounds

        area = box(*transform_bounds(dataset.crs, "EPSG:4326", *dataset.bounds))
    assert len(find_scenes((folder,), area, date(2020, 5, 1), date(2020, 7, 1), None, Settings())) == 2
    [kept] = find_scenes((folder,), area, date(2020, 5, 1), date(2020, 7, 1), 10, Settings())
    assert kept.cloud_cover_pct == 5
    with pytest.raises(NoScenesFound, match="All 2 scenes have more than 1 % cloud cover"):
        find_scenes((folder,), area, date(2020, 5, 1), date(2020, 7, 1), 1, Settings())


@pytest.mark.parametrize(
    ("seconds", "text"), [(None, "-"), (0.2, "1 s"), (89.1, "90 s"), (150, "3 min"), (7300, "2.0 h")]
)
def test_durations_read_naturally(seconds, text):
    assert format_duration(seconds) == text


def test_the_estimate_says_what_share_of_the_area_the_scenes_cover_and_warns_when_not_all():
    inside = estimate_job(SAMPLE_AOI, sample_scenes(), catalogue().get("cloud-csmask"))
    assert inside.coverage_fraction > 0.995 and inside.coverage_warning() is None
    assert "cover 100 % of the area" in inside.summary()
    wide = parse_aoi("14.527,45.848,14.591,45.893")  # 5 km x 5 km around the 1 km2 sample
    beyond = estimate_job(wide, sample_scenes(), catalogue().get("cloud-csmask"))
    assert 0.02 < beyond.coverage_fraction < 0.06
    assert "The scenes found cover only 4." in (beyond.coverage_warning() or "")


def test_a_chosen_date_without_a_scene_is_refused_before_anything_runs():
    from core.errors import DateRangeError
    from core.jobs.preflight import check_chosen_date

    scenes = sample_scenes()
    check_chosen_date(scenes, None)
    check_chosen_date(scenes, date(2015, 7, 31))
    with pytest.raises(DateRangeError, match="There is no scene on 2015-07-12; dates with scenes: 2015-07-11, "):
        check_chosen_date(scenes, date(2015, 7, 12))
    estimate = estimate_job(SAMPLE_AOI, scenes, catalogue().get("cloud-csmask"))
    assert estimate.scene_dates == ("2015-07-11", "2015-07-31", "2015-08-20", "2015-08-30", "2015-09-09")


def test_a_source_passed_over_is_warned_about_by_its_own_name_only_when_another_serves(tmp_path, caplog):
    import logging

    from core.errors import NoScenesFound
    from core.sources import search_scenes

    empty = tmp_path / "empty"
    empty.mkdir()
    window = (SAMPLE_AOI.geometry, date(2015, 7, 1), date(2015, 9, 30), Settings())
    with caplog.at_level(logging.WARNING, logger="core.sources"):
        scenes = search_scenes((f"local:{empty}", "sample"), *window)
    assert len(scenes) == 5
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["Source local"]
    assert str(empty) in caplog.records[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="core.sources"), pytest.raises(NoScenesFound):
        search_scenes((f"local:{empty}",), *window)
    assert not caplog.records  # the error says it; a warning too would say it twice
