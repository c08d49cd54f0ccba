"""`terraseg evaluate --samples`: the shipped Presto crop models scored on real WorldCereal samples."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from core.learning.crop_samples import concatenate, read_samples_table, to_series
from core.learning.metrics import evaluate
from models.catalogue import catalogue
from models.conversion.presto_heads import DEFAULT_SAMPLES, HOLDOUT_FRACTION
from models.presto_heads import block_holdout, load_head_model, spatial_blocks
from tests.worker.cli.test_cli import terraseg

DEKADS = (
    Path(__file__).resolve().parents[2] / "data" / "worldcereal" / "reference_2023_FRA_dekad_part.geoparquet"
)


def test_evaluate_scores_a_crop_model_on_a_samples_parquet_and_writes_the_predictions(tmp_path):
    result = terraseg(
        "evaluate", "--model", "crop-presto-croptype", "--samples", str(DEKADS),
        "--predictions", "predictions.csv", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["legend"] == "CROPTYPE20_EUROPE"
    with open(tmp_path / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["sample_id", "ewoc_code", "label", "predicted", "probability"]
    assert len(rows) == 291 and len({r["sample_id"] for r in rows}) == 291
    ignored = [r for r in rows if r["label"] == ""]
    assert len(ignored) == 117  # 'ignore' under CROPTYPE20_EUROPE: left out of the scores, still predicted
    assert all(0 < float(r["probability"]) <= 1 for r in rows)
    # the printed scores are the CSV's: recompute them from its rows
    legend = tuple(c["name"] for c in metrics["per_class"])
    to_class = {name: name if name in legend else "other_crop" for name in {r["label"] for r in rows} - {""}}
    scored = [r for r in rows if r["label"]]
    truth = np.array([legend.index(to_class[r["label"]]) for r in scored])
    predicted = np.array([legend.index(r["predicted"]) for r in scored])
    again = evaluate(truth, predicted, legend)
    assert metrics["samples"] == 174 and again.overall_accuracy == pytest.approx(metrics["overall_accuracy"])
    assert again.macro_f1 == pytest.approx(metrics["macro_f1"])


def test_the_shipped_heads_give_their_cards_held_out_scores():
    """The held-out split is rebuilt from the samples; the shipped weights score on it what their cards say."""
    series = concatenate([to_series(read_samples_table(str(p))) for p in DEFAULT_SAMPLES])
    cards = catalogue()
    for model_id in ("crop-presto-croptype", "crop-presto-cropland"):
        model = load_head_model(cards.get(model_id), cards.folder(model_id))
        _, truth = model.labels(series)
        held_out = block_holdout(spatial_blocks(series.latlon_deg), truth, HOLDOUT_FRACTION, 0)
        predicted = model.probabilities(series.take(held_out)).argmax(axis=1)
        scores = evaluate(truth[held_out], predicted, model.classes)
        card_scores = model.card.metrics["held_out"]
        assert scores.samples == card_scores["samples"]  # type: ignore[index]
        assert scores.overall_accuracy == pytest.approx(card_scores["overall_accuracy"], abs=1e-6)  # type: ignore[index]
        assert scores.macro_f1 == pytest.approx(card_scores["macro_f1"], abs=1e-6)  # type: ignore[index]


def test_evaluate_with_samples_refuses_what_it_cannot_score(tmp_path):
    not_presto = terraseg("evaluate", "--model", "cloud-csmask", "--samples", str(DEKADS), cwd=tmp_path)
    assert not_presto.returncode != 0 and "does not read pixel time series" in not_presto.stderr
    assert "crop-presto-croptype" in not_presto.stderr and "Traceback" not in not_presto.stderr
    absent = terraseg(
        "evaluate", "--model", "crop-presto-cropland", "--samples", "nope.parquet", cwd=tmp_path
    )
    assert absent.returncode != 0 and "No samples file nope.parquet" in absent.stderr
    broken = tmp_path / "broken.parquet"
    read_samples_table(str(DEKADS)).drop(columns=["S2-L2A-B04"]).to_parquet(broken)
    lacks = terraseg("evaluate", "--model", "crop-presto-cropland", "--samples", str(broken), cwd=tmp_path)
    assert lacks.returncode != 0 and "lacks the column(s) S2-L2A-B04" in lacks.stderr
    neither = terraseg("evaluate", "--model", "crop-presto-cropland", cwd=tmp_path)
    assert neither.returncode != 0 and "needs --samples FILE, --dataset DIR, or --labels" in neither.stderr


def test_a_model_owner_trains_a_crop_head_from_samples_and_maps_a_cube_with_it(tmp_path):
    """`terraseg train --samples` on the base's encoder, then the new model scored on samples and run as a job."""
    monthly, dekads = DEFAULT_SAMPLES
    trained = terraseg(
        "train", "--base", "crop-presto-croptype", "--samples", str(monthly), "--samples", str(dekads),
        "--as", "my-crops", cwd=tmp_path,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert trained.stdout.strip().splitlines()[-1] == "my-crops"
    assert "Training/validation samples: no_crop 132/58, wheat 35/22" in trained.stderr
    scores = [line for line in trained.stderr.splitlines() if " on 142 samples" in line]
    assert [line.split(":")[0].split(" on the")[0] for line in scores] == ["my-crops", "crop-presto-croptype"]
    card = json.loads((tmp_path / "cache" / "models" / "my-crops" / "v1" / "card.json").read_text())
    assert card["status"] == "trained-here" and card["label_mapping"] == "CROPTYPE20_EUROPE"
    assert card["metrics"]["held_out"]["samples"] == 142 and card["builder_args"]["legend_classes"] == {
        "*": "other_crop"
    }
    evaluated = terraseg("evaluate", "--model", "my-crops", "--samples", str(dekads), "--json", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["samples"] == 174
    aoi = "5.3248,50.6342,5.3276,50.6358"  # 200 m inside the shipped cube
    cube = Path(__file__).resolve().parents[2] / "data" / "worldcereal" / "monthly_cube_inputs.nc"
    mapped = terraseg(
        "run", "--task", "crop", "--model", "my-crops", "--source", f"cube:{cube}", "--aoi", aoi,
        "--start", "2020-11-01", "--end", "2021-10-31", "--out", "out", cwd=tmp_path,
    )  # fmt: skip
    assert mapped.returncode == 0, mapped.stderr
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["model_id"] == "my-crops" and stats["valid_pixels"] > 300
    assert not (tmp_path / "out" / "cropland.tif").exists()  # a trained head brings no cropland companion


def test_training_from_samples_refuses_what_it_cannot_train(tmp_path):
    monthly, _ = DEFAULT_SAMPLES
    not_presto = terraseg(
        "train", "--base", "landcover-dynamic-world", "--samples", str(monthly), "--as", "x", cwd=tmp_path
    )
    assert not_presto.returncode != 0 and "is not one (use crop-presto-cropland" in not_presto.stderr
    legend = terraseg(
        "train", "--base", "crop-presto-croptype", "--samples", str(monthly), "--legend", "NOPE", "--as", "x",
        cwd=tmp_path,
    )  # fmt: skip
    assert legend.returncode != 0 and "No legend 'NOPE'; the legends are" in legend.stderr
    neither = terraseg("train", "--base", "crop-presto-croptype", "--as", "x", cwd=tmp_path)
    assert neither.returncode != 0 and "train needs --samples FILE, --dataset DIR, or --labels" in neither.stderr
    for result in (not_presto, legend, neither):
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "cache" / "models" / "x").exists()


def test_train_samples_queue_checks_first_and_a_training_worker_installs_the_head(settings, start_worker, tmp_path):
    """`terraseg train --samples ... --queue`: a bad request is refused before anything is queued; a good one runs
    on a training worker and installs the same head as training here (same samples, same seed)."""
    from tests.services import job_env, wait_for
    from worker.queue.client import TrainingClient

    monthly, dekads = DEFAULT_SAMPLES
    env = job_env(settings)
    refused = terraseg(
        "train", "--base", "crop-presto-croptype", "--samples", str(monthly), "--legend", "NOPE", "--as", "x",
        "--queue", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert refused.returncode == 2 and "No legend 'NOPE'" in refused.stderr
    runs = TrainingClient(settings)
    assert runs.list_jobs() == []
    queued = terraseg(
        "train", "--base", "crop-presto-croptype", "--samples", str(monthly), "--samples", str(dekads),
        "--as", "my-crops", "--epochs", "30", "--queue", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert queued.returncode == 0, queued.stderr
    run_id = queued.stdout.strip().splitlines()[-1]
    assert runs.training_spec(run_id).data.kind == "samples"
    start_worker("--queues", "training")
    wait_for(runs, run_id, ("finished",), timeout_s=180)
    result = runs.result(run_id)
    assert result is not None and result["unit"] == "samples" and result["metrics"]["samples"] == 142
    assert [row["epoch"] for row in runs.epochs(run_id)] == list(range(1, 31))  # no early stopping here
    from worker.pipelines.training import SamplesTrainRequest, train_from_samples

    here = train_from_samples(
        SamplesTrainRequest(
            base_id="crop-presto-croptype", new_id="my-crops-here", samples=(monthly, dekads), epochs=30
        ),
        settings,
    )
    assert here.metrics.model_dump(mode="json") == result["metrics"]
