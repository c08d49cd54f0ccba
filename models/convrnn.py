"""Convolutional recurrent sequence encoders (ConvLSTM, ConvGRU) for multi-temporal land cover, MTLCC style.

Rußwurm & Körner 2018, "Multi-temporal land cover classification with sequential recurrent encoders",
ISPRS IJGI 7(4):129 (doi:10.3390/ijgi7040129); TensorFlow code in github.com/TUM-LMF/MTLCC (MarcCoru/MTLCC).
Written here in plain PyTorch from the published description and configuration; no code is taken from there.

    x (B, T, C, H, W) reflectance, pad_mask (B, T) True where a date is padding
    forward  = ConvRNN cell over t = 0 .. T-1, skipping padded dates          -> final state (B, hidden, H, W)
    backward = a second cell (own weights) over t = T-1 .. 0, skipping them   -> final state (B, hidden, H, W)
    logits   = conv3x3 -> batch norm -> leaky ReLU -> conv1x1 (cat(states))  # (B, n_classes, H, W)

A padded date leaves the state exactly as it was (`torch.where`, not multiplication), in both directions and
wherever it sits in the series, so padding never changes the output; the MTLCC code does the same with
`sequence_length` in `tf.nn.(bidirectional_)dynamic_rnn`, for padding at the end only. The state fed to the
classifier is the LSTM's cell state c (as MTLCC does) or the GRU's h.

Published configuration, as far as it could be confirmed offline from the repository and its ports:
- Cells (the MTLCC fork of carlthome/tensorflow-convlstm-cell): 3x3 "same" kernels, tanh activations, no peepholes,
  forget bias 1.0, and layer normalisation (over H, W and channels, per sample) of every gate pre-activation and,
  for the LSTM, of the new cell state; without normalisation the gate convolutions carry biases instead.
  `normalize=True` reproduces this with GroupNorm(1, C); TensorFlow's epsilon (1e-12) is not copied, 1e-5 is used.
- Bidirectional by default (separate forward and backward weights); one recurrent layer; final-state aggregation.
- Classifier: MTLCC applies one 3x3 conv -> batch norm -> leaky ReLU and uses that as the logits; this seed adds a
  1x1 conv after it so that the logits are not forced through a ReLU.
- Input: Sentinel-2 L1C top-of-atmosphere DN x 1e-4 (reflectance 0-1), the 10 m bands and the 20 m and 60 m bands
  resampled to 10 m (13 bands), 24 px tiles for training and 48 px for evaluation, up to 30 dates per series
  (`--temporal_samples 30`). MTLCC also appends day-of-year / 365 and (year - 2016) as two extra channels; this
  seed takes bands only (pass in_channels=15 with those channels stacked to follow it exactly).
- 17 classes in the Bavarian MTLCC dataset (`--num_classes 17`, label 0 "unknown" masked out of the loss).

Not confirmed offline (the paper's text, the dataset's classes.txt and the released models were not reachable):
- The class names and their order: taken from a third-party PyTorch reader of the MTLCC data (DeepSatModels,
  label ids 1, 2, 3, 5, 8, 9, 12, 13, 15, 16, 17, 19, 22, 23, 24, 25, 26 remapped to 0..16), see CLASS_NAMES.
- The band order inside each resolution group of the MTLCC tfrecords (x10, x20, x60); BANDS follows the same
  third-party reader. The latest MTLCC commit reads only the 10 m group; which variant the paper used is unknown.
- The hidden size of the published models: the README builds 128 filters ("convgru128"), the notebooks evaluate
  "convgru256" / "convlstm256_48px", the flag default is 24. This seed defaults to 64 (untrained).
"""

import numpy as np
import torch
from torch import nn

# Bavarian MTLCC classes, in model output order (original label ids in SOURCE_LABEL_IDS); unconfirmed, see above.
CLASS_NAMES = (
    "sugar beet",
    "summer oat",
    "meadow",
    "rapeseed",
    "hop",
    "winter spelt",
    "winter triticale",
    "beans",
    "peas",
    "potatoes",
    "soybeans",
    "asparagus",
    "winter wheat",
    "winter barley",
    "winter rye",
    "summer barley",
    "maize",
)
SOURCE_LABEL_IDS = (1, 2, 3, 5, 8, 9, 12, 13, 15, 16, 17, 19, 22, 23, 24, 25, 26)
# 10 m group, 20 m group, 60 m group (all resampled to 10 m); order within each group unconfirmed.
BANDS = ("B04", "B03", "B02", "B08", "B05", "B06", "B07", "B8A", "B11", "B12", "B01", "B09", "B10")
MAX_DATES = 30  # dates per series in MTLCC training (--temporal_samples 30)
RESOLUTION_M = 10.0
TILE_PX = 48  # MTLCC trains on 24 px tiles and evaluates on 48 px ones
NORM_EPS = 1e-5
CELLS = ("lstm", "gru")

State = tuple[torch.Tensor, ...]


def _layer_norm(channels: int) -> nn.GroupNorm:
    """Layer norm over (C, H, W) per sample with a per-channel scale and shift (tf.contrib.layers.layer_norm)."""
    return nn.GroupNorm(1, channels, eps=NORM_EPS)


class ConvLSTMCell(nn.Module):
    """One ConvLSTM step: (B, C, H, W) input and state (h, c), each (B, hidden, H, W) -> new (h, c).

    Args:
        in_channels: input channels C.
        hidden: state channels.
        kernel: odd kernel size of the gate convolution ("same" padding).
        normalize: layer-normalise the gate pre-activations and the cell state (MTLCC's default).
        forget_bias: added to the forget gate before its sigmoid.
    """

    def __init__(
        self, in_channels: int, hidden: int, kernel: int = 3, normalize: bool = True, forget_bias: float = 1.0
    ) -> None:
        super().__init__()
        self.hidden = hidden
        self.forget_bias = forget_bias
        self.gates = nn.Conv2d(
            in_channels + hidden, 4 * hidden, kernel, padding=kernel // 2, bias=not normalize
        )
        names = ("candidate", "input_gate", "forget_gate", "output_gate", "cell_state")
        self.norms = nn.ModuleDict({name: _layer_norm(hidden) for name in names} if normalize else {})

    def zero_state(self, x: torch.Tensor) -> State:
        """(h, c) zeros shaped like a (B, hidden, H, W) state for the (B, C, H, W) input `x`."""
        zeros = x.new_zeros((x.shape[0], self.hidden, *x.shape[-2:]))
        return zeros, zeros

    def summary(self, state: State) -> torch.Tensor:
        """The state the classifier reads: the cell state c, as in MTLCC."""
        return state[1]

    def _norm(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return self.norms[name](x) if name in self.norms else x

    def forward(self, x: torch.Tensor, state: State) -> State:
        h, c = state
        candidate, input_gate, forget_gate, output_gate = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        candidate = torch.tanh(self._norm("candidate", candidate))
        input_gate = torch.sigmoid(self._norm("input_gate", input_gate))
        forget_gate = torch.sigmoid(self._norm("forget_gate", forget_gate) + self.forget_bias)
        c = self._norm("cell_state", c * forget_gate + input_gate * candidate)
        h = torch.sigmoid(self._norm("output_gate", output_gate)) * torch.tanh(c)
        return h, c


class ConvGRUCell(nn.Module):
    """One ConvGRU step: (B, C, H, W) input and state (h,) of (B, hidden, H, W) -> new (h,).

    `h' = u * h + (1 - u) * tanh(W * [x, r * h])`, with update gate u and reset gate r from `W_g * [x, h]`.

    Args:
        in_channels: input channels C.
        hidden: state channels.
        kernel: odd kernel size of both convolutions ("same" padding).
        normalize: layer-normalise the gate and candidate pre-activations (MTLCC's default).
    """

    def __init__(self, in_channels: int, hidden: int, kernel: int = 3, normalize: bool = True) -> None:
        super().__init__()
        self.hidden = hidden
        padding = kernel // 2
        self.gates = nn.Conv2d(in_channels + hidden, 2 * hidden, kernel, padding=padding, bias=not normalize)
        self.candidate = nn.Conv2d(in_channels + hidden, hidden, kernel, padding=padding, bias=not normalize)
        if self.gates.bias is not None:  # without normalisation carlthome's cell starts the gates at bias 1
            nn.init.ones_(self.gates.bias)
        names = ("reset_gate", "update_gate", "candidate")
        self.norms = nn.ModuleDict({name: _layer_norm(hidden) for name in names} if normalize else {})

    def zero_state(self, x: torch.Tensor) -> State:
        """(h,) zeros shaped like a (B, hidden, H, W) state for the (B, C, H, W) input `x`."""
        return (x.new_zeros((x.shape[0], self.hidden, *x.shape[-2:])),)

    def summary(self, state: State) -> torch.Tensor:
        """The state the classifier reads: h."""
        return state[0]

    def _norm(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return self.norms[name](x) if name in self.norms else x

    def forward(self, x: torch.Tensor, state: State) -> State:
        (h,) = state
        reset, update = self.gates(torch.cat([x, h], dim=1)).chunk(2, dim=1)
        reset = torch.sigmoid(self._norm("reset_gate", reset))
        update = torch.sigmoid(self._norm("update_gate", update))
        candidate = self._norm("candidate", self.candidate(torch.cat([x, reset * h], dim=1)))
        return (update * h + (1 - update) * torch.tanh(candidate),)


def make_cell(
    cell: str, in_channels: int, hidden: int, kernel: int, normalize: bool
) -> ConvLSTMCell | ConvGRUCell:
    """A ConvLSTMCell ("lstm") or ConvGRUCell ("gru"); ValueError for other names or even kernels."""
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel must be a positive odd size for 'same' padding; got {kernel}")
    if cell == "lstm":
        return ConvLSTMCell(in_channels, hidden, kernel, normalize)
    if cell == "gru":
        return ConvGRUCell(in_channels, hidden, kernel, normalize)
    raise ValueError(f"cell must be one of {CELLS}; got {cell!r}")


class ConvRNNEncoder(nn.Module):
    """Run one cell over a (B, T, C, H, W) series in one direction -> the final (B, hidden, H, W) state.

    Args:
        in_channels: input channels C.
        hidden: state channels.
        kernel: odd kernel size of the cell's convolutions.
        cell: "lstm" or "gru".
        reverse: run from the last date to the first.
        normalize: layer normalisation inside the cell.
    """

    def __init__(
        self,
        in_channels: int,
        hidden: int,
        kernel: int = 3,
        cell: str = "lstm",
        reverse: bool = False,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.cell = make_cell(cell, in_channels, hidden, kernel, normalize)
        self.reverse = reverse

    def forward(self, x: torch.Tensor, is_valid: torch.Tensor) -> torch.Tensor:
        """`x` (B, T, C, H, W), `is_valid` (B, T) bool: steps where it is False leave the state untouched."""
        state: State = self.cell.zero_state(x[:, 0])
        steps = range(x.shape[1] - 1, -1, -1) if self.reverse else range(x.shape[1])
        for t in steps:
            new_state = self.cell(x[:, t], state)
            keep = is_valid[:, t].view(-1, 1, 1, 1)
            # where, not a blend: garbage (even NaN) in a padded step cannot leak into the state
            state = tuple(torch.where(keep, new, old) for new, old in zip(new_state, state, strict=True))
        return self.cell.summary(state)


class ConvRNNSegmenter(nn.Module):
    """(B, T, C, H, W) series + optional (B, T) padding mask -> (B, n_classes, H, W) logits.

    Any T >= 1 and H, W >= 1 work; MTLCC trained on series of up to MAX_DATES (30) dates.

    Args:
        in_channels: bands per date.
        n_classes: output classes.
        hidden: state channels per direction.
        kernel: odd kernel size of the recurrent convolutions.
        cell: "lstm" (ConvLSTM) or "gru" (ConvGRU).
        bidirectional: add a backward encoder and classify the concatenated final states.
        normalize: layer normalisation inside the cells, as in MTLCC.
    """

    def __init__(
        self,
        in_channels: int = 13,
        n_classes: int = 17,
        hidden: int = 64,
        kernel: int = 3,
        cell: str = "lstm",
        bidirectional: bool = True,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.forward_encoder = ConvRNNEncoder(in_channels, hidden, kernel, cell, False, normalize)
        self.backward_encoder = (
            ConvRNNEncoder(in_channels, hidden, kernel, cell, True, normalize) if bidirectional else None
        )
        state_channels = hidden * (2 if bidirectional else 1)
        self.classifier = nn.Sequential(
            nn.Conv2d(state_channels, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.LeakyReLU(0.2),  # tf.nn.leaky_relu's default slope, as in MTLCC
            nn.Conv2d(hidden, n_classes, 1),
        )

    def _check(self, x: torch.Tensor, pad_mask: torch.Tensor | None) -> None:
        if x.ndim != 5 or x.shape[2] != self.in_channels or x.shape[1] == 0:
            raise ValueError(
                f"expected x of shape (B, T >= 1, {self.in_channels}, H, W); got {tuple(x.shape)}"
            )
        if pad_mask is not None and (pad_mask.shape != x.shape[:2] or pad_mask.dtype != torch.bool):
            raise ValueError(
                f"expected a bool pad_mask of shape {tuple(x.shape[:2])}; "
                f"got {pad_mask.dtype} {tuple(pad_mask.shape)}"
            )

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`x` (B, T, C, H, W) float reflectance; `pad_mask` (B, T) bool, True where a date is padding."""
        self._check(x, pad_mask)
        if pad_mask is None:
            is_valid = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        else:
            is_valid = ~pad_mask.to(x.device)
            x = x.masked_fill(pad_mask.to(x.device)[:, :, None, None, None], 0.0)
        states = [self.forward_encoder(x, is_valid)]
        if self.backward_encoder is not None:
            states.append(self.backward_encoder(x, is_valid))
        return self.classifier(torch.cat(states, dim=1))


def empty_dates(series: np.ndarray, nodata: float | None = 0) -> np.ndarray:
    """(T,) bool, True for each date of a (T, C, H, W) series whose pixels are all nodata in every band.

    Such dates carry no observation and go to the model as padding (pad_mask True). A `nodata` of None treats
    non-finite values (NaN) as nodata.
    """
    if series.ndim != 4:
        raise ValueError(f"expected a (T, C, H, W) series; got shape {series.shape}")
    missing = ~np.isfinite(series) if nodata is None else series == nodata
    return missing.reshape(series.shape[0], -1).all(axis=1)
