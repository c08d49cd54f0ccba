"""Run a PyTorch segmentation module as a TerraSeg `predict` callable, on GPU when present."""

from collections.abc import Callable

import numpy as np
import torch
from torch import nn


def resolve_device(device: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without CUDA is an error, not a silent fallback."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("TERRASEG_DEVICE=cuda, but torch sees no CUDA device")
    return torch.device(device)


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 in hardware (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class TorchPredictor:
    """`predict` maps (B, C, H, W) float32 normalised input to (B, K, H, W) softmax probabilities.

    On CUDA it runs under float16 autocast. On the CPU it uses channels_last (1.4-1.9x faster 3x3
    convolutions with oneDNN here) and bfloat16 autocast only when asked (its accuracy is measured per model, the
    card says) and the CPU has bf16 instructions. `compile`: torch.compile the module (the first batch of each
    shape compiles it).
    """

    def __init__(
        self, module: nn.Module, device: str = "auto", cpu_bf16: bool = False, compile: bool = False
    ) -> None:
        self.device = resolve_device(device)
        self.module = module.eval().to(self.device)
        self.module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from the stubs
        self.forward: Callable[[torch.Tensor], torch.Tensor] = (
            torch.compile(self.module) if compile else self.module
        )
        if self.device.type == "cuda":
            self.autocast_dtype: torch.dtype | None = torch.float16
        else:
            self.autocast_dtype = torch.bfloat16 if cpu_bf16 and cpu_has_bf16() else None

    @torch.inference_mode()
    def predict(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(
            self.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        ):
            logits = self.forward(x)
        return torch.softmax(logits.float(), dim=1).cpu().numpy()


class SeriesTorchPredictor:
    """`predict` maps a (B, T, C, S, S) normalised series batch to (B, K, S, S) probabilities.

    A date whose whole tile is 0 (no valid observation: the pipeline blanks invalid ones) is padding for that
    tile; `positions` (T,) are the dates as day numbers for models with a date encoding (None: the model takes
    only the padding mask).
    """

    def __init__(self, module: nn.Module, positions: np.ndarray | None, device: str = "auto") -> None:
        self.device = resolve_device(device)
        self.module = module.eval().to(self.device)
        self.positions = None if positions is None else torch.from_numpy(np.asarray(positions, np.float32))
        self.autocast_dtype = torch.float16 if self.device.type == "cuda" else None

    @torch.inference_mode()
    def predict(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device)
        pad_mask = (x == 0).flatten(2).all(dim=2)  # (B, T)
        # A tile with no observation at all (outside the data) still needs one date to run; its pixels are
        # invalid everywhere, so the pipeline writes no data there whatever the model says.
        pad_mask[pad_mask.all(dim=1), 0] = False
        with torch.autocast(
            self.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        ):
            if self.positions is None:
                logits = self.module(x, pad_mask=pad_mask)
            else:
                positions = self.positions.to(self.device).expand(x.shape[0], -1)
                logits = self.module(x, positions, pad_mask=pad_mask)
        return torch.softmax(logits.float(), dim=1).cpu().numpy()


class TagsPredictor:
    """`predict` maps (B, C, H, W) float32 normalised input to (B, K) per-class probabilities (sigmoid: a patch
    may have several classes)."""

    def __init__(self, module: nn.Module, device: str = "auto") -> None:
        self.device = resolve_device(device)
        self.module = module.eval().to(self.device)

    @torch.inference_mode()
    def predict(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.device.type == "cuda"):
            logits = self.module(x)
        return torch.sigmoid(logits.float()).cpu().numpy()
