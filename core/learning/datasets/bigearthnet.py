"""BigEarthNet-S2 v1.0 (Sumbul et al. 2019): 1.2 x 1.2 km Sentinel-2 L2A patches with multi-labels from CORINE
Land Cover 2018, read in its release layout and mapped to the 19-class nomenclature (Sumbul et al. 2021):
  <root>/<patch>/<patch>_B01.tif ... <patch>_B12.tif     12 bands (no B10): 120 x 120 px at 10 m (B02 B03 B04
                                                          B08), 60 x 60 at 20 m, 20 x 20 at 60 m; DN (L2A x 10,000)
  <root>/<patch>/<patch>_labels_metadata.json           {"labels": [CLC level-3 names], "acquisition_date", ...}
where <patch> is <S2 product>_<column>_<row>, e.g. S2A_MSIL2A_20170613T101031_0_45; patches of one product
neighbour each other (one group). Optional lists in <root> of patches the authors advise to leave out,
patches_with_cloud_and_shadow.csv and patches_with_seasonal_snow.csv (one patch name per line), are honoured.
Every band is read at the size of the 10 m bands, 120 x 120 in the release (bilinear for the 20 and 60 m bands,
as a job reads them onto its 10 m grid).
The 43 CLC labels become the 19 classes by the authors' conversion (label_indices.json of their
BigEarthNet-19 models); eleven CLC classes have no counterpart, and a patch left with no class counts as one
with none (it still teaches the model what is absent).
How the layout was confirmed: from the release's description (folder per patch, band files and sizes, the labels
JSON) and the readers of several public projects that train on it, which build the same file names, read
"labels" from the JSON and convert them with that table. The archive (66 GB) cannot be downloaded here; the tests
write patches in this layout.
"""

import json
import re
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioError

from core.learning.datasets.types import DatasetError, Patch, PatchDataset, PatchSample, first_line

BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
LEGEND = (
    "Urban fabric",
    "Industrial or commercial units",
    "Arable land",
    "Permanent crops",
    "Pastures",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas",
    "Broad-leaved forest",
    "Coniferous forest",
    "Mixed forest",
    "Natural grassland and sparsely vegetated areas",
    "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland, shrub",
    "Beaches, dunes, sands",
    "Inland wetlands",
    "Coastal wetlands",
    "Inland waters",
    "Marine waters",
)
# CLC level-3 name (as the labels JSON writes it) -> its BigEarthNet-19 class; absent names have none.
CLC_TO_19 = {
    "Continuous urban fabric": 0,
    "Discontinuous urban fabric": 0,
    "Industrial or commercial units": 1,
    "Non-irrigated arable land": 2,
    "Permanently irrigated land": 2,
    "Rice fields": 2,
    "Vineyards": 3,
    "Fruit trees and berry plantations": 3,
    "Olive groves": 3,
    "Annual crops associated with permanent crops": 3,
    "Pastures": 4,
    "Complex cultivation patterns": 5,
    "Land principally occupied by agriculture, with significant areas of natural vegetation": 6,
    "Agro-forestry areas": 7,
    "Broad-leaved forest": 8,
    "Coniferous forest": 9,
    "Mixed forest": 10,
    "Natural grassland": 11,
    "Sparsely vegetated areas": 11,
    "Moors and heathland": 12,
    "Sclerophyllous vegetation": 12,
    "Transitional woodland/shrub": 13,
    "Beaches, dunes, sands": 14,
    "Inland marshes": 15,
    "Peatbogs": 15,
    "Salt marshes": 16,
    "Salines": 16,
    "Water courses": 17,
    "Water bodies": 17,
    "Coastal lagoons": 18,
    "Estuaries": 18,
    "Sea and ocean": 18,
}
# The CLC classes the 19-class nomenclature leaves out.
CLC_WITHOUT_19 = (
    "Road and rail networks and associated land",
    "Port areas",
    "Airports",
    "Mineral extraction sites",
    "Dump sites",
    "Construction sites",
    "Green urban areas",
    "Sport and leisure facilities",
    "Bare rock",
    "Burnt areas",
    "Intertidal flats",
)
LEFT_OUT_LISTS = ("patches_with_cloud_and_shadow.csv", "patches_with_seasonal_snow.csv")
NAME = re.compile(r"(S2[AB]_MSIL2A_\d{8}T\d{6})_\d+_\d+")


def open_bigearthnet(root: Path) -> PatchDataset:
    """The patches of a BigEarthNet-S2 release folder; a DatasetError says what is missing."""
    left_out: set[str] = set()
    for name in LEFT_OUT_LISTS:
        if (root / name).is_file():
            left_out |= {line.split(",")[0].strip() for line in (root / name).read_text().splitlines()}
    patches = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        match = NAME.fullmatch(folder.name)
        if match is None or folder.name in left_out:
            continue
        files = {band: folder / f"{folder.name}_{band}.tif" for band in BANDS}
        files["labels"] = folder / f"{folder.name}_labels_metadata.json"
        absent = [p.name for p in files.values() if not p.is_file()]
        if absent:
            raise DatasetError(f"The patch {folder.name} lacks {', '.join(absent)}.")
        patches.append(Patch(folder.name, files, group=match.group(1)))
    if not patches:
        raise DatasetError(
            f"{root} holds no BigEarthNet-S2 patches: expected folders named <S2 product>_<column>_<row> (e.g. "
            "S2A_MSIL2A_20170613T101031_0_45), each with its 12 band TIFFs and <patch>_labels_metadata.json."
        )
    return PatchDataset(
        "bigearthnet", root, "multilabel", LEGEND, BANDS, "L2A", 10.0, tuple(patches), read_patch
    )


def patch_tags(patch: Patch) -> np.ndarray:
    """(19,) bool: the patch's BigEarthNet-19 classes, from its labels JSON."""
    path = patch.file("labels")
    try:
        labels = json.loads(path.read_text())["labels"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DatasetError(
            f"{path.name} is not a BigEarthNet labels file with a 'labels' list ({err})."
        ) from err
    unknown = [name for name in labels if name not in CLC_TO_19 and name not in CLC_WITHOUT_19]
    if unknown:
        raise DatasetError(
            f"{path.name} has labels that are not CLC level-3 classes: {', '.join(map(str, unknown))}."
        )
    tags = np.zeros(len(LEGEND), bool)
    tags[[CLC_TO_19[name] for name in labels if name in CLC_TO_19]] = True
    return tags


def read_patch(patch: Patch, bands: tuple[str, ...]) -> PatchSample:
    """`bands` of one patch at the 10 m bands' size (reflectance = DN / 10,000), validity (DN > 0) and its 19
    tags."""
    layers = []
    try:
        with rasterio.open(patch.file("B02")) as dataset:
            shape = (dataset.height, dataset.width)  # 120 x 120 in the release
        for band in bands:
            with rasterio.open(patch.file(band)) as dataset:
                layers.append(
                    dataset.read(1, out_shape=shape, resampling=Resampling.bilinear).astype(np.float32)
                )
    except RasterioError as err:
        raise DatasetError(f"{patch.patch_id}: a file cannot be read ({first_line(err)}).") from err
    dn = np.stack(layers) if layers else np.zeros((0, *shape), np.float32)
    return PatchSample(dn / 10_000.0, np.asarray((dn > 0).all(axis=0)), patch_tags(patch))
