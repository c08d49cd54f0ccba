"""Shared fixtures: scene GeoTIFFs in the local-source format, built in code."""

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from core.types import S2_BANDS

if TYPE_CHECKING:
    from models.registry import LoadedModel

pytest_plugins = ["tests.services"]

# Under pytest-xdist every test process (and the workers and commands it starts, which inherit the environment)
# computes with one thread: two processes whose OpenMP pools each take both cores of a 2-core machine slow each
# other down about fivefold (two concurrent trainings of the cloud UNet: 147 s, against 30 s with one thread each).
if os.environ.get("PYTEST_XDIST_WORKER"):
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TERRASEG_TORCH_THREADS"):
        os.environ.setdefault(variable, "1")  # TERRASEG_TORCH_THREADS: torch, onnxruntime (csmask), LightGBM

# The real data the tests read, with its licences (see tests/data/README.md).
TEST_DATA = Path(__file__).resolve().parent / "data"


def write_scene(
    path: Path,
    data: np.ndarray,
    *,
    bands: tuple[str, ...] = S2_BANDS,
    crs: str = "EPSG:32633",
    origin: tuple[float, float] = (465_000.0, 5_080_000.0),
    resolution_m: float = 10.0,
    acquired: str = "2015-08-20T10:07:28Z",
    level: str = "L1C",
    scale: float | None = 1e-4,
    nodata: float | None = 0,
) -> Path:
    """Write (C, H, W) `data` as a scene GeoTIFF (band descriptions, acquisition tags, scale/offset)."""
    count, height, width = data.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        count=count,
        height=height,
        width=width,
        dtype=data.dtype,
        crs=crs,
        transform=from_origin(*origin, resolution_m, resolution_m),
        nodata=nodata,
        tiled=height >= 16 and width >= 16,
        blockxsize=16 if width >= 16 else None,
        blockysize=16 if height >= 16 else None,
        compress="deflate",
    ) as dst:
        dst.write(data)
        dst.descriptions = bands
        if scale is not None:
            dst.scales = [scale] * count
            dst.offsets = [0.0] * count
        dst.update_tags(ACQUISITION_DATETIME=acquired, PROCESSING_LEVEL=level)
    return path


@pytest.fixture
def make_scene(tmp_path: Path) -> Callable[..., Path]:
    """Factory: a synthetic 13-band uint16 L1C scene GeoTIFF; keyword arguments go to write_scene."""

    def make(name: str = "scene.tif", size: int = 64, seed: int = 0, **kwargs: object) -> Path:
        bands = kwargs.get("bands", S2_BANDS)
        data = np.random.default_rng(seed).integers(500, 5000, (len(bands), size, size)).astype(np.uint16)
        folder = tmp_path / "scenes"
        folder.mkdir(exist_ok=True)
        return write_scene(folder / name, data, **kwargs)  # type: ignore[arg-type]

    return make


def load_model(
    model_id: str, *, processing_level: str, available_bands: set[str], device: str = "auto", threads: int = 0
) -> "LoadedModel":
    """A shipped model loaded as a job loads it (models.registry.load over the shipped cards)."""
    from models.catalogue import catalogue
    from models.registry import LoadOptions, load

    options = LoadOptions(processing_level, frozenset(available_bands), device, threads)
    return load(catalogue(), model_id, options)
