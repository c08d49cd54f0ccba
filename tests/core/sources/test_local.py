import logging
from datetime import date

import numpy as np
import pytest
from shapely.geometry import box

from core.config import Settings
from core.errors import NoScenesFound, SourceError
from core.sources import SAMPLE_DIR, parse_source, search_scenes
from core.sources.local import LocalSource
from tests.conftest import write_scene
from tests.safe_factory import build_s2_safe

SAMPLE_AOI = box(14.552, 45.867, 14.563, 45.874)


def test_the_sample_source_finds_its_five_real_dates():
    scenes = parse_source("sample", Settings()).search(SAMPLE_AOI, date(2015, 7, 1), date(2015, 9, 30))
    assert [s.date_iso for s in scenes] == [
        "2015-07-11",
        "2015-07-31",
        "2015-08-20",
        "2015-08-30",
        "2015-09-09",
    ]
    assert all(s.processing_level == "L1C" and len(s.bands) == 13 for s in scenes)
    assert all(s.bands["B04"].scale == pytest.approx(1e-4) for s in scenes)


def test_search_keeps_only_dates_in_the_inclusive_range():
    scenes = parse_source("sample", Settings()).search(SAMPLE_AOI, date(2015, 7, 31), date(2015, 8, 30))
    assert [s.date_iso for s in scenes] == ["2015-07-31", "2015-08-20", "2015-08-30"]


def test_a_date_range_without_scenes_says_which_dates_exist():
    with pytest.raises(NoScenesFound, match=r"between 2016-01-01 and 2016-02-01.*2015-07-11"):
        parse_source("sample", Settings()).search(SAMPLE_AOI, date(2016, 1, 1), date(2016, 2, 1))


def test_an_aoi_that_misses_every_scene_says_so():
    with pytest.raises(NoScenesFound, match="None of the 5 S2 scenes in sample overlaps"):
        parse_source("sample", Settings()).search(
            box(10, 50, 10.01, 50.01), date(2015, 7, 1), date(2015, 9, 30)
        )


def test_a_folder_without_a_sensor_says_it_holds_none_of_it():
    with pytest.raises(NoScenesFound, match=r"^sample holds no S1 scene\.$"):
        parse_source("sample", Settings()).search(SAMPLE_AOI, date(2015, 7, 1), date(2015, 9, 30), sensor="S1")


def test_unknown_and_missing_sources_are_refused_plainly(tmp_path):
    with pytest.raises(SourceError, match="Unknown source 'ftp://x'"):
        parse_source("ftp://x", Settings())
    with pytest.raises(SourceError, match="does not exist"):
        LocalSource(tmp_path / "nope", "local:nope").scan()


def test_a_truncated_geotiff_is_skipped_with_a_warning_naming_it(make_scene, caplog):
    good = make_scene("good.tif", size=64)
    bad = make_scene("bad.tif", size=64, seed=1)
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    (good.parent / "notes.txt").write_text("not a scene")
    source = LocalSource(good.parent, "local:test")
    with caplog.at_level(logging.WARNING):
        scenes = source.scan()
    assert [s.id for s in scenes] == ["good"]
    assert any("bad.tif" in r.getMessage() for r in caplog.records)
    assert source.skipped and source.skipped[0].startswith("bad.tif")


def test_a_folder_with_only_broken_files_fails_listing_each(tmp_path):
    (tmp_path / "garbage.tif").write_bytes(b"II*\x00garbage")
    write_scene(tmp_path / "untagged.tif", np.ones((13, 8, 8), np.uint16))
    import rasterio

    with rasterio.open(tmp_path / "untagged.tif", "r+") as dataset:
        dataset.update_tags(PROCESSING_LEVEL="L9")
    with pytest.raises(SourceError, match=r"no usable scene.*garbage.tif.*untagged.tif.*PROCESSING_LEVEL"):
        LocalSource(tmp_path, "local:x").scan()


def test_geotiff_scenes_need_named_bands_and_a_time(tmp_path):
    write_scene(tmp_path / "unnamed.tif", np.ones((2, 8, 8), np.uint16), bands=("Band_1", "Band_2"))
    with pytest.raises(SourceError, match="band descriptions must name the bands"):
        LocalSource(tmp_path, "local:x").scan()


def test_a_scene_in_another_crs_is_found_by_its_footprint(make_scene):
    # Written in UTM 34N, searched with a lon/lat box around it.
    path = make_scene("utm34.tif", size=32, crs="EPSG:32634", origin=(300_000.0, 5_000_000.0))
    [scene] = LocalSource(path.parent, "local:x").search(
        box(18.4, 45.1, 18.5, 45.2), date(2015, 8, 1), date(2015, 8, 31)
    )
    assert scene.footprint.intersects(box(18.4, 45.1, 18.5, 45.2))


def test_safe_products_zipped_or_not_sit_beside_geotiffs(tmp_path):
    build_s2_safe(tmp_path, which="N0400")
    build_s2_safe(tmp_path, which="N0209", zipped=True)
    scenes = LocalSource(tmp_path, "local:x").scan()
    assert sorted(s.processing_baseline for s in scenes) == ["02.09", "04.00"]


def test_sources_are_tried_in_order_and_the_first_with_scenes_serves(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        scenes = search_scenes(
            [f"local:{tmp_path / 'missing'}", "sample"],
            SAMPLE_AOI,
            date(2015, 7, 1),
            date(2015, 9, 30),
            Settings(),
        )
    assert {s.source for s in scenes} == {"sample"}
    assert any("missing" in r.getMessage() for r in caplog.records)
    with pytest.raises(NoScenesFound, match="No source has matching scenes"):
        search_scenes(
            [f"local:{tmp_path / 'missing'}", "sample"],
            SAMPLE_AOI,
            date(2020, 1, 1),
            date(2020, 1, 2),
            Settings(),
        )


def test_sample_dir_holds_the_licence_next_to_the_data():
    assert (SAMPLE_DIR / "LICENSE").read_text().startswith("MIT License")


def test_a_source_read_in_place_has_no_products_to_download(tmp_path):
    sample = parse_source("sample", Settings())
    [scene] = sample.search(SAMPLE_AOI, date(2015, 7, 11), date(2015, 7, 11))
    assert sample.download_slots == 1
    with pytest.raises(SourceError, match="sample has no products to download"):
        sample.fetch(scene, tmp_path)
