"""A series model through the whole job: `terraseg run --task crop` on the real 21-date Tanzania series.

No series model has trained weights, so the test installs a "trained-here" U-TAE (random weights, its own card
next to them in `<cache>/models/`, as training will write them) and checks the pipeline, not the map's quality:
date choice by the cloud model, (T, C, H, W) stacks, the dates in run.json, and real COG outputs.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.warp import transform_bounds

from models import utae
from models.catalogue import catalogue
from tests.worker.cli.test_cli import terraseg

MAX_DATES = 6
# The Tanzania reflectance (0..1) as it is: PASTIS's statistics do not apply to random weights.
TEST_NORMALISATION = {
    "kind": "scale-clip",
    "scale": [1.0] * 10,
    "offset": [0.0] * 10,
    "low": 0.0,
    "high": 1.0,
}


def install_trained_here_utae(cache: Path) -> str:
    """A U-TAE with random weights and its card in `<cache>/models/crop-utae-test/`; returns the model id."""
    folder = cache / "models" / "crop-utae-test"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    weights = folder / "utae_test.pt"
    torch.save(utae.UTAE().state_dict(), weights)
    card = catalogue().get("crop-utae-pastis").model_dump(mode="json")
    card.update(
        id="crop-utae-test",
        status="trained-here",
        description="U-TAE with random weights: a test fixture, not a model.",
        provenance="tests/worker/pipelines/test_series_job.py (torch.manual_seed(0))",
        normalisation=TEST_NORMALISATION,
        weights=[weights.name],
        weights_sha256={weights.name: hashlib.sha256(weights.read_bytes()).hexdigest()},
        builder="utae",
        builder_args={},
        temporal={"mode": "series", "max_dates": MAX_DATES, "date_choice": "clear fraction and even spacing"},
    )
    (folder / "card.json").write_text(json.dumps(card, indent=2))
    return "crop-utae-test"


def test_a_series_model_runs_as_a_job_on_the_real_series_and_records_its_dates(tanzania_source, tmp_path):
    folder, series = tanzania_source
    model_id = install_trained_here_utae(tmp_path / "cache")
    with rasterio.open(sorted(folder.glob("*.tif"))[0]) as scene:
        west, south, east, north = transform_bounds(scene.crs, "EPSG:4326", *scene.bounds)
    inset = 0.002  # degrees, about 200 m inside the data's edge
    aoi = f"{west + inset},{south + inset},{east - inset},{north - inset}"
    result = terraseg(
        "run", "--task", "crop", "--model", model_id, "--aoi", aoi, "--start", "2016-01-01", "--end", "2020-12-31",
        "--source", f"local:{folder}", "--out", "out", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    run = json.loads((out / "run.json").read_text())
    stats = json.loads((out / "stats.json").read_text())
    all_dates = [f"{d[:4]}-{d[4:6]}-{d[6:]}" for d in series["dates"]]
    chosen = run["series_dates"]
    assert 2 <= len(chosen) <= MAX_DATES and chosen == sorted(chosen) and set(chosen) <= set(all_dates)
    assert stats["series_dates"] == chosen and stats["selected_date"].startswith(chosen[0])
    # The cloud model judged every date; the chosen ones are among the clearer half.
    fractions = {d["date"]: d["fractions"]["clear"] * d["valid_fraction"] for d in stats["dates"]}
    assert len(fractions) == 21
    assert min(fractions[d] for d in chosen) >= np.median(list(fractions.values()))
    assert run["model"]["id"] == model_id and run["model"]["status"] == "trained-here"
    with rasterio.open(out / "classes.tif") as cog:
        classes = cog.read(1)
        assert cog.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert json.loads(cog.tags()["CLASS_NAMES"])["19"] == "void label"
    assert ((classes < 20) | (classes == 255)).all() and (classes < 20).mean() > 0.5
    assert sum(c["pixels"] for c in stats["classes"]) == int((classes < 20).sum())


def test_an_untrained_series_model_is_refused_with_how_to_get_weights(tanzania_source, tmp_path):
    folder, _ = tanzania_source
    result = terraseg(
        "run", "--task", "crop", "--model", "crop-utae-pastis", "--aoi", "39.0,-7.8,39.01,-7.79",
        "--start", "2016-01-01", "--end", "2020-12-31", "--source", f"local:{folder}", "--out", "out", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert (
        "has no trained weights yet; import published weights or train it first. Published weights: "
        "'terraseg import crop-utae-pastis FILE...'" in result.stderr
    )
