"""UNet and DeepLabv3+ (ResNet-101) for DFC2020-style land cover from Sentinel-1 + Sentinel-2, in plain PyTorch,
with an importer for the checkpoints of the DFC2020 baseline (Liebel et al., lukasliebel/dfc2020_baseline).

The module and parameter names mirror that baseline's UNet (itself milesial/Pytorch-UNet) and DeepLab
(jfzhang95/pytorch-deeplab-xception, ResNet-101 with a multi-grid layer4) so its `checkpoint*.pth` files load
with strict key checking. What the baseline trains on, and so what its checkpoints expect:

- input bands, in this order: the Sentinel-2 bands its flags select, sorted by band number (`use_s2hr`: B02 B03
  B04 B08; `use_s2mr`: B05 B06 B07 B8A B11 B12; `use_s2lr`: B01 B09 B10), then Sentinel-1 VV, VH (`use_s1`);
- S2 reflectance clipped to 0..1 (DN / 10000); S1 dB clipped to -25..0, then dB / 25 + 1 (0..1), NaN -> 0;
- classes: the DFC2020 scheme (Forest, Shrubland, Savanna, Grassland, Wetlands, Croplands, Urban/Built-up,
  Snow/Ice, Barren, Water), 0-based; with `no_savanna` Savanna is dropped and the classes after it move up one.
- `args.pkl` is a pickled argparse.Namespace; `checkpoint*.pth` a dict with `model_state_dict`, `step` and
  usually `optimizer_state_dict`.

Shapes: both networks map (B, C, H, W) to (B, n_classes, H, W) logits. The UNet needs H, W >= 16 (it pads the
upsampled maps to the skip connections, so any size works); DeepLab upsamples its output to the input size.
"""

import argparse
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ModelError
from core.types import ClassInfo
from models.weights import check_state_dict

DFC2020_CLASSES = (
    ClassInfo(0, "forest", "#009900"),
    ClassInfo(1, "shrubland", "#c6b044"),
    ClassInfo(2, "savanna", "#fbff13"),
    ClassInfo(3, "grassland", "#b6ff05"),
    ClassInfo(4, "wetlands", "#27ff87"),
    ClassInfo(5, "croplands", "#c24f44"),
    ClassInfo(6, "urban/built-up", "#a5a5a5"),
    ClassInfo(7, "snow/ice", "#69fff8"),
    ClassInfo(8, "barren", "#f9ffa4"),
    ClassInfo(9, "water", "#1c0dff"),
)
S2_HR, S2_MR, S2_LR = (
    ("B02", "B03", "B04", "B08"),
    ("B05", "B06", "B07", "B8A", "B11", "B12"),
    ("B01", "B09", "B10"),
)
S2_ORDER = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")


def dfc2020_classes(no_savanna: bool) -> tuple[ClassInfo, ...]:
    """The class list a baseline model predicts (0-based values), with or without Savanna."""
    if not no_savanna:
        return DFC2020_CLASSES
    kept = [c for c in DFC2020_CLASSES if c.name != "savanna"]
    return tuple(ClassInfo(i, c.name, c.color) for i, c in enumerate(kept))


def input_bands(use_s2hr: bool, use_s2mr: bool, use_s2lr: bool, use_s1: bool) -> tuple[str, ...]:
    """The baseline's input channel order for its four data flags."""
    chosen = set(S2_HR * use_s2hr + S2_MR * use_s2mr + S2_LR * use_s2lr)
    return tuple(b for b in S2_ORDER if b in chosen) + (("VV", "VH") if use_s1 else ())


# -- UNet (names as in the baseline: inc, down1..4, up1..4, outc) ------------------------------------------
class DoubleConv(nn.Module):
    """(3x3 conv, batch norm, ReLU) x 2; the convolutions keep their bias, as in the baseline."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class Down(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(in_ch, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x)


class Up(nn.Module):
    """Bilinear 2x upsampling (corners aligned), padding to the skip's size, concatenation, double conv."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = DoubleConv(in_ch, out_ch)

    def forward(self, low: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        low = F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=True)
        dy, dx = skip.shape[-2] - low.shape[-2], skip.shape[-1] - low.shape[-1]
        low = F.pad(low, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, low], dim=1))


class OutConv(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class DFCUNet(nn.Module):
    """(B, n_channels, H, W) -> (B, n_classes, H, W) logits; widths 64-128-256-512-512, bilinear decoder."""

    def __init__(self, n_channels: int, n_classes: int) -> None:
        super().__init__()
        self.inc = DoubleConv(n_channels, 64)
        self.down1, self.down2 = Down(64, 128), Down(128, 256)
        self.down3, self.down4 = Down(256, 512), Down(512, 512)
        self.up1, self.up2 = Up(1024, 256), Up(512, 128)
        self.up3, self.up4 = Up(256, 64), Up(128, 64)
        self.outc = OutConv(64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x = self.up1(self.down4(x4), x4)
        x = self.up2(x, x3)
        x = self.up3(x, x2)
        return self.outc(self.up4(x, x1))


# -- DeepLabv3+ with a ResNet-101 backbone (names as in the baseline: backbone, aspp, decoder) -------------
class Bottleneck(nn.Module):
    def __init__(
        self, inplanes: int, planes: int, stride: int, dilation: int, downsample: nn.Module | None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(
            planes, planes, 3, stride=stride, dilation=dilation, padding=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet101(nn.Module):
    """ResNet-101 with dilated later stages; forward returns (deep features /16 or /8, layer1 features /4)."""

    def __init__(self, n_in: int, output_stride: int = 16) -> None:
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, not {output_stride}")
        strides, dilations = (
            ([1, 2, 2, 1], [1, 1, 1, 2]) if output_stride == 16 else ([1, 2, 1, 1], [1, 1, 2, 4])
        )
        self.inplanes = 64
        self.conv1 = nn.Conv2d(n_in, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._layer(64, [dilations[0]] * 3, strides[0])
        self.layer2 = self._layer(128, [dilations[1]] * 4, strides[1])
        self.layer3 = self._layer(256, [dilations[2]] * 23, strides[2])
        # The multi-grid unit: three blocks with dilation rates (1, 2, 4) x the stage's dilation.
        self.layer4 = self._layer(512, [g * dilations[3] for g in (1, 2, 4)], strides[3])

    def _layer(self, planes: int, block_dilations: list[int], stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4)
            )
        blocks = [Bottleneck(self.inplanes, planes, stride, block_dilations[0], downsample)]
        self.inplanes = planes * 4
        blocks += [Bottleneck(self.inplanes, planes, 1, d, None) for d in block_dilations[1:]]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low_level = self.layer1(x)
        return self.layer4(self.layer3(self.layer2(low_level))), low_level


class ASPPBranch(nn.Module):
    def __init__(self, inplanes: int, planes: int, kernel: int, dilation: int) -> None:
        super().__init__()
        padding = 0 if kernel == 1 else dilation
        self.atrous_conv = nn.Conv2d(inplanes, planes, kernel, padding=padding, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.atrous_conv(x)))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling over 2048 channels: four rates plus image pooling -> 256 channels."""

    def __init__(self, output_stride: int = 16, inplanes: int = 2048) -> None:
        super().__init__()
        rates = (1, 6, 12, 18) if output_stride == 16 else (1, 12, 24, 36)
        self.aspp1 = ASPPBranch(inplanes, 256, 1, rates[0])
        self.aspp2 = ASPPBranch(inplanes, 256, 3, rates[1])
        self.aspp3 = ASPPBranch(inplanes, 256, 3, rates[2])
        self.aspp4 = ASPPBranch(inplanes, 256, 3, rates[3])
        self.global_avg_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d((1, 1)),
            nn.Conv2d(inplanes, 256, 1, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(),
        )
        self.conv1 = nn.Conv2d(1280, 256, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(256)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.interpolate(
            self.global_avg_pool(x), size=x.shape[-2:], mode="bilinear", align_corners=True
        )
        x = torch.cat([self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x), pooled], dim=1)
        return self.dropout(self.relu(self.bn1(self.conv1(x))))


class Decoder(nn.Module):
    def __init__(self, num_classes: int, low_level_inplanes: int = 256) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(low_level_inplanes, 48, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(48)
        self.relu = nn.ReLU()
        self.last_conv = nn.Sequential(
            nn.Conv2d(304, 256, 3, padding=1, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Conv2d(256, 256, 3, padding=1, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Conv2d(256, num_classes, 1),
        )

    def forward(self, x: torch.Tensor, low_level: torch.Tensor) -> torch.Tensor:
        low_level = self.relu(self.bn1(self.conv1(low_level)))
        x = F.interpolate(x, size=low_level.shape[-2:], mode="bilinear", align_corners=True)
        return self.last_conv(torch.cat([x, low_level], dim=1))


class DeepLabV3Plus(nn.Module):
    """(B, n_in, H, W) -> (B, num_classes, H, W) logits: ResNet-101, ASPP, decoder with layer1 skip."""

    def __init__(self, n_in: int, num_classes: int, output_stride: int = 16) -> None:
        super().__init__()
        self.backbone = ResNet101(n_in, output_stride)
        self.aspp = ASPP(output_stride)
        self.decoder = Decoder(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deep, low_level = self.backbone(x)
        logits = self.decoder(self.aspp(deep), low_level)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=True)


# -- importing the baseline's checkpoints -------------------------------------------------------------------
@dataclass(frozen=True)
class DFC2020Config:
    """What `args.pkl` says about a trained baseline model."""

    model: str  # "unet" or "deeplab"
    bands: tuple[str, ...]
    classes: tuple[ClassInfo, ...]
    no_savanna: bool
    output_stride: int


class _PlainNamespace:
    """Stands in for argparse.Namespace while unpickling: it can only hold the attributes pickle gives it."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds only plain values (str, numbers, bools, None, lists, dicts, tuples) and an argparse.Namespace."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("argparse", "Namespace"):
            return _PlainNamespace
        raise ModelError(
            f"args.pkl asks to build {module}.{name}; only plain values and an argparse.Namespace are allowed, "
            "so the file was not read."
        )


def read_args_pkl(path: Path) -> dict[str, Any]:
    """The training arguments in a baseline `args.pkl`, read without running any code it names."""
    try:
        loaded = _RestrictedUnpickler(io.BytesIO(path.read_bytes())).load()
    except ModelError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, OSError) as err:
        raise ModelError(f"{path.name} is not a readable args.pkl ({err}).") from err
    values = vars(loaded) if isinstance(loaded, _PlainNamespace | argparse.Namespace) else loaded
    if not isinstance(values, dict):
        raise ModelError(f"{path.name} holds a {type(loaded).__name__}, not the training arguments.")
    plain = (str, int, float, bool, type(None))
    for key, value in values.items():
        if not isinstance(value, plain) and not (
            isinstance(value, list | tuple) and all(isinstance(v, plain) for v in value)
        ):
            raise ModelError(f"{path.name}: argument {key!r} is a {type(value).__name__}, not a plain value.")
    return values


def config_from_args(values: dict[str, Any]) -> DFC2020Config:
    flags = {k: bool(values.get(k, False)) for k in ("use_s2hr", "use_s2mr", "use_s2lr", "use_s1")}
    bands = input_bands(**flags)
    if not bands:
        raise ModelError(
            "args.pkl selects no input data (use_s2hr, use_s2mr, use_s2lr and use_s1 are all off)."
        )
    model = str(values.get("model", "deeplab"))
    if model not in ("unet", "deeplab"):
        raise ModelError(
            f"args.pkl names the model {model!r}; the DFC2020 baseline has 'unet' and 'deeplab'."
        )
    no_savanna = bool(values.get("no_savanna", False))
    try:
        output_stride = int(values.get("out_stride", 16))
    except (TypeError, ValueError) as err:
        raise ModelError(
            f"args.pkl has out_stride {values.get('out_stride')!r}; the baseline uses 8 or 16."
        ) from err
    if output_stride not in (8, 16):
        raise ModelError(f"args.pkl has out_stride {output_stride}; the baseline uses 8 or 16.")
    return DFC2020Config(model, bands, dfc2020_classes(no_savanna), no_savanna, output_stride)


def build_model(config: DFC2020Config) -> nn.Module:
    """An untrained network shaped as `config` describes."""
    if config.model == "unet":
        return DFCUNet(len(config.bands), len(config.classes))
    return DeepLabV3Plus(len(config.bands), len(config.classes), config.output_stride)


def import_dfc2020(args_pkl: Path, checkpoint: Path) -> tuple[nn.Module, DFC2020Config]:
    """A baseline model (eval mode) from its `args.pkl` and `checkpoint*.pth`; ModelError says what does not fit."""
    config = config_from_args(read_args_pkl(args_pkl))
    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as err:
        raise ModelError(f"{checkpoint.name} is not a readable PyTorch checkpoint ({err}).") from err
    state = saved.get("model_state_dict", saved) if isinstance(saved, dict) else None
    if not isinstance(state, dict):
        raise ModelError(f"{checkpoint.name} holds no model_state_dict.")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = build_model(config)
    check_state_dict(model, state, checkpoint.name)
    model.load_state_dict(state)
    return model.eval(), config
