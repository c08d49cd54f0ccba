"""Presto's inputs: the 17 channels of a pixel's monthly series, in the order the published weights expect,
and the normalisation Presto was trained with (nasaharvest/presto's S1_S2_ERA5_SRTM pipeline)."""

import numpy as np

# The card builder of a Presto crop model (models.presto_heads), here so torch-free code (the catalogue, the
# pages) can tell such a model without importing torch.
PRESTO_BUILDER = "presto-head"

# The 17 input channels, in the order the published weights expect.
CHANNELS: tuple[str, ...] = (
    "VV", "VH",  # S1 backscatter, dB
    "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12",  # S2 L2A reflectance x 10000
    "temperature_2m", "total_precipitation",  # ERA5 monthly mean temperature (K), precipitation (m)
    "elevation", "slope",  # SRTM, metres and degrees
    "NDVI",
)  # fmt: skip
# normalised = (value + SHIFT) / SCALE per channel; NDVI is computed after normalising (see `normalise`).
SHIFT = np.array([25, 25] + [0] * 10 + [-272.15, 0, 0, 0, 0], dtype=np.float32)
SCALE = np.array([25, 25] + [1e4] * 10 + [35, 0.03, 2000, 50, 1], dtype=np.float32)
NDVI = CHANNELS.index("NDVI")
RED, NIR = CHANNELS.index("B04"), CHANNELS.index("B08")


def normalise(values: np.ndarray, missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Physical values [..., 17] and their mask (True = missing) -> the network's inputs and mask.

    NDVI (its input column is ignored) comes from the normalised red and NIR, and is missing where either is.
    Missing values become 0: they are masked, but a NaN would still poison the matrix products.
    """
    x = (values.astype(np.float32) + SHIFT) / SCALE
    red, nir = x[..., RED], x[..., NIR]
    total = nir + red
    with np.errstate(divide="ignore", invalid="ignore"):
        x[..., NDVI] = np.where(total > 0, (nir - red) / np.where(total > 0, total, 1.0), 0.0)
    missing = missing.copy()
    missing[..., NDVI] = missing[..., RED] | missing[..., NIR] | ~(total > 0)
    missing |= ~np.isfinite(x)
    return np.where(missing, 0.0, x).astype(np.float32), missing
