"""Training a new model as a model owner does: `terraseg train` on real labels (eo-learn's Slovenia land-use
polygons, in EPSG:32633) over the embedded sample's real scenes, then a job with the new model. Bad labels end
with one sentence and install nothing.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio

from core.learning.labels import IGNORE, LabelError, read_labels
from core.learning.metrics import block_split, class_weights, evaluate
from tests.conftest import TEST_DATA
from tests.worker.cli.test_cli import SAMPLE_AOI, SAMPLE_DATES, terraseg

LULC = TEST_DATA / "s2_slovenia_eolearn" / "LULC.gpkg"
# The classes the sample's square kilometre holds enough of (cultivated land: 11 pixels).
CLASSES = ["artificial surface", "forest", "grassland", "schrubland"]
PARENT_CLASSES = "forest=trees,grassland=grass,schrubland=shrub and scrub,artificial surface=built"


def label_file(tmp_path: Path, classes: list[str], name: str = "labels.gpkg") -> Path:
    """The real polygons of `classes` (and their CRS, EPSG:32633) in a file of their own."""
    frame = pyogrio.read_dataframe(LULC)
    path = tmp_path / name
    pyogrio.write_dataframe(frame[frame.LULC_NAME.isin(classes)][["LULC_NAME", "geometry"]], path)
    return path


def train(tmp_path: Path, labels: Path, *extra: str, new_id: str = "landcover-slovenia") -> "object":
    return terraseg(
        "train", "--base", "landcover-dynamic-world", "--labels", str(labels), "--label-field", "LULC_NAME",
        "--aoi", SAMPLE_AOI, *SAMPLE_DATES, "--as", new_id, *extra,
        cwd=tmp_path,
    )  # fmt: skip


def evaluate_cli(tmp_path: Path, model_id: str, labels: Path, *extra: str) -> "object":
    return terraseg(
        "evaluate", "--model", model_id, "--labels", str(labels), "--label-field", "LULC_NAME",
        "--aoi", SAMPLE_AOI, *SAMPLE_DATES, *extra, cwd=tmp_path,
    )  # fmt: skip


def test_a_head_trained_on_real_labels_beats_its_parent_and_runs_as_a_job(tmp_path):
    labels = label_file(tmp_path, CLASSES)
    done = train(tmp_path, labels, "--parent-classes", PARENT_CLASSES)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "landcover-slovenia"
    card = json.loads((tmp_path / "cache" / "models" / "landcover-slovenia" / "v1" / "card.json").read_text())
    assert card["status"] == "trained-here" and [c["name"] for c in card["classes"]] == CLASSES
    assert (
        card["training"]["base"] == "landcover-dynamic-world"
        and len(card["training"]["dataset_sha256"]) == 64
    )
    new, parent = card["metrics"]["validation"], card["metrics"]["parent_validation"]
    assert new["samples"] == parent["samples"] > 1000  # the same validation pixels
    # Google's head knows no "schrubland" vs "grassland" of the Slovenian land-use map; the new head learnt them.
    assert new["macro_f1"] > parent["macro_f1"] + 0.1, (new["macro_f1"], parent["macro_f1"])
    assert new["overall_accuracy"] > 0.8
    assert "on the same pixels" in done.stderr and "Training/validation pixels:" in done.stderr

    ran = terraseg(
        "run", "--task", "landcover", "--model", "landcover-slovenia", "--aoi", SAMPLE_AOI, *SAMPLE_DATES,
        "--out", str(tmp_path / "out"), cwd=tmp_path,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    with rasterio.open(tmp_path / "out" / "classes.tif") as classes:
        values = np.unique(classes.read(1))
    assert set(values.tolist()) <= {0, 1, 2, 3, 255} and {1, 2} <= set(values.tolist())  # forest, grassland
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert [c["name"] for c in stats["classes"]] == CLASSES

    # terraseg evaluate maps the area as a job does and scores every labelled pixel it mapped.
    predictions = tmp_path / "predictions.csv"
    scored = evaluate_cli(tmp_path, "landcover-slovenia", labels, "--json", "--predictions", str(predictions))
    assert scored.returncode == 0, scored.stderr
    own = json.loads(scored.stdout)
    rows = predictions.read_text().splitlines()
    assert (
        rows[0] == "x (EPSG:32633),y (EPSG:32633),true,predicted" and len(rows) == own["samples"] + 1 > 5000
    )
    assert sum(map(sum, own["confusion"])) == own["samples"]
    google = evaluate_cli(
        tmp_path, "landcover-dynamic-world", labels, "--json", "--class-map", PARENT_CLASSES
    )
    assert google.returncode == 0, google.stderr
    assert json.loads(google.stdout)["macro_f1"] < own["macro_f1"]
    unmatched = evaluate_cli(tmp_path, "landcover-dynamic-world", labels)
    assert unmatched.returncode == 2 and "say which match with --class-map" in unmatched.stderr


def test_decoder_mode_from_labels_over_imagery_fine_tunes_on_the_jobs_tiles_and_beats_its_parent(tmp_path):
    """--mode decoder: the head first, then Dynamic World's decoder on the job's own tiles of the clearest date,
    the training blocks' labels as targets and the validation blocks' for early stopping and the scores."""
    labels = label_file(tmp_path, CLASSES)
    done = train(tmp_path, labels, "--parent-classes", PARENT_CLASSES, "--mode", "decoder", "--epochs", "3")
    assert done.returncode == 0, done.stderr
    assert "Fine-tuning: epoch 3/3" in done.stderr
    card = json.loads((tmp_path / "cache" / "models" / "landcover-slovenia" / "v1" / "card.json").read_text())
    assert card["training"]["mode"] == "decoder" and card["training"]["best_epoch"] in (1, 2, 3)
    new, parent = card["metrics"]["validation"], card["metrics"]["parent_validation"]
    assert new["samples"] == parent["samples"] > 1000
    assert new["macro_f1"] > parent["macro_f1"] + 0.1, (new["macro_f1"], parent["macro_f1"])
    ran = terraseg(
        "run", "--task", "landcover", "--model", "landcover-slovenia", "--aoi", SAMPLE_AOI, *SAMPLE_DATES,
        "--out", str(tmp_path / "out"), cwd=tmp_path,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    with rasterio.open(tmp_path / "out" / "classes.tif") as classes:
        assert {1, 2} <= set(np.unique(classes.read(1)).tolist())  # forest and grassland


@pytest.mark.parametrize(
    ("classes", "extra", "sentence"),
    [
        (["forest"], (), "The labels hold one class only ('forest')"),
        (CLASSES + ["cultivated land"], (), "No training pixel for 'cultivated land'"),
        (CLASSES, ("--mode", "tail"), "Unknown training mode 'tail'; the modes are head, decoder, full"),
        (CLASSES, ("--label-field", "NAME"), "has no field 'NAME'; its fields are: LULC_NAME"),
    ],
)
def test_labels_that_cannot_be_trained_on_end_with_one_sentence(tmp_path, classes, extra, sentence):
    done = train(tmp_path, label_file(tmp_path, classes), *extra)
    assert done.returncode == 2, done.stderr
    assert sentence in done.stderr.strip().splitlines()[-1]
    assert "Traceback" not in done.stderr
    installed = tmp_path / "cache" / "models"
    assert not list(installed.glob("*/card.json")) and not list(installed.glob(".landcover-slovenia*"))


def test_an_untrained_base_cannot_get_a_new_head(tmp_path):
    done = terraseg(
        "train", "--base", "landcover-dfc2020-unet", "--labels", str(LULC), "--label-field", "LULC_NAME",
        "--aoi", SAMPLE_AOI, *SAMPLE_DATES, "--mode", "head", "--as", "x", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    assert "has no trained weights, and its architecture trains whole, --mode full" in done.stderr
    # Without --mode, such a base trains full, on a patch dataset: labels over imagery get that sentence.
    done = terraseg(
        "train", "--base", "landcover-dfc2020-unet", "--labels", str(LULC), "--label-field", "LULC_NAME",
        "--aoi", SAMPLE_AOI, *SAMPLE_DATES, "--as", "x", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2 and "trains on a patch dataset in its published layout" in done.stderr


def test_labels_outside_the_area_are_refused(tmp_path):
    frame = pyogrio.read_dataframe(LULC)
    frame["geometry"] = frame.geometry.translate(50_000, 0)  # 50 km east of the sample
    moved = tmp_path / "moved.gpkg"
    pyogrio.write_dataframe(frame[["LULC_NAME", "geometry"]], moved)
    done = train(tmp_path, moved)
    assert done.returncode == 2
    assert "None of the labels in moved.gpkg lies inside the area" in done.stderr


def test_a_label_file_with_too_many_vertices_is_refused(tmp_path):
    angles = np.linspace(0, 2 * np.pi, 100_000, endpoint=False)
    ring = np.c_[14.5 + 0.01 * np.cos(angles), 45.9 + 0.01 * np.sin(angles)].tolist()
    feature = {
        "type": "Feature",
        "properties": {"c": "a"},
        "geometry": {"type": "Polygon", "coordinates": [ring + ring[:1]]},
    }
    path = tmp_path / "dense.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    with pytest.raises(LabelError, match="dense.geojson has 100,001 vertices, more than the 50,000"):
        read_labels(path, "c", 50_000)


def test_the_validation_split_takes_whole_blocks():
    labels = np.random.default_rng(1).integers(0, 3, (100, 90)).astype(np.uint8)
    labels[:10] = IGNORE
    val = block_split(labels, 16, 0.2, seed=3)
    for row in range(0, 100, 16):
        for col in range(0, 90, 16):
            block = val[row : row + 16, col : col + 16]
            assert block.all() or not block.any()  # no block has pixels on both sides
    share = (val & (labels != IGNORE)).sum() / (labels != IGNORE).sum()
    assert 0.2 <= share < 0.2 + 16 * 16 / (labels != IGNORE).sum()
    assert np.array_equal(val, block_split(labels, 16, 0.2, seed=3))  # the seed fixes the split
    assert not np.array_equal(val, block_split(labels, 16, 0.2, seed=4))


def test_metrics_match_a_hand_count():
    truth = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 1, 3])  # 3: a parent class with no counterpart, always wrong
    metrics = evaluate(truth, predicted, ("a", "b", "c"))
    assert metrics.confusion == [[2, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert metrics.overall_accuracy == pytest.approx(4 / 6)
    assert metrics.balanced_accuracy == pytest.approx((2 / 3 + 1 + 0) / 3)
    a, b = metrics.per_class[0], metrics.per_class[1]
    assert (a.precision, a.recall, a.iou) == (1.0, pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert (b.precision, b.recall, b.iou) == (pytest.approx(2 / 3), 1.0, pytest.approx(2 / 3))
    assert metrics.macro_f1 == pytest.approx((0.8 + 0.8 + 0) / 3)
    assert (a.f2, b.f2) == (pytest.approx(10 / 14), pytest.approx(10 / 11))  # 5PR / (4P + R)
    clouds = evaluate(truth, predicted, ("clear", "cloud", "cloud shadow"))
    assert ", cloud F2 0.909 on 6 pixels" in clouds.summary() and "F2" not in metrics.summary()
    assert class_weights(np.array([100, 10, 0])).tolist() == pytest.approx([2 / 11, 20 / 11, 0.0])


def test_a_head_fitted_twice_with_one_seed_is_the_same():
    from models.training.heads import fit_head
    from models.training.loop import HEAD_CONFIG

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 8)).astype(np.float32)
    y = np.argmax(x[:, :3], axis=1)  # linearly separable: a linear head can learn it
    config = dataclasses.replace(HEAD_CONFIG, epochs=60, seed=7)
    weights = np.ones(3, np.float32)
    first = fit_head(x[:400], y[:400], x[400:], y[400:], ("a", "b", "c"), weights, config)
    second = fit_head(x[:400], y[:400], x[400:], y[400:], ("a", "b", "c"), weights, config)
    assert np.array_equal(first.weight, second.weight) and first.history == second.history
    assert evaluate(y[400:], first.predict(x[400:]), ("a", "b", "c")).overall_accuracy > 0.8  # chance: 0.33


def test_a_fit_cancelled_mid_way_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_fit(tmp_path):
    from core.errors import JobCancelled
    from models.training.heads import fit_head
    from models.training.loop import HEAD_CONFIG, Hooks

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 8)).astype(np.float32)
    y = np.argmax(x[:, :3] + rng.normal(scale=0.5, size=(600, 3)), axis=1)  # noisy: no early perfect score
    config = dataclasses.replace(HEAD_CONFIG, epochs=40, seed=3, patience=100)
    weights, legend = np.ones(3, np.float32), ("a", "b", "c")
    data = (x[:400], y[:400], x[400:], y[400:], legend, weights, config)
    whole = fit_head(*data)
    epochs_started = []

    def cancel_at_epoch_13() -> None:
        if len(epochs_started) == 12:
            raise JobCancelled("cancelled")
        epochs_started.append(1)

    with pytest.raises(JobCancelled):
        fit_head(*data, Hooks(should_stop=cancel_at_epoch_13, checkpoint_dir=tmp_path))
    assert len(list(tmp_path.glob("checkpoint-*.pt"))) == 1
    other = fit_head(
        x[:300], y[:300], *data[2:], Hooks(checkpoint_dir=tmp_path)
    )  # other data: not that checkpoint
    assert len(other.history) == 40 and len(list(tmp_path.glob("checkpoint-*.pt"))) == 1
    reported = []
    resumed = fit_head(*data, Hooks(lambda e, loss, f1: reported.append(e), checkpoint_dir=tmp_path))
    assert np.array_equal(resumed.weight, whole.weight) and np.array_equal(resumed.bias, whole.bias)
    assert resumed.history == whole.history and resumed.best_epoch == whole.best_epoch
    assert reported == list(range(1, 41))  # the 12 epochs before the cancel are reported again, then 13..40
    assert not list(tmp_path.glob("checkpoint-*"))  # a finished fit leaves no checkpoint


def test_versions_promotion_and_rollback_reach_a_running_worker(client, start_worker, tmp_path):
    """Two trainings of one id make versions 1 (production) and 2 (candidate); jobs use production; a promotion
    made from the command line reaches a worker that was already running, and a rollback restores version 1."""
    from core.jobs.request import JobRequest, build_spec
    from models.catalogue import catalogue
    from tests.services import wait_for
    from worker.pipelines.training import TrainRequest, train_model

    def request_spec(**fields: object):  # noqa: ANN202 - as the CLI builds it, with this installation's models
        cards = catalogue(client.settings.cache_dir)
        return build_spec(JobRequest(**fields), client.settings, cards, lambda name: None)  # type: ignore[arg-type]

    labels = label_file(tmp_path, CLASSES)
    request = TrainRequest(
        base_id="landcover-dynamic-world", new_id="slovenia", labels=labels, label_field="LULC_NAME",
        aoi=SAMPLE_AOI, start="2015-07-01", end="2015-09-30", epochs=8,  # versions, not scores, are tested
    )  # fmt: skip
    first = train_model(request, client.settings)
    second = train_model(dataclasses.replace(request, seed=1), client.settings)
    assert (first.version, first.state, second.version, second.state) == ("1", "production", "2", "candidate")
    start_worker()

    def job_version() -> str:
        spec = request_spec(
            aoi=SAMPLE_AOI, start="2015-07-01", end="2015-09-30", task="landcover", model_id="slovenia"
        )
        job_id = client.submit(spec)
        wait_for(client, job_id, ("finished",), timeout_s=120)
        return json.loads((client.store.outputs_dir(job_id) / "run.json").read_text())["model"]["version"]

    env = {
        "TERRASEG_CACHE_DIR": str(client.settings.cache_dir),
        "TERRASEG_REDIS_URL": client.settings.redis_url,
    }
    assert job_version() == "1"
    promoted = terraseg("models", "promote", "slovenia", "2", cwd=tmp_path, env=env)
    assert promoted.returncode == 0, promoted.stderr
    assert "slovenia@1    archived" in promoted.stdout and "slovenia@2    production" in promoted.stdout
    assert job_version() == "2"  # the worker started before the promotion
    rolled = terraseg("models", "rollback", "slovenia", cwd=tmp_path, env=env)
    assert "slovenia@1    production" in rolled.stdout and "slovenia@2    archived" in rolled.stdout
    assert job_version() == "1"
    pinned = request_spec(
        aoi=SAMPLE_AOI, start="2015-07-01", end="2015-09-30", task="landcover", model_id="slovenia@2"
    )
    assert pinned.model_id == "slovenia@2"
    events = json.loads((client.settings.cache_dir / "models" / "slovenia" / "versions.json").read_text())[
        "events"
    ]
    assert [e["action"].split(" (")[0] for e in events] == [
        "created",
        "created",
        "promoted to production",
        "rolled back from 2",
    ]


def test_version_states_and_their_refusals(tmp_path):
    from core.errors import ModelError
    from models import versions

    model_dir = tmp_path / "m"
    for version in ("1", "2", "3"):
        (model_dir / f"v{version}").mkdir(parents=True)
        (model_dir / f"v{version}" / "card.json").write_text("{}")
        versions.record_new_version(model_dir, version, by="tester")
    record = versions.read_versions(model_dir)
    assert record is not None and [record.state(v) for v in "123"] == ["production", "candidate", "candidate"]
    with pytest.raises(ModelError, match="m has no earlier production version to roll back to"):
        versions.rollback(model_dir)
    with pytest.raises(ModelError, match="Version 1 of m is in production already"):
        versions.promote(model_dir, "1")
    with pytest.raises(ModelError, match="m has no version 9; its versions are 1, 2, 3"):
        versions.promote(model_dir, "9")
    versions.promote(model_dir, "2")
    record = versions.promote(model_dir, "3")
    assert [record.state(v) for v in "123"] == ["archived", "archived", "production"]
    record = versions.rollback(model_dir)
    assert [record.state(v) for v in "123"] == ["archived", "production", "archived"]
    assert versions.next_version(model_dir) == "4"
