"""What a training request is, and everything about it that can be checked before any imagery is read or any
model runs: the new id, the base and mode, the labels or sample tables or dataset and their classes (torch-free,
so the CLI and the web app refuse a bad request in one sentence before anything is queued)."""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.config import Settings
from core.errors import AppError
from core.jobs.progress import RunContext
from core.jobs.request import JobRequest, JobSpec, build_spec
from core.learning import metrics as scoring
from core.learning.crop_samples import SampleSeries, concatenate, labels_under, read_samples_table, to_series
from core.learning.datasets import IGNORE, PatchDataset, open_dataset
from core.learning.datasets.types import KIND_WORDS
from core.learning.labels import LabelError, Labels, read_labels
from core.sources import parse_source
from core.types import ModelCard
from models.catalogue import SEED_BUILDERS, Catalogue, catalogue, check_trainable


@dataclass(frozen=True, kw_only=True)
class LabelledArea:
    """Labels (a vector file and its class field) and the area, dates and sources of the imagery they describe."""

    labels: Path
    label_field: str
    aoi: str
    start: str
    end: str
    sources: tuple[str, ...] = ("sample",)


@dataclass(frozen=True, kw_only=True)
class TrainRequest(LabelledArea):
    """What `terraseg train` was asked (labels over imagery, head mode)."""

    base_id: str
    new_id: str
    mode: str = "head"
    epochs: int = 200
    seed: int = 0
    block_px: int = 32  # spatial-split block, in grid pixels (320 m at 10 m)
    val_fraction: float = 0.2
    parent_classes: dict[str, str] = field(default_factory=dict)  # new class -> the parent's class it matches
    by: str = ""  # who started it (default: the user running the process)


@dataclass(frozen=True)
class SamplesTrainRequest:
    """What `terraseg train --samples` was asked: a new head on a Presto model's encoder from sample tables."""

    base_id: str
    new_id: str
    samples: tuple[Path, ...]
    legend: str = ""  # default: the base's legend
    min_samples: int = 10  # legend classes with fewer samples merge into "other"
    epochs: int = 100
    seed: int = 0
    by: str = ""  # who started it (default: the user running the process)


@dataclass(frozen=True, kw_only=True)
class DatasetTrainRequest:
    """What `terraseg train --dataset` was asked: a new head on a base's features from a patch dataset."""

    base_id: str
    new_id: str
    dataset: Path
    format: str = "dfc2020"
    mode: str = "head"  # or decoder / full: the head first, then the network fine-tuned on whole patches
    epochs: int = 200
    seed: int = 0
    val_fraction: float = 0.2  # of the patches, held out whole
    pixels_per_patch: int = 2000  # at most this many labelled pixels of each patch are sampled (seeded)
    parent_classes: dict[str, str] = field(default_factory=dict)  # dataset class -> the parent's class
    by: str = ""


@dataclass(frozen=True)
class TrainResult:
    """The installed model and how it scored, next to its parent on the same validation pixels."""

    model_id: str
    version: str
    state: str  # production (the id's first version) or candidate
    folder: Path
    metrics: scoring.Metrics | scoring.MultiLabelMetrics  # multi-label: a tagging model's scores
    parent_metrics: scoring.Metrics | scoring.MultiLabelMetrics | None
    train_counts: dict[str, int]
    val_counts: dict[str, int]
    warnings: list[str]


def per_class(legend: tuple[str, ...], counts: np.ndarray) -> dict[str, int]:
    """{class name: count}, in legend order."""
    return {name: int(n) for name, n in zip(legend, counts, strict=True)}


def parse_class_pairs(text: str | None, option: str) -> dict[str, str]:
    """'cultivated land=crops,forest=trees' -> {'cultivated land': 'crops', 'forest': 'trees'}."""
    if not text:
        return {}
    pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
    if any(len(pair) != 2 for pair in pairs):
        raise AppError(f"{option} takes 'your class=model class' pairs separated by commas.")
    return {new.strip(): parent.strip() for new, parent in pairs}


def check_new_id(new_id: str, settings: Settings) -> Catalogue:
    """A usable id that no shipped or imported model has (a model trained here gets a new version); returns the
    installation's models."""
    from models.importing import check_model_id  # torch: kept out of the web app's process

    check_model_id(new_id)
    cards = catalogue(settings.cache_dir)
    if new_id in cards.cards and new_id not in cards.versions:
        raise AppError(
            f"A model {new_id} exists already and is not one trained here; choose another --as id."
        )
    return cards


def check_train_request(
    request: TrainRequest, settings: Settings, check_source: Callable[[str], object] | None = None
) -> tuple[Labels, JobSpec]:
    """Everything about a training request that can be checked before any imagery is read: the new id, the
    base and mode, the labels and their legend, and the area, dates and sources (`check_source`: as for a job;
    the web app passes its operator's limits). Returns the labels and the spec of the imagery they describe."""

    cards = check_new_id(request.new_id, settings)
    if request.new_id in cards.versions and cards.get(request.new_id).task != cards.get(request.base_id).task:
        raise AppError(
            f"{request.new_id} is a {cards.get(request.new_id).task} model; its versions keep that task."
        )
    check_trainable(cards, request.base_id, request.mode, built=("head", "decoder", "full"), seeds=False)
    base = cards.get(request.base_id)
    labels, spec = labels_over_imagery(
        request, base, request.parent_classes, "--parent-classes", settings, check_source
    )
    scoring.check_legend(labels.legend)
    return labels, spec


def labels_over_imagery(
    request: LabelledArea,
    card: ModelCard,
    mapping: dict[str, str],
    option: str,
    settings: Settings,
    check_source: Callable[[str], object] | None = None,
) -> tuple[Labels, JobSpec]:
    """The request's labels, and the spec of the job whose imagery they describe (checked as a job's is, with
    `check_source`, by default the CLI's syntax check); `mapping` (from `option`) may name only classes the
    labels have."""
    labels = read_labels(request.labels, request.label_field, settings.max_label_vertices)
    unknown = sorted(set(mapping) - set(labels.legend))
    if unknown:
        raise AppError(f"{option} names classes the labels do not have: {', '.join(unknown)}.")
    spec = build_spec(
        JobRequest(request.aoi, request.start, request.end, card.task, card.id, request.sources),
        settings,
        catalogue(settings.cache_dir),
        check_source or (lambda name: parse_source(name, settings)),
    )
    return labels, spec


@dataclass(frozen=True)
class SamplesPlan:
    """What sample tables give a new crop head, before any model runs: the samples and the head's classes."""

    series: SampleSeries
    legend_name: str
    classes: tuple[str, ...]
    legend_classes: dict[str, str]  # legend class -> the head's class it counts as
    y: np.ndarray  # each sample's class value, -1 where the legend says ignore

    def counts(self) -> dict[str, int]:
        """Samples per class of the new head."""
        found = np.bincount(self.y[self.y >= 0], minlength=len(self.classes))
        return {name: int(n) for name, n in zip(self.classes, found, strict=True)}


def check_samples_request(request: SamplesTrainRequest, settings: Settings) -> SamplesPlan:
    """Everything about a samples training request that can be checked without running Presto: the new id, the
    base, the tables and their legend, the classes; SampleError or AppError with a sentence otherwise."""
    from models.presto_heads import (  # torch: kept out of the web app's process until a request is checked
        BUILDER,
        model_classes,
        plan_classes,
        worldcereal_legends,
    )

    cards = check_new_id(request.new_id, settings)
    base_card = cards.require_weights(request.base_id)
    if base_card.builder != BUILDER:
        raise AppError(
            f"--samples trains a head on a Presto crop model's encoder; {request.base_id} is not one (use "
            f"{', '.join(c.id for c in cards.cards.values() if c.builder == BUILDER)})."
        )
    if request.new_id in cards.versions and cards.get(request.new_id).builder != BUILDER:
        raise AppError(f"{request.new_id} is not a Presto crop model; its versions keep their kind.")
    missing = [p.name for p in request.samples if not p.is_file()]
    if missing:
        raise AppError(f"No samples file {', '.join(missing)}.")
    series = concatenate([to_series(read_samples_table(str(p))) for p in request.samples])
    legend_name = request.legend or base_card.label_mapping
    names = labels_under(series.ewoc_code, legend_name, worldcereal_legends())
    # Rare classes merge into the base's catch-all class when it has one (other_crop), so the two compare.
    other = str(base_card.builder_args.get("legend_classes", {}).get("*", "other"))
    classes, legend_classes = plan_classes(names, request.min_samples, other)
    scoring.check_legend(classes)
    return SamplesPlan(
        series, legend_name, classes, legend_classes, model_classes(names, legend_classes, classes)
    )


def check_dataset_request(request: DatasetTrainRequest, settings: Settings) -> PatchDataset:
    """The new id, the base, the dataset's layout and the class matches, checked before any model runs."""

    cards = check_new_id(request.new_id, settings)
    if request.epochs < 1 or not 0 < request.val_fraction < 1:
        raise AppError("--epochs must be at least 1 and the validation fraction between 0 and 1.")
    check_trainable(cards, request.base_id, request.mode, built=("head", "decoder", "full"))
    dataset = open_dataset(request.dataset, request.format)
    base = cards.get(request.base_id)
    if base.builder in SEED_BUILDERS:
        check_seed_dataset(base, dataset)
    elif dataset.kind != "segmentation" or dataset.resolution_m != base.resolution_m:
        raise AppError(
            f"{base.id} learns from {KIND_WORDS['segmentation']} at {base.resolution_m:g} m; {request.format} "
            f"patches are {KIND_WORDS[dataset.kind]} at {dataset.resolution_m:g} m."
        )
    unknown = sorted(set(request.parent_classes) - set(dataset.legend))
    if unknown:
        raise AppError(
            f"--parent-classes names classes {request.format} does not have: {', '.join(unknown)}."
        )
    if len(dataset.patches) < 2:
        raise LabelError("A dataset of one patch cannot be split into training and validation patches.")
    return dataset


def check_seed_dataset(base: ModelCard, dataset: PatchDataset) -> None:
    """A sentence when the base's architecture cannot learn from `dataset` (kind, bands, pixel size)."""
    from models.training.seeds import (  # torch: kept out of the web app's process until a request is checked
        CALLING,
        KIND_OF_CALLING,
    )

    kind = KIND_OF_CALLING[CALLING[base.builder][0]]
    if kind != dataset.kind:
        raise AppError(
            f"{base.id} learns from {KIND_WORDS[kind]}; {dataset.format} patches are {KIND_WORDS[dataset.kind]}. "
            "Choose a "
            "base whose architecture fits the dataset (terraseg models lists them)."
        )
    usable_bands(base, dataset)


def usable_bands(base: ModelCard, dataset: PatchDataset) -> tuple[str, ...]:
    """The base's bands the dataset has, in the base's order. An untrained base learns from those (its first
    layer is built for them); a base with weights needs all of its bands."""
    bands = tuple(b for b in base.bands if b in dataset.bands)
    missing = [b for b in base.bands if b not in dataset.bands]
    if not bands or (missing and base.status != "untrained"):
        raise AppError(
            f"{base.id} reads {', '.join(base.bands)}; {dataset.format} patches lack {', '.join(missing)}."
        )
    return bands


def dataset_classes(
    dataset: PatchDataset, is_val: np.ndarray, run: RunContext
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """The new legend, the map from dataset classes to it, the training and validation counts per class (pixels,
    or patches for tags) and the warnings. Segmentation: the dataset's classes that have training pixels (a
    validation pixel of another class is not scored); tags: the dataset's legend."""
    n = len(dataset.legend)
    counts = np.zeros((2, n), np.int64)
    for i, patch in enumerate(dataset.patches):
        run.check_cancelled()
        target = dataset.read(patch, ()).target
        if dataset.kind == "multilabel":
            counts[int(is_val[i])] += target.astype(np.int64)
        else:
            counts[int(is_val[i])] += np.bincount(target[target != IGNORE], minlength=n)[:n]
        run.report((i + 1) / len(dataset.patches), f"{i + 1}/{len(dataset.patches)} patches")
    train_counts, val_counts = counts
    warnings: list[str] = []
    if dataset.kind == "multilabel":
        if not train_counts.any():
            raise LabelError(
                f"No training patch of {dataset.root.name} has a class of the {dataset.format} legend."
            )
        absent = [name for name, count in zip(dataset.legend, train_counts, strict=True) if count == 0]
        if absent:
            warnings.append(
                f"No training patch has {', '.join(absent)}; the model will not learn to tag them."
            )
        return dataset.legend, np.arange(n + 1), train_counts, val_counts, warnings
    present = [k for k in range(n) if train_counts[k] > 0]
    legend = tuple(dataset.legend[k] for k in present)
    scoring.check_legend(legend)
    to_new = np.full(n + 1, IGNORE, np.int64)
    to_new[present] = np.arange(len(present))
    dropped = int(val_counts[[k for k in range(n) if k not in present]].sum())
    if dropped:
        warnings.append(
            f"{dropped} validation pixels are of classes no training patch has; they are not scored."
        )
    warnings += scoring.check_samples(train_counts[present], val_counts[present], legend)
    if not val_counts[present].any():
        raise LabelError("No validation pixel has a class the training patches have; give more patches.")
    return legend, to_new, train_counts[present], val_counts[present], warnings


def unit_of(dataset: PatchDataset) -> str:
    """What the counts count: patches for tags, pixels otherwise."""
    return "patches" if dataset.kind == "multilabel" else "pixels"
