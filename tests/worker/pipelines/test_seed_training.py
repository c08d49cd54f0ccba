"""`terraseg train --dataset` for the seed architectures, as a model owner runs it: the cloud UNet on 38-Cloud
patches of a real scene with its real cloud mask, U-TAE and the MTLCC ConvLSTM on PASTIS-layout series of the
real Tanzania scenes, the BigEarthNet ResNet-50 on BigEarthNet-layout patches of the real Slovenia sample; each
trained model is installed, scored on held-out groups and runs where a job or `terraseg evaluate` takes it."""

import csv
import json

import numpy as np
import pytest
import rasterio

from core.learning.datasets.pastis import BANDS as PASTIS_BANDS
from core.sources import SAMPLE_DIR
from models.catalogue import catalogue
from tests.dataset_factory import write_38cloud, write_bigearthnet, write_pastis
from tests.worker.cli.test_cli import terraseg


def card_of(tmp_path, model_id: str, version: int = 1) -> dict:
    return json.loads((tmp_path / "cache" / "models" / model_id / f"v{version}" / "card.json").read_text())


def test_a_cloud_unet_trained_on_38cloud_finds_the_clouds_of_a_held_out_scene_and_maps_a_job(tmp_path):
    write_38cloud(tmp_path / "38-Cloud", patch_px=64)
    done = terraseg(
        "train", "--base", "cloud-unet", "--dataset", "38-Cloud", "--format", "38-cloud", "--epochs", "4",
        "--as", "my-clouds", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "my-clouds"
    assert "val cloud F2" in done.stderr and "samples/s" in done.stderr  # progress per epoch and per batch
    card = card_of(tmp_path, "my-clouds")
    assert card["status"] == "trained-here" and card["builder"] == "cloud-unet"
    assert card["bands"] == ["B02", "B03", "B04", "B08"] and card["resolution_m"] == 30.0
    assert card["processing_levels"] == ["L1C"] and [c["name"] for c in card["classes"]] == ["clear", "cloud"]
    training = card["training"]
    assert (
        training["base_status"] == "untrained"
        and training["mode"] == "full"
        and card["metrics"]["parent_validation"] is None
    )
    assert len(training["validation_groups"]) == 2  # two of the eight rows of tiles (Landsat scenes), whole
    validation = card["metrics"]["validation"]
    cloud = validation["per_class"][1]
    share = cloud["support"] / validation["samples"]
    all_cloud_f2 = 5 * share / (4 * share + 1)  # what calling everything cloud would score
    assert cloud["f2"] > all_cloud_f2 + 0.15 and validation["overall_accuracy"] > (1 - share) + 0.1

    # The held-out rows scored again through the job's loading path (sha256-pinned weights, padding, fill)
    # give the scores the training recorded.
    listing = tmp_path / "38-Cloud" / "38-Cloud_training" / "training_patches_38-Cloud.csv"
    names = [
        n for n in listing.read_text().split() if any(n.endswith(g) for g in training["validation_groups"])
    ]
    listing.write_text("name\n" + "\n".join(names))
    scored = terraseg(
        "evaluate", "--model", "my-clouds", "--dataset", "38-Cloud", "--format", "38-cloud", "--json", cwd=tmp_path
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    again = json.loads(scored.stdout)
    assert again["samples"] == validation["samples"]
    differing = np.abs(np.array(again["confusion"]) - np.array(validation["confusion"])).sum() / 2
    assert differing <= 0.001 * validation["samples"]

    job = terraseg(
        "run", "--task", "cloud", "--model", "my-clouds", "--aoi", str(SAMPLE_DIR / "aoi.geojson"),
        "--start", "2015-07-01", "--end", "2015-09-30", "--out", "job", cwd=tmp_path,
    )  # fmt: skip
    assert job.returncode == 0, job.stderr
    run = json.loads((tmp_path / "job" / "run.json").read_text())
    assert run["model"]["id"] == "my-clouds" and run["model"]["version"] == "1"
    with rasterio.open(tmp_path / "job" / "classes.tif") as classes:
        assert set(np.unique(classes.read(1)).tolist()) <= {0, 1, 255} and classes.tags()["CLASS_NAMES"]


def test_utae_and_the_mtlcc_convlstm_learn_from_pastis_series_and_are_scored_on_a_held_out_fold(tmp_path):
    write_pastis(tmp_path / "PASTIS")
    for base, new_id in (("crop-utae-pastis", "my-utae"), ("landcover-mtlcc-convlstm", "my-lstm")):
        done = terraseg(
            "train", "--base", base, "--dataset", "PASTIS", "--format", "pastis", "--epochs", "2", "--as", new_id,
            cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        card = card_of(tmp_path, new_id)
        assert card["temporal"]["mode"] == "series" and card["processing_levels"] == ["L2A"]
        # ConvLSTM's card asks for 13 L1C bands; trained from scratch it learns from the 10 PASTIS has.
        assert card["bands"] == [b for b in catalogue().get(base).bands if b in PASTIS_BANDS]
        assert [c["name"] for c in card["classes"]] == ["background", "meadow"]
        assert len(card["training"]["validation_groups"]) == 1 and card["training"]["validation_groups"][
            0
        ].startswith("fold")
        if base == "crop-utae-pastis":  # statistics from the training patches (the card had none offline)
            assert card["normalisation"]["kind"] == "standard" and len(card["normalisation"]["mean"]) == 10
        scored = terraseg(
            "evaluate", "--model", new_id, "--dataset", "PASTIS", "--format", "pastis", "--json", cwd=tmp_path
        )  # fmt: skip
        assert scored.returncode == 0, scored.stderr
        assert json.loads(scored.stdout)["samples"] > 5000


def test_a_bigearthnet_resnet_learns_tags_and_is_scored_with_mean_average_precision(tmp_path):
    write_bigearthnet(tmp_path / "BigEarthNet-v1.0")
    done = terraseg(
        "train", "--base", "scene-tags-bigearthnet-resnet50", "--dataset", "BigEarthNet-v1.0", "--format",
        "bigearthnet", "--epochs", "3", "--as", "my-tags", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Training/validation patches: Urban fabric" in done.stderr and "val mAP" in done.stderr
    card = card_of(tmp_path, "my-tags")
    assert card["output"] == "scene-tags" and card["builder_args"] == {"in_channels": 12, "n_labels": 19}
    validation = card["metrics"]["validation"]
    assert validation["samples"] == 4 and 0 <= validation["mean_average_precision"] <= 1
    assert card["training"]["validation_groups"] in (
        ["S2A_MSIL2A_20170613T101031"],
        ["S2B_MSIL2A_20170818T100029"],
    )
    scored = terraseg(
        "evaluate", "--model", "my-tags", "--dataset", "BigEarthNet-v1.0", "--format", "bigearthnet",
        "--predictions", "tags.csv", cwd=tmp_path,
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    assert "my-tags on 8 bigearthnet patches: mAP" in scored.stdout and "micro precision" in scored.stdout
    with open(tmp_path / "tags.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 and set(rows[0]) == {"patch", "true_tags", "predicted_tags"}
    assert all(row["true_tags"] for row in rows)  # every patch of the sample has land-use classes


@pytest.mark.parametrize(
    ("args", "sentence"),
    [
        (
            ["--base", "cloud-unet", "--dataset", "38-Cloud", "--format", "38-cloud", "--mode", "head"],
            "Model cloud-unet: it has no trained weights, and its architecture trains whole, --mode full",
        ),
        (
            [
                "--base",
                "cloud-unet",
                "--labels",
                "x.gpkg",
                "--label-field",
                "c",
                "--aoi",
                "1,2,3,4",
                "--start",
                "2015-07-01",
                "--end",
                "2015-07-30",
            ],
            "trains on a patch dataset in its published layout: give --dataset DIR",
        ),  # fmt: skip
        (
            ["--base", "cloud-unet", "--dataset", "PASTIS", "--format", "pastis"],
            "cloud-unet learns from single images with a class per pixel; pastis patches are image time series",
        ),
        (
            ["--base", "landcover-dynamic-world", "--dataset", "38-Cloud", "--format", "38-cloud"],
            "a class per pixel at 10 m; 38-cloud patches are single images with a class per pixel at 30 m",
        ),
        (
            ["--base", "crop-utae-pastis", "--dataset", "38-Cloud", "--format", "pastis"],
            "holds no PASTIS metadata.geojson",
        ),
    ],
)
def test_what_a_seed_architecture_cannot_train_on_gets_a_sentence(tmp_path, args, sentence):
    write_38cloud(tmp_path / "38-Cloud", patch_px=256)
    write_pastis(tmp_path / "PASTIS")
    done = terraseg("train", *args, "--as", "nothing", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert sentence in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "cache" / "models" / "nothing").exists()
