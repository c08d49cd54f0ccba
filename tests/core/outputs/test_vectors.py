"""Vector outputs on a real class map (the embedded sample's land-cover job, run in-process): polygons that give the
map back pixel for pixel, a minimum mapping unit, simplification, GeoPackage and GeoParquet files that geopandas
reads, and class areas per zone that add up to the map's own areas."""

import json
from pathlib import Path

import geopandas
import numpy as np
import pytest
import rasterio
import rasterio.features
from shapely.geometry import box, shape

from core.config import Settings
from core.errors import AppError
from core.outputs.vectors import VectorOptions, polygonise, write_geopackage, write_geoparquet, zonal_areas
from tests.services import sample_spec
from worker.pipelines.map_job import run_job


@pytest.fixture(scope="module")
def classes_cog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("vectors")
    # Land cover: the sample's clearest date has few cloud patches; Dynamic World's map has hundreds of patches.
    spec = sample_spec(task="landcover", model_id="landcover-dynamic-world")
    run_job(spec, base / "out", Settings(cache_dir=base / "cache"))
    return base / "out" / "classes.tif"


def read_map(path: Path) -> tuple[np.ndarray, object, int]:
    with rasterio.open(path) as src:
        return src.read(1), src.transform, int(src.nodata)


def test_the_polygons_give_the_map_back_pixel_for_pixel(classes_cog):
    classes, transform, nodata = read_map(classes_cog)
    polygons = polygonise(classes_cog, VectorOptions())
    assert len(set(polygons.values)) >= 3 and len(polygons.geometries) >= 10  # a real map, not one patch
    back = rasterio.features.rasterize(
        zip(polygons.geometries, polygons.values, strict=True),
        out_shape=classes.shape,
        transform=transform,
        fill=nodata,
        dtype=classes.dtype,
    )
    assert np.array_equal(back, classes)  # no-data pixels are in no polygon, every other pixel in its class's
    assert sum(polygons.area_m2) == pytest.approx(100.0 * np.count_nonzero(classes != nodata))


def test_a_minimum_mapping_unit_merges_small_patches_and_keeps_the_mapped_area(classes_cog):
    classes, _, nodata = read_map(classes_cog)
    every = polygonise(classes_cog, VectorOptions())
    sieved = polygonise(classes_cog, VectorOptions(min_area_m2=2000.0))
    assert sum(a < 2000.0 for a in every.area_m2) >= 3  # the raw map has patches of 2, 6 and 7 pixels...
    assert min(sieved.area_m2) >= 2000.0  # ... which the sieve gives to their neighbours
    assert len(sieved.geometries) < len(every.geometries)
    assert sum(sieved.area_m2) == pytest.approx(100.0 * np.count_nonzero(classes != nodata))
    simplified = polygonise(classes_cog, VectorOptions(min_area_m2=2000.0, simplify_m=10.0))
    vertices = sum(len(g.exterior.coords) for g in simplified.geometries)
    assert vertices < sum(len(g.exterior.coords) for g in sieved.geometries)
    assert sum(simplified.area_m2) == pytest.approx(sum(sieved.area_m2), rel=0.05)
    with pytest.raises(AppError, match="cannot be negative"):
        VectorOptions(min_area_m2=-1.0)


def test_geopackage_and_geoparquet_open_in_geopandas_with_the_maps_crs(classes_cog, tmp_path):
    polygons = polygonise(classes_cog, VectorOptions(min_area_m2=400.0, simplify_m=5.0))
    write_geopackage(polygons, tmp_path / "classes.gpkg")
    write_geoparquet(polygons, tmp_path / "classes.parquet")
    with rasterio.open(classes_cog) as src:
        crs = src.crs
    for frame in (
        geopandas.read_file(tmp_path / "classes.gpkg", layer="classes"),
        geopandas.read_parquet(tmp_path / "classes.parquet"),
    ):
        assert len(frame) == len(polygons.geometries)
        assert frame.crs.to_epsg() == crs.to_epsg()
        assert list(frame["class"]) == polygons.names and list(frame["value"]) == polygons.values
        assert frame.geometry.area.to_numpy() == pytest.approx(frame["area_m2"].to_numpy())


def test_areas_per_zone_add_up_to_the_maps_areas(classes_cog):
    stats = json.loads((classes_cog.parent / "stats.json").read_text())
    run = json.loads((classes_cog.parent / "run.json").read_text())
    west, south, east, north = shape(run["aoi"]["geometry"]).bounds
    middle = (west + east) / 2
    zones = [
        ("west", box(west - 1, south - 1, middle, north + 1)),
        ("east", box(middle, south - 1, east + 1, north + 1)),
    ]
    rows = zonal_areas(classes_cog, zones)
    for entry in stats["classes"]:
        in_zones = sum(r.pixels for r in rows if r.value == entry["value"])
        assert in_zones == entry["pixels"], entry["name"]  # each pixel in exactly one half
    for zone in ("west", "east"):
        assert sum(r.percent for r in rows if r.zone == zone) == pytest.approx(100.0, abs=0.1)
