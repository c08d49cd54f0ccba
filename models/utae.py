"""U-TAE, the U-Net with temporal attention encoder for Sentinel-2 time series, in plain PyTorch (PASTIS setup).

Sainte Fare Garnot & Landrieu 2021, "Panoptic segmentation of satellite image time series with convolutional
temporal attention networks", ICCV (arXiv:2107.07933). The reference code is VSainteuf/utae-paps (MIT); this file
is a separate implementation that exposes the same state-dict keys and shapes, so that the published PASTIS
checkpoints (`Fold_k/model.pth.tar`, zenodo.org/record/5172293) load with strict=True. The graph, per sample:

    x (T, 10, H, W), dates (T,) in days, pad (T,) bool
    e0 = in_conv(x)                        each date: 2 x [3x3 conv, GroupNorm(4), ReLU]       (T, 64, H, W)
    e1, e2, e3 = down_blocks               each date: 4x4/2 conv + GN + ReLU, h = conv1, h + conv2(h)
                                           (T, 64, H/2, W/2), (T, 64, H/4, W/4), (T, 128, H/8, W/8)
    z, att = temporal_encoder(e3, dates)   L-TAE on every pixel of e3:        (128, H/8, W/8), (16, T, H/8, W/8)
    d = up_blocks(z, skip_i)               skip_i = per channel group g, sum over dates of att[g] (bilinearly
                                           resized) x e_i[group g]; 4x4/2 transposed conv, concat, 2 residual convs
    scores = out_conv(d)                   2 x [3x3 conv, BatchNorm, ReLU]                           (20, H, W)

L-TAE: GroupNorm(16) -> 1x1 conv 128 -> 256 -> + sinusoidal encoding of the dates (period 1000, 16 dims repeated
for the 16 heads) -> 16 heads, each a learnt query (d_k = 4) against keys from one linear layer, softmax over the
dates, applied to its own 16-channel slice of the 256 channels -> concat -> Linear 256 -> 128, BatchNorm, ReLU,
dropout -> GroupNorm(16).

Notes on the layout and on where this differs from the reference code:
- The key names and shapes were read from utae-paps' source (src/backbones/utae.py, ltae.py and
  positional_encoding.py at commit 5e75f0322d1d) and from train_semantic.py, which saves
  {"epoch", "state_dict", "optimizer"} as model.pth.tar. The published binary checkpoints could not be opened
  offline, so the layout has not been checked against an actual file; `import_utae_checkpoint` names any key or
  shape that differs. The positional encoding holds no state in the reference (its denominators are a plain
  attribute), so it adds no keys here either. PaPs (panoptic) checkpoints wrap the network and do not load.
- The published head ends in BatchNorm + ReLU, so its class scores are >= 0. That is kept, since the weights were
  trained that way; argmax and softmax work as usual.
- Padded dates: the reference skips them in the encoder and masks them out of the attention, but the input
  GroupNorm of L-TAE pools its statistics over all dates, padded ones included, so its output shifts with the
  amount of padding. Here those statistics pool the real dates only: identical without padding, and padded dates
  then have no influence at all.
- The published weights were trained on PASTIS with dates counted in days since 2018-09-01 (train_semantic.py's
  ref_date), on THEIA L2A reflectance x 10000 standardised per band with the dataset's NORM_S2_patch.json (part
  of the dataset, not of the code repository, so its values are not reproduced here).
"""

import math
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ModelError
from core.learning.datasets.pastis import BANDS as PASTIS_BANDS
from core.learning.datasets.pastis import LEGEND as PASTIS_LEGEND
from models.weights import check_state_dict

# PASTIS S2 bands, in the order of the dataset's (T, 10, H, W) arrays, and its classes
# (pastis-benchmark documentation/label_names.json: 0 is non-agricultural land, 19 parcels mostly outside the
# patch); the dataset reader (core.learning.datasets.pastis) holds both.
BANDS = PASTIS_BANDS
CLASS_NAMES = (*PASTIS_LEGEND, "void label")
# pastis-benchmark colormap.txt (matplotlib's tab20 without its first colour; black background, white void).
CLASS_COLORS = (
    "#000000",
    "#aec7e8",
    "#ff7f0e",
    "#ffbb78",
    "#2ca02c",
    "#98df8a",
    "#d62728",
    "#ff9896",
    "#9467bd",
    "#c5b0d5",
    "#8c564b",
    "#c49c94",
    "#e377c2",
    "#f7b6d2",
    "#7f7f7f",
    "#c7c7c7",
    "#bcbd22",
    "#dbdb8d",
    "#17becf",
    "#ffffff",
)
BACKGROUND_CLASS = 0
VOID_CLASS = 19  # given zero weight in the published training loss
AGG_MODES = ("att_group", "att_mean", "mean")
ENCODER_NORMS = ("group", "batch", "instance", "none")
PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]


def _norm_layer(kind: str, channels: int) -> nn.Module | None:
    """The 2-D normalisation the reference's ConvLayer builds for `kind` (GroupNorm uses 4 groups)."""
    if kind == "group":
        return nn.GroupNorm(num_groups=4, num_channels=channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels)
    return None


class ConvStack(nn.Module):
    """Convolutions through `widths`, each followed by the norm and a ReLU; the layers sit in `.conv` as published."""

    def __init__(
        self,
        widths: Sequence[int],
        norm: str = "batch",
        kernel: int = 3,
        stride: int = 1,
        padding: int = 1,
        padding_mode: PaddingMode = "reflect",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in pairwise(widths):
            layers.append(nn.Conv2d(c_in, c_out, kernel, stride, padding, padding_mode=padding_mode))
            if (layer := _norm_layer(norm, c_out)) is not None:
                layers.append(layer)
            layers.append(nn.ReLU())
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ConvBlock(nn.Module):
    """One ConvStack under the attribute `conv` (the reference wraps it once more): `in_conv` and `out_conv`."""

    def __init__(
        self, widths: Sequence[int], norm: str = "batch", padding_mode: PaddingMode = "reflect"
    ) -> None:
        super().__init__()
        self.conv = ConvStack(widths, norm=norm, padding_mode=padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class DownBlock(nn.Module):
    """(N, d_in, H, W) -> (N, d_out, H/s, W/s): strided conv, then h = conv1, h + conv2(h)."""

    def __init__(
        self,
        d_in: int,
        d_out: int,
        kernel: int,
        stride: int,
        padding: int,
        norm: str,
        padding_mode: PaddingMode,
    ) -> None:
        super().__init__()
        self.down = ConvStack([d_in, d_in], norm, kernel, stride, padding, padding_mode)
        self.conv1 = ConvStack([d_in, d_out], norm, padding_mode=padding_mode)
        self.conv2 = ConvStack([d_out, d_out], norm, padding_mode=padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.down(x))
        return h + self.conv2(h)


class UpBlock(nn.Module):
    """(B, d_in, h, w) and a (B, d_skip, h*s, w*s) skip -> (B, d_out, h*s, w*s); BatchNorm throughout."""

    def __init__(
        self,
        d_in: int,
        d_out: int,
        d_skip: int,
        kernel: int,
        stride: int,
        padding: int,
        padding_mode: PaddingMode,
    ) -> None:
        super().__init__()
        self.skip_conv = nn.Sequential(nn.Conv2d(d_skip, d_skip, 1), nn.BatchNorm2d(d_skip), nn.ReLU())
        self.up = nn.Sequential(
            nn.ConvTranspose2d(d_in, d_out, kernel, stride, padding), nn.BatchNorm2d(d_out), nn.ReLU()
        )
        self.conv1 = ConvStack([d_out + d_skip, d_out], "batch", padding_mode=padding_mode)
        self.conv2 = ConvStack([d_out, d_out], "batch", padding_mode=padding_mode)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        h = self.conv1(torch.cat([self.up(x), self.skip_conv(skip)], dim=1))
        return h + self.conv2(h)


class PositionalEncoder(nn.Module):
    """Dates (B, T) in days -> (B, T, d * repeat) float32: sin on even, cos on odd dims, wavelengths up to `period`.

    Holds no state: the reference keeps its denominators as a plain attribute, so its checkpoints have no such key.
    """

    def __init__(self, d: int, period: float = 1000.0, repeat: int = 1) -> None:
        super().__init__()
        self.d = d
        self.period = period
        self.repeat = repeat

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        index = torch.arange(self.d, device=positions.device)
        denom = self.period ** (
            2 * torch.div(index, 2, rounding_mode="floor") / self.d
        )  # float32, as published
        angles = positions.float()[..., None] / denom
        table = torch.where(index % 2 == 0, torch.sin(angles), torch.cos(angles))
        return table.repeat(1, 1, self.repeat)


class AttentionHeads(nn.Module):
    """Lightweight multi-head attention: one learnt query per head, keys from one linear layer, no value projection."""

    def __init__(self, n_head: int, d_k: int, d_in: int, dropout: float = 0.1) -> None:
        super().__init__()
        if d_in % n_head:
            raise ValueError(f"d_model must be divisible by n_head; got d_model={d_in}, n_head={n_head}")
        self.n_head = n_head
        self.d_k = d_k
        self.Q = nn.Parameter(torch.empty(n_head, d_k))
        self.fc1_k = nn.Linear(d_in, n_head * d_k)
        nn.init.normal_(self.Q, std=math.sqrt(2.0 / d_k))
        nn.init.normal_(self.fc1_k.weight, std=math.sqrt(2.0 / d_k))
        self.dropout = nn.Dropout(dropout)

    def forward(self, v: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, T, d_in) sequences, (N, T) bool valid -> (N, d_in) heads concatenated, (N, n_head, T) attention."""
        n, t, d_in = v.shape
        keys = self.fc1_k(v).view(n, t, self.n_head, self.d_k)
        scores = torch.einsum("ntgk,gk->ngt", keys.float(), self.Q.float()) / math.sqrt(self.d_k)
        # -inf gives padded dates an attention of exactly 0; UTAE refuses samples without any real date.
        scores = scores.masked_fill(~valid[:, None, :], float("-inf"))
        attention = self.dropout(torch.softmax(scores, dim=-1))
        heads = v.view(n, t, self.n_head, d_in // self.n_head)
        out = torch.einsum("ngt,ntgc->ngc", attention.to(v.dtype), heads)
        return out.reshape(n, d_in), attention


def group_norm_over_dates(x: torch.Tensor, valid: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """`norm` applied to (N, C, T) sequences with statistics pooled over the valid dates only ((N, T) bool).

    Equal to `norm(x)` when every date is valid. Computed in float32 (also under autocast), returned in x's dtype.
    """
    n, c, t = x.shape
    groups = norm.num_groups
    mask = valid.view(n, 1, 1, t)
    values = torch.where(mask, x.float().view(n, groups, c // groups, t), 0.0)
    count = mask.sum(dim=-1, keepdim=True) * (c // groups)
    mean = values.sum(dim=(2, 3), keepdim=True) / count
    centred = torch.where(mask, values - mean, 0.0)
    variance = centred.square().sum(dim=(2, 3), keepdim=True) / count  # biased, as GroupNorm
    normalised = (centred * torch.rsqrt(variance + norm.eps)).view(n, c, t)
    if norm.affine:
        normalised = normalised * norm.weight.float()[:, None] + norm.bias.float()[:, None]
    return normalised.to(x.dtype)


class LTAE(nn.Module):
    """Lightweight temporal attention encoder, shared by every pixel of a (B, T, C, h, w) feature-map series."""

    def __init__(
        self,
        in_channels: int = 128,
        n_head: int = 16,
        d_k: int = 4,
        mlp: Sequence[int] = (256, 128),
        dropout: float = 0.2,
        d_model: int = 256,
        positional_period: float = 1000.0,
    ) -> None:
        super().__init__()
        if mlp[0] != d_model:
            raise ValueError(f"the MLP must start at d_model={d_model}; got mlp={list(mlp)}")
        self.n_head = n_head
        self.d_model = d_model
        self.inconv = nn.Conv1d(in_channels, d_model, 1)
        self.positional_encoder = PositionalEncoder(d_model // n_head, positional_period, repeat=n_head)
        self.attention_heads = AttentionHeads(n_head, d_k, d_model)
        self.in_norm = nn.GroupNorm(num_groups=n_head, num_channels=in_channels)
        self.out_norm = nn.GroupNorm(num_groups=n_head, num_channels=mlp[-1])
        layers: list[nn.Module] = []
        for width_in, width_out in pairwise(mlp):
            layers += [nn.Linear(width_in, width_out), nn.BatchNorm1d(width_out), nn.ReLU()]
        self.mlp = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, positions: torch.Tensor, pad_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, C, h, w) features, (B, T) dates in days, (B, T) bool padding -> (B, mlp[-1], h, w) and the
        (n_head, B, T, h, w) attention, 0 on padded dates."""
        b, t, c, h, w = x.shape
        n = b * h * w
        valid = (~pad_mask)[:, None, :].expand(b, h * w, t).reshape(n, t)
        sequences = x.permute(0, 3, 4, 2, 1).reshape(n, c, t)
        sequences = self.inconv(group_norm_over_dates(sequences, valid, self.in_norm))  # (N, d_model, T)
        encoding = self.positional_encoder(positions.masked_fill(pad_mask, 0))  # (B, T, d_model)
        sequences = sequences.view(b, h * w, self.d_model, t) + encoding.transpose(1, 2)[:, None].to(
            sequences.dtype
        )
        sequences = sequences.view(n, self.d_model, t).transpose(1, 2)  # (N, T, d_model)
        out, attention = self.attention_heads(sequences, valid)
        out = self.out_norm(self.dropout(self.mlp(out)))
        out = out.view(b, h, w, -1).permute(0, 3, 1, 2)
        attention = attention.view(b, h, w, self.n_head, t).permute(3, 0, 4, 1, 2)
        return out, attention


def _resize(maps: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """(N, T, h, w) -> (N, T, *size), bilinear (half-pixel centres) when the size differs."""
    if maps.shape[-2:] == size:
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


class TemporalAggregator(nn.Module):
    """Collapses a (B, T, C, H, W) skip series to (B, C, H, W) with L-TAE's attention, ignoring padded dates.

    att_group: channel group g (C / n_head channels) is weighted by head g's attention, resized to (H, W);
    att_mean: all channels by the mean attention of the heads; mean: the plain mean of the real dates.
    """

    def __init__(self, mode: str = "att_group") -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor, valid: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        b, t, c, height, width = x.shape
        weight_valid = valid.to(x.dtype)[:, :, None, None]  # (B, T, 1, 1)
        if self.mode == "mean":
            total = (x * weight_valid[..., None]).sum(dim=1)
            return total / valid.sum(dim=1).to(x.dtype)[:, None, None, None]
        if self.mode == "att_mean":
            weights = _resize(attention.mean(dim=0), x.shape[-2:]).to(x.dtype) * weight_valid
            return (x * weights[:, :, None]).sum(dim=1)
        n_head = attention.shape[0]
        weights = _resize(attention.flatten(0, 1), x.shape[-2:]).view(n_head, b, t, height, width)
        weights = weights.permute(1, 2, 0, 3, 4).to(x.dtype) * weight_valid[..., None]  # (B, T, G, H, W)
        groups = x.view(b, t, n_head, c // n_head, height, width)
        return (groups * weights[:, :, :, None]).sum(dim=1).reshape(b, c, height, width)


@dataclass(frozen=True)
class UTAEConfig:
    """U-TAE's hyper-parameters; the defaults are PASTIS's.

    Args:
        input_dim: bands C of the input (10 for PASTIS, in the order of `BANDS`).
        encoder_widths: channels of the encoder levels, from full resolution down; their number is the number of
            levels (each after the first halves the resolution).
        decoder_widths: channels of the decoder levels, same order; the last equals the encoder's last (None:
            the encoder's).
        out_conv: widths of the two head convolutions; the last is the number of classes.
        str_conv_k, str_conv_s, str_conv_p: kernel, stride and padding of the strided (transposed) convolutions.
        agg_mode: how skips are collapsed over time: "att_group", "att_mean" or "mean".
        encoder_norm: "group" (GroupNorm, 4 groups), "batch", "instance" or "none" in the encoder.
        n_head, d_model, d_k: L-TAE heads, model width and key/query width.
        pad_value: value of padded dates; also what the encoder outputs for them, and with `pad_mask=None` a date
            whose every value equals it is taken as padding (as the reference does).
        padding_mode: spatial padding of the 3x3 and strided convolutions (passed to nn.Conv2d).
        positional_period: period T of the sinusoidal date encoding, in days.
    """

    input_dim: int = 10
    encoder_widths: Sequence[int] = (64, 64, 64, 128)
    decoder_widths: Sequence[int] | None = (32, 32, 64, 128)
    out_conv: Sequence[int] = (32, 20)
    str_conv_k: int = 4
    str_conv_s: int = 2
    str_conv_p: int = 1
    agg_mode: str = "att_group"
    encoder_norm: str = "group"
    n_head: int = 16
    d_model: int = 256
    d_k: int = 4
    pad_value: float = 0.0
    padding_mode: PaddingMode = "reflect"
    positional_period: float = 1000.0


class UTAE(nn.Module):
    """U-TAE: (B, T, C, H, W) image time series -> (B, n_classes, H, W) class scores, as `config` says."""

    def __init__(self, config: UTAEConfig = UTAEConfig()) -> None:  # noqa: B008 (frozen: safe as a default)
        super().__init__()
        c = config
        input_dim, encoder_widths, out_conv, padding_mode = (
            c.input_dim,
            c.encoder_widths,
            c.out_conv,
            c.padding_mode,
        )
        str_conv_k, str_conv_s, str_conv_p = c.str_conv_k, c.str_conv_s, c.str_conv_p
        agg_mode, encoder_norm, n_head, d_model, d_k = c.agg_mode, c.encoder_norm, c.n_head, c.d_model, c.d_k
        pad_value, positional_period = c.pad_value, c.positional_period
        decoder_widths = encoder_widths if c.decoder_widths is None else c.decoder_widths
        self._check_config(encoder_widths, decoder_widths, agg_mode, encoder_norm, n_head)
        levels = len(encoder_widths)
        self.input_dim = input_dim
        self.pad_value = pad_value
        self.size_multiple = str_conv_s ** (levels - 1)
        self.in_conv = ConvBlock(
            [input_dim, encoder_widths[0], encoder_widths[0]], norm=encoder_norm, padding_mode=padding_mode
        )
        self.down_blocks = nn.ModuleList(
            DownBlock(
                encoder_widths[i],
                encoder_widths[i + 1],
                str_conv_k,
                str_conv_s,
                str_conv_p,
                encoder_norm,
                padding_mode,
            )
            for i in range(levels - 1)
        )
        self.up_blocks = nn.ModuleList(
            UpBlock(
                decoder_widths[i],
                decoder_widths[i - 1],
                encoder_widths[i - 1],
                str_conv_k,
                str_conv_s,
                str_conv_p,
                padding_mode,
            )
            for i in range(levels - 1, 0, -1)
        )
        self.temporal_encoder = LTAE(
            in_channels=encoder_widths[-1],
            n_head=n_head,
            d_k=d_k,
            mlp=(d_model, encoder_widths[-1]),
            d_model=d_model,
            positional_period=positional_period,
        )
        self.temporal_aggregator = TemporalAggregator(agg_mode)
        self.out_conv = ConvBlock([decoder_widths[0], *out_conv], norm="batch", padding_mode=padding_mode)

    @staticmethod
    def _check_config(
        encoder_widths: Sequence[int],
        decoder_widths: Sequence[int],
        agg_mode: str,
        encoder_norm: str,
        n_head: int,
    ) -> None:
        if len(encoder_widths) < 2 or len(encoder_widths) != len(decoder_widths):
            raise ValueError(
                f"need at least 2 levels and as many decoder as encoder widths; got encoder {list(encoder_widths)}, "
                f"decoder {list(decoder_widths)}"
            )
        if encoder_widths[-1] != decoder_widths[-1]:
            raise ValueError(
                f"the deepest encoder and decoder widths must match; got {list(encoder_widths)} "
                f"and {list(decoder_widths)}"
            )
        if agg_mode not in AGG_MODES or encoder_norm not in ENCODER_NORMS:
            raise ValueError(
                f"agg_mode must be one of {AGG_MODES} and encoder_norm one of {ENCODER_NORMS}; got "
                f"{agg_mode!r}, {encoder_norm!r}"
            )
        grouped = encoder_widths if agg_mode == "att_group" else encoder_widths[-1:]
        if any(width % n_head for width in grouped):
            raise ValueError(
                f"with agg_mode={agg_mode!r}, encoder widths {list(grouped)} must be divisible by "
                f"n_head={n_head}"
            )

    def _check_input(
        self, x: torch.Tensor, batch_positions: torch.Tensor, pad_mask: torch.Tensor | None
    ) -> None:
        if x.ndim != 5 or x.shape[2] != self.input_dim:
            raise ValueError(f"x must be (B, T, {self.input_dim}, H, W); got {tuple(x.shape)}")
        b, t, _, height, width = x.shape
        if tuple(batch_positions.shape) != (b, t):
            raise ValueError(f"batch_positions must be (B, T) = {(b, t)}; got {tuple(batch_positions.shape)}")
        if pad_mask is not None and (tuple(pad_mask.shape) != (b, t) or pad_mask.dtype != torch.bool):
            raise ValueError(
                f"pad_mask must be a (B, T) = {(b, t)} bool tensor; got {tuple(pad_mask.shape)} {pad_mask.dtype}"
            )
        m = self.size_multiple
        if height % m or width % m or min(height, width) < 2 * m:
            raise ValueError(
                f"U-TAE needs height and width that are multiples of {m} (2**(levels-1)) and at least "
                f"{2 * m} px; got {height}x{width}. Pad or crop the tile."
            )

    def _encode(self, x: torch.Tensor, valid: torch.Tensor) -> list[torch.Tensor]:
        """Run the spatial encoder on the real dates only -> one (B, T, C_i, H_i, W_i) series per level, with
        `pad_value` on the padded dates (as the reference writes them)."""
        b, t = valid.shape
        frames = x.flatten(0, 1)
        every_date = bool(valid.all())
        flat_valid = valid.flatten()
        maps = [self.in_conv(frames if every_date else frames[flat_valid])]
        for block in self.down_blocks:
            maps.append(block(maps[-1]))
        if every_date:
            return [m.view(b, t, *m.shape[1:]) for m in maps]
        series = []
        for m in maps:
            full = m.new_full((b * t, *m.shape[1:]), self.pad_value)
            full[flat_valid] = m
            series.append(full.view(b, t, *m.shape[1:]))
        return series

    def forward(
        self, x: torch.Tensor, batch_positions: torch.Tensor, pad_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Class scores for every pixel of a batch of image time series.

        Args:
            x: (B, T, C, H, W) float input (PASTIS: standardised reflectance); H and W multiples of
                2**(levels-1) (8 for PASTIS) and at least twice that (the deepest 3x3 convolutions pad by
                reflection, which needs 2 px), else ValueError.
            batch_positions: (B, T) date of each image as a day number (days since a reference date, or day of
                year); any float or int dtype.
            pad_mask: (B, T) bool, True where a date is padding. Padded dates, their values and their positions
                do not influence the output. None: dates whose every value equals `pad_value` are padding.

        Returns:
            (B, n_classes, H, W) class scores (>= 0: the published head ends in a ReLU), in x's dtype or the
            autocast dtype.
        """
        self._check_input(x, batch_positions, pad_mask)
        if pad_mask is None:
            pad_mask = (x == self.pad_value).flatten(2).all(dim=2)
        valid = ~pad_mask
        if not bool(valid.any(dim=1).all()):
            empty = [int(i) for i in torch.nonzero(~valid.any(dim=1)).flatten()]
            raise ValueError(f"every date of samples {empty} is padding; U-TAE needs at least one real date")
        features = self._encode(x, valid)
        out, attention = self.temporal_encoder(features[-1], batch_positions, pad_mask)
        for up_block, skip in zip(self.up_blocks, reversed(features[:-1]), strict=True):
            out = up_block(out, self.temporal_aggregator(skip, valid, attention))
        return self.out_conv(out)


def import_utae_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a U-TAE checkpoint in the published utae-paps layout, checked against `UTAE()`.

    Accepts a training checkpoint (model.pth.tar: {"epoch", "state_dict", "optimizer"}) or a bare state dict,
    and strips DataParallel's "module." prefix. Raises ModelError when the file cannot be read safely or does not
    fit the PASTIS configuration (naming the missing, unexpected and mis-shaped keys).
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise ModelError(f"The U-TAE checkpoint {path} does not exist; check the path.") from err
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelError(
            f"{path.name} cannot be read as a PyTorch checkpoint with plain tensors ({reason}). "
            "Use the model.pth.tar files published with U-TAE."
        ) from err
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(
            f"{path.name} holds no state dict: expected a dict of tensors, or one under the key 'state_dict'."
        )
    state = {str(key).removeprefix("module."): value for key, value in state.items()}
    check_state_dict(UTAE(), state, path.name)
    return state


def load_utae(path: Path) -> UTAE:
    """A PASTIS-configured U-TAE with the checkpoint's weights, in eval mode (see `import_utae_checkpoint`)."""
    model = UTAE()
    model.load_state_dict(import_utae_checkpoint(path))
    return model.eval()
