"""38-Cloud (Mohajerani & Saeedi 2019): 384 x 384 patches of 38 Landsat 8 scenes with manual cloud masks, one
single-band TIFF per band, read in its release layout:
  <root>/38-Cloud_training/train_red/red_<name>.TIF    (and train_green/green_, train_blue/blue_, train_nir/nir_)
  <root>/38-Cloud_training/train_gt/gt_<name>.TIF      ground truth: 0 clear, 255 (or 1) cloud
  <root>/38-Cloud_training/training_patches_38-Cloud.csv   one column `name`: the patch names
where <name> is patch_<n>_<row>_by_<col>_<Landsat scene id>. The root may also be the 38-Cloud_training folder
itself. Values are Landsat 8 Collection 1 Level-1 DN (uint16, 0 outside the scene); they become top-of-atmosphere
reflectance with the mission's standard rescaling (DN x 2e-5 - 0.1, the REFLECTANCE_MULT/ADD of every reflective
band; the per-scene sun-elevation correction is not applied, as the dataset's own models do not). Landsat
bands 2, 3, 4, 5 (blue, green, red, NIR) stand in for Sentinel-2's B02, B03, B04, B08, at 30 m. The test
patches (38-Cloud_test) have no per-patch ground truth in the release, so only the training patches are read.
Patches of one Landsat scene neighbour each other (one group).
How the layout was confirmed: from the dataset's own README (SorourMo/38-Cloud-A-Cloud-Segmentation-Dataset: the
folder tree, the four bands and their Landsat band numbers) and the readers of projects that train on it, which
prefix each `name` of the CSV with red_/green_/blue_/nir_/gt_, add `.TIF` and read the mask as 0/255 (Cloud-Net's
training script among them). The data cannot be downloaded here; the tests write patches in this layout.
"""

import csv
import re
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioError

from core.learning.datasets.types import DatasetError, Patch, PatchDataset, PatchSample, first_line

LEGEND = ("clear", "cloud")
# Sentinel-2 band name -> the release's folder/prefix of the Landsat 8 band that stands in for it.
BANDS = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir"}
REFLECTANCE_MULT = 2e-5
REFLECTANCE_ADD = -0.1
NAME = re.compile(r"patch_\d+_\d+_by_\d+_(\w+)")


def open_38cloud(root: Path) -> PatchDataset:
    """The training patches of a 38-Cloud release folder; a DatasetError says what is missing."""
    folder = root if (root / "train_gt").is_dir() else root / "38-Cloud_training"
    if not (folder / "train_gt").is_dir():
        raise DatasetError(
            f"{root} holds no 38-Cloud training patches: expected 38-Cloud_training/train_gt/ with "
            "train_red/, train_green/, train_blue/ and train_nir/ beside it, as in the release."
        )
    listed = folder / "training_patches_38-Cloud.csv"
    if listed.is_file():
        with open(listed, newline="") as handle:
            names = [row[0].strip() for row in csv.reader(handle) if row and row[0].strip() != "name"]
    else:
        names = sorted(
            p.name.removeprefix("gt_").removesuffix(".TIF") for p in (folder / "train_gt").glob("gt_*.TIF")
        )
    patches = [_patch(folder, name) for name in names]
    if not patches:
        raise DatasetError(f"{folder} lists no patches (train_gt/ is empty and there is no patch list).")
    return PatchDataset(
        "38-cloud", root, "segmentation", LEGEND, tuple(BANDS), "L1C", 30.0, tuple(patches), read_patch
    )


def read_patch(patch: Patch, bands: tuple[str, ...]) -> PatchSample:
    """`bands` of one patch as top-of-atmosphere reflectance, validity (DN > 0 in every band) and labels."""
    try:
        layers = []
        for band in bands:
            with rasterio.open(patch.file(band)) as dataset:
                layers.append(dataset.read(1))
        with rasterio.open(patch.file("label")) as dataset:
            truth = dataset.read(1)
    except RasterioError as err:
        raise DatasetError(f"{patch.patch_id}: a file cannot be read ({first_line(err)}).") from err
    if any(layer.shape != truth.shape for layer in layers):
        raise DatasetError(f"The band files of {patch.patch_id} differ in size from its ground truth.")
    values = set(np.unique(truth).tolist())
    if not values <= {0, 1, 255}:
        raise DatasetError(
            f"{patch.file('label').name} holds the values {sorted(values)}; 38-Cloud masks hold 0 and 255."
        )
    dn = np.stack(layers).astype(np.float32) if layers else np.zeros((0, *truth.shape), np.float32)
    valid = np.asarray((dn > 0).all(axis=0))
    reflectance = np.clip(dn * REFLECTANCE_MULT + REFLECTANCE_ADD, 0.0, None)
    return PatchSample(reflectance.astype(np.float32), valid, (truth > 0).astype(np.uint8))


def _patch(folder: Path, name: str) -> Patch:
    """The band and ground-truth files of the patch `name`, named as the release names them."""
    match = NAME.fullmatch(name)
    if match is None:
        raise DatasetError(
            f"{name!r} is not a 38-Cloud patch name (patch_<n>_<row>_by_<col>_<Landsat scene id>)."
        )
    files = {band: folder / f"train_{prefix}" / f"{prefix}_{name}.TIF" for band, prefix in BANDS.items()}
    files["label"] = folder / "train_gt" / f"gt_{name}.TIF"
    absent = [f"{p.parent.name}/{p.name}" for p in files.values() if not p.is_file()]
    if absent:
        raise DatasetError(f"The patch {name} lacks {', '.join(absent)}.")
    return Patch(name, files, group=match.group(1))
