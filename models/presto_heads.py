"""Crop models made of the Presto encoder and a linear head trained here on WorldCereal reference samples.

A Presto head model is a folder with a card (`builder: presto-head`) and the head's weights (`weight` [K, 128],
`bias` [K]); the card's `builder_args` name the encoder weights it sits on (in models/weights/, sha256-pinned)
and how the classes of its legend (`label_mapping`, a legend of WorldCereal's class_mappings.json) become the
model's classes (`legend_classes`: legend class -> model class; a legend class not listed is the model's class
of the same name, or else goes to the class listed for "*").

`python -m models.conversion.presto_heads` trains the shipped heads; `terraseg evaluate --samples` scores any
Presto head model on a samples parquet.
"""

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.errors import ModelError
from core.learning.crop_samples import SampleError, SampleSeries, labels_under
from core.mapping.presto_inputs import PRESTO_BUILDER, normalise
from core.types import ModelCard
from models import presto
from models.weights import verify_weights

MODELS_DIR = Path(__file__).resolve().parent
LEGENDS_FILE = MODELS_DIR / "legends" / "class_mappings.json"
WEIGHTS_DIR = MODELS_DIR / "weights"
BUILDER = PRESTO_BUILDER


@cache
def worldcereal_legends() -> dict[str, dict[str, str]]:
    """WorldCereal's legends: legend name -> {ewoc_code as a string: class name or 'ignore'}."""
    legends: dict[str, dict[str, str]] = json.loads(LEGENDS_FILE.read_text())
    return legends


def model_classes(
    legend_names: np.ndarray, legend_classes: dict[str, str], classes: tuple[str, ...]
) -> np.ndarray:
    """Each sample's class value under the model (int64, -1 where the legend says ignore).

    SampleError when a legend class has no model class: the model's legend does not match the samples.
    """
    out = np.full(len(legend_names), -1, np.int64)
    unmatched: set[str] = set()
    for i, name in enumerate(legend_names):
        if name is None:
            continue
        target = legend_classes.get(name, name if name in classes else legend_classes.get("*", name))
        if target not in classes:
            unmatched.add(name)
            continue
        out[i] = classes.index(target)
    if unmatched:
        raise SampleError(
            f"The samples hold legend class(es) {', '.join(sorted(unmatched)[:5])} that the model does not "
            f"know; its classes are {', '.join(classes)}."
        )
    return out


@dataclass(frozen=True)
class PrestoHead:
    """A loaded Presto head model: encoder, head weights and the card they came with."""

    card: ModelCard
    encoder: presto.PrestoEncoder
    weight: np.ndarray  # [K, 128]
    bias: np.ndarray  # [K]

    @property
    def legend_name(self) -> str:
        return self.card.label_mapping

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.card.classes)

    def labels(self, series: SampleSeries) -> tuple[np.ndarray, np.ndarray]:
        """The samples' classes under the card's legend (None: ignore) and under the model (-1: ignore)."""
        names = labels_under(series.ewoc_code, self.legend_name, worldcereal_legends())
        legend_classes = dict(self.card.builder_args.get("legend_classes", {}))
        return names, model_classes(names, legend_classes, self.classes)

    def probabilities(self, series: SampleSeries, device: str = "cpu") -> np.ndarray:
        """[N, K] class probabilities of the samples."""
        return self.head(embeddings(self.encoder, series, device))

    def head(self, embedded: np.ndarray) -> np.ndarray:
        """[N, K] class probabilities of [N, 128] embeddings of this model's encoder."""
        return softmax(embedded @ self.weight.T + self.bias)

    @property
    def encoder_file(self) -> str:
        """The encoder weights it sits on (two heads on the same file share one embedding pass)."""
        return str(self.card.builder_args.get("encoder", ""))


def embeddings(encoder: presto.PrestoEncoder, series: SampleSeries, device: str = "cpu") -> np.ndarray:
    """[N, 128] Presto embeddings of the samples' seasons."""
    x, missing = normalise(series.values, series.missing)
    return presto.embed(encoder, x, missing, series.latlon_deg, series.months(), device=device)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def load_head_model(card: ModelCard, folder: Path) -> PrestoHead:
    """The model of a `presto-head` card whose head weights lie in `folder` (every file sha256-checked)."""
    args: dict[str, Any] = dict(card.builder_args)
    encoder_file = WEIGHTS_DIR / str(args.get("encoder", ""))
    encoder = presto.load_encoder(encoder_file, str(args.get("encoder_sha256", "")), card.id)
    head_file = folder / card.weights[0]
    verify_weights(head_file, card.weights_sha256[head_file.name], card.id)
    state = torch.load(head_file, map_location="cpu", weights_only=True)
    weight, bias = state.get("weight"), state.get("bias")
    if weight is None or bias is None or tuple(weight.shape) != (card.n_classes, presto.EMBEDDING_SIZE):
        raise ModelError(
            f"{head_file.name} is not a Presto head for {card.n_classes} classes (weight [K, 128], bias [K])."
        )
    return PrestoHead(card, encoder, weight.numpy().astype(np.float32), bias.numpy().astype(np.float32))


def spatial_blocks(latlon_deg: np.ndarray, block_deg: float = 0.1) -> np.ndarray:
    """A block id per sample: the 0.1 degree (about 10 km) cell it lies in."""
    cells = np.floor(latlon_deg / block_deg).astype(np.int64)
    return cells[:, 0] * 100_000 + cells[:, 1]


def block_holdout(blocks: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Hold out whole blocks, so that about `fraction` of each class's samples (labels >= 0) are held out.

    Rarest class first: its blocks, in a seeded random order, are held out until the class reaches its share;
    blocks held out for one class count for the others. A class in one block only stays in training.
    """
    rng = np.random.default_rng(seed)
    held = np.zeros(len(blocks), bool)
    present = labels >= 0
    counts = np.bincount(labels[present])
    for value in np.argsort(counts, kind="stable"):
        if counts[value] == 0:
            continue
        of_class = labels == value
        candidates = np.unique(blocks[of_class])
        if len(candidates) < 2:
            continue
        rng.shuffle(candidates)
        for block in candidates:
            if (held & of_class).sum() >= fraction * counts[value]:
                break
            held |= (blocks == block) & present
    return held


def raw_monthly_features(series: SampleSeries) -> np.ndarray:
    """[N, 12 x 16] the monthly values of every input channel (NDVI excluded), -999 where missing: the anchor a
    RandomForest is trained on."""
    values = np.where(series.missing, -999.0, series.values)[:, :, :16]
    return values.reshape(len(series), -1).astype(np.float32)


OTHER = "other"  # the class that legend classes with too few samples merge into


def plan_classes(
    legend_names: np.ndarray, min_samples: int, other: str = OTHER
) -> tuple[tuple[str, ...], dict[str, str]]:
    """A new model's classes from its samples' legend classes: those with at least `min_samples` samples keep
    their name (in order of frequency), the rest merge into `other`. Returns the classes and `legend_classes`."""
    present = [name for name in legend_names if name is not None]
    counts: dict[str, int] = {}
    for name in present:
        counts[name] = counts.get(name, 0) + 1
    kept = tuple(sorted((n for n, c in counts.items() if c >= min_samples), key=lambda n: (-counts[n], n)))
    if len(kept) < len(counts) and other not in kept:
        return (*kept, other), {"*": other}
    return kept, {}
