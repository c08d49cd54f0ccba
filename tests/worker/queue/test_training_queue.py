"""Training runs on the `training` queue: `terraseg train --queue` on real labels over the embedded sample's
scenes, run by a real `terraseg worker --queues training`, cancelled, retried and SIGKILLed on the way."""

import time

from tests.worker.cli.test_cli import SAMPLE_AOI, SAMPLE_DATES, terraseg
from tests.worker.pipelines.test_training import CLASSES, PARENT_CLASSES, label_file, train


def test_a_training_run_on_the_training_queue_can_be_cancelled_retried_and_installs_a_version(
    settings, start_worker, tmp_path
):
    """`terraseg train --queue` checks the request, then a worker of the training queue runs it with a job's
    folder, progress, cancel and retry; each epoch's loss and validation score are recorded as it goes."""
    from core.jobs.store import JobStore
    from models.catalogue import catalogue
    from tests.services import job_env, wait_for
    from worker.pipelines.training import parse_class_pairs
    from worker.queue.client import TrainingClient

    env = job_env(settings)
    labels = label_file(tmp_path, CLASSES)
    bad = train(tmp_path, labels, "--queue", "--label-field", "NAME")
    assert bad.returncode == 2 and "has no field 'NAME'" in bad.stderr  # refused before anything is queued
    queued = terraseg(
        "train", "--base", "landcover-dynamic-world", "--labels", str(labels), "--label-field", "LULC_NAME",
        "--aoi", SAMPLE_AOI, *SAMPLE_DATES, "--as", "landcover-slovenia", "--epochs", "60", "--queue",
        "--parent-classes", PARENT_CLASSES, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert queued.returncode == 0, queued.stderr
    run_id = queued.stdout.strip().splitlines()[-1]
    runs = TrainingClient(settings)
    assert [s.job_id for s in runs.list_jobs()] == [run_id]
    assert JobStore(settings.cache_dir / "jobs").job_ids() == []  # not an inference job
    start_worker("--queues", "inference")
    time.sleep(3)
    assert runs.status(run_id).state == "queued"  # an inference worker leaves it to a training worker
    trainer = start_worker("--queues", "training")
    wait_for(runs, run_id, ("running",), min_fraction=0.15, timeout_s=120)
    asked = time.monotonic()
    runs.cancel(run_id)
    wait_for(runs, run_id, ("cancelled",), timeout_s=30)
    assert time.monotonic() - asked < 5
    assert "landcover-slovenia" not in catalogue(settings.cache_dir).cards  # nothing installed

    runs.retry(run_id)  # goes on from where the cancel stopped it (cloud masking strips, the head's last epoch)
    wait_for(runs, run_id, ("running",), min_fraction=0.5, timeout_s=120)
    trainer.kill()  # a training worker dies mid-run; another one takes the run over
    start_worker("--queues", "training")
    wait_for(runs, run_id, ("finished",), timeout_s=240)
    status = runs.status(run_id)
    assert status.attempts == 3 and "installed landcover-slovenia version 1 (production)" in status.message
    epochs = runs.epochs(run_id)
    assert [row["epoch"] for row in epochs] == list(range(1, len(epochs) + 1)) and len(epochs) >= 10
    assert epochs[-1]["loss"] < epochs[0]["loss"]
    result = runs.result(run_id)
    assert result is not None and result["model_id"] == "landcover-slovenia" and result["version"] == "1"
    assert result["metrics"]["macro_f1"] > result["parent_metrics"]["macro_f1"] + 0.1
    card = catalogue(settings.cache_dir).get("landcover-slovenia")
    assert card.metrics["validation"]["macro_f1"] == result["metrics"]["macro_f1"]
    # The interrupted run ends with the metrics of one that ran through (same data, same seed).
    from worker.pipelines.training import TrainRequest, train_model

    uninterrupted = train_model(
        TrainRequest(
            base_id="landcover-dynamic-world", new_id="reference", labels=labels, label_field="LULC_NAME",
            aoi=SAMPLE_AOI, start="2015-07-01", end="2015-09-30", epochs=60,
            parent_classes=parse_class_pairs(PARENT_CLASSES, "test"),
        ),
        settings,
    )  # fmt: skip
    assert uninterrupted.metrics.model_dump(mode="json") == result["metrics"]
    shown = terraseg("status", run_id, cwd=tmp_path, env=env)  # the job verbs know training runs
    assert shown.returncode == 0 and "finished" in shown.stdout, shown.stderr
