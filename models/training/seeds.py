"""The recipe of the seed architectures (the cloud UNet, the DFC2020 UNet and DeepLabv3+, U-TAE, the MTLCC
ConvLSTM and ConvGRU, the BigEarthNet ResNet-50) trained on a patch dataset (core.learning.datasets), from scratch
or from imported weights: how a dataset's patches become batches for each architecture, which loss and score it trains
with, and the network it starts from."""

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.errors import ModelError
from core.geometry.tiling import fill_nodata, pad_tile
from core.learning.datasets import IGNORE, PatchDataset, PatchSample
from core.mapping.inference import normalise
from core.types import ModelCard, Normalisation, Series, StandardNormalisation, UnknownNormalisation
from models.registry import BUILDERS
from models.training.loop import Batch, Objective, Recipe, TrainConfig
from models.training.objectives import objective_for
from models.weights import verify_weights

# How each architecture takes its input ("image": (B, C, S, S); "series-dates": (B, T, C, S, S) with date
# positions and a padding mask; "series": the same without dates; "tags": (B, C, S, S) -> (B, K) logits) and the
# multiple its height and width must be (the encoder halves them that many times).
CALLING = {
    "cloud-unet": ("image", 16),
    "dfc2020-unet": ("image", 16),
    "dfc2020-deeplab": ("image", 16),
    "utae": ("series-dates", 8),
    "convrnn": ("series", 1),
    "bigearthnet-resnet50": ("tags", 1),
}
KIND_OF_CALLING = {
    "image": "segmentation",
    "series-dates": "series",
    "series": "series",
    "tags": "multilabel",
}


def builder_args(card: ModelCard, n_bands: int, n_classes: int) -> dict[str, Any]:
    """The card's constructor arguments with the input bands and output classes of a new legend."""
    args = dict(card.builder_args)
    match card.builder:
        case "cloud-unet":
            args |= {"in_channels": n_bands, "n_classes": n_classes}
        case "dfc2020-unet":
            args |= {"n_channels": n_bands, "n_classes": n_classes}
        case "dfc2020-deeplab":
            args |= {"n_in": n_bands, "num_classes": n_classes}
        case "utae":
            out_conv = list(args.get("out_conv", (32, 20)))
            args |= {"input_dim": n_bands, "out_conv": [*out_conv[:-1], n_classes]}
        case "convrnn":
            args |= {"in_channels": n_bands, "n_classes": n_classes}
        case "bigearthnet-resnet50":
            args |= {"in_channels": n_bands, "n_labels": n_classes}
        case _:
            raise ModelError(
                f"{card.id} ({card.builder or 'no builder'}) is not an architecture TerraSeg can train."
            )
    return args


def build_network(builder: str, args: dict[str, Any]) -> nn.Module:
    """A freshly initialised network of `builder` (models.registry.BUILDERS)."""
    return BUILDERS[builder][0](dict(args))


def starting_network(base: ModelCard, args: dict[str, Any], folder: Path | None) -> tuple[nn.Module, int]:
    """The architecture with `args`, randomly initialised; with the base's weights folder, every tensor whose
    name and shape match is the base's (a new legend gets a new last layer). Returns it and how many it kept."""
    network = build_network(base.builder, args)
    if folder is None:
        return network, 0
    path = folder / base.weights[0]
    verify_weights(path, base.weights_sha256.get(base.weights[0], ""), base.id)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = network.state_dict()
    kept = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    network.load_state_dict(own | kept)
    return network, len(kept)


def subset_normalisation(
    normalisation: Normalisation, card_bands: tuple[str, ...], bands: tuple[str, ...]
) -> Normalisation:
    """The card's per-band normalisation for `bands`, a subset of the card's bands in the card's order."""
    index = [card_bands.index(b) for b in bands]
    fields = {"standard": ("mean", "std"), "scale-clip": ("scale", "offset")}.get(normalisation.kind, ())
    changes = {
        name: tuple(getattr(normalisation, name)[i] for i in index)
        for name in fields
        if getattr(normalisation, name)
    }
    return normalisation.model_copy(update=changes) if changes else normalisation


def standard_statistics(samples: list[PatchSample]) -> StandardNormalisation:
    """Per-band mean and standard deviation of the valid pixels of `samples` (images or series)."""
    sums, squares, count = None, None, 0
    for sample in samples:
        image = sample.image if sample.image.ndim == 4 else sample.image[None]
        valid = sample.valid if sample.valid.ndim == 3 else sample.valid[None]
        values = np.moveaxis(image, 1, 0)[:, valid].astype(np.float64)  # (C, N)
        sums = values.sum(axis=1) if sums is None else sums + values.sum(axis=1)
        squares = (values**2).sum(axis=1) if squares is None else squares + (values**2).sum(axis=1)
        count += values.shape[1]
    if sums is None or squares is None or count == 0:
        raise ModelError("The training patches have no valid pixel to take the input statistics from.")
    mean = sums / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 1e-12))
    return StandardNormalisation(mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))


@dataclass(frozen=True)
class PatchInputs:
    """How a dataset's patches become one architecture's batches.

    `to_new` maps each dataset class, and after them unlabelled pixels, to the new legend's class or IGNORE
    (segmentation and series; tags keep the dataset's legend); `size` is the padded patch
    size; a series is cut to its last `max_dates` dates, with date positions counted in days from `origin` (None:
    the series' own first date, as a job counts them).
    """

    dataset: PatchDataset
    bands: tuple[str, ...]
    normalisation: Normalisation
    nodata_fill: str
    to_new: np.ndarray
    calling: str
    size: int
    max_dates: int = 0
    origin: date | None = None

    def arrays(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Patch `index` as the network's normalised input ((C, S, S) or (T, C, S, S) float32), its target
        ((S, S) int64 with IGNORE, or (K,) float32 tags) and, for a series, its (T,) date positions."""
        sample = self.dataset.read(self.dataset.patches[index], self.bands)
        image, valid = sample.image, sample.valid
        positions = None
        if self.calling.startswith("series"):
            keep = slice(max(0, len(sample.dates) - self.max_dates), None) if self.max_dates else slice(None)
            image, valid, dates = image[keep], valid[keep], sample.dates[keep]
            first = self.origin or dates[0]
            positions = np.array([(d - first).days for d in dates], np.float32)
        x = fill_nodata(normalise(image, self.normalisation), valid, self.nodata_fill)
        if self.calling == "tags":  # the legend is the dataset's: each tag is a class
            return x.astype(np.float32), sample.target.astype(np.float32), None
        x = pad_tile(x, self.size)
        height, width = sample.target.shape
        labels = np.where(sample.target == IGNORE, len(self.to_new) - 1, sample.target).astype(np.int64)
        seen = valid if valid.ndim == 2 else valid.any(axis=0)
        y = np.full((self.size, self.size), IGNORE, np.int64)
        y[:height, :width] = np.where(seen, self.to_new[labels], IGNORE)
        return x.astype(np.float32), y, positions

    def batch(self, ids: list[int]) -> Batch:
        """A batch of patches `ids`; series are padded at the end to the longest, with a padding mask."""
        items = [self.arrays(i) for i in ids]
        target = torch.from_numpy(np.stack([y for _, y, _ in items]))
        if not self.calling.startswith("series"):
            return Batch((torch.from_numpy(np.stack([x for x, _, _ in items])),), target)
        longest = max(len(x) for x, _, _ in items)
        x = np.zeros((len(items), longest, *items[0][0].shape[1:]), np.float32)
        positions = np.zeros((len(items), longest), np.float32)
        pad_mask = np.ones((len(items), longest), bool)
        for k, (series, _, days) in enumerate(items):
            x[k, : len(series)] = series
            positions[k, : len(series)] = days if days is not None else 0
            pad_mask[k, : len(series)] = False
        options = {"pad_mask": torch.from_numpy(pad_mask)}
        if self.calling == "series-dates":
            options["batch_positions"] = torch.from_numpy(positions)
        return Batch((torch.from_numpy(x),), target, options)


def patch_inputs(
    base: ModelCard,
    dataset: PatchDataset,
    bands: tuple[str, ...],
    to_new: np.ndarray,
    ids: list[int],
    seed: int,
) -> PatchInputs:
    """How the patches become batches: the base's normalisation for `bands` (statistics of up to 32 of the
    patches `ids` where the base has none known), its no-data fill, the patch size padded to the architecture's
    multiple, and a series' dates as the card counts them."""
    calling, multiple = CALLING[base.builder]
    first = dataset.read(dataset.patches[ids[0]], ())
    height, width = first.target.shape if dataset.kind != "multilabel" else first.image.shape[-2:]
    size = -(-max(height, width) // multiple) * multiple
    max_dates, origin = (
        (base.temporal.max_dates, base.temporal.position_origin)
        if isinstance(base.temporal, Series)
        else (0, None)
    )
    normalisation = base.normalisation
    if isinstance(normalisation, UnknownNormalisation):
        chosen = np.random.default_rng(seed).permutation(ids)[:32]
        normalisation = standard_statistics(
            [dataset.read(dataset.patches[int(i)], bands) for i in sorted(chosen)]
        )
    else:
        normalisation = subset_normalisation(normalisation, base.bands, bands)
    return PatchInputs(
        dataset, bands, normalisation, base.nodata_fill, to_new, calling, size, max_dates, origin
    )


def seed_config(calling: str, epochs: int, seed: int) -> TrainConfig:
    """Training from scratch: a higher learning rate than fine-tuning, and batches that fit a CPU worker."""
    batch_size = {"image": 4, "series-dates": 2, "series": 2, "tags": 16}[calling]
    return TrainConfig(
        epochs=epochs, learning_rate=1e-3, weight_decay=1e-4, batch_size=batch_size, patience=10, seed=seed
    )


@dataclass
class SeedRecipe(Recipe):
    """A seed architecture (`network`, built with `args`) trained whole on a dataset's patches: the task's loss
    and score (objective_for), batches as the architecture takes them (`inputs`)."""

    base: ModelCard
    args: dict[str, Any]
    network: nn.Module
    inputs: PatchInputs
    legend: tuple[str, ...]
    train_counts: np.ndarray
    train_ids: list[int]
    val_ids: list[int]

    def configure_model(self) -> nn.Module:
        return self.network

    def configure_objective(self) -> Objective:
        kind = self.inputs.dataset.kind
        return objective_for(kind, self.legend, self.train_counts, len(self.train_ids), self.base.builder)

    def batch(self, ids: list[int]) -> Batch:
        return self.inputs.batch(ids)

    def fingerprint(self, config: TrainConfig) -> str:
        """Base, architecture, data files and their sizes, split, settings."""
        digest = hashlib.sha256(
            json.dumps(
                [
                    self.base.id,
                    self.base.version,
                    self.args,
                    self.inputs.bands,
                    self.inputs.normalisation.model_dump(),
                    self.train_ids,
                    self.val_ids,
                    asdict(config),
                ],
                default=str,
            ).encode()
        )
        for patch in self.inputs.dataset.patches:
            for path in sorted(patch.files.values()):
                digest.update(f"{path}:{path.stat().st_size if path.exists() else -1}".encode())
        return digest.hexdigest()
