"""Build the embedded offline sample from tests/data/s2_slovenia_eolearn (run once; output is committed).

    python -m core.sample.build                  # from the repository's copy of eo-learn's example data
    python -m core.sample.build /path/to/s2_slovenia_eolearn

Writes one 13-band uint16 GeoTIFF per date in the local-source format (see README "Bring your own scenes"),
plus `aoi.geojson` (the scenes' footprint shrunk by 20 m) and the MIT licence with attribution.
"""

import json
import shutil
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_bounds
from shapely.geometry import box, mapping

from core.geometry.grid import project_geometry
from core.types import S2_BANDS

SAMPLE_DIR = Path(__file__).parent
EOLEARN_DIR = SAMPLE_DIR.parents[1] / "tests" / "data" / "s2_slovenia_eolearn"
# REFERENCE_SCENES frames 0..4 are these indices of timestamps.json (see the data README).
FRAME_TIMESTAMP_INDEX = (2, 1, 4, 3, 0)
DN_SCALE = 1e-4  # the source arrays are TOA reflectance already quantised to 1e-4, so uint16 DN is lossless


def build_sample(eolearn_dir: Path, out_dir: Path = SAMPLE_DIR) -> list[Path]:
    """Write the sample GeoTIFFs, AOI and licence into `out_dir`; return the GeoTIFF paths."""
    scenes = np.load(eolearn_dir / "REFERENCE_SCENES.npy")  # (5, 101, 100, 13) float32 reflectance
    timestamps = json.loads((eolearn_dir / "timestamps.json").read_text())
    bbox_doc = json.loads((eolearn_dir / "bbox.geojson").read_text())
    xs, ys = zip(*bbox_doc["coordinates"][0], strict=True)
    left, bottom, right, top = min(xs), min(ys), max(xs), max(ys)
    height, width = scenes.shape[1:3]
    transform = from_bounds(left, bottom, right, top, width, height)
    paths = []
    for frame, ts_index in enumerate(FRAME_TIMESTAMP_INDEX):
        acquired = datetime.fromisoformat(timestamps[ts_index])
        dn = np.round(scenes[frame] / DN_SCALE).astype(np.uint16).transpose(2, 0, 1)
        path = out_dir / f"S2_L1C_{acquired:%Y%m%dT%H%M%S}_slovenia.tif"
        profile = {
            "driver": "GTiff",
            "count": len(S2_BANDS),
            "height": height,
            "width": width,
            "dtype": "uint16",
            "crs": "EPSG:32633",
            "transform": transform,
            "nodata": 0,
            "compress": "deflate",
            "predictor": 2,
            "tiled": True,
            "blockxsize": 128,
            "blockysize": 128,
        }
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(dn)
            dst.descriptions = S2_BANDS
            dst.scales = [DN_SCALE] * len(S2_BANDS)
            dst.offsets = [0.0] * len(S2_BANDS)
            dst.update_tags(
                ACQUISITION_DATETIME=acquired.isoformat() + "Z",
                PROCESSING_LEVEL="L1C",
                SENSOR="S2",
                SCENE_ID=path.stem,
                ATTRIBUTION="Contains modified Copernicus Sentinel data 2015; eo-learn (MIT)",
            )
        paths.append(path)
    footprint_utm = box(left, bottom, right, top).buffer(-20.0, join_style="mitre")
    aoi = project_geometry(footprint_utm, "EPSG:32633", "EPSG:4326")
    (out_dir / "aoi.geojson").write_text(
        json.dumps({"type": "Feature", "properties": {"name": "sample"}, "geometry": mapping(aoi)}, indent=1)
    )
    shutil.copyfile(eolearn_dir / "LICENSE", out_dir / "LICENSE")
    return paths


if __name__ == "__main__":
    for written in build_sample(Path(sys.argv[1]) if len(sys.argv) > 1 else EOLEARN_DIR):
        print(written)
