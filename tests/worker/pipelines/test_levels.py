"""Every task on every source: a land-cover model trained on L1C prefers L1C scenes wherever the job's sources
offer them, and runs on L2A-only sources with its caveat where a reader of the map looks.

The L2A folders here hold the real sample's pixels tagged as L2A (the local-source format's PROCESSING_LEVEL):
no scene of the shared data exists in both levels, so these tests check which scenes a job takes and what it
says, not how Dynamic World's classes differ between the levels.
"""

import json
import shutil
from pathlib import Path

import pytest
import rasterio
from rasterio.warp import transform_bounds

from core.config import Settings
from core.errors import ModelError
from core.jobs.preflight import estimate_job, find_scenes
from core.jobs.request import JobSpec
from core.sample.build import SAMPLE_DIR
from models.catalogue import catalogue
from models.registry import LoadOptions, load
from tests.services import sample_spec
from worker.pipelines.map_job import run_job

CAVEAT = catalogue().get("landcover-dynamic-world").level_caveats["L2A"]


def tagged_copy(folder: Path, level: str, names: list[str] | None = None) -> Path:
    """The sample's scenes (or those named) copied into `folder`, tagged with processing `level`."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(SAMPLE_DIR.glob("S2_*.tif")):
        if names is not None and path.name not in names:
            continue
        copy = folder / path.name.replace("_L1C_", f"_{level}_")
        shutil.copyfile(path, copy)
        with rasterio.open(copy, "r+") as dst:
            dst.update_tags(PROCESSING_LEVEL=level, SCENE_ID=copy.stem)
    return folder


def landcover_spec(*sources: str) -> JobSpec:
    return sample_spec(task="landcover", model_id="landcover-dynamic-world", sources=sources or ("sample",))


def test_land_cover_on_an_l2a_only_source_runs_and_says_so_in_the_status_stats_and_run_record(
    tanzania_source: tuple[Path, object], tmp_path: Path
):
    folder, _ = tanzania_source  # the real L2A series (surface reflectance), 20 m
    with rasterio.open(sorted(folder.glob("*.tif"))[0]) as scene:
        west, south, east, north = transform_bounds(scene.crs, "EPSG:4326", *scene.bounds)
    inset = 0.002  # degrees, about 200 m inside the data's edge
    spec = sample_spec(
        task="landcover",
        model_id="landcover-dynamic-world",
        sources=(f"local:{folder}",),
        aoi=f"{west + inset},{south + inset},{east - inset},{north - inset}",
        start="2017-01-01",
        end="2017-12-31",
    )
    cards = catalogue().job_models("landcover", None)
    scenes = find_scenes(spec.sources, spec.aoi.to_aoi().geometry, spec.start, spec.end, None, Settings())
    estimate = estimate_job(spec.aoi.to_aoi(), scenes, cards.model, cards.cloud_model)
    assert estimate.caveats == (CAVEAT,)  # the New job page shows it before the job is submitted
    messages: list[str] = []
    result = run_job(
        spec,
        tmp_path / "out",
        Settings(cache_dir=tmp_path / "cache"),
        progress=lambda _fraction, message: messages.append(message),
    )
    assert CAVEAT in result.warnings  # the worker appends these to the job's "Done" status
    assert f"Caveat: {CAVEAT}" in messages  # and says it while the job runs
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["warnings"][0] == CAVEAT
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["notes"] == [CAVEAT]
    assert {i["processing_level"] for i in record["inputs"]} == {"L2A"}
    with rasterio.open(tmp_path / "out" / "classes.tif") as src:
        classes = src.read(1)
    assert (classes != 255).mean() > 0.5, stats["warnings"]  # a map, not an empty "Done"


def test_an_l1c_source_later_in_the_list_is_preferred_for_land_cover_but_not_for_clouds(tmp_path: Path):
    l2a = tagged_copy(tmp_path / "l2a", "L2A")
    sources = (f"local:{l2a}", "sample")
    cards = catalogue()
    settings = Settings(cache_dir=tmp_path / "cache")
    aoi = landcover_spec().aoi.to_aoi().geometry
    dates = landcover_spec().start, landcover_spec().end
    landcover = cards.job_models("landcover", "landcover-dynamic-world")
    assert landcover.trained_levels == ("L1C",)
    for_landcover = find_scenes(sources, aoi, *dates, None, settings, landcover.trained_levels)
    assert {s.source for s in for_landcover} == {"sample"}
    assert {s.processing_level for s in for_landcover} == {"L1C"}
    # csmask was trained on both levels: the first source serves, as it always did.
    cloud = cards.job_models("cloud", "cloud-csmask")
    for_clouds = find_scenes(sources, aoi, *dates, None, settings, cloud.trained_levels)
    assert {s.processing_level for s in for_clouds} == {"L2A"}

    area = landcover_spec().aoi.to_aoi()
    assert estimate_job(area, for_landcover, landcover.model, landcover.cloud_model).caveats == ()
    assert estimate_job(area, for_clouds, landcover.model, landcover.cloud_model).caveats == (CAVEAT,)
    result = run_job(landcover_spec(*sources), tmp_path / "out", settings)
    assert CAVEAT not in result.warnings
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["notes"] == [] and {i["processing_level"] for i in record["inputs"]} == {"L1C"}


def test_within_one_source_the_trained_level_wins_over_the_more_common_one(tmp_path: Path):
    folder = tmp_path / "mixed"
    scenes = sorted(p.name for p in SAMPLE_DIR.glob("S2_*.tif"))
    tagged_copy(folder, "L2A", scenes[:4])
    shutil.copyfile(SAMPLE_DIR / scenes[4], folder / scenes[4])  # one L1C date among four L2A ones
    spec = landcover_spec(f"local:{folder}")
    levels = catalogue().job_models("landcover", None).trained_levels
    chosen = find_scenes(spec.sources, spec.aoi.to_aoi().geometry, spec.start, spec.end, None, Settings(), levels)
    assert [s.processing_level for s in chosen] == ["L1C"]
    # Without a preference (a caller that does not know the models) the most common level is kept.
    chosen = find_scenes(spec.sources, spec.aoi.to_aoi().geometry, spec.start, spec.end, None, Settings())
    assert {s.processing_level for s in chosen} == {"L2A"} and len(chosen) == 4


def test_a_model_without_a_caveat_for_a_level_is_still_refused_on_it():
    cards = catalogue()
    options = LoadOptions(processing_level="L2A", available_bands=frozenset({"B02", "B03", "B04", "B08"}))
    with pytest.raises(ModelError, match="works on L1C data, but the scenes are L2A"):
        load(cards, "cloud-s2cloudless", options)
    loaded = load(cards, "cloud-csmask", options)  # trained on L2A: no caveat
    assert loaded.caveat == ""


def test_a_head_trained_on_a_caveat_level_counts_as_trained_on_it():
    from models.training.install import trained_card

    base = catalogue().get("landcover-dynamic-world")
    training = {"trained_at": "2026-12-03", "dataset_sha256": "0" * 64, "processing_level": "L2A"}
    card = trained_card(base, "mine", "1", ("a", "b"), "w.pt", "0" * 64, training, {})
    assert card.processing_levels == ("L2A", "L1C") and card.level_caveats == {}
    training["processing_level"] = "L1C"
    card = trained_card(base, "mine", "1", ("a", "b"), "w.pt", "0" * 64, training, {})
    assert card.processing_levels == ("L1C",) and card.level_caveats == base.level_caveats
