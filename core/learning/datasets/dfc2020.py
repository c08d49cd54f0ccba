"""DFC2020 (IEEE GRSS Data Fusion Contest 2020, SEN12MS-style 256 x 256 patches), read in its release layout:
  <root>/ROIs0000_validation/s2_validation/ROIs0000_validation_s2_<scene>_p<n>.tif   13 S2 L1C bands, DN
  <root>/ROIs0000_validation/s1_validation/ROIs0000_validation_s1_<scene>_p<n>.tif   VV, VH in dB
  <root>/ROIs0000_validation/dfc_validation/ROIs0000_validation_dfc_<scene>_p<n>.tif  DFC classes 1..10
and the same under ROIs0000_test/ with folders s2_0, s1_0, dfc_0. The S2 bands are B01..B08, B8A, B09..B12 in
that order; labels 1..10 are Forest, Shrubland, Savanna, Grassland, Wetlands, Croplands, Urban/Built-up,
Snow/Ice, Barren, Water, and 0 means no label. Patches of one <scene> neighbour each other (one group).
How the layout was confirmed: from the dataset class of the contest's baseline (lukasliebel/dfc2020_baseline,
code/datasets.py), which derives the S1 and label paths from the S2 path exactly as `_patch` does, reads the S2
band indices 1..13 in the order above (its high/medium/low-resolution index lists) and the two S1 bands, divides
DN by 10,000, and treats DFC label 0 as unlabelled. The data itself cannot be downloaded here; the tests write a
small dataset in this layout from the embedded sample's real pixels.
"""

import re
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioError

from core.learning.datasets.types import IGNORE, DatasetError, Patch, PatchDataset, PatchSample, first_line

LEGEND = (
    "forest",
    "shrubland",
    "savanna",
    "grassland",
    "wetlands",
    "croplands",
    "urban/built-up",
    "snow/ice",
    "barren",
    "water",
)
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
S1_BANDS = ("VV", "VH")
SUBSETS = (("ROIs0000_validation", "validation"), ("ROIs0000_test", "0"))


def open_dfc2020(root: Path) -> PatchDataset:
    """The labelled patches of a DFC2020 release folder; a DatasetError says what is missing."""
    patches = []
    for roi, suffix in SUBSETS:
        s2_folder = root / roi / f"s2_{suffix}"
        for s2 in sorted(s2_folder.glob("*.tif")) if s2_folder.is_dir() else []:
            patches.append(_patch(s2))
    if not patches:
        raise DatasetError(
            f"{root} holds no DFC2020 patches: expected ROIs0000_validation/s2_validation/*.tif (or "
            "ROIs0000_test/s2_0/*.tif) as in the contest's release."
        )
    return PatchDataset(
        "dfc2020", root, "segmentation", LEGEND, S2_BANDS + S1_BANDS, "L1C", 10.0, tuple(patches), read_patch
    )


def read_patch(patch: Patch, bands: tuple[str, ...]) -> PatchSample:
    """`bands` of one patch: S2 DN / 10,000 and S1 dB, validity (S2 > 0, S1 finite) and 0-based labels."""
    s2_bands = [b for b in bands if b in S2_BANDS]
    layers: dict[str, np.ndarray] = {}
    try:
        with rasterio.open(patch.file("s2")) as dataset:
            if dataset.count != len(S2_BANDS):
                raise DatasetError(
                    f"{patch.file('s2').name} has {dataset.count} bands; DFC2020 S2 patches have {len(S2_BANDS)}."
                )
            if s2_bands:
                dn = dataset.read([S2_BANDS.index(b) + 1 for b in s2_bands]).astype(np.float32)
                layers |= {b: dn[i] for i, b in enumerate(s2_bands)}
                shape = dn.shape[1:]
            else:
                shape = (dataset.height, dataset.width)
        s1_bands = [b for b in bands if b in S1_BANDS]
        if s1_bands:
            s1 = patch.file("s1")
            if not s1.is_file():
                raise DatasetError(f"The patch {patch.patch_id} has no S1 file {s1.parent.name}/{s1.name}.")
            with rasterio.open(s1) as dataset:
                db = dataset.read([S1_BANDS.index(b) + 1 for b in s1_bands]).astype(np.float32)
            layers |= {b: db[i] for i, b in enumerate(s1_bands)}
        with rasterio.open(patch.file("label")) as dataset:
            raw = dataset.read(1)
    except RasterioError as err:
        raise DatasetError(f"{patch.patch_id}: a file cannot be read ({first_line(err)}).") from err
    if any(layer.shape != shape for layer in layers.values()) or raw.shape != shape:
        raise DatasetError(f"The files of {patch.patch_id} differ in size; they must all be {shape}.")
    if raw.max(initial=0) > len(LEGEND):
        raise DatasetError(
            f"{patch.file('label').name} holds the label {int(raw.max())}; DFC2020 has 1..{len(LEGEND)}."
        )
    image = np.stack([layers[b] for b in bands]) if bands else np.zeros((0, *shape), np.float32)
    valid = np.ones(shape, bool)
    for band in bands:
        valid &= layers[band] > 0 if band in S2_BANDS else np.isfinite(layers[band])
    image = np.where(np.isin(np.array(bands), S2_BANDS)[:, None, None], image / 10_000.0, image)
    labels = np.where(raw == 0, IGNORE, raw.astype(np.int64) - 1).astype(np.uint8)
    return PatchSample(image.astype(np.float32), valid, labels)


def _patch(s2: Path) -> Patch:
    """The S1 and label files of an S2 patch, named as the release names them."""
    match = re.fullmatch(r"(ROIs\d+_[a-z]+)_s2_(\d+)_(p\d+)\.tif", s2.name)
    if match is None:
        raise DatasetError(
            f"{s2.name} is not named as a DFC2020 S2 patch (ROIs0000_<subset>_s2_<n>_p<n>.tif)."
        )
    roi, scene, number = match.groups()
    rest = f"{scene}_{number}"
    folder = s2.parent.name.removeprefix("s2_")
    s1 = s2.parent.parent / f"s1_{folder}" / f"{roi}_s1_{rest}.tif"
    label = s2.parent.parent / f"dfc_{folder}" / f"{roi}_dfc_{rest}.tif"
    if not label.is_file():
        raise DatasetError(f"The patch {s2.name} has no label file {label.parent.name}/{label.name}.")
    return Patch(f"{roi}_{rest}", {"s2": s2, "s1": s1, "label": label}, group=f"{roi}_{scene}")
