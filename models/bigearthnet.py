"""ResNet-50 multi-label scene classifier for BigEarthNet-19 (BigEarthNet-S2, 19-class nomenclature).

Sumbul et al. 2019, "BigEarthNet: a large-scale benchmark archive for remote sensing image understanding"
(IGARSS); the 19 classes of Sumbul et al. 2021 (IEEE TNNLS, doi:10.1109/TNNLS.2020.3045113). He et al. 2016
ResNet-50 in plain PyTorch, bottleneck blocks [3, 4, 6, 3] with the stride on the 3x3 conv (torchvision's
"v1.5"), batch norm, and torchvision's parameter names (conv1, bn1, layer1..layer4 with downsample.0/1, fc), so
state dicts saved from `torchvision.models.resnet50` with a C-band conv1 and a 19-way fc load as they are.

    x (B, C, H, W) standardised reflectance, C = 12 (BANDS_12) or 10 (BANDS_10), 120 x 120 px at 10 m
    conv1 7x7/2 -> bn1 -> relu -> maxpool 3x3/2 -> layer1..layer4 -> global average pool -> fc 2048 -> 19
    logits (B, 19); sigmoid per label (multi-label)

Any H, W >= 32 works (layer4 then sees at least 1 x 1). `patch_tags` runs the model over an area in 120 px
patches for a coarse "scene tags" layer; `scene_tags` turns one patch's probabilities into sorted tags.

Band order: the BigEarthNet PyTorch training code of the dataset's authors (RSiM, TU Berlin) stacks the 10 m
bands, then the 20 m bands (bilinearly upsampled to 120 px), then the 60 m ones, and standardises each band with
the dataset's mean and standard deviation (L2A DN, here / 10 000 for reflectance). Published checkpoints of other
code (TorchGeo, reben/BigEarthNet v2) may order the bands, or the 19 classes, differently: check before loading.
"""

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.errors import ModelError
from core.learning.datasets.bigearthnet import LEGEND as BEN19_LEGEND
from models.weights import check_state_dict

# The official BigEarthNet-19 nomenclature, in the order of label_indices.json ("BigEarthNet-19_labels"), as the
# dataset reader (core.learning.datasets.bigearthnet) maps the CORINE labels to it.
CLASS_NAMES = BEN19_LEGEND
BANDS_12 = ("B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12", "B01", "B09")
BANDS_10 = BANDS_12[:10]
PATCH_PX = 120
RESOLUTION_M = 10.0
MIN_SIZE_PX = 32
# BigEarthNet-S2 (v1, L2A) band statistics in DN from the authors' PyTorch code, as reflectance (DN / 10 000).
_MEAN_DN = (429.943, 614.217, 590.236, 2218.946, 950.684, 1792.463, 2075.468, 2266.460, 1594.427, 1009.327,
            340.768, 2246.061)  # fmt: skip
_STD_DN = (572.416, 582.879, 675.887, 1365.456, 729.898, 1096.015, 1273.454, 1356.138, 1079.191, 818.867,
           554.813, 1302.329)  # fmt: skip
NORMALISATION_12: dict[str, object] = {
    "kind": "standard",
    "mean": [m / 10_000 for m in _MEAN_DN],
    "std": [s / 10_000 for s in _STD_DN],
}
NORMALISATION_10: dict[str, object] = {
    "kind": "standard",
    "mean": [m / 10_000 for m in _MEAN_DN[:10]],
    "std": [s / 10_000 for s in _STD_DN[:10]],
}


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (stride here) -> 1x1 expand (x4), each with batch norm, plus the identity or a
    strided 1x1 projection ("downsample"); torchvision's names."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class BigEarthNetResNet50(nn.Module):
    """(B, in_channels, H, W) standardised reflectance -> (B, n_labels) logits; H, W >= 32.

    Args:
        in_channels: bands, 12 (BANDS_12) or 10 (BANDS_10) for the BigEarthNet variants; any count works.
        n_labels: output labels (19 for BigEarthNet-19).
    """

    def __init__(self, in_channels: int = 12, n_labels: int = 19) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._layer(64, 64, blocks=3, stride=1)
        self.layer2 = self._layer(256, 128, blocks=4, stride=2)
        self.layer3 = self._layer(512, 256, blocks=6, stride=2)
        self.layer4 = self._layer(1024, 512, blocks=3, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * Bottleneck.expansion, n_labels)
        for module in self.modules():  # torchvision's initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @staticmethod
    def _layer(in_channels: int, width: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [Bottleneck(in_channels, width, stride)]
        layers += [Bottleneck(width * Bottleneck.expansion, width) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels or min(x.shape[-2:]) < MIN_SIZE_PX:
            raise ValueError(
                f"expected x of shape (B, {self.in_channels}, H, W) with H, W >= {MIN_SIZE_PX}; "
                f"got {tuple(x.shape)}"
            )
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def scene_tags(probabilities: np.ndarray, threshold: float = 0.5) -> list[dict[str, object]]:
    """[{"name", "probability"}] of the labels with probability >= threshold, most probable first.

    Args:
        probabilities: (19,) sigmoid outputs, 0-1, in CLASS_NAMES order.
        threshold: the probability from which a label counts as present.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.shape != (len(CLASS_NAMES),):
        raise ValueError(f"expected ({len(CLASS_NAMES)},) probabilities; got shape {probabilities.shape}")
    order = np.argsort(-probabilities, kind="stable")
    return [
        {"name": CLASS_NAMES[i], "probability": float(probabilities[i])}
        for i in order
        if probabilities[i] >= threshold
    ]


def patch_origins(size_px: int, patch_px: int = PATCH_PX, stride_px: int = PATCH_PX) -> list[int]:
    """Start offsets of patches covering `size_px` pixels; the last one shifts inward instead of padding."""
    if stride_px <= 0 or not 0 < patch_px <= size_px:
        raise ValueError(
            f"need 0 < stride_px and 0 < patch_px <= size_px; got stride_px={stride_px}, "
            f"patch_px={patch_px}, size_px={size_px}"
        )
    return sorted({*range(0, size_px - patch_px, stride_px), size_px - patch_px})


def patch_tags(
    model: nn.Module,
    image: np.ndarray,
    patch_px: int = PATCH_PX,
    stride_px: int = PATCH_PX,
    batch_size: int = 16,
) -> np.ndarray:
    """Label probabilities of every patch of an area: the coarse "scene tags" layer.

    Args:
        model: a BigEarthNetResNet50 (or any (B, C, p, p) -> (B, L) logits module); run in eval mode here
            and on the device of its parameters.
        image: (C, H, W) standardised reflectance of the area, H, W >= patch_px.
        patch_px: patch side in pixels (120 = 1.2 km at 10 m, BigEarthNet's patch).
        stride_px: step between patches; patch (i, j) starts at row patch_origins(H)[i], col patch_origins(W)[j].
        batch_size: patches per forward pass.

    Returns:
        (n_rows, n_cols, L) float32 probabilities (sigmoid of the logits).
    """
    if image.ndim != 3:
        raise ValueError(f"expected a (C, H, W) image; got shape {image.shape}")
    rows = patch_origins(image.shape[1], patch_px, stride_px)
    cols = patch_origins(image.shape[2], patch_px, stride_px)
    patches = np.stack([image[:, r : r + patch_px, c : c + patch_px] for r in rows for c in cols])
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            probabilities = [
                torch.sigmoid(model(torch.from_numpy(patches[i : i + batch_size]).float().to(device)).float())
                .cpu()
                .numpy()
                for i in range(0, len(patches), batch_size)
            ]
    finally:
        model.train(was_training)
    return np.concatenate(probabilities).reshape(len(rows), len(cols), -1).astype(np.float32)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file ({"state_dict": ...} or bare), without DataParallel's "module." prefix."""
    if not path.is_file():
        raise ModelError(f"The checkpoint {path} does not exist. Check the path of the weights file.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as err:
        raise ModelError(
            f"{path.name} cannot be read as a PyTorch checkpoint ({err.__class__.__name__}); it is damaged, "
            "not a torch.save file, or holds objects other than tensors."
        ) from err
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict):
        raise ModelError(f"{path.name} holds a {type(checkpoint).__name__}, not a state dict of tensors.")
    not_tensors = sorted(str(k) for k, v in checkpoint.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise ModelError(
            f"{path.name} is not a plain state dict: {', '.join(not_tensors[:3])} are not tensors."
        )
    return {str(k).removeprefix("module."): v for k, v in checkpoint.items()}


def load_checkpoint(path: Path, in_channels: int, n_labels: int = len(CLASS_NAMES)) -> BigEarthNetResNet50:
    """A BigEarthNetResNet50 with the weights of `path`, in eval mode, after checking every key and shape.

    Raises:
        ModelError: the file is missing or unreadable, or its keys or shapes do not fit (named in the message).
    """
    state = _read_state_dict(Path(path))
    model = BigEarthNetResNet50(in_channels, n_labels)
    check_state_dict(model, state, Path(path).name)
    model.load_state_dict(state)
    return model.eval()
