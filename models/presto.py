"""Presto: a pretrained transformer over one pixel's monthly time series (Tseng et al. 2023).

TerraSeg's own implementation of the Presto encoder, written from the paper and checked against the upstream
reference's embeddings on real WorldCereal samples (tests/models/test_presto.py, mean absolute difference
<= 1e-5). It loads the published state dicts (nasaharvest/presto's pretrained model and WorldCereal's
fine-tuned encoder, both MIT; see models/weights/presto/NOTICE).

One pixel is a sequence of T monthly steps of 17 channels (`CHANNELS`), already normalised
(`normalise`), plus a mask of the same shape (True = missing), its latitude/longitude and the calendar month
of each step. The encoder makes one token per channel group and step (SRTM, which does not change with time,
makes one token in all), one per step for the Dynamic World class (unknown here: always masked), and one for
the location; masked tokens take no part in attention. The output is the mean of the remaining tokens after two
transformer blocks, layer-normalised: a 128-d embedding per pixel. Heads (models/crop_heads.py) classify it.

Upstream drops masked tokens and so needs the same number of them in every pixel of a batch; here they are
left out of attention by a key mask instead, which gives the same embedding and lets every pixel have its own
gaps (a cloudy month here, a missing S1 pass there).
"""

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from core.errors import ModelError
from models.torch_predictor import resolve_device
from models.weights import check_state_dict, verify_weights

# Channel groups: each makes one token per step, from the channels listed. The order sets the group's index
# in the channel embedding table and must not change.
GROUPS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("S1", (0, 1)),
    ("S2_RGB", (2, 3, 4)),
    ("S2_Red_Edge", (5, 6, 7)),
    ("S2_NIR_10m", (8,)),
    ("S2_NIR_20m", (9,)),
    ("S2_SWIR", (10, 11)),
    ("ERA5", (12, 13)),
    ("SRTM", (14, 15)),
    ("NDVI", (16,)),
)
STATIC_GROUP = "SRTM"  # one token for the whole series, taken from the first step
DW_CLASSES = 9  # Dynamic World classes; class 9 means "unknown" and is always masked
EMBEDDING_SIZE = 128


def sinusoid_table(n_positions: int, width: int, period: float = 1000.0) -> torch.Tensor:
    """Transformer position encodings [n_positions, width]: sin on even, cos on odd dimensions."""
    position = torch.arange(n_positions, dtype=torch.float64)[:, None]
    exponent = 2 * (torch.arange(width) // 2).double() / width
    angle = position / period**exponent
    table = torch.where(torch.arange(width) % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()


def month_table(width: int) -> torch.Tensor:
    """[12, width]: month m as sin(2 pi m / 12) in the first half of the dimensions, cos in the second."""
    angle = torch.arange(12, dtype=torch.float64) * (2 * math.pi / 12)
    half = width // 2
    return torch.cat(
        [torch.sin(angle)[:, None].expand(12, half), torch.cos(angle)[:, None].expand(12, half)], 1
    ).float()


class SelfAttention(nn.Module):
    """Multi-head self-attention whose keys can be masked out per pixel."""

    def __init__(self, width: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, tokens: torch.Tensor, attend: torch.Tensor | None) -> torch.Tensor:
        """tokens [B, N, C]; attend [B, N] bool (False: the token is masked and no token attends to it), or
        None when every token takes part."""
        batch, n, width = tokens.shape
        # [B, N, 3C] -> 3 x [B, heads, N, C/heads]
        qkv = self.qkv(tokens).view(batch, n, 3, self.n_heads, width // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        mask = None if attend is None else attend[:, None, None, :]
        mixed = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(mixed.transpose(1, 2).reshape(batch, n, width))


class FeedForward(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(tokens)))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, width: int, n_heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, n_heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = FeedForward(width, width * mlp_ratio)

    def forward(self, tokens: torch.Tensor, attend: torch.Tensor | None) -> torch.Tensor:
        tokens = tokens + self.attn(self.norm1(tokens), attend)
        return tokens + self.mlp(self.norm2(tokens))


class PrestoEncoder(nn.Module):
    """The Presto encoder: (pixels' monthly series, masks, locations, months) -> [B, 128] embeddings.

    The token width (128) is the concatenation of a month encoding (32), a channel-group embedding (32) and a
    step position encoding (64), added to each group's linear projection of its channels.
    """

    pos_embed: torch.Tensor  # [1, max_steps, 64], a buffer

    def __init__(self, max_steps: int = 24, depth: int = 2, n_heads: int = 8, mlp_ratio: int = 4) -> None:
        super().__init__()
        width = EMBEDDING_SIZE
        self.month_width, self.channel_width = width // 4, width // 4
        self.position_width = width - self.month_width - self.channel_width
        self.eo_patch_embed = nn.ModuleDict({name: nn.Linear(len(idx), width) for name, idx in GROUPS})
        self.dw_embed = nn.Embedding(DW_CLASSES + 1, width)
        self.latlon_embed = nn.Linear(3, width)
        self.blocks = nn.ModuleList(TransformerBlock(width, n_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.register_buffer("pos_embed", sinusoid_table(max_steps, self.position_width)[None])
        self.month_embed = nn.Embedding.from_pretrained(month_table(self.month_width), freeze=True)
        self.channel_embed = nn.Embedding(len(GROUPS) + 1, self.channel_width)  # + Dynamic World

    @property
    def max_steps(self) -> int:
        return int(self.pos_embed.shape[1])

    def forward(
        self,
        x: torch.Tensor,
        missing: torch.Tensor,
        latlon_deg: torch.Tensor,
        month: torch.Tensor,
        dynamic_world: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x, missing: [B, T, 17] (normalised; True = missing); latlon_deg: [B, 2]; month: [B, T] in 0..11;
        dynamic_world: [B, T] classes 0..9 (default: all unknown). Returns [B, 128]."""
        batch, steps, _ = x.shape
        if steps > self.max_steps:
            raise ModelError(f"Presto takes at most {self.max_steps} steps; got {steps}.")
        x = x.to(self.norm.weight.dtype)
        month_code = self.month_embed(month)  # [B, T, 32]
        position = self.pos_embed[:, :steps].expand(batch, -1, -1)  # [B, T, 64]
        tokens, takes_part = [], []
        for index, (name, channels) in enumerate(GROUPS):
            group = self.eo_patch_embed[name](x[:, :, list(channels)])  # [B, T, 128]
            channel_code = self.channel_embed.weight[index].expand(batch, steps, -1)
            group_missing = missing[:, :, list(channels)].any(dim=-1)  # [B, T]
            if name == STATIC_GROUP:  # one token, with no month or position
                code = torch.cat(
                    [
                        torch.zeros_like(month_code[:, :1]),
                        channel_code[:, :1],
                        torch.zeros_like(position[:, :1]),
                    ],
                    -1,
                )
                group, group_missing = group[:, :1] + code, group_missing[:, :1]
            else:
                group = group + torch.cat([month_code, channel_code, position], -1)
            tokens.append(group)
            takes_part.append(~group_missing)
        if dynamic_world is None:
            dynamic_world = torch.full((batch, steps), DW_CLASSES, dtype=torch.long, device=x.device)
        channel_code = self.channel_embed.weight[len(GROUPS)].expand(batch, steps, -1)
        tokens.append(self.dw_embed(dynamic_world) + torch.cat([month_code, channel_code, position], -1))
        takes_part.append(dynamic_world != DW_CLASSES)
        location = self.latlon_embed(to_unit_sphere(latlon_deg.to(x.dtype)))[:, None]  # [B, 1, 128]
        sequence = torch.cat([location, *tokens], 1)
        kept = torch.cat(
            [torch.ones_like(takes_part[0][:, :1]), *takes_part], 1
        )  # the location token is never masked
        # A token masked in every pixel of the batch (Dynamic World, which is unknown here; an input no pixel has)
        # changes nothing: leave it out, which saves a tenth or more of the work.
        used = kept.any(0)
        sequence, kept = sequence[:, used], kept[:, used]
        attend = None if bool(kept.all()) else kept  # without a mask, attention takes a faster kernel
        for block in self.blocks:
            sequence = block(sequence, attend)
        weight = kept.to(sequence.dtype)[:, :, None]
        return self.norm((sequence * weight).sum(1) / weight.sum(1))


def to_unit_sphere(latlon_deg: torch.Tensor) -> torch.Tensor:
    """[B, 2] latitude/longitude in degrees -> [B, 3] point on the unit sphere."""
    lat, lon = torch.deg2rad(latlon_deg[:, 0]), torch.deg2rad(latlon_deg[:, 1])
    return torch.stack([torch.cos(lat) * torch.cos(lon), torch.cos(lat) * torch.sin(lon), torch.sin(lat)], -1)


def load_encoder(path: Path, expected_sha256: str | None = None, model_id: str = "presto") -> PrestoEncoder:
    """The encoder from a published state dict (keys `encoder.*`; a pretrained model's `decoder.*` are left out).

    The number of steps it takes follows the file's position table (24 pretrained, 72 WorldCereal).
    """
    if expected_sha256 is not None:
        verify_weights(path, expected_sha256, model_id)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a file that is not a state dict
        raise ModelError(f"{path.name} is not a PyTorch state dict ({type(err).__name__}).") from err
    if not isinstance(state, dict):
        raise ModelError(f"{path.name} is not a state dict.")
    encoder_state = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    others = sorted(k for k in state if not k.startswith(("encoder.", "decoder.")))
    if others:
        raise ModelError(f"{path.name} has keys Presto does not know: {', '.join(others[:3])}.")
    position = encoder_state.get("pos_embed")
    encoder = PrestoEncoder(max_steps=int(position.shape[1]) if position is not None else 24)
    check_state_dict(encoder, encoder_state, path.name)
    encoder.load_state_dict(encoder_state)
    return encoder.eval()


def embed(
    encoder: PrestoEncoder,
    x: np.ndarray,
    missing: np.ndarray,
    latlon_deg: np.ndarray,
    month: np.ndarray,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> np.ndarray:
    """Embeddings [N, 128] (float32) of N pixels, in batches; inputs as `PrestoEncoder.forward`, as arrays.

    The batch size defaults to the device's (`default_batch_pixels`); a pixel's embedding does not depend on it.
    """
    out = np.empty((len(x), EMBEDDING_SIZE), dtype=np.float32)
    device = resolve_device(device) if isinstance(device, str) else device
    batch_size = batch_size or default_batch_pixels(device)
    encoder = encoder.to(device)
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            part = slice(start, start + batch_size)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                emb = encoder(
                    torch.from_numpy(np.ascontiguousarray(x[part])).to(device),
                    torch.from_numpy(np.ascontiguousarray(missing[part])).to(device),
                    torch.from_numpy(np.ascontiguousarray(latlon_deg[part], dtype=np.float32)).to(device),
                    torch.from_numpy(np.ascontiguousarray(month[part], dtype=np.int64)).to(device),
                )
            out[part] = emb.float().cpu().numpy()
    return out


CPU_BATCH_PIXELS = 64
GPU_BATCH_PIXELS = 4096


def default_batch_pixels(device: torch.device) -> int:
    """Pixels per encoder pass on a device.

    On a CPU a pass's activations must stay in the cores' caches: a 64-pixel batch (its MLP activations are about
    13 MB) runs twice as fast as a 4,096-pixel one (800 MB, every elementwise op streaming through memory);
    bench/crop_presto.py measures both. A GPU wants large batches to fill its cores.
    """
    return CPU_BATCH_PIXELS if device.type == "cpu" else GPU_BATCH_PIXELS


def months_from(start_month: Sequence[int] | np.ndarray, steps: int) -> np.ndarray:
    """[N, steps] calendar months (0..11) of consecutive monthly steps from each pixel's start month (0..11)."""
    return (np.asarray(start_month, dtype=np.int64)[:, None] + np.arange(steps)[None]) % 12
