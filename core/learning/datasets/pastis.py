"""PASTIS (Garnot & Landrieu 2021): 2,433 patches of 128 x 128 px at 10 m over France, each a Sentinel-2 L2A time
series of 33 to 61 dates with per-pixel crop-type labels, read in its release layout:
  <root>/metadata.geojson                  one feature per patch: properties ID_PATCH, Fold (1..5), dates-S2 (an
                                           object {"0": 20180924, "1": ...}: the date of each image, YYYYMMDD)
  <root>/DATA_S2/S2_<ID_PATCH>.npy         (T, 10, 128, 128) int16: B02 B03 B04 B05 B06 B07 B08 B8A B11 B12, DN
                                           (L2A reflectance x 10,000)
  <root>/ANNOTATIONS/TARGET_<ID_PATCH>.npy (3, 128, 128): channel 0 the semantic class, 0 background, 1..18 crop
                                           types, 19 void (parcel borders, unknown crops): not a label
The folds are the authors' spatially separated cross-validation folds: validation holds out whole folds (a fold
is a group). Series are read as stored; dates are the metadata's, in order.
How the layout was confirmed: from the authors' dataset code (VSainteuf/pastis-benchmark and utae-paps,
dataloader.py: metadata.geojson indexed by ID_PATCH with Fold and dates-S2, S2_<id>.npy as T x C x H x W,
TARGET_<id>.npy channel 0 as the semantic target, class 19 ignored in training) and several public projects that
read it the same way. The release (29 GB) cannot be downloaded here; the tests write patches in this layout.
"""

import json
from datetime import date, datetime
from pathlib import Path

import numpy as np

from core.learning.datasets.types import IGNORE, DatasetError, Patch, PatchDataset, PatchSample

BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
LEGEND = (
    "background",
    "meadow",
    "soft winter wheat",
    "corn",
    "winter barley",
    "winter rapeseed",
    "spring barley",
    "sunflower",
    "grapevine",
    "beet",
    "winter triticale",
    "winter durum wheat",
    "fruits, vegetables, flowers",
    "potatoes",
    "leguminous fodder",
    "soybeans",
    "orchard",
    "mixed cereal",
    "sorghum",
)
VOID = 19  # PASTIS's "void label"


def open_pastis(root: Path) -> PatchDataset:
    """The patches of a PASTIS release folder; a DatasetError says what is missing."""
    metadata = root / "metadata.geojson"
    if not metadata.is_file():
        raise DatasetError(
            f"{root} holds no PASTIS metadata.geojson; point --dataset at the release's root folder."
        )
    try:
        features = json.loads(metadata.read_text())["features"]
        records = [
            (f["properties"]["ID_PATCH"], f["properties"]["Fold"], f["properties"]["dates-S2"])
            for f in features
        ]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DatasetError(
            f"{metadata.name} is not PASTIS metadata: each feature needs ID_PATCH, Fold and dates-S2 ({err})."
        ) from err
    patches = []
    for patch_id, fold, stamps in sorted(records, key=lambda r: str(r[0])):
        files = {
            "s2": root / "DATA_S2" / f"S2_{patch_id}.npy",
            "label": root / "ANNOTATIONS" / f"TARGET_{patch_id}.npy",
        }
        absent = [f"{p.parent.name}/{p.name}" for p in files.values() if not p.is_file()]
        if absent:
            raise DatasetError(f"The PASTIS patch {patch_id} lacks {', '.join(absent)}.")
        patches.append(Patch(str(patch_id), files, group=f"fold {fold}", dates=_dates(patch_id, stamps)))
    if not patches:
        raise DatasetError(f"{metadata} lists no patches.")
    return PatchDataset("pastis", root, "series", LEGEND, BANDS, "L2A", 10.0, tuple(patches), read_patch)


def read_patch(patch: Patch, bands: tuple[str, ...]) -> PatchSample:
    """`bands` of one patch's series: (T, C, 128, 128) reflectance, (T, 128, 128) validity (a date's pixel has
    data in every band) and (128, 128) labels (void -> IGNORE)."""
    try:
        series = np.load(patch.file("s2"), mmap_mode="r")
        target = np.load(patch.file("label"), mmap_mode="r")
    except (OSError, ValueError) as err:
        raise DatasetError(f"{patch.patch_id}: an array cannot be read ({err}).") from err
    if series.ndim != 4 or series.shape[1] != len(BANDS) or series.shape[0] != len(patch.dates):
        raise DatasetError(
            f"S2_{patch.patch_id}.npy is {series.shape}; PASTIS series are (T, {len(BANDS)}, H, W) with one image per "
            f"date of its metadata ({len(patch.dates)})."
        )
    if target.ndim != 3 or target.shape[1:] != series.shape[2:]:
        raise DatasetError(
            f"TARGET_{patch.patch_id}.npy is {target.shape}; expected (3, {series.shape[2]}, {series.shape[3]})."
        )
    semantic = np.asarray(target[0]).astype(np.int64)
    if semantic.min(initial=0) < 0 or semantic.max(initial=0) > VOID:
        raise DatasetError(f"TARGET_{patch.patch_id}.npy holds classes outside 0..{VOID}.")
    dn = np.asarray(series[:, [BANDS.index(b) for b in bands]], np.float32)
    valid = (dn != 0).all(axis=1) & np.isfinite(dn).all(axis=1)
    labels = np.where(semantic == VOID, IGNORE, semantic).astype(np.uint8)
    return PatchSample(dn / 10_000.0, valid, labels, patch.dates)


def _dates(patch_id: object, stamps: object) -> tuple[date, ...]:
    """The dates of `dates-S2` ({"0": 20180924, ...}), in the order of the images."""
    try:
        # some copies store the object as a JSON string
        table = stamps if isinstance(stamps, dict) else json.loads(str(stamps))
        ordered = sorted(table.items(), key=lambda item: int(item[0]))
        return tuple(datetime.strptime(str(value), "%Y%m%d").date() for _, value in ordered)
    except (ValueError, AttributeError, TypeError) as err:
        raise DatasetError(
            f"The PASTIS patch {patch_id} has dates-S2 that are not YYYYMMDD values ({err})."
        ) from err
