"""s2cloudless: Sinergise's per-pixel LightGBM cloud detector, using the model file its wheel ships."""

from pathlib import Path

import lightgbm
import numpy as np
import s2cloudless

from models.weights import verify_weights

# The order of the 10 bands the booster was trained on (s2cloudless.utils.MODEL_BANDS).
S2CLOUDLESS_BANDS = ("B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12")
WEIGHTS_FILE = Path(s2cloudless.__file__).parent / "models" / "pixel_s2_cloud_detector_lightGBM_v0.1.txt"


class S2CloudlessPredictor:
    """Cloud probability per pixel; `predict` maps (B, 10, h, w) TOA reflectance to (B, 2, h, w) [clear, cloud]."""

    def __init__(self, expected_sha256: str, threads: int = 0) -> None:
        """`expected_sha256`: the hash the model card (models/cards/cloud-s2cloudless.json) pins."""
        self.sha256 = verify_weights(WEIGHTS_FILE, expected_sha256, "cloud-s2cloudless")
        self.booster = lightgbm.Booster(model_file=str(WEIGHTS_FILE))
        self.threads = threads

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(B, 10, h, w) float32 reflectance in S2CLOUDLESS_BANDS order -> (B, 2, h, w) probabilities."""
        if batch.ndim != 4 or batch.shape[1] != len(S2CLOUDLESS_BANDS):
            raise ValueError(f"expected (B, {len(S2CLOUDLESS_BANDS)}, h, w); got {batch.shape}")
        b, c, h, w = batch.shape
        pixels = batch.transpose(0, 2, 3, 1).reshape(-1, c)
        raw = (
            self.booster.predict(pixels, num_threads=self.threads)
            if self.threads
            else self.booster.predict(pixels)
        )
        cloud = np.asarray(raw, dtype=np.float32).reshape(b, 1, h, w)
        return np.concatenate([1.0 - cloud, cloud], axis=1)
