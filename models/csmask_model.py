"""ukis-csmask: DLR's cloud and cloud-shadow UNets (ONNX, shipped in the ukis-csmask wheel), run by onnxruntime."""

import contextlib
import hashlib
import json
import logging
import os
import platform
from pathlib import Path

import numpy as np
import onnxruntime
import ukis_csmask

from models.weights import verify_weights

log = logging.getLogger(__name__)
PACKAGE_DIR = Path(ukis_csmask.__file__).parent
# Our band names for the package's "blue, green, red, nir, swir16, swir22".
CSMASK_BANDS_6 = ("B02", "B03", "B04", "B08", "B11", "B12")
CSMASK_BANDS_4 = ("B02", "B03", "B04", "B08")


def variant_file(n_bands: int, processing_level: str) -> Path:
    """The ONNX file for the 6- or 4-band model and the L1C or L2A training data."""
    return PACKAGE_DIR / f"model_{n_bands}b_{processing_level.lower()}.onnx"


def variant_normalisation(n_bands: int, processing_level: str) -> tuple[list[float], list[float]]:
    """The per-band mean and std the variant was trained with, from the JSON next to its ONNX file."""
    meta = json.loads(variant_file(n_bands, processing_level).with_suffix(".json").read_text())
    mean, std = meta["data"]["dataset_statistics"]["img"]
    return mean, std


def onnx_providers(device: str) -> list[str]:
    """CUDA first when asked for (or 'auto') and available, CPU always as the fallback."""
    available = onnxruntime.get_available_providers()
    wants_cuda = device in ("auto", "cuda") and "CUDAExecutionProvider" in available
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if wants_cuda else ["CPUExecutionProvider"]


def machine_key() -> str:
    """A short hash of what an optimised CPU graph depends on: onnxruntime's version, the CPU and its flags."""
    flags = ""
    with contextlib.suppress(OSError):
        flags = next(
            (line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), ""
        )
    text = f"{onnxruntime.__version__}|{platform.machine()}|{platform.processor()}|{flags}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cpu_optimised_session(
    weights_file: Path, sha256: str, providers: list[str], threads: int, cache_dir: Path | None
) -> onnxruntime.InferenceSession:
    """An InferenceSession that loads a graph onnxruntime has already optimised for this machine, when it can.

    Optimising the csmask graph takes about 0.6 s of every session's 0.9 s start on a 2-vCPU worker, and each
    job builds its session afresh. The first session on a machine saves its optimised graph under
    `<cache_dir>/models/onnx-optimised/` (keyed by the weights' sha256 and `machine_key()`, since the optimised
    graph may use this CPU's instructions); later ones load it with optimisation off (0.17 s). CUDA sessions
    are built as usual.
    """
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    if providers != ["CPUExecutionProvider"] or cache_dir is None:
        return onnxruntime.InferenceSession(str(weights_file), sess_options=options, providers=providers)
    optimised = cache_dir / "models" / "onnx-optimised" / f"{sha256[:16]}-{machine_key()}.onnx"
    if optimised.is_file():
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            return onnxruntime.InferenceSession(str(optimised), sess_options=options, providers=providers)
        except Exception as err:  # noqa: BLE001 - a damaged cache file: rebuild it below
            log.warning("Optimised ONNX graph %s unusable (%s); optimising again", optimised, err)
            optimised.unlink(missing_ok=True)
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
    with contextlib.suppress(OSError):
        optimised.parent.mkdir(parents=True, exist_ok=True)
        partial = optimised.with_name(f".{optimised.name}.{os.getpid()}.part")
        options.optimized_model_filepath = str(partial)
        options.log_severity_level = (
            3  # its "hardware-specific graph" warning: machine_key() is why that is fine
        )
    try:
        session = onnxruntime.InferenceSession(str(weights_file), sess_options=options, providers=providers)
        if options.optimized_model_filepath and Path(options.optimized_model_filepath).is_file():
            os.replace(
                options.optimized_model_filepath, optimised
            )  # atomic: concurrent jobs write the same graph
    except Exception as err:  # noqa: BLE001 - saving the graph failed (a full disk reads as InvalidProtobuf)
        if not options.optimized_model_filepath:
            raise
        log.warning(
            "Could not save the optimised ONNX graph under %s (%s); not caching it", optimised.parent, err
        )
        plain = onnxruntime.SessionOptions()
        plain.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(str(weights_file), sess_options=plain, providers=providers)
    finally:  # a session that failed (or a full disk) leaves no partial graph behind
        if options.optimized_model_filepath:
            Path(options.optimized_model_filepath).unlink(missing_ok=True)
    return session


class CSMaskPredictor:
    """`predict` maps (B, C, 256, 256) standardised TOA reflectance to (B, 3, 256, 256) [clear, cloud, shadow]."""

    def __init__(
        self,
        n_bands: int,
        processing_level: str,
        sha256_by_file: dict[str, str],
        device: str = "auto",
        threads: int = 0,
        cache_dir: Path | None = None,
    ) -> None:
        self.weights_file = variant_file(n_bands, processing_level)
        # The pinned hashes live in the model card (models/cards/cloud-csmask.json).
        self.sha256 = verify_weights(
            self.weights_file, sha256_by_file[self.weights_file.name], "cloud-csmask"
        )
        self.session = cpu_optimised_session(
            self.weights_file, self.sha256, onnx_providers(device), threads, cache_dir
        )
        self.input_name = self.session.get_inputs()[0].name

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(B, C, 256, 256) float32 -> (B, 3, 256, 256) float32 softmax probabilities."""
        logits = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, np.float32)})[0]
        logits = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
