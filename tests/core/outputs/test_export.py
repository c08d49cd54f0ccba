import json

import numpy as np
import pytest
import rasterio
from affine import Affine

from core.errors import OutputError
from core.geometry.grid import Grid
from core.outputs.export import (
    check_writable,
    make_staging_dir,
    open_intermediate,
    publish,
    write_class_cog,
    write_confidence_cog,
    write_preview_png,
)
from core.types import ClassInfo

CLASSES = (ClassInfo(0, "clear", "#3a7d44"), ClassInfo(1, "cloud", "#d9d9d9"))
GRID = Grid("EPSG:32633", Affine(10.0, 0, 400_000.0, 0, -10.0, 5_000_000.0), 1500, 1300)


def _intermediate(path, values):
    with open_intermediate(path, GRID, 255) as dataset:
        dataset.write(values, 1)
    return path


def test_a_large_class_cog_has_overviews_colours_names_and_nodata(tmp_path):
    values = np.zeros((GRID.height, GRID.width), np.uint8)
    values[:, 700:] = 1
    values[:100] = 255
    write_class_cog(
        _intermediate(tmp_path / "raw.tif", values), tmp_path / "classes.tif", CLASSES, 255, "test"
    )
    with rasterio.open(tmp_path / "classes.tif") as dataset:
        assert dataset.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert dataset.overviews(1) == [2, 4]
        assert dataset.block_shapes[0] == (512, 512)
        assert dataset.colormap(1)[0][:3] == (0x3A, 0x7D, 0x44) and dataset.colormap(1)[255][3] == 0
        assert json.loads(dataset.tags()["CLASS_NAMES"]) == {"0": "clear", "1": "cloud"}
        np.testing.assert_array_equal(dataset.read(1), values)
        overview = dataset.read(1, out_shape=(GRID.height // 4, GRID.width // 4))
    assert set(np.unique(overview)) == {0, 1, 255}  # nearest: no blended, meaningless class values


def test_confidence_cog_keeps_scale_and_values(tmp_path):
    values = np.full((GRID.height, GRID.width), 200, np.uint8)
    write_confidence_cog(_intermediate(tmp_path / "raw.tif", values), tmp_path / "confidence.tif")
    with rasterio.open(tmp_path / "confidence.tif") as dataset:
        assert dataset.scales[0] == pytest.approx(1 / 255)
        assert (dataset.read(1) == 200).all()


def test_preview_png_has_the_map_and_one_legend_row_per_class(tmp_path):
    values = np.zeros((GRID.height, GRID.width), np.uint8)
    values[:, 750:] = 1
    write_class_cog(_intermediate(tmp_path / "raw.tif", values), tmp_path / "c.tif", CLASSES, 255, "t")
    write_preview_png(tmp_path / "c.tif", tmp_path / "p.png", CLASSES, 255, "title")
    from PIL import Image

    with Image.open(tmp_path / "p.png") as image:
        assert image.width == 1024  # the long side, read from overviews
        top = np.asarray(image.convert("RGB"))[10]
    assert tuple(top[10]) == (0x3A, 0x7D, 0x44) and tuple(top[1000]) == (0xD9, 0xD9, 0xD9)


def test_publish_into_a_new_folder_is_one_rename(tmp_path):
    out = tmp_path / "out"
    staging = make_staging_dir(out)
    for name in ("classes.tif", "stats.json", "run.json"):
        (staging / name).write_text(name)
    published = publish(staging, out)
    assert sorted(p.name for p in published) == ["classes.tif", "run.json", "stats.json"]
    assert not staging.exists() and (out / "run.json").read_text() == "run.json"


def test_publish_into_an_existing_folder_replaces_outputs_and_keeps_other_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "run.json").write_text("old")
    staging = make_staging_dir(out)
    assert staging.parent == out and staging.name.startswith(".out.staging-")
    (staging / "stats.json").write_text("new stats")
    (staging / "run.json").write_text("new run")
    publish(staging, out)
    assert (out / "run.json").read_text() == "new run" and (out / "notes.txt").read_text() == "mine"
    assert not staging.exists()


def test_unwritable_outputs_are_refused(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="not a folder"):
        check_writable(tmp_path / "file")
    with pytest.raises(OutputError, match="Cannot write outputs"):
        check_writable(tmp_path / "file" / "out")
    with pytest.raises(OutputError, match="Cannot write outputs"):
        check_writable(__import__("pathlib").Path("/proc/terraseg-out"))


def test_a_downloads_prefix_is_the_jobs_name_made_safe_or_its_id():
    from core.outputs.export import download_prefix

    assert download_prefix("Ljubljana, July clouds", "20261207-101500-a1b2c3") == "Ljubljana-July-clouds"
    assert download_prefix("../../etc/passwd", "x") == "etc-passwd"
    assert download_prefix("  ", "20261207-101500-a1b2c3") == "20261207-101500-a1b2c3"
    assert len(download_prefix("a" * 200, "x")) == 60
