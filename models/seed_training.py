"""Training the seed architectures (the cloud UNet, the DFC2020 UNet and DeepLabv3+, U-TAE, the MTLCC ConvLSTM and
ConvGRU, the BigEarthNet ResNet-50) on a patch dataset (core.datasets), from scratch or from imported weights:
how a dataset's patches become batches for each architecture, which loss and score it trains with, and the card
of the trained model. The loop itself is models.trainer's.
"""

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

import numpy as np
import torch
from torch import nn

from core.datasets import IGNORE, PatchDataset, PatchSample
from core.errors import ModelError
from core.inference import normalise
from core.tiling import fill_nodata, pad_tile
from core.types import ClassInfo, ModelCard, Normalisation, Series, StandardNormalisation
from models.trainer import (
    Batch,
    LoopConfig,
    Objective,
    binary_cross_entropy,
    collect_pixels,
    collect_tags,
    cross_entropy,
    soft_fbeta_and_cross_entropy,
)

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
    from models.registry import BUILDERS

    return BUILDERS[builder][0](dict(args))


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


def objective_for(
    kind: str, legend: tuple[str, ...], counts: np.ndarray, n_samples: int, builder: str
) -> Objective:
    """The loss and validation score of a task: soft F2 + cross-entropy and the cloud class's F2 for the cloud
    UNet; BCE and mean average precision for tags; class-weighted cross-entropy and macro F1 otherwise."""
    from core.training import class_weights, evaluate, evaluate_multilabel

    if kind == "multilabel":
        return Objective(
            binary_cross_entropy(counts, n_samples),
            collect_tags,
            lambda truth, scores: evaluate_multilabel(truth, scores, legend).mean_average_precision,
            "val mAP",
        )
    weights = class_weights(counts)
    if builder == "cloud-unet" and legend == ("clear", "cloud"):
        return Objective(
            soft_fbeta_and_cross_entropy(weights, cloud_class=1, beta=2.0),
            collect_pixels,
            lambda truth, guess: evaluate(truth, guess, legend).per_class[1].f2,
            "val cloud F2",
        )
    return Objective(
        cross_entropy(weights),
        collect_pixels,
        lambda truth, guess: evaluate(truth, guess, legend).macro_f1,
        "val macro F1",
    )


def loop_config(calling: str, epochs: int, seed: int, device: str) -> LoopConfig:
    """Training from scratch: a higher learning rate than fine-tuning, and batches that fit a CPU worker."""
    batch_size = {"image": 4, "series-dates": 2, "series": 2, "tags": 16}[calling]
    return LoopConfig(
        epochs=epochs,
        learning_rate=1e-3,
        weight_decay=1e-4,
        batch_size=batch_size,
        patience=10,
        seed=seed,
        device=device,
    )


def run_fingerprint(
    card: ModelCard,
    args: dict[str, Any],
    inputs: PatchInputs,
    train_ids: list[int],
    val_ids: list[int],
    config: LoopConfig,
) -> str:
    """sha256 of what a run depends on (base, architecture, data files and their sizes, split, settings), so a
    checkpoint resumes only its own run."""
    digest = hashlib.sha256(
        json.dumps(
            [
                card.id,
                card.version,
                args,
                inputs.bands,
                inputs.normalisation.model_dump(),
                train_ids,
                val_ids,
                asdict(config),
            ],
            default=str,
        ).encode()
    )
    for patch in inputs.dataset.patches:
        for path in sorted(patch.files.values()):
            digest.update(f"{path}:{path.stat().st_size if path.exists() else -1}".encode())
    return digest.hexdigest()


def seed_card(
    base: ModelCard,
    new_id: str,
    version: str,
    legend: tuple[str, ...],
    dataset: PatchDataset,
    inputs: PatchInputs,
    args: dict[str, Any],
    weights_name: str,
    sha256: str,
    training: dict[str, Any],
    metrics: dict[str, Any],
    cpu_s_per_mpx: float | None,
) -> ModelCard:
    """The trained model's card: the base's architecture with the dataset's bands, legend, level and pixel size."""
    from models.training import PALETTE

    colours = {c.name: c.color for c in base.classes}  # a class the base has keeps its colour
    classes = tuple(
        asdict(ClassInfo(value, name, colours.get(name, PALETTE[value % len(PALETTE)])))
        for value, name in enumerate(legend)
    )
    temporal = base.temporal
    if isinstance(temporal, Series):
        temporal = temporal.model_copy(update={"max_dates": inputs.max_dates or temporal.max_dates})
    return base.replace(
        id=new_id,
        version=version,
        description=(
            f"{base.task.capitalize()} in {len(legend)} classes, {base.architecture.split(';')[0]} trained here "
            f"on the {dataset.format} patches of {dataset.root.name}."
        ),
        bands=inputs.bands,
        processing_levels=(dataset.processing_level,),
        resolution_m=dataset.resolution_m,
        normalisation=inputs.normalisation.model_dump(),
        classes=classes,
        status="trained-here",
        licence="GPL-3.0-or-later (weights trained by TerraSeg; the dataset's terms apply to what it learnt from)",
        provenance=(
            f"Trained by TerraSeg on {training['trained_at']} from {base.id} {base.version} "
            f"({'its imported weights' if base.status != 'untrained' else 'random initialisation'}) on "
            f"{dataset.format}: {dataset.root.name} (dataset sha256 {training['dataset_sha256'][:16]}...)."
        ),
        weights=[weights_name],
        weights_sha256={weights_name: sha256},
        builder_args=args,
        metrics=metrics,
        training=training,
        default_for_task=False,
        temporal=temporal.model_dump(),
        cpu_s_per_mpx=cpu_s_per_mpx,
    )
