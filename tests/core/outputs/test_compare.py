"""Two real class maps of one area compared (the embedded sample's cloud job on a clear and on a cloudy date, run
in-process): the transition matrix counts every pixel valid in both once, the change map holds exactly the
changed pixels, and maps of other areas or other classes are refused with a sentence."""

from pathlib import Path

import numpy as np
import pytest
import rasterio

from core.config import Settings
from core.errors import AppError
from core.outputs.compare import compare_class_maps, write_change_map
from tests.services import sample_spec
from worker.pipelines.map_job import run_job

# Real jobs and model runs: left out of `make check`'s quick loop (see the Makefile).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def maps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("compare")
    settings = Settings(cache_dir=base / "cache")
    specs = {
        "clear": sample_spec(selected_date="2015-07-11"),  # 99.6 % clear
        "cloudy": sample_spec(selected_date="2015-07-31"),  # 94 % cloud
        "smaller": sample_spec(aoi="14.5525,45.8665,14.5600,45.8745"),  # another area: another grid
        "landcover": sample_spec(task="landcover", model_id="landcover-dynamic-world"),
    }
    for name, spec in specs.items():
        run_job(spec, base / name, settings)
    return {name: base / name / "classes.tif" for name in specs}


def read(path: Path) -> tuple[np.ndarray, int]:
    with rasterio.open(path) as src:
        return src.read(1), int(src.nodata)


def test_the_transition_matrix_counts_each_pixel_valid_in_both_maps_once(maps):
    before, nodata = read(maps["clear"])
    after, _ = read(maps["cloudy"])
    compared = compare_class_maps(maps["clear"], maps["cloudy"])
    assert [c.name for c in compared.classes] == ["clear", "cloud", "cloud shadow"]
    both = (before != nodata) & (after != nodata)
    assert compared.compared_pixels == int(both.sum())
    for i, a in enumerate(compared.classes):
        for j, b in enumerate(compared.classes):
            expected = int(np.count_nonzero(both & (before == a.value) & (after == b.value)))
            assert compared.matrix_pixels[i][j] == expected, (a.name, b.name)
            assert compared.matrix_ha[i][j] == pytest.approx(expected * 0.01)  # 10 m pixels
    assert (
        compared.matrix_pixels[0][1] > 0.8 * compared.compared_pixels
    )  # most of the clear date became cloud
    assert compared.changed_percent > 80
    assert compare_class_maps(maps["clear"], maps["clear"]).changed_pixels == 0


def test_the_change_map_holds_the_later_class_where_it_changed(maps, tmp_path):
    changed = write_change_map(maps["clear"], maps["cloudy"], tmp_path / "change.tif")
    before, nodata = read(maps["clear"])
    after, _ = read(maps["cloudy"])
    change, change_nodata = read(tmp_path / "change.tif")
    mask = (before != nodata) & (after != nodata) & (before != after)
    assert changed == int(mask.sum()) == compare_class_maps(maps["clear"], maps["cloudy"]).changed_pixels
    assert change_nodata == nodata
    assert np.array_equal(change[mask], after[mask]) and np.all(change[~mask] == nodata)
    with rasterio.open(tmp_path / "change.tif") as cog:
        assert cog.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


def test_maps_of_another_area_or_other_classes_are_refused_with_a_sentence(maps, tmp_path):
    with pytest.raises(AppError, match="different grids; compare jobs over the same area"):
        compare_class_maps(maps["clear"], maps["smaller"])
    with pytest.raises(AppError, match="different classes"):
        compare_class_maps(maps["clear"], maps["landcover"])
    with pytest.raises(AppError, match="different grids"):
        write_change_map(maps["clear"], maps["smaller"], tmp_path / "change.tif")


def test_every_date_is_published_and_a_date_gets_the_same_classes_whichever_date_the_job_maps(maps):
    """The cloudy-date job publishes the clear date's map too: pixel for pixel the clear-date job's map, and
    each date map's class shares are the statistics' per-date fractions."""
    import json

    cloudy_outputs = maps["cloudy"].parent
    assert sorted(p.name for p in cloudy_outputs.glob("date-*.tif")) == [
        f"date-{d}.tif" for d in ("2015-07-11", "2015-07-31", "2015-08-20", "2015-08-30", "2015-09-09")
    ]
    same_day = cloudy_outputs / "date-2015-07-11.tif"
    assert compare_class_maps(maps["clear"], same_day).changed_pixels == 0
    assert np.array_equal(read(cloudy_outputs / "date-2015-07-31.tif")[0], read(maps["cloudy"])[0])
    stats = json.loads((cloudy_outputs / "stats.json").read_text())
    for entry in stats["dates"]:
        classes, nodata = read(cloudy_outputs / f"date-{entry['date']}.tif")
        valid = classes[classes != nodata]
        for value, name in enumerate(("clear", "cloud", "cloud shadow")):
            assert np.count_nonzero(valid == value) / valid.size == pytest.approx(
                entry["fractions"][name], abs=1e-3
            )
