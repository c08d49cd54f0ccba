"""Patch datasets in their published layouts: each reader lists a release folder's labelled patches and reads one
patch as reflectance, validity and 0-based labels (IGNORE where a pixel has no label).

DFC2020 (IEEE GRSS Data Fusion Contest 2020, SEN12MS-style 256 x 256 patches):
  <root>/ROIs0000_validation/s2_validation/ROIs0000_validation_s2_<scene>_p<n>.tif   13 S2 L1C bands, DN
  <root>/ROIs0000_validation/s1_validation/ROIs0000_validation_s1_<scene>_p<n>.tif   VV, VH in dB
  <root>/ROIs0000_validation/dfc_validation/ROIs0000_validation_dfc_<scene>_p<n>.tif  DFC classes 1..10
and the same under ROIs0000_test/ with folders s2_0, s1_0, dfc_0. The S2 bands are B01..B08, B8A, B09..B12 in
that order; labels 1..10 are Forest, Shrubland, Savanna, Grassland, Wetlands, Croplands, Urban/Built-up,
Snow/Ice, Barren, Water, and 0 means no label.
How the layout was confirmed: from the dataset class of the contest's baseline (lukasliebel/dfc2020_baseline,
code/datasets.py), which derives the S1 and label paths from the S2 path exactly as `_dfc2020_patch` does,
reads the S2 band indices 1..13 in the order above (its high/medium/low-resolution index lists), divides DN by
10,000, and treats DFC label 0 as unlabelled. The data itself cannot be downloaded here; the tests write a small
dataset in this layout from the embedded sample's real pixels.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioError

from core.errors import AppError

IGNORE = 255  # label value of unlabelled pixels (as core.labels)
DFC2020_LEGEND = (
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
SEN12MS_S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
DFC2020_SUBSETS = (("ROIs0000_validation", "validation"), ("ROIs0000_test", "0"))
FORMATS = ("dfc2020",)


class DatasetError(AppError):
    """A dataset folder that is not in the layout its format names, or a patch that cannot be read."""


@dataclass(frozen=True)
class Patch:
    """One labelled patch: its id and files."""

    patch_id: str
    s2: Path
    s1: Path
    label: Path


@dataclass(frozen=True)
class PatchDataset:
    """A dataset's labelled patches, its legend (label value v + 1 is legend[v]) and its S2 band order."""

    format: str
    root: Path
    legend: tuple[str, ...]
    s2_bands: tuple[str, ...]
    patches: tuple[Patch, ...]

    def read(self, patch: Patch, bands: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(C, H, W) float32 reflectance of `bands`, (H, W) validity (every band > 0) and (H, W) uint8 labels,
        0-based, IGNORE where unlabelled. A DatasetError names the file that cannot be read."""
        missing = [b for b in bands if b not in self.s2_bands]
        if missing:
            raise DatasetError(f"{self.format} patches have no band {', '.join(missing)}.")
        indexes = [self.s2_bands.index(b) + 1 for b in bands]
        try:
            with rasterio.open(patch.s2) as dataset:
                if dataset.count != len(self.s2_bands):
                    raise DatasetError(
                        f"{patch.s2.name} has {dataset.count} bands; {self.format} S2 patches have "
                        f"{len(self.s2_bands)}."
                    )
                dn = dataset.read(indexes).astype(np.float32)
            with rasterio.open(patch.label) as dataset:
                raw = dataset.read(1)
        except RasterioError as err:
            raise DatasetError(
                f"{patch.patch_id}: a file cannot be read ({str(err).splitlines()[0]})."
            ) from err
        if raw.shape != dn.shape[1:]:
            raise DatasetError(
                f"{patch.label.name} is {raw.shape}, its S2 patch {dn.shape[1:]}; they must match."
            )
        if raw.max(initial=0) > len(self.legend):
            raise DatasetError(
                f"{patch.label.name} holds the label {int(raw.max())}; {self.format} has 1..{len(self.legend)}."
            )
        labels = np.where(raw == 0, IGNORE, raw.astype(np.int64) - 1).astype(np.uint8)
        return dn / 10_000.0, (dn > 0).all(axis=0), labels


def open_dataset(root: Path, fmt: str) -> PatchDataset:
    """The labelled patches of a release folder in format `fmt`; a DatasetError says what is missing."""
    if fmt not in FORMATS:
        raise DatasetError(f"Unknown dataset format {fmt!r}; the formats are {', '.join(FORMATS)}.")
    if not root.is_dir():
        raise DatasetError(f"The dataset folder {root} does not exist.")
    patches = []
    for roi, suffix in DFC2020_SUBSETS:
        s2_folder = root / roi / f"s2_{suffix}"
        for s2 in sorted(s2_folder.glob("*.tif")) if s2_folder.is_dir() else []:
            patches.append(_dfc2020_patch(s2))
    if not patches:
        raise DatasetError(
            f"{root} holds no DFC2020 patches: expected ROIs0000_validation/s2_validation/*.tif (or "
            "ROIs0000_test/s2_0/*.tif) as in the contest's release."
        )
    return PatchDataset(fmt, root, DFC2020_LEGEND, SEN12MS_S2_BANDS, tuple(patches))


def _dfc2020_patch(s2: Path) -> Patch:
    """The S1 and label files of an S2 patch, named as the release names them."""
    match = re.fullmatch(r"(ROIs\d+_[a-z]+)_s2_(\d+_p\d+)\.tif", s2.name)
    if match is None:
        raise DatasetError(
            f"{s2.name} is not named as a DFC2020 S2 patch (ROIs0000_<subset>_s2_<n>_p<n>.tif)."
        )
    roi, rest = match.groups()
    folder = s2.parent.name.removeprefix("s2_")
    s1 = s2.parent.parent / f"s1_{folder}" / f"{roi}_s1_{rest}.tif"
    label = s2.parent.parent / f"dfc_{folder}" / f"{roi}_dfc_{rest}.tif"
    if not label.is_file():
        raise DatasetError(f"The patch {s2.name} has no label file {label.parent.name}/{label.name}.")
    return Patch(f"{roi}_{rest}", s2, s1, label)
