"""Patch datasets in their published layouts, one reader per format (each module's docstring gives the layout and
how it was confirmed): DFC2020, 38-Cloud, BigEarthNet-S2 (19 classes) and PASTIS. A reader lists a release
folder's labelled patches and reads one patch as arrays (core.learning.datasets.types.PatchSample)."""

from collections.abc import Callable
from pathlib import Path

from core.learning.datasets.bigearthnet import open_bigearthnet
from core.learning.datasets.cloud38 import open_38cloud
from core.learning.datasets.dfc2020 import LEGEND as DFC2020_LEGEND
from core.learning.datasets.dfc2020 import open_dfc2020
from core.learning.datasets.pastis import open_pastis
from core.learning.datasets.types import IGNORE, DatasetError, Kind, Patch, PatchDataset, PatchSample

OPENERS: dict[str, Callable[[Path], PatchDataset]] = {
    "dfc2020": open_dfc2020,
    "38-cloud": open_38cloud,
    "bigearthnet": open_bigearthnet,
    "pastis": open_pastis,
}
FORMATS = tuple(OPENERS)

__all__ = [
    "DFC2020_LEGEND",
    "FORMATS",
    "IGNORE",
    "DatasetError",
    "Kind",
    "Patch",
    "PatchDataset",
    "PatchSample",
    "open_dataset",
]


def open_dataset(root: Path, fmt: str) -> PatchDataset:
    """The labelled patches of a release folder in format `fmt`; a DatasetError says what is missing."""
    if fmt not in OPENERS:
        raise DatasetError(f"Unknown dataset format {fmt!r}; the formats are {', '.join(FORMATS)}.")
    if not root.is_dir():
        raise DatasetError(f"The dataset folder {root} does not exist.")
    return OPENERS[fmt](root)
