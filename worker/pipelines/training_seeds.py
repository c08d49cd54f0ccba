"""Training a seed architecture on a patch dataset (`terraseg train --base <seed model> --dataset DIR --format F
--mode full`), as a list of stage calls: the dataset's patches, a split by whole groups, the labels' classes, the
network (random, or the base's weights where names and shapes match), the shared training loop, the new model
and its parent scored on the same validation patches, and the new version installed."""

import getpass
import hashlib
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from core import training
from core.config import Settings
from core.datasets import IGNORE, PatchDataset
from core.datasets.types import KIND_WORDS
from core.errors import AppError, ModelError
from core.labels import LabelError
from core.progress import ProgressFn, RunContext
from core.types import ModelCard
from models.catalogue import catalogue

if TYPE_CHECKING:
    from torch import nn

    from models.seed_training import PatchInputs
    from worker.pipelines.training import DatasetTrainRequest, TrainResult

PARENT_KEYS_KEPT = "base_weights_kept"


def train_seed_from_dataset(
    request: "DatasetTrainRequest",
    dataset: PatchDataset,
    settings: Settings,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> "TrainResult":
    """Train the base's architecture on `dataset` (checked by worker.pipelines.training.check_dataset_request)."""
    from models.seed_training import CALLING, builder_args, loop_config, objective_for, run_fingerprint
    from models.trainer import train_loop
    from models.training import utc_now
    from worker.pipelines.training import epoch_reporter

    cards = catalogue(settings.cache_dir)
    base = cards.get(request.base_id)
    calling = CALLING[base.builder][0]
    run = RunContext(settings.cache_dir / "training" / f"{request.new_id}-dataset", progress, should_stop)
    bands = usable_bands(base, dataset)
    is_val = training.patch_split(
        [p.group for p in dataset.patches], request.val_fraction, np.random.default_rng(request.seed)
    )
    train_ids = [i for i in range(len(dataset.patches)) if not is_val[i]]
    val_ids = [i for i in range(len(dataset.patches)) if is_val[i]]
    legend, to_new, train_counts, val_counts, warnings = dataset_classes(
        dataset, is_val, run.within(0.0, 0.1, "Labels")
    )
    if len({p.group for p in dataset.patches}) < 2:
        warnings.append(
            f"All patches come from one {dataset.format} group, so validation patches may neighbour training ones."
        )
    inputs = patch_inputs(base, dataset, bands, to_new, train_ids, request.seed)
    args = builder_args(base, len(bands), len(legend))
    network, kept = starting_network(
        base, args, cards.folder(base.id) if base.status != "untrained" else None
    )
    objective = objective_for(dataset.kind, legend, train_counts, len(train_ids), base.builder)
    config = loop_config(calling, request.epochs, request.seed, settings.device)
    epochs_run = run.within(0.1, 0.9, "Training")
    report_epoch = epoch_reporter(epochs_run, config.epochs, on_epoch, objective.name)

    def report_batch(epoch: int, done: int, batches: int, loss: float, per_s: float) -> None:
        epochs_run.report(
            (epoch - 1 + done / batches) / config.epochs,
            f"epoch {epoch}/{config.epochs}, batch {done}/{batches}, loss {loss:.4f}, {per_s:.1f} samples/s",
        )

    trained = train_loop(
        network,
        inputs.batch,
        train_ids,
        val_ids,
        objective,
        config,
        fingerprint=run_fingerprint(base, args, inputs, train_ids, val_ids, config),
        checkpoint_dir=run.work_dir,
        on_epoch=report_epoch,
        on_batch=report_batch,
        should_stop=run.check_cancelled,
    )
    scoring = run.within(0.9, 0.98, "Scoring")
    metrics, seconds_per_mpx = score_network(network, calling, inputs, val_ids, legend, dataset, scoring)
    parent_metrics = (
        score_parent(base, cards, dataset, val_ids, legend, scoring) if base.status != "untrained" else None
    )
    record = {
        "base": base.id,
        "base_version": base.version,
        "base_status": base.status,
        PARENT_KEYS_KEPT: kept,
        "mode": "full",
        "dataset": f"{request.format}: {request.dataset.name}",
        "dataset_sha256": dataset_sha256(dataset, is_val, base.id),
        "patches": {"train": len(train_ids), "validation": len(val_ids)},
        "validation_groups": sorted({dataset.patches[i].group for i in val_ids}),
        "processing_level": dataset.processing_level,
        f"train_{unit_of(dataset)}": training_counts(legend, train_counts),
        f"val_{unit_of(dataset)}": training_counts(legend, val_counts),
        "seed": request.seed,
        "epochs": request.epochs,
        "best_epoch": trained.best_epoch,
        "validation_score": {"name": objective.name, "value": trained.best_score},
        "samples_per_s": round(trained.samples_per_s, 2),
        "device": settings.device,
        "trained_at": utc_now(),
        "by": request.by or getpass.getuser(),
    }
    run.check_cancelled()  # a cancel during the last epoch or the scoring: nothing is installed
    folder, version, state = install(
        base, request.new_id, legend, dataset, inputs, args, network, record, metrics, parent_metrics,
        seconds_per_mpx if settings.device in ("cpu", "auto") else None, settings,
    )  # fmt: skip
    run.report(
        1.0, f"Trained {request.new_id} version {version} ({state}): {metrics.summary(unit_of(dataset))}"
    )
    from worker.pipelines.training import TrainResult

    return TrainResult(
        request.new_id,
        version,
        state,
        folder,
        metrics,
        parent_metrics,
        training_counts(legend, train_counts),
        training_counts(legend, val_counts),
        warnings,
    )


def check_seed_dataset(base: ModelCard, dataset: PatchDataset) -> None:
    """A sentence when the base's architecture cannot learn from `dataset` (kind, bands, pixel size)."""
    from models.seed_training import CALLING, KIND_OF_CALLING

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
    training.check_legend(legend)
    to_new = np.full(n + 1, IGNORE, np.int64)
    to_new[present] = np.arange(len(present))
    dropped = int(val_counts[[k for k in range(n) if k not in present]].sum())
    if dropped:
        warnings.append(
            f"{dropped} validation pixels are of classes no training patch has; they are not scored."
        )
    warnings += training.check_samples(train_counts[present], val_counts[present], legend)
    if not val_counts[present].any():
        raise LabelError("No validation pixel has a class the training patches have; give more patches.")
    return legend, to_new, train_counts[present], val_counts[present], warnings


def patch_inputs(
    base: ModelCard,
    dataset: PatchDataset,
    bands: tuple[str, ...],
    to_new: np.ndarray,
    train_ids: list[int],
    seed: int,
) -> "PatchInputs":
    """How the patches become batches: the base's normalisation for `bands` (statistics of up to 32 training
    patches where the base has none known), its no-data fill, the patch size padded to the architecture's
    multiple, and a series' dates as the card counts them."""
    from core.types import Series, UnknownNormalisation
    from models.seed_training import CALLING, PatchInputs, standard_statistics, subset_normalisation

    calling, multiple = CALLING[base.builder]
    first = dataset.read(dataset.patches[train_ids[0]], ())
    height, width = first.target.shape if dataset.kind != "multilabel" else first.image.shape[-2:]
    size = -(-max(height, width) // multiple) * multiple
    max_dates, origin = (
        (base.temporal.max_dates, base.temporal.position_origin)
        if isinstance(base.temporal, Series)
        else (0, None)
    )
    normalisation = base.normalisation
    if isinstance(normalisation, UnknownNormalisation):
        chosen = np.random.default_rng(seed).permutation(train_ids)[:32]
        normalisation = standard_statistics(
            [dataset.read(dataset.patches[int(i)], bands) for i in sorted(chosen)]
        )
    else:
        normalisation = subset_normalisation(normalisation, base.bands, bands)
    return PatchInputs(
        dataset, bands, normalisation, base.nodata_fill, to_new, calling, size, max_dates, origin
    )


def starting_network(base: ModelCard, args: dict[str, Any], folder: "Any") -> "tuple[nn.Module, int]":
    """The architecture with `args`, randomly initialised; with the base's weights folder, every tensor whose
    name and shape match is the base's (a new legend gets a new last layer). Returns it and how many it kept."""
    import torch

    from models.seed_training import build_network
    from models.weights import verify_weights

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


def score_network(
    network: "nn.Module",
    calling: str,
    inputs: "PatchInputs",
    val_ids: list[int],
    legend: tuple[str, ...],
    dataset: PatchDataset,
    run: RunContext,
) -> tuple[training.Metrics | training.MultiLabelMetrics, float]:
    """The trained network's scores on the validation patches, and its forward seconds per million 10 m pixels
    on this machine (for the pre-flight estimate)."""
    import torch

    truths, guesses, seconds, pixels = [], [], 0.0, 0
    with torch.no_grad():
        for k, i in enumerate(val_ids):
            run.check_cancelled()
            batch = inputs.batch([i])
            started = time.perf_counter()
            logits = network(*batch.inputs, **batch.options).float()
            seconds += time.perf_counter() - started
            pixels += int(np.prod(batch.inputs[0].shape[-2:]))
            if calling == "tags":
                truths.append(batch.target.numpy() > 0.5)
                guesses.append(torch.sigmoid(logits).numpy())
            else:
                labelled = batch.target != IGNORE
                truths.append(batch.target[labelled].numpy())
                guesses.append(logits.argmax(dim=1)[labelled].numpy())
            run.report((k + 1) / len(val_ids), f"validation patches {k + 1}/{len(val_ids)}")
    # A model pixel at 30 m covers nine 10 m pixels of a job's grid.
    per_mpx = seconds / max(pixels, 1) * 1e6 / (dataset.resolution_m / 10.0) ** 2
    if calling == "tags":
        return training.evaluate_multilabel(np.concatenate(truths), np.concatenate(guesses), legend), per_mpx
    return training.evaluate(np.concatenate(truths), np.concatenate(guesses), legend), per_mpx


def score_parent(
    base: ModelCard,
    cards: Any,
    dataset: PatchDataset,
    val_ids: list[int],
    legend: tuple[str, ...],
    run: RunContext,
) -> training.Metrics | training.MultiLabelMetrics | None:
    """The base model as it is, on the same validation patches, its classes counted as the new legend's of the
    same name; None when no class matches."""
    from models.seed_training import CALLING, PatchInputs, subset_normalisation
    from worker.pipelines.training import to_legend

    calling, multiple = CALLING[base.builder]
    network, _ = starting_network(base, dict(base.builder_args), cards.folder(base.id))
    network.eval()
    to_parent = to_legend(base.classes, legend, {})
    if (to_parent == len(legend)).all():
        return None
    n = len(dataset.legend)
    to_new = np.full(n + 1, IGNORE, np.int64)
    for k, name in enumerate(dataset.legend):
        if name in legend:
            to_new[k] = legend.index(name)
    first = dataset.read(dataset.patches[val_ids[0]], ())
    height, width = first.target.shape if dataset.kind != "multilabel" else first.image.shape[-2:]
    size = -(-max(height, width) // multiple) * multiple
    inputs = PatchInputs(
        dataset, base.bands, subset_normalisation(base.normalisation, base.bands, base.bands), base.nodata_fill,
        to_new, calling, size,
    )  # fmt: skip
    import torch

    truths, guesses = [], []
    with torch.no_grad():
        for i in val_ids:
            run.check_cancelled()
            batch = inputs.batch([i])
            logits = network(*batch.inputs, **batch.options).float()
            if calling == "tags":
                scores = torch.sigmoid(logits).numpy()[0]
                mapped = np.zeros(len(legend), np.float32)
                for value, target in enumerate(to_parent):
                    if target < len(legend):
                        mapped[target] = max(mapped[target], scores[value])
                truths.append(batch.target.numpy() > 0.5)
                guesses.append(mapped[None])
            else:
                labelled = batch.target != IGNORE
                truths.append(batch.target[labelled].numpy())
                guesses.append(to_parent[logits.argmax(dim=1)[labelled].numpy()])
    if calling == "tags":
        return training.evaluate_multilabel(np.concatenate(truths), np.concatenate(guesses), legend)
    return training.evaluate(np.concatenate(truths), np.concatenate(guesses), legend)


def install(
    base: ModelCard,
    new_id: str,
    legend: tuple[str, ...],
    dataset: PatchDataset,
    inputs: "PatchInputs",
    args: dict[str, Any],
    network: "nn.Module",
    record: dict[str, Any],
    metrics: training.Metrics | training.MultiLabelMetrics,
    parent_metrics: training.Metrics | training.MultiLabelMetrics | None,
    cpu_s_per_mpx: float | None,
    settings: Settings,
) -> tuple[Any, str, str]:
    """The trained weights and their card, installed as a new version of `new_id`."""
    import torch

    from models.seed_training import seed_card
    from models.training import install_version

    state = {k: v.detach().clone() for k, v in network.state_dict().items()}

    def write(staging: Any, version: str) -> ModelCard:
        weights_name = f"{new_id}-v{version}.pt"
        torch.save(state, staging / weights_name)
        sha256 = hashlib.sha256((staging / weights_name).read_bytes()).hexdigest()
        scores = {
            "validation": metrics.model_dump(),
            "parent_validation": parent_metrics.model_dump() if parent_metrics is not None else None,
        }
        return seed_card(
            base, new_id, version, legend, dataset, inputs, args, weights_name, sha256, record, scores,
            None if cpu_s_per_mpx is None else round(cpu_s_per_mpx, 3),
        )  # fmt: skip

    return install_version(settings.cache_dir / "models", new_id, write, record.get("by"))


def dataset_sha256(dataset: PatchDataset, is_val: np.ndarray, base_id: str) -> str:
    """A content hash of what the model learnt from: each patch's files (names and sizes), its side of the
    split, and the base."""
    digest = hashlib.sha256(json.dumps([dataset.format, base_id]).encode())
    for patch, held_out in zip(dataset.patches, is_val, strict=True):
        sizes = sorted(
            (role, path.name, path.stat().st_size) for role, path in patch.files.items() if path.exists()
        )
        digest.update(json.dumps([patch.patch_id, bool(held_out), sizes]).encode())
    return digest.hexdigest()


def unit_of(dataset: PatchDataset) -> str:
    """What the counts count: patches for tags, pixels otherwise."""
    return "patches" if dataset.kind == "multilabel" else "pixels"


def training_counts(legend: tuple[str, ...], counts: np.ndarray) -> dict[str, int]:
    """{class: count} in legend order."""
    return {name: int(n) for name, n in zip(legend, counts, strict=True)}


def refuse_unbuilt(base: ModelCard) -> None:
    """A sentence for a base TerraSeg cannot train on a dataset."""
    from models.seed_training import CALLING

    if base.builder not in CALLING and base.builder != "dynamic-world":
        raise ModelError(f"{base.id} ({base.builder or 'no builder'}) cannot be trained on a patch dataset.")
