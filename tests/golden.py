"""Golden outputs: the pixels of the demo's and the test scenes' rasters, as TerraSeg made them before the code was
reshaped (commit 5c20ac3). A digest covers each raster's pixel values, shape, dtype, CRS and transform, not its
file bytes (COG metadata holds the software version and the time)."""

import hashlib
import json
from pathlib import Path

import rasterio

GOLDEN_DIR = Path(__file__).parent / "data" / "golden"


def raster_digests(out_dir: Path) -> dict[str, str]:
    """sha256 of each GeoTIFF's pixels and georeferencing in `out_dir`, by file name."""
    digests = {}
    for path in sorted(out_dir.glob("*.tif")):
        with rasterio.open(path) as dataset:
            digest = hashlib.sha256()
            digest.update(
                f"{dataset.shape} {dataset.count} {dataset.dtypes} {dataset.crs} {dataset.transform}".encode()
            )
            digest.update(dataset.read().tobytes())
            digests[path.name] = digest.hexdigest()
    return digests


def golden(name: str) -> dict[str, str]:
    """The golden digests of job `name` (a file in tests/data/golden)."""
    return json.loads((GOLDEN_DIR / f"{name}.json").read_text())
