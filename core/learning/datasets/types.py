"""What every patch-dataset reader returns: a dataset's patches, and one patch read as arrays. No IO here."""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal

import numpy as np

from core.errors import AppError

IGNORE = 255  # label value of unlabelled pixels (as core.learning.labels)
# segmentation: one image, a class per pixel; series: a time series of images, a class per pixel;
# multilabel: one image, a set of classes for the whole patch (BigEarthNet).
Kind = Literal["segmentation", "series", "multilabel"]
# How a sentence names each kind ("cloud-unet learns from single images with a class per pixel; ...").
KIND_WORDS = {
    "segmentation": "single images with a class per pixel",
    "series": "image time series with a class per pixel",
    "multilabel": "images with a set of classes each",
}


class DatasetError(AppError):
    """A dataset folder that is not in the layout its format names, or a patch that cannot be read."""


@dataclass(frozen=True)
class Patch:
    """One labelled patch: its id, its files by role ("s2", "s1", "label", "B04", ...), the group of patches it
    neighbours (one scene, product or fold: validation holds out whole groups) and, for a series, its dates."""

    patch_id: str
    files: dict[str, Path] = field(hash=False)
    group: str
    dates: tuple[date, ...] = ()

    def file(self, role: str) -> Path:
        """The file of `role`; a DatasetError when the patch has none."""
        if role not in self.files:
            raise DatasetError(f"The patch {self.patch_id} has no {role} file.")
        return self.files[role]


@dataclass(frozen=True)
class PatchSample:
    """One patch as arrays.

    image: (C, H, W), or (T, C, H, W) for a series, float32: S2 reflectance 0..1 (Landsat: top-of-atmosphere
        reflectance), S1 backscatter in dB.
    valid: (H, W), or (T, H, W), bool: the pixel has data in every band read.
    target: segmentation and series: (H, W) uint8 0-based classes, IGNORE where unlabelled; multilabel: (K,) bool.
    dates: a series' acquisition dates, one per image.
    """

    image: np.ndarray
    valid: np.ndarray
    target: np.ndarray
    dates: tuple[date, ...] = ()


@dataclass(frozen=True)
class PatchDataset:
    """A release folder's labelled patches: its kind, legend (target value v is legend[v]), the bands it can
    give (in its own order), their processing level and pixel size, and the format's reader."""

    format: str
    root: Path
    kind: Kind
    legend: tuple[str, ...]
    bands: tuple[str, ...]
    processing_level: str
    resolution_m: float
    patches: tuple[Patch, ...]
    reader: Callable[[Patch, tuple[str, ...]], PatchSample] = field(repr=False, compare=False)

    def read(self, patch: Patch, bands: tuple[str, ...]) -> PatchSample:
        """Patch `patch` with `bands` in that order; a DatasetError names a band the format lacks or a file
        that cannot be read."""
        missing = [b for b in bands if b not in self.bands]
        if missing:
            raise DatasetError(
                f"{self.format} patches have no band {', '.join(missing)} (they have {', '.join(self.bands)})."
            )
        return self.reader(patch, bands)


def first_line(err: Exception) -> str:
    """The first line of an error's text, for a sentence that names a file."""
    return (str(err).splitlines() or [type(err).__name__])[0]
