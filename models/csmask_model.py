"""ukis-csmask: DLR's cloud and cloud-shadow UNets (ONNX, shipped in the ukis-csmask wheel), run by onnxruntime."""

import json
from pathlib import Path

import numpy as np
import onnxruntime
import ukis_csmask

from models.weights import verify_weights

PACKAGE_DIR = Path(ukis_csmask.__file__).parent
# Our band names for the package's "blue, green, red, nir, swir16, swir22".
CSMASK_BANDS_6 = ("B02", "B03", "B04", "B08", "B11", "B12")
CSMASK_BANDS_4 = ("B02", "B03", "B04", "B08")


def variant_file(n_bands: int, processing_level: str) -> Path:
    """The ONNX file for the 6- or 4-band model and the L1C or L2A training data."""
    return PACKAGE_DIR / f"model_{n_bands}b_{processing_level.lower()}.onnx"


def variant_normalisation(n_bands: int, processing_level: str) -> dict[str, object]:
    """The mean/std standardisation the variant was trained with, from the JSON next to its ONNX file."""
    meta = json.loads(variant_file(n_bands, processing_level).with_suffix(".json").read_text())
    mean, std = meta["data"]["dataset_statistics"]["img"]
    return {"kind": "standard", "mean": mean, "std": std}


def onnx_providers(device: str) -> list[str]:
    """CUDA first when asked for (or 'auto') and available, CPU always as the fallback."""
    available = onnxruntime.get_available_providers()
    wants_cuda = device in ("auto", "cuda") and "CUDAExecutionProvider" in available
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if wants_cuda else ["CPUExecutionProvider"]


class CSMaskPredictor:
    """`predict` maps (B, C, 256, 256) standardised TOA reflectance to (B, 3, 256, 256) [clear, cloud, shadow]."""

    def __init__(
        self,
        n_bands: int,
        processing_level: str,
        sha256_by_file: dict[str, str],
        device: str = "auto",
        threads: int = 0,
    ) -> None:
        self.weights_file = variant_file(n_bands, processing_level)
        # The pinned hashes live in the model card (models/cards/cloud-csmask.json).
        self.sha256 = verify_weights(
            self.weights_file, sha256_by_file[self.weights_file.name], "cloud-csmask"
        )
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(
            str(self.weights_file), sess_options=options, providers=onnx_providers(device)
        )
        self.input_name = self.session.get_inputs()[0].name

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(B, C, 256, 256) float32 -> (B, 3, 256, 256) float32 softmax probabilities."""
        logits = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, np.float32)})[0]
        logits = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
