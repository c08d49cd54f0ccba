"""The 38-Cloud, BigEarthNet-S2 and PASTIS readers on datasets written in their exact published layouts from real
pixels (tests/dataset_factory.py), the split by groups, and the multi-label metrics."""

import json

import numpy as np
import pytest
import rasterio
from sklearn.metrics import average_precision_score

from core.learning.datasets import IGNORE, DatasetError, open_dataset
from core.learning.datasets.bigearthnet import CLC_TO_19, CLC_WITHOUT_19
from core.learning.datasets.bigearthnet import LEGEND as BEN_LEGEND
from core.learning.metrics import average_precision, evaluate_multilabel, patch_split
from tests.dataset_factory import CSMASK_SCENE, SLOVENIA_SCENE, write_38cloud, write_bigearthnet, write_pastis


def test_38cloud_patches_are_read_as_published(tmp_path):
    root = write_38cloud(tmp_path / "38-Cloud", patch_px=128)
    dataset = open_dataset(root, "38-cloud")
    assert (
        dataset.kind == "segmentation"
        and dataset.resolution_m == 30.0
        and dataset.legend == ("clear", "cloud")
    )
    assert (
        len(dataset.patches) == 16 and len({p.group for p in dataset.patches}) == 4
    )  # a Landsat scene per row
    patch = dataset.patches[5]  # row 2, column 2
    assert patch.patch_id == "patch_6_2_by_2_LC08_L1TP_031037_20160520_20170324_01_T1"
    assert (
        patch.file("B04").name == f"red_{patch.patch_id}.TIF"
        and patch.file("label").parent.name == "train_gt"
    )
    sample = dataset.read(patch, ("B08", "B02"))
    reference = np.load(CSMASK_SCENE)
    window = np.s_[128:256, 128:256]
    # DN x 2e-5 - 0.1 gives back the scene's reflectance to the DN step (2e-5)
    np.testing.assert_allclose(sample.image[0], reference["img"][window][..., 3], atol=1.1e-5)
    np.testing.assert_allclose(sample.image[1], reference["img"][window][..., 0], atol=1.1e-5)
    np.testing.assert_array_equal(sample.target, reference["msk"][window][..., 0] == 4)
    assert sample.valid.all()


def test_bigearthnet_patches_are_read_as_published_with_their_19_class_tags(tmp_path):
    root = write_bigearthnet(tmp_path / "BigEarthNet-v1.0")
    (root / "patches_with_seasonal_snow.csv").write_text("S2B_MSIL2A_20170818T100029_1_1\n")
    dataset = open_dataset(root, "bigearthnet")
    assert dataset.kind == "multilabel" and dataset.legend == BEN_LEGEND and "B10" not in dataset.bands
    assert len(dataset.patches) == 7  # the snow list leaves one out
    assert {p.group for p in dataset.patches} == {"S2A_MSIL2A_20170613T101031", "S2B_MSIL2A_20170818T100029"}
    patch = dataset.patches[0]
    sample = dataset.read(patch, ("B04", "B05", "B01"))
    assert sample.image.shape == (3, 48, 48) and sample.valid.all()
    with rasterio.open(SLOVENIA_SCENE) as scene:
        red = scene.read(4, window=((0, 48), (0, 48))) / 10_000.0
    np.testing.assert_allclose(sample.image[0], red, atol=1e-6)  # a 10 m band as stored
    assert sample.image[1].std() > 0 and sample.image[2].shape == (
        48,
        48,
    )  # 20 and 60 m bands brought to 10 m
    labels = json.loads(patch.file("labels").read_text())["labels"]
    assert sample.target.dtype == bool and sample.target.sum() == len({CLC_TO_19[n] for n in labels}) > 0
    assert len(CLC_TO_19) + len(CLC_WITHOUT_19) == 43 and sorted(set(CLC_TO_19.values())) == list(range(19))


def test_pastis_series_are_read_as_published(tmp_path):
    root, meadow_fraction = write_pastis(tmp_path / "PASTIS")
    dataset = open_dataset(root, "pastis")
    assert dataset.kind == "series" and dataset.legend[0] == "background" and len(dataset.legend) == 19
    assert [p.patch_id for p in dataset.patches] == [str(10000 + k) for k in range(6)]
    assert [p.group for p in dataset.patches] == ["fold 1", "fold 1", "fold 2", "fold 2", "fold 3", "fold 3"]
    patch = dataset.patches[1]
    assert len(patch.dates) == 20 and patch.dates == tuple(sorted(patch.dates))  # series of their own lengths
    sample = dataset.read(patch, ("B04", "B08"))
    stored = np.load(patch.file("s2"))
    assert sample.image.shape == (20, 2, 32, 32) and sample.dates == patch.dates
    np.testing.assert_allclose(sample.image[:, 0], stored[:, 2] / 10_000.0, rtol=1e-6)
    assert (sample.valid == (stored[:, [2, 6]] != 0).all(axis=1)).all() and not sample.valid.all()
    assert (sample.target[0] == IGNORE).all() and set(np.unique(sample.target[1:]).tolist()) <= {0, 1}
    assert 0.3 < meadow_fraction < 0.7


@pytest.mark.parametrize(
    ("fmt", "damage", "sentence"),
    [
        (
            "38-cloud",
            "no gt folder",
            "holds no 38-Cloud training patches: expected 38-Cloud_training/train_gt/",
        ),
        ("38-cloud", "band missing", "lacks train_nir/nir_patch_1_1_by_1_"),
        ("38-cloud", "bad name", "is not a 38-Cloud patch name"),
        ("38-cloud", "gt values", "holds the values [7]; 38-Cloud masks hold 0 and 255"),
        ("bigearthnet", "empty", "holds no BigEarthNet-S2 patches"),
        ("bigearthnet", "no labels", "lacks S2A_MSIL2A_20170613T101031_0_0_labels_metadata.json"),
        ("bigearthnet", "unknown label", "labels that are not CLC level-3 classes: Moon dust"),
        ("bigearthnet", "corrupt band", "a file cannot be read"),
        ("pastis", "no metadata", "holds no PASTIS metadata.geojson"),
        ("pastis", "no dates", "each feature needs ID_PATCH, Fold and dates-S2"),
        ("pastis", "array missing", "lacks DATA_S2/S2_10003.npy"),
        ("pastis", "wrong shape", "PASTIS series are (T, 10, H, W) with one image per date of its metadata"),
        ("pastis", "bad date", "has dates-S2 that are not YYYYMMDD values"),
    ],
)
def test_a_release_folder_that_is_not_in_its_layout_gets_a_sentence(tmp_path, fmt, damage, sentence):
    if fmt == "38-cloud":
        root = write_38cloud(tmp_path / "d", patch_px=256)
        folder = root / "38-Cloud_training"
        first = "patch_1_1_by_1_LC08_L1TP_030037_20160520_20170324_01_T1"
        if damage == "no gt folder":
            for path in (folder / "train_gt").iterdir():
                path.unlink()
            (folder / "train_gt").rmdir()
        elif damage == "band missing":
            (folder / "train_nir" / f"nir_{first}.TIF").unlink()
        elif damage == "bad name":
            (folder / "training_patches_38-Cloud.csv").write_text("name\nscene_7\n")
        else:
            with rasterio.open(folder / "train_gt" / f"gt_{first}.TIF", "r+") as gt:
                gt.write(np.full((1, 256, 256), 7, np.uint8))
    elif fmt == "bigearthnet":
        root = write_bigearthnet(tmp_path / "d")
        patch = root / "S2A_MSIL2A_20170613T101031_0_0"
        if damage == "empty":
            root = tmp_path / "empty"
            root.mkdir()
        elif damage == "no labels":
            (patch / f"{patch.name}_labels_metadata.json").unlink()
        elif damage == "unknown label":
            (patch / f"{patch.name}_labels_metadata.json").write_text(json.dumps({"labels": ["Moon dust"]}))
        else:
            (patch / f"{patch.name}_B02.tif").write_bytes(b"not a tiff")
    else:
        root, _ = write_pastis(tmp_path / "d")
        metadata = json.loads((root / "metadata.geojson").read_text())
        if damage == "no metadata":
            (root / "metadata.geojson").unlink()
        elif damage == "no dates":
            del metadata["features"][2]["properties"]["dates-S2"]
        elif damage == "array missing":
            (root / "DATA_S2" / "S2_10003.npy").unlink()
        elif damage == "wrong shape":
            np.save(root / "DATA_S2" / "S2_10000.npy", np.zeros((3, 4, 32, 32), np.int16))
        else:
            metadata["features"][0]["properties"]["dates-S2"]["0"] = "March"
        if damage != "no metadata":
            (root / "metadata.geojson").write_text(json.dumps(metadata))
    with pytest.raises(DatasetError) as raised:
        dataset = open_dataset(root, fmt)
        for patch_ in dataset.patches:
            dataset.read(patch_, dataset.bands[:2])
    assert sentence in str(raised.value)


def test_validation_holds_out_whole_groups_of_neighbouring_patches():
    groups = ["scene a"] * 4 + ["scene b"] * 4 + ["scene c"] * 2
    rng = np.random.default_rng(0)
    for _ in range(20):
        held = patch_split(groups, 0.2, rng)
        names = {g for g, v in zip(groups, held, strict=True) if v}
        assert held.any() and not held.all() and names  # some held out, some kept
        assert all(held[i] == (groups[i] in names) for i in range(len(groups)))  # whole groups only
    one = patch_split(["only"] * 10, 0.2, np.random.default_rng(1))
    assert one.sum() == 2  # one group: single patches


def test_multilabel_metrics_are_bigearthnets_measures():
    rng = np.random.default_rng(0)
    truth = rng.random((40, 3)) < 0.4
    scores = np.clip(truth * 0.3 + rng.random((40, 3)) * 0.7, 0, 1).round(1)  # ties, as thresholds make
    for k in range(3):
        assert average_precision(truth[:, k], scores[:, k]) == pytest.approx(
            average_precision_score(truth[:, k], scores[:, k])
        )
    metrics = evaluate_multilabel(truth, scores, ("a", "b", "c"))
    predicted = scores >= 0.5
    tp, fp, fn = (predicted & truth).sum(), (predicted & ~truth).sum(), (~predicted & truth).sum()
    assert metrics.micro_f1 == pytest.approx(2 * tp / (2 * tp + fp + fn))
    per_class = [2 * (p & t).sum() / (p.sum() + t.sum()) for p, t in zip(predicted.T, truth.T, strict=True)]
    assert metrics.macro_f1 == pytest.approx(np.mean(per_class))
    assert "mAP" in metrics.summary() and metrics.samples == 40
