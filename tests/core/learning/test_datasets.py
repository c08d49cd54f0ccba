"""Patch datasets in their published layouts. The DFC2020 release cannot be downloaded here, so the tests write a
small dataset in its exact layout (folders, names, 13 S2 bands in DN, S1 in dB, DFC labels 1..10) from the
embedded sample's real pixels and eo-learn's real land-use polygons, then score Dynamic World on it."""

import csv
import json
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from rasterio.features import rasterize
from rasterio.warp import Resampling, reproject
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from core.learning.datasets import DFC2020_LEGEND, DatasetError, open_dataset
from core.sources import SAMPLE_DIR
from tests.conftest import TEST_DATA
from tests.worker.cli.test_cli import terraseg

# Real jobs and model runs: left out of `make check`'s quick loop (see the Makefile).
pytestmark = pytest.mark.slow

SCENE = SAMPLE_DIR / "S2_L1C_20150830T100547_slovenia.tif"  # a clear date
LULC = TEST_DATA / "s2_slovenia_eolearn" / "LULC.gpkg"
# eo-learn's land-use classes as DFC2020 label values (1-based; 0 = no label).
LULC_TO_DFC = {
    "forest": 1,
    "schrubland": 2,
    "grassland": 4,
    "cultivated land": 6,
    "artificial surface": 7,
    "water": 10,
}
PATCHES = {"0_p0": Window(0, 0, 64, 64), "0_p1": Window(36, 37, 64, 64)}  # two overlapping 640 m patches
DW_TO_DFC = (
    "forest=trees,shrubland=shrub and scrub,grassland=grass,croplands=crops,urban/built-up=built,water=water,"
    "wetlands=flooded vegetation,barren=bare,snow/ice=snow and ice"
)


def write_dfc2020(root: Path, patches: dict[str, Window] = PATCHES) -> tuple[Path, int]:
    """ROIs0000_validation/{s2,s1,dfc}_validation/ROIs0000_validation_{s2,s1,dfc}_0_p<n>.tif; returns the root and
    how many labelled pixels the patches hold."""
    with rasterio.open(SCENE) as scene:
        profile, dn, transform = scene.profile, scene.read(), scene.transform
        frame = pyogrio.read_dataframe(LULC).to_crs(scene.crs)
    shapes = [
        (geometry, LULC_TO_DFC[name])
        for geometry, name in zip(frame.geometry, frame.LULC_NAME, strict=True)
        if name in LULC_TO_DFC
    ]
    labels = rasterize(shapes, out_shape=dn.shape[1:], transform=transform, fill=0, dtype="uint8")
    labelled = 0
    for name, window in patches.items():
        rows, cols = window.toslices()
        patch_transform = window_transform(window, transform)
        shape = (int(window.height), int(window.width))
        base = profile | {
            "width": shape[1],
            "height": shape[0],
            "transform": patch_transform,
            "compress": "deflate",
        }
        layers = {
            "s2": (dn[:, rows, cols], "uint16"),
            "s1": (np.stack([np.full(shape, -12.0), np.full(shape, -19.0)]).astype("float32"), "float32"),
            "dfc": (labels[None, rows, cols], "uint8"),
        }
        for kind, (data, dtype) in layers.items():
            folder = root / "ROIs0000_validation" / f"{kind}_validation"
            folder.mkdir(parents=True, exist_ok=True)
            with rasterio.open(
                folder / f"ROIs0000_validation_{kind}_{name}.tif",
                "w",
                **(base | {"count": len(data), "dtype": dtype}),
            ) as out:
                out.write(data)
        labelled += int((labels[rows, cols] > 0).sum())
    return root, labelled


def test_the_dfc2020_layout_is_read_as_published(tmp_path):
    root, labelled = write_dfc2020(tmp_path / "dfc2020")
    dataset = open_dataset(root, "dfc2020")
    assert [p.patch_id for p in dataset.patches] == ["ROIs0000_validation_0_p0", "ROIs0000_validation_0_p1"]
    s1 = dataset.patches[0].file("s1")
    assert s1.name == "ROIs0000_validation_s1_0_p0.tif" and s1.is_file()
    sample = dataset.read(dataset.patches[0], ("B04", "B8A", "B12"))
    reflectance, valid, labels = sample.image, sample.valid, sample.target
    with rasterio.open(SCENE) as scene:
        expected = scene.read([4, 9, 13], window=PATCHES["0_p0"]) / 10_000.0
    assert np.allclose(reflectance, expected) and valid.all()
    assert set(np.unique(labels).tolist()) <= {0, 1, 3, 5, 6, 9, 255}  # 0-based DFC classes, 255 unlabelled
    total = sum(int((dataset.read(p, ("B02",)).target != 255).sum()) for p in dataset.patches)
    assert total == labelled > 2000
    assert DFC2020_LEGEND[0] == "forest" and DFC2020_LEGEND[9] == "water"


def test_dynamic_world_scored_on_dfc2020_patches_agrees_with_its_own_job(tmp_path):
    """`terraseg evaluate --dataset`: the scores are the CSV's, and Dynamic World's classes on the patches are its
    classes in a land-cover job of the same date (the reader gives the model the bands and scale a job does)."""
    root, labelled = write_dfc2020(tmp_path / "dfc2020")
    done = terraseg(
        "evaluate", "--model", "landcover-dynamic-world", "--dataset", str(root), "--format", "dfc2020",
        "--class-map", DW_TO_DFC, "--predictions", "patches.csv", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)
    assert metrics["samples"] == labelled and metrics["format"] == "dfc2020"
    forest = next(c for c in metrics["per_class"] if c["name"] == "forest")
    assert forest["support"] > 1000 and forest["recall"] > 0.8  # the sample is mostly forest, and DW sees it
    with open(tmp_path / "patches.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["patch"] for r in rows] == ["ROIs0000_validation_0_p0", "ROIs0000_validation_0_p1"]
    weighted = sum(int(r["pixels"]) * float(r["accuracy"]) for r in rows) / labelled
    assert weighted == pytest.approx(metrics["overall_accuracy"], abs=1e-3)

    job = terraseg(
        "run", "--task", "landcover", "--aoi", str(SAMPLE_DIR / "aoi.geojson"), "--start", "2015-07-01",
        "--end", "2015-09-30", "--date", "2015-08-30", "--out", "job", cwd=tmp_path,
    )  # fmt: skip
    assert job.returncode == 0, job.stderr
    table = terraseg(
        "evaluate", "--model", "landcover-dynamic-world", "--dataset", str(root), "--class-map", DW_TO_DFC,
        cwd=tmp_path,
    )  # fmt: skip
    assert "landcover-dynamic-world on 2 dfc2020 patches: OA" in table.stdout and " F2 " in table.stdout
    # The job's classes, on the first patch's pixels (nearest: the sample's 9.99 m pixels are not the job's grid).
    with rasterio.open(tmp_path / "job" / "classes.tif") as classes, rasterio.open(SCENE) as scene:
        on_patch = np.full((64, 64), 255, np.uint8)
        reproject(
            classes.read(1), on_patch, src_transform=classes.transform, src_crs=classes.crs,
            dst_transform=window_transform(PATCHES["0_p0"], scene.transform), dst_crs=scene.crs,
            src_nodata=255, dst_nodata=255, resampling=Resampling.nearest,
        )  # fmt: skip
    from core.mapping.inference import normalise
    from models.catalogue import catalogue
    from models.registry import LoadOptions, load

    dataset = open_dataset(root, "dfc2020")
    model = load(catalogue(), "landcover-dynamic-world", LoadOptions("L1C", frozenset(dataset.bands)))
    reflectance = dataset.read(dataset.patches[0], model.card.bands).image
    on_patch_model = model.predict(normalise(reflectance, model.card.normalisation)[None])[0].argmax(axis=0)
    inner = np.s_[12:52, 12:52]  # away from the patch's edge, where the job's tiles saw more context
    mapped = on_patch[inner] != 255
    agreement = (on_patch_model[inner][mapped] == on_patch[inner][mapped]).mean()
    assert mapped.sum() > 1000 and agreement > 0.8, agreement


def test_a_head_trained_on_a_dfc2020_dataset_is_scored_on_held_out_patches_and_evaluated(tmp_path):
    """`terraseg train --dataset`: a new head on Dynamic World's features from the training patches, scored with its
    parent on the held-out patches; then `evaluate --dataset` with the new model (its classes are the dataset's)."""
    corners = [(0, 0), (52, 0), (0, 53), (52, 53)]  # four 480 m patches that do not overlap
    quarters = {f"0_p{i}": Window(col, row, 48, 48) for i, (col, row) in enumerate(corners)}
    root, labelled = write_dfc2020(tmp_path / "dfc2020", quarters)
    done = terraseg(
        "train", "--base", "landcover-dynamic-world", "--dataset", str(root), "--format", "dfc2020",
        "--parent-classes", DW_TO_DFC, "--epochs", "80", "--as", "landcover-dfc", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "landcover-dfc"
    card = json.loads((tmp_path / "cache" / "models" / "landcover-dfc" / "v1" / "card.json").read_text())
    names = [c["name"] for c in card["classes"]]
    assert (
        set(names) <= set(DFC2020_LEGEND)
        and "forest" in names
        and card["training"]["patches"]
        == {
            "train": 3,
            "validation": 1,
        }
    )
    new, parent = card["metrics"]["validation"], card["metrics"]["parent_validation"]
    assert (
        new["samples"] == parent["samples"] > 500
    )  # the held-out patch's labelled pixels, both scored on them
    # Google's head has no shrubland-vs-grassland of this legend (measured: 0.545 against 0.304).
    assert new["macro_f1"] > parent["macro_f1"] + 0.1, (new["macro_f1"], parent["macro_f1"])
    assert "landcover-dynamic-world on the same pixels" in done.stderr
    scored = terraseg("evaluate", "--model", "landcover-dfc", "--dataset", str(root), "--json", cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["samples"] == labelled  # every labelled pixel: training patches too


def test_decoder_mode_fine_tunes_the_decoder_and_keeps_the_encoder_of_the_base(tmp_path):
    import torch

    from models.catalogue import catalogue

    corners = [(0, 0), (52, 0), (0, 53), (52, 53)]
    root, _ = write_dfc2020(
        tmp_path / "dfc2020", {f"0_p{i}": Window(c, r, 48, 48) for i, (c, r) in enumerate(corners)}
    )
    done = terraseg(
        "train", "--base", "landcover-dynamic-world", "--dataset", str(root), "--mode", "decoder", "--epochs", "6",
        "--parent-classes", DW_TO_DFC, "--as", "dfc-decoder", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "cache" / "models" / "dfc-decoder" / "v1"
    card = json.loads((folder / "card.json").read_text())
    assert card["training"]["mode"] == "decoder" and 1 <= card["training"]["best_epoch"] <= 6
    tuned = torch.load(folder / card["weights"][0], weights_only=True)
    shipped = catalogue()
    base = torch.load(
        shipped.folder("landcover-dynamic-world") / shipped.get("landcover-dynamic-world").weights[0],
        weights_only=True,
    )
    assert all(torch.equal(tuned[k], base[k]) for k in base if k.startswith(("stem.", "block1.", "block2.")))
    assert any(not torch.equal(tuned[k], base[k]) for k in base if k.startswith("block3."))
    assert tuned["head.weight"].shape[0] == len(card["classes"])


def test_a_fine_tune_cancelled_mid_way_resumes_and_ends_as_an_uninterrupted_one(tmp_path):
    import copy
    from dataclasses import replace

    from core.errors import JobCancelled
    from models.dynamic_world import DynamicWorldNet
    from models.training.heads import TuneRecipe
    from models.training.loop import TUNE_CONFIG, Hooks, fit

    torch_rng = np.random.default_rng(1)
    inputs = [torch_rng.normal(size=(9, 32, 32)).astype(np.float32) for _ in range(4)]
    labels = [(x[0] > 0).astype(np.int64) for x in inputs]  # learnable from the first band
    labels[0][:4] = 255  # unlabelled rows are skipped

    def patches(i: int) -> tuple[np.ndarray, np.ndarray]:
        return inputs[i], labels[i]

    import torch

    torch.manual_seed(0)
    start = DynamicWorldNet(n_classes=2)
    config = replace(TUNE_CONFIG, epochs=6, patience=100, batch_size=2)

    def recipe() -> TuneRecipe:
        return TuneRecipe(
            copy.deepcopy(start), "full", patches, [0, 1, 2], [3], ("a", "b"), np.ones(2, np.float32)
        )

    whole = fit(recipe(), config)
    calls = []

    def cancel_in_epoch_4() -> None:  # two batches an epoch: after the first batch of epoch 4
        calls.append(1)
        if len(calls) == 8:
            raise JobCancelled("cancelled")

    with pytest.raises(JobCancelled):
        fit(recipe(), config, Hooks(should_stop=cancel_in_epoch_4, checkpoint_dir=tmp_path))
    assert len(list(tmp_path.glob("checkpoint-*.pt"))) == 1
    resumed = fit(recipe(), config, Hooks(checkpoint_dir=tmp_path))
    assert resumed.history == whole.history and resumed.best_epoch == whole.best_epoch
    assert all(torch.equal(resumed.state[k], whole.state[k]) for k in whole.state)
    assert not list(tmp_path.glob("checkpoint-*"))


def test_a_dataset_training_run_goes_to_the_training_queue(settings, start_worker, tmp_path):
    from tests.services import job_env, wait_for
    from worker.queue.client import TrainingClient

    root, _ = write_dfc2020(tmp_path / "dfc2020", {f"0_p{i}": Window(48 * i, 0, 48, 48) for i in range(2)})
    queued = terraseg(
        "train", "--base", "landcover-dynamic-world", "--dataset", str(root), "--epochs", "20", "--as", "dfc-q",
        "--queue", cwd=tmp_path, env=job_env(settings),
    )  # fmt: skip
    assert queued.returncode == 0, queued.stderr
    runs = TrainingClient(settings)
    run_id = queued.stdout.strip().splitlines()[-1]
    assert runs.training_spec(run_id).data.kind == "dataset"
    start_worker("--queues", "training")
    wait_for(runs, run_id, ("finished",), timeout_s=120)
    result = runs.result(run_id)
    assert result is not None and result["model_id"] == "dfc-q" and result["metrics"]["samples"] > 500


@pytest.mark.parametrize(
    ("damage", "sentence"),
    [
        ("no folder", "does not exist"),
        ("empty", "holds no DFC2020 patches: expected ROIs0000_validation/s2_validation/*.tif"),
        ("no label", "has no label file dfc_validation/ROIs0000_validation_dfc_0_p1.tif"),
        ("bad name", "is not named as a DFC2020 S2 patch"),
        ("label 12", "holds the label 12; DFC2020 has 1..10"),
        ("format", "Unknown dataset format 'pastis2'"),
    ],
)
def test_a_dataset_folder_that_is_not_in_the_layout_gets_a_sentence(tmp_path, damage, sentence):
    root, _ = write_dfc2020(tmp_path / "dfc2020")
    fmt = "dfc2020"
    if damage == "no folder":
        root = tmp_path / "nowhere"
    elif damage == "empty":
        root = tmp_path / "empty"
        root.mkdir()
    elif damage == "no label":
        (root / "ROIs0000_validation" / "dfc_validation" / "ROIs0000_validation_dfc_0_p1.tif").unlink()
    elif damage == "bad name":
        (root / "ROIs0000_validation" / "s2_validation" / "patch.tif").write_bytes(b"")
    elif damage == "label 12":
        path = root / "ROIs0000_validation" / "dfc_validation" / "ROIs0000_validation_dfc_0_p0.tif"
        with rasterio.open(path, "r+") as labels:
            labels.write(np.full((1, 64, 64), 12, np.uint8))
    else:
        fmt = "pastis2"
    done = terraseg(
        "evaluate", "--model", "landcover-dynamic-world", "--dataset", str(root), "--format", fmt,
        "--class-map", DW_TO_DFC, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert sentence in done.stderr and "Traceback" not in done.stderr
    with pytest.raises(DatasetError):
        dataset = open_dataset(root, fmt)
        for patch in dataset.patches:
            dataset.read(patch, ("B02",))
