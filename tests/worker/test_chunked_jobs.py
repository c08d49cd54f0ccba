"""Areas larger than one chunk (worker/chunked.py): chunk jobs on two real RQ workers, one of them SIGKILLed
mid-chunk, give the very rasters and statistics of one pass over the whole grid; so does a chunked run outside
the queue. The area lies across the UTM zone border at 18 E, covered on each date by a mosaic of two scenes,
one in each zone, of real Sentinel-2 pixels (the embedded sample's)."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rq import Worker

from core.chunks import Chunk, chunk_grid, chunk_px, plan_chunks
from core.config import Settings
from core.grid import Grid
from core.jobs import JobSpec
from tests.conftest import write_scene
from tests.services import SAMPLE_DIR, WorkerProcess, request_spec, wait_for
from worker.client import ChunkClient, JobClient
from worker.tasks import run_job

BORDER_LON, LAT = 18.0, 46.0
SCENE_W_PX, SCENE_H_PX = 260, 230  # each scene 2.6 x 2.3 km, reaching 200 m past the border
DATES = ("2015-07-11T10:00:08Z", "2015-08-20T10:07:28Z")
CHUNK_KM = 0.9  # 90 px: a 2 x 3 chunk job


@pytest.fixture(scope="module")
def two_zone_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """Two dates, each a mosaic of a scene in UTM 33N (west of 18 E) and one in UTM 34N (east of it), made of
    the real sample's pixels; returns the folder and an AOI (GeoJSON) across the border."""
    folder = tmp_path_factory.mktemp("two_zones")
    samples = {p.name[7:15]: p for p in sorted(SAMPLE_DIR.glob("*.tif"))}
    for acquired in DATES:
        with rasterio.open(samples[acquired[:10].replace("-", "")]) as src:
            pixels = src.read()
        reps = (1, SCENE_H_PX // pixels.shape[1] + 1, SCENE_W_PX // pixels.shape[2] + 1)
        data = np.tile(pixels, reps)[:, :SCENE_H_PX, :SCENE_W_PX]
        for zone, crs in (("33", "EPSG:32633"), ("34", "EPSG:32634")):
            x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(BORDER_LON, LAT)
            left = round(x / 10) * 10 - (SCENE_W_PX * 10 - 200 if zone == "33" else 200)
            top = round(y / 10) * 10 + SCENE_H_PX * 5
            # The east scene is the west one mirrored, so the two halves of the area differ.
            scene = data if zone == "33" else data[:, :, ::-1].copy()
            write_scene(folder / f"{zone}_{acquired[:10]}.tif", scene, crs=crs, origin=(left, top), acquired=acquired)
    # 2.4 x 1.6 km around the border, its centroid just west of it (the grid is in UTM 33N).
    west, east, south, north = BORDER_LON - 0.0165, BORDER_LON + 0.0145, LAT - 0.0072, LAT + 0.0072
    aoi = {
        "type": "Polygon",
        "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]],
    }
    return folder, aoi


def two_zone_spec(source: tuple[Path, dict[str, object]], task: str = "landcover") -> JobSpec:
    folder, aoi = source
    model = {"landcover": "landcover-dynamic-world", "cloud": "cloud-csmask"}[task]
    return request_spec(
        aoi=aoi, start="2015-07-01", end="2015-08-31", task=task, model_id=model, sources=(f"local:{folder}",)
    )


def rasters(out_dir: Path) -> dict[str, np.ndarray]:
    """Every raster of a job's outputs, by name."""
    return {p.name: rasterio.open(p).read() for p in sorted(out_dir.glob("*.tif"))}


def assert_same_outputs(chunked: Path, whole: Path) -> None:
    got, want = rasters(chunked), rasters(whole)
    assert sorted(got) == sorted(want)
    for name, pixels in want.items():
        assert np.array_equal(got[name], pixels), f"{name} differs between the chunked and the whole run"
    stats, whole_stats = (json.loads((d / "stats.json").read_text()) for d in (chunked, whole))
    for key in ("selected_date", "class_areas", "dates", "aoi_px", "warnings"):
        assert stats.get(key) == whole_stats.get(key), key


def test_chunks_cover_the_grid_once_on_its_own_lattice() -> None:
    from affine import Affine

    grid = Grid("EPSG:32633", Affine(10, 0, 500_000, 0, -10, 5_100_000), 250, 130)
    side = chunk_px(0.9, 10.0, multiple_of=3)
    chunks = plan_chunks(grid, side)
    assert side == 90 and len(chunks) == 6
    covered = np.zeros((grid.height, grid.width), np.int32)
    for chunk in chunks:
        covered[chunk.row_off : chunk.row_off + chunk.height, chunk.col_off : chunk.col_off + chunk.width] += 1
        sub = chunk_grid(grid, chunk)
        assert sub.crs == grid.crs and sub.transform.a == 10
        assert (sub.transform.c - grid.transform.c) / 10 == chunk.col_off
    assert (covered == 1).all()
    assert plan_chunks(grid, 1000) == [Chunk(0, 0, 0, 130, 250)]
    assert chunk_px(0.001, 10.0, multiple_of=3) == 3


def test_a_chunked_run_outside_the_queue_maps_the_very_pixels_of_one_pass(
    two_zone_source: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    spec = two_zone_spec(two_zone_source)
    whole = run_job(spec, tmp_path / "whole", Settings(cache_dir=tmp_path / "cache-whole"))
    chunked_settings = Settings(cache_dir=tmp_path / "cache-chunked", chunk_km=CHUNK_KM)
    chunked = run_job(spec, tmp_path / "chunked", chunked_settings)
    assert_same_outputs(tmp_path / "chunked", tmp_path / "whole")
    record = json.loads((tmp_path / "chunked" / "run.json").read_text())
    assert len(record["chunks"]) == 6 and json.loads((tmp_path / "whole" / "run.json").read_text())["chunks"] == []
    assert [p["pass_name"] for p in record["chunks"][0]["passes"]] == ["cloud", "model"]
    assert record["grid"]["crs"] == "EPSG:32633" and len(record["inputs"]) == 4  # two scenes a date, two dates
    assert chunked.selected_date == whole.selected_date
    assert not (chunked_settings.cache_dir / "work").exists() or not any((chunked_settings.cache_dir / "work").iterdir())
