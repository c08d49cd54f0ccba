"""Google's Dynamic World land-cover network, rebuilt in PyTorch from the published TensorFlow SavedModel.

Brown et al. 2022, "Dynamic World, Near real-time global 10 m land use land cover mapping", Scientific Data 9:251
(doi:10.1038/s41597-022-01307-4); model files from google/dynamicworld (Apache-2.0, see
models/weights/dynamic_world/NOTICE). The graph, read op by op from the SavedModel (models/conversion/):

    x (B, 9, H, W) normalised
    stem   = CBM3x3(9 -> 64)                                   # CBM: conv + bias, batch norm (eps 1e-3), mish
    half   = antialiased bilinear resize of stem to (floor(H/2), floor(W/2))   # TF ScaleAndTranslate, triangle
    b1     = [pw 64->96, dw, pw 96->96, dw, pw 96->96, dw](half) + pw 64->96 (half)
    b2     = [pw 96->144, dw, pw, dw, pw, dw](b1) + pw 96->144 (b1)
    side   = [pw 64->48, dw](half)
    b3     = [pw 192->144, dw, pw, dw, pw, dw](cat(b2, side)) + pw 192->144 (cat(b2, side))
    up     = bilinear resize of b3 to (H, W), half-pixel centres
    logits = conv1x1 144 -> 9 (l2-normalise(up) over channels)        # (B, 9, H, W)

pw = 1x1 CBM, dw = depthwise 3x3 CBM ("same" padding). Input normalisation (outside the SavedModel) is in
`normalise_dn`.
"""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.mapping.inference import normalise
from core.types import LogSigmoidNormalisation
from models.weights import check_state_dict, verify_weights

CLASS_NAMES = (
    "water",
    "trees",
    "grass",
    "flooded_vegetation",
    "crops",
    "shrub_and_scrub",
    "built",
    "bare",
    "snow_and_ice",
)
# The official Dynamic World palette (dynamicworld.app and the Earth Engine catalogue), in class order.
CLASS_COLORS = (
    "#419bdf",
    "#397d49",
    "#88b053",
    "#7a87c6",
    "#e49635",
    "#dfc35a",
    "#c4281b",
    "#a59b8f",
    "#b39fe1",
)
BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12")
# The input transform of the upstream notebook (PREPROCESSING.md) as a model-card normalisation, applied by
# core.mapping.inference.normalise to reflectance: DN = 10000 x reflectance, x = ln(1 + 0.005 DN),
# x = (x - P[i][0]) / P[i][1] with P the 30/70-percentile table below, x = sigmoid(5x - 1).
_PERCENTILES = (
    (1.7417268007636313, 2.023298706048351),
    (1.7261204997060209, 2.038905204308012),
    (1.6798346251414997, 2.179592821212937),
    (1.7734969472909623, 2.2890068333026603),
    (2.289154079164943, 2.6171674549378166),
    (2.382939712192371, 2.773418590375327),
    (2.3828939530384052, 2.7578332604178284),
    (2.1952484264967844, 2.789092484314204),
    (1.554812948247501, 2.4140534947492487),
)
NORMALISATION = LogSigmoidNormalisation(
    dn_scale=10_000.0,
    log_factor=0.005,
    low=tuple(p[0] for p in _PERCENTILES),
    spread=tuple(p[1] for p in _PERCENTILES),
    slope=5.0,
    shift=1.0,
)
BN_EPS = 1e-3  # Keras BatchNormalization's default, as stored in the SavedModel


def normalise_dn(dn: np.ndarray) -> np.ndarray:
    """(..., 9, h, w) L1C DN (TOA reflectance x 10000, harmonised scale) -> the model's input, float32."""
    return normalise(dn.astype(np.float64) / 10_000.0, NORMALISATION)


FEATURES = 144  # channels of the features the head classifies


class ConvBNMish(nn.Sequential):
    """Conv (with bias, as in the SavedModel) -> BatchNorm -> Mish; 3x3 kernels use 'same' padding."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, depthwise: bool = False) -> None:
        super().__init__(
            nn.Conv2d(
                in_ch, out_ch, kernel, padding=kernel // 2, groups=in_ch if depthwise else 1, bias=True
            ),
            nn.BatchNorm2d(out_ch, eps=BN_EPS),
            nn.Mish(),
        )


class ResidualBlock(nn.Module):
    """Three (pointwise, depthwise) pairs on the main path plus a pointwise projection, summed."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for index in range(3):
            layers.append(ConvBNMish(in_ch if index == 0 else out_ch, out_ch))
            layers.append(ConvBNMish(out_ch, out_ch, kernel=3, depthwise=True))
        self.main = nn.Sequential(*layers)
        self.skip = ConvBNMish(in_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.skip(x)


class DynamicWorldNet(nn.Module):
    """(B, 9, H, W) normalised input -> (B, K, H, W) logits (K = 9 for Google's head; a head trained here on
    another legend has its own K). Any H, W >= 2; the output keeps the input size."""

    def __init__(self, n_classes: int = len(CLASS_NAMES)) -> None:
        super().__init__()
        self.stem = ConvBNMish(9, 64, kernel=3)
        self.block1 = ResidualBlock(64, 96)
        self.block2 = ResidualBlock(96, 144)
        self.side = nn.Sequential(ConvBNMish(64, 48), ConvBNMish(48, 48, kernel=3, depthwise=True))
        self.block3 = ResidualBlock(144 + 48, 144)
        self.head = nn.Conv2d(FEATURES, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 9, H, W) -> (B, 144, H, W): the l2-normalised features the 1x1 head classifies."""
        stem = self.stem(x)
        height, width = stem.shape[-2:]
        # TF: size = int(shape / 2); ScaleAndTranslate(kernel "triangle", antialias) == antialiased bilinear.
        # In float32 also under autocast: the CPU's antialiased resize has no bfloat16 kernel.
        half = F.interpolate(stem.float(), size=(height // 2, width // 2), mode="bilinear", antialias=True)
        deep = self.block2(self.block1(half))
        features = self.block3(torch.cat([deep, self.side(half)], dim=1))
        up = F.interpolate(features, size=(height, width), mode="bilinear", align_corners=False)
        # tf.math.l2_normalize: x * rsqrt(max(sum(x^2), 1e-12)) over channels.
        return up * torch.rsqrt(torch.clamp(up.float().pow(2).sum(dim=1, keepdim=True), min=1e-12)).to(
            up.dtype
        )


# SavedModel layer name -> this module's parameter prefix, in graph order (see the module docstring).
def tf_layer_map() -> dict[str, tuple[str, str]]:
    """{tf conv name: (torch conv prefix, tf batch-norm name or '')} for the conversion script."""
    mapping: dict[str, tuple[str, str]] = {"conv2d": ("stem.0", "batch_normalization")}
    # (block, first pointwise conv, first depthwise conv, first batch norm, skip conv): Keras numbers layers of a
    # kind in creation order, and each block creates pw, dw, pw, dw, pw, dw, then its skip projection.
    for block, pw, dw, bn, skip in (
        ("block1", 2, 1, 3, 5),
        ("block2", 6, 4, 10, 9),
        ("block3", 10, 7, 17, 13),
    ):
        for pair in range(3):
            mapping[f"conv2d_{pw + pair}"] = (
                f"{block}.main.{2 * pair}.0",
                f"batch_normalization_{bn + 2 * pair}",
            )
            mapping[f"depthwise_conv2d_{dw + pair}"] = (
                f"{block}.main.{2 * pair + 1}.0",
                f"batch_normalization_{bn + 2 * pair + 1}",
            )
        mapping[f"conv2d_{skip}"] = (f"{block}.skip.0", f"batch_normalization_{bn + 6}")
    mapping["conv2d_1"] = ("side.0.0", "batch_normalization_1")
    mapping["depthwise_conv2d"] = ("side.1.0", "batch_normalization_2")
    mapping["conv2d_14"] = ("head", "")
    return mapping


WEIGHTS_FILE = Path(__file__).resolve().parent / "weights" / "dynamic_world" / "dynamic_world_forward.pt"


def load_network(
    expected_sha256: str, weights: Path = WEIGHTS_FILE, n_classes: int = len(CLASS_NAMES)
) -> tuple[DynamicWorldNet, str]:
    """The network with its weights (converted, or with a head trained here), after checking the file's sha256
    (pinned in the card, e.g. models/weights/dynamic_world/card.json) and every key and shape."""
    sha256 = verify_weights(weights, expected_sha256, "landcover-dynamic-world")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net = DynamicWorldNet(n_classes)
    check_state_dict(net, state, weights.name)
    net.load_state_dict(state)
    return net.eval(), sha256
