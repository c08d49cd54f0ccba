"""mask_clouds, the map overlays and the CSV of areas, on small rasters written in the test."""

from datetime import date
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from PIL import Image

from core.geometry.grid import Grid
from core.mapping.analysis import DateResult, mask_clouds
from core.mapping.inference import InferenceResult
from core.outputs.export import open_intermediate, write_class_cog
from core.outputs.overlay import read_classes, render_overlay
from core.types import ClassInfo, ModelCard

GRID = Grid("EPSG:32633", Affine(10, 0, 500_000, 0, -10, 5_000_000), 40, 30)
CLASSES = (
    ClassInfo(0, "water", "#0000ff"),
    ClassInfo(1, "trees", "#00ff00"),
    ClassInfo(2, "built", "#ff0000"),
)
CARD = ModelCard(
    id="t", version="1", task="landcover", description="", architecture="", sensor="S2", bands=("B04",),
    processing_levels=("L1C",), resolution_m=10, tile_px=32, normalisation={"kind": "none"}, classes=CLASSES,
    status="pretrained", licence="", provenance="",
)  # fmt: skip


def write(path: Path, values: np.ndarray, nodata: int) -> Path:
    with open_intermediate(path, GRID, nodata) as dataset:
        dataset.write(values.astype(np.uint8), 1)
    return path


def result(folder: Path, classes: np.ndarray, counts: list[int]) -> DateResult:
    folder.mkdir()
    inference = InferenceResult(np.array(counts, np.int64), aoi_px=1200, tiles=1, model_s=0, total_s=0)
    confidence = np.where(classes == 255, 0, 200)
    return DateResult(
        date(2020, 6, 1),
        (),
        write(folder / "c.tif", classes, 255),
        write(folder / "p.tif", confidence, 0),
        inference,
    )


def test_cloudy_and_shadowed_pixels_become_no_data_and_the_counts_follow(tmp_path):
    land = np.tile(np.array([0, 1, 2], np.uint8), (30, 14))[:, :40]
    land[:, -2:] = 255  # no data on the right edge
    cloud = np.zeros((30, 40), np.uint8)
    cloud[:10] = 1  # cloud on the top third
    cloud[10:12] = 2  # shadow below it
    counts = [int((land == v).sum()) for v in range(3)]
    masked = mask_clouds(
        result(tmp_path / "lc", land, counts),
        result(tmp_path / "cl", cloud, [0, 0, 0]),
        CARD,
        GRID,
        tmp_path / "m",
    )
    with rasterio.open(masked.classes_path) as c, rasterio.open(masked.confidence_path) as p:
        classes, confidence = c.read(1), p.read(1)
    assert (classes[:12] == 255).all() and (confidence[:12] == 0).all()
    np.testing.assert_array_equal(classes[12:], land[12:])
    assert masked.inference.class_counts.tolist() == [int((land[12:] == v).sum()) for v in range(3)]


def test_the_class_overlay_keeps_classes_and_colours_and_is_transparent_outside(tmp_path):
    values = np.full((30, 40), 255, np.uint8)
    values[5:25, 5:20], values[5:25, 20:35] = 1, 2
    write(tmp_path / "i.tif", values, 255)
    write_class_cog(tmp_path / "i.tif", tmp_path / "classes.tif", CLASSES, 255, "t")
    overlay = render_overlay(tmp_path / "classes.tif")
    (south, west), (north, east) = overlay.bounds_latlon
    assert 45.0 < south < north < 45.2 and 14.99 < west < east < 15.1  # x = 500 km is 15° E in zone 33
    image = np.asarray(Image.open(__import__("io").BytesIO(overlay.png)))
    colours = {tuple(int(v) for v in px) for px in image.reshape(-1, 4)}
    assert colours <= {(0, 0, 0, 0), (0, 255, 0, 255), (255, 0, 0, 255)}  # nearest: no blended colours
    assert image[0, 0, 3] == 0 and (0, 255, 0, 255) in colours and (255, 0, 0, 255) in colours
    assert read_classes(tmp_path / "classes.tif") == CLASSES


def test_the_areas_csv_has_one_row_per_class():
    from core.jobs.report import ClassArea, Stats

    stats = Stats(
        task="landcover", model_id="t", selected_date="2015-07-11", aoi_area_km2=0.0004, pixel_area_m2=100.0,
        aoi_pixels=4, valid_pixels=4, dates=[],
        classes=[
            ClassArea(value=0, name="water", color="#0000ff", pixels=3, area_ha=0.03, percent=75.0),
            ClassArea(value=1, name="trees, mixed", color="#00ff00", pixels=1, area_ha=0.01, percent=25.0),
        ],
    )  # fmt: skip
    assert Stats.model_validate_json(stats.model_dump_json()) == stats  # what the Results page reads back
    assert stats.csv().splitlines() == [
        "value,class,pixels,area_ha,percent",
        "0,water,3,0.03,75.0",
        '1,"trees, mixed",1,0.01,25.0',
    ]


def test_coverage_warnings_say_why_a_map_is_nearly_empty():
    from core.mapping.analysis import coverage_warnings

    day = date(2015, 7, 31)
    assert coverage_warnings(10_000, 9_000, 8_000, day, "cloud-csmask") == []
    [no_data] = coverage_warnings(10_000, 300, 300, day)
    assert "cover only 3.0 % of the area of interest" in no_data
    [clouds] = coverage_warnings(10_000, 9_000, 100, day, "cloud-csmask")
    assert "hide 89.0 %" in clouds and "covers only 1.0 %" in clouds and "2015-07-31" in clouds
    assert "draw a larger area" in coverage_warnings(0, 0, 0, day)[0]


def test_pictures_are_cropped_together_to_the_data_and_enlarged_without_inventing_colours():
    import io

    from core.outputs.overlay import display_pngs

    def png(array: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(array, "RGBA").save(buffer, format="PNG")
        return buffer.getvalue()

    classes = np.zeros((40, 50, 4), np.uint8)  # transparent, but for a 10 x 20 map in the middle
    classes[10:20, 15:35] = (0, 200, 255, 255)
    classes[10:20, 15:25] = (58, 125, 68, 255)
    scene = np.zeros((40, 50, 4), np.uint8)
    scene[12:22, 15:35] = (90, 90, 90, 255)  # the scene's data reaches two rows lower
    sharp_classes, sharp_scene = (Image.open(io.BytesIO(p)) for p in display_pngs(png(classes), png(scene)))
    assert sharp_classes.size == sharp_scene.size == (20 * 40, 12 * 40)  # the union of both, x40 to reach 800 px
    colours = {colour for _, colour in sharp_classes.convert("RGBA").getcolors()}
    assert colours == {(0, 200, 255, 255), (58, 125, 68, 255), (0, 0, 0, 0)}  # no blend at the class border
    assert sharp_classes.getpixel((10 * 40 - 1, 0)) == (58, 125, 68, 255)
    assert sharp_classes.getpixel((10 * 40, 0)) == (0, 200, 255, 255)
