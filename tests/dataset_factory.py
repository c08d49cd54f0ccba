"""Patch datasets written in their published layouts from the real samples in tests/data (the releases cannot be
downloaded here): 38-Cloud from ukis-csmask's real 30 m scene and its reference cloud mask, BigEarthNet-S2 from
the embedded Slovenia sample and eo-learn's land-use polygons, PASTIS from the real Tanzania L2A series."""

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pyogrio
import rasterio
from rasterio.features import rasterize
from rasterio.transform import from_origin

from core.learning.datasets.bigearthnet import BANDS as BEN_BANDS
from core.sources import SAMPLE_DIR
from core.types import S2_BANDS
from tests.conftest import TEST_DATA

CSMASK_SCENE = TEST_DATA / "cloud_reference_ukis_csmask" / "sentinel2.npz"
SLOVENIA_SCENE = SAMPLE_DIR / "S2_L1C_20150830T100547_slovenia.tif"
LULC = TEST_DATA / "s2_slovenia_eolearn" / "LULC.gpkg"
TANZANIA = TEST_DATA / "s2_tanzania_timeseries_rsgislib" / "timeseries_T37MEM_stack.npz"
# eo-learn's land-use classes as the CORINE level-3 names a BigEarthNet labels file holds.
LULC_TO_CLC = {
    "forest": "Mixed forest",
    "schrubland": "Transitional woodland/shrub",
    "grassland": "Pastures",
    "cultivated land": "Non-irrigated arable land",
    "artificial surface": "Discontinuous urban fabric",
    "water": "Water bodies",
}


def write_38cloud(root: Path, patch_px: int = 128) -> Path:
    """38-Cloud_training/train_{red,green,blue,nir,gt}/ with one TIFF per band and patch, and the patch list.
    The csmask scene (512 x 512 px at 30 m) is cut into patch_px tiles; each row of tiles is called one Landsat
    scene, so a split by scene holds out whole rows. Reflectance becomes Landsat DN by inverting the release's
    rescaling; the mask's cloud class (4) is 255 in the ground truth, all else 0."""
    reference = np.load(CSMASK_SCENE)
    image = reference["img"].transpose(2, 0, 1)  # (6, 512, 512): blue green red nir swir16 swir22
    cloud = reference["msk"][..., 0] == 4
    dn = np.clip(np.round((image[:4] + 0.1) / 2e-5), 1, 65535).astype(np.uint16)
    folder = root / "38-Cloud_training"
    layers = {"blue": dn[0], "green": dn[1], "red": dn[2], "nir": dn[3], "gt": np.where(cloud, 255, 0).astype(np.uint8)}
    names = []
    per_side = image.shape[1] // patch_px
    for row in range(per_side):
        for col in range(per_side):
            scene = f"LC08_L1TP_03{row}037_20160520_20170324_01_T1"
            name = f"patch_{row * per_side + col + 1}_{row + 1}_by_{col + 1}_{scene}"
            names.append(name)
            window = np.s_[row * patch_px : (row + 1) * patch_px, col * patch_px : (col + 1) * patch_px]
            for prefix, layer in layers.items():
                (folder / f"train_{prefix}").mkdir(parents=True, exist_ok=True)
                profile = {
                    "driver": "GTiff", "width": patch_px, "height": patch_px, "count": 1, "dtype": layer.dtype,
                    "crs": "EPSG:32632",
                    "transform": from_origin(500_000 + col * patch_px * 30, 5_000_000 - row * patch_px * 30, 30, 30),
                }  # fmt: skip
                with rasterio.open(
                    folder / f"train_{prefix}" / f"{prefix}_{name}.TIF", "w", **profile
                ) as out:
                    out.write(layer[window][None])
    (folder / "training_patches_38-Cloud.csv").write_text("name\n" + "\n".join(names) + "\n")
    return root


def write_bigearthnet(root: Path, patch_px: int = 48) -> Path:
    """<patch>/<patch>_B01.tif ... _B12.tif (10 m bands at patch_px, 20 m at half, 60 m at a sixth, as in the
    release) and <patch>_labels_metadata.json, from the Slovenia sample: 4 patches per product, two products
    (the scene read as if acquired twice, the second time with patches shifted by a quarter), labels the CLC
    names of the land-use polygons each patch touches."""
    with rasterio.open(SLOVENIA_SCENE) as scene:
        dn, transform, crs = scene.read(), scene.transform, scene.crs
        names = list(scene.descriptions) if all(scene.descriptions) else None
    order = names or list(S2_BANDS)
    frame = pyogrio.read_dataframe(LULC).to_crs(crs)
    classes = sorted(set(frame.LULC_NAME) & set(LULC_TO_CLC))
    codes = {name: i + 1 for i, name in enumerate(classes)}
    shapes = [(g, codes[n]) for g, n in zip(frame.geometry, frame.LULC_NAME, strict=True) if n in codes]
    land_use = rasterize(shapes, out_shape=dn.shape[1:], transform=transform, fill=0, dtype="uint8")
    height, width = dn.shape[1:]
    far_row, far_col = height - patch_px, width - patch_px
    half_row, half_col = far_row // 2, far_col // 2
    products = {
        "S2A_MSIL2A_20170613T101031": [(0, 0), (0, far_col), (far_row, 0), (far_row, far_col)],
        "S2B_MSIL2A_20170818T100029": [
            (half_row, 0),
            (half_row, far_col),
            (0, half_col),
            (far_row, half_col),
        ],
    }
    for product, origins in products.items():
        for k, (row, col) in enumerate(origins):
            name = f"{product}_{k % 2}_{k // 2}"
            folder = root / name
            folder.mkdir(parents=True)
            for band in BEN_BANDS:
                factor = 1 if band in ("B02", "B03", "B04", "B08") else 6 if band in ("B01", "B09") else 2
                size = patch_px // factor
                block = dn[order.index(band), row : row + patch_px, col : col + patch_px].astype(np.float32)
                data = block.reshape(size, factor, size, factor).mean(axis=(1, 3)).round().astype(np.uint16)
                profile = {
                    "driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "uint16",
                    "crs": crs, "transform": transform @ transform.translation(col, row) @ transform.scale(factor),
                }  # fmt: skip
                with rasterio.open(folder / f"{name}_{band}.tif", "w", **profile) as out:
                    out.write(data[None])
            present = np.unique(land_use[row : row + patch_px, col : col + patch_px])
            labels = [LULC_TO_CLC[classes[v - 1]] for v in present if v > 0]
            when = datetime.strptime(product.split("_")[2], "%Y%m%dT%H%M%S")
            (folder / f"{name}_labels_metadata.json").write_text(
                json.dumps(
                    {
                        "labels": labels,
                        "acquisition_date": when.strftime("%Y-%m-%d %H:%M:%S"),
                        "tile_source": product.replace("MSIL2A", "MSIL1C"),
                    }
                )  # fmt: skip
            )
    return root


def write_pastis(root: Path, patch_px: int = 32) -> tuple[Path, float]:
    """metadata.geojson, DATA_S2/S2_<id>.npy (T, 10, H, W) int16 and ANNOTATIONS/TARGET_<id>.npy (3, H, W)
    from the real Tanzania L2A series (its 10 bands are PASTIS's, in PASTIS's order): 6 patches of patch_px, two
    per fold (20 m pixels read as 10 m; reflectance x 1000 becomes DN x 10,000, its nodata 0). There are no crop
    labels for it, so the semantic target is made from the series itself: class 1 (meadow) where the pixel's
    median NDVI over the dates is above the median of the scene, else 0 (background), and the first row of
    every patch void (19). Returns the root and the fraction of meadow pixels."""
    stack = np.load(TANZANIA)
    raw = stack["data"].astype(np.float32)  # (21, 10, 140, 169) reflectance x 1000, nodata 1
    data = np.where(raw == stack["nodata"], 0, np.clip(raw * 10, 1, 32767))  # PASTIS's DN, 0 where no data
    bands = [str(b) for b in stack["bands"]]
    assert [b.replace("B", "") for b in bands][:4] == ["2", "3", "4", "5"]
    dates = [str(d) for d in stack["dates"]]
    red, nir = data[:, bands.index("B4")], data[:, bands.index("B8")]
    ndvi = np.median((nir - red) / np.maximum(nir + red, 1), axis=0)
    meadow = ndvi > np.median(ndvi)
    features = []
    (root / "DATA_S2").mkdir(parents=True)
    (root / "ANNOTATIONS").mkdir()
    origins = [(r, c) for r in (0, 40, 80) for c in (0, 64)]
    for k, (row, col) in enumerate(origins):
        patch_id = 10000 + k
        keep = list(range(k % 3, len(dates)))  # series of different lengths, as in PASTIS
        series = data[keep, :, row : row + patch_px, col : col + patch_px].astype(np.int16)
        target = np.zeros((3, patch_px, patch_px), np.uint8)
        target[0] = meadow[row : row + patch_px, col : col + patch_px]
        target[0, 0] = 19
        target[1] = 1 + k  # the instance and parcel channels, unused by the semantic reader
        np.save(root / "DATA_S2" / f"S2_{patch_id}.npy", series)
        np.save(root / "ANNOTATIONS" / f"TARGET_{patch_id}.npy", target)
        features.append(
            {
                "type": "Feature",
                "id": str(patch_id),
                "properties": {
                    "ID_PATCH": patch_id,
                    "Fold": 1 + k // 2,
                    "N_Parcel": 1,
                    "Parcel_Cover": 1.0,
                    "TILE": "T37MEM",
                    "dates-S2": {str(i): int(dates[t]) for i, t in enumerate(keep)},
                },
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[39, -6], [39.01, -6], [39.01, -5.99], [39, -6]]],
                },
            }
        )
    (root / "metadata.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return root, float(meadow.mean())
