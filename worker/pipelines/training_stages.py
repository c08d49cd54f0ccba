"""The stages of a training run (worker.pipelines.training lists them per kind of data): imagery and labelled
pixels of labels over imagery, features at labelled pixels or of a patch dataset's pixels, Presto embeddings of
sample tables, a patch dataset's inputs for a seed architecture; fitting with the one loop
(models.training.loop) and its recipes; scoring the new model and its parent on the same validation samples;
comparison maps; and installing the new version (models.training.install)."""

import getpass
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from affine import Affine
from shapely.geometry import box
from torch import nn

from core.config import Settings
from core.errors import AppError
from core.geometry.grid import Grid
from core.geometry.tiling import TileLayout, fill_nodata, pad_tile
from core.jobs.preflight import find_scenes
from core.jobs.progress import RunContext, TilingOptions
from core.jobs.request import JobArea, JobSpec
from core.jobs.store import utc_now
from core.learning import metrics as scoring
from core.learning.datasets import IGNORE as DATASET_IGNORE
from core.learning.datasets import PatchDataset
from core.learning.labels import IGNORE, LabelError, Labels, rasterise_labels
from core.learning.metrics import to_legend
from core.mapping import analysis
from core.mapping.inference import CardModel, normalise, predict_grid, prepare_tile, tile_layout
from core.mapping.reading import SceneReader
from core.outputs.export import write_preview_png
from core.types import ClassInfo, ModelCard, Scene
from models.catalogue import Catalogue
from models.presto_heads import PrestoHead, block_holdout, embeddings, spatial_blocks
from models.presto_heads import load_head_model as load_head_model  # a stage of train_from_samples
from models.torch_predictor import TorchPredictor
from models.training.heads import (
    FeatureNetwork,
    FittedHead,
    HeadRecipe,
    TuneRecipe,
    fitted_head,
    with_head,
)
from models.training.heads import feature_network as feature_network  # a stage of the pipelines
from models.training.install import (
    PALETTE,
    NewVersion,
    SeedModel,
    WeightsFile,
    install_version,
    seed_card,
    trained_card,
)
from models.training.loop import HEAD_CONFIG, TUNE_CONFIG, Hooks, TrainConfig, Trained, fit
from models.training.seeds import (
    CALLING,
    PatchInputs,
    SeedRecipe,
    builder_args,
    patch_inputs,
    starting_network,
    subset_normalisation,
)
from models.training.seeds import seed_config as seed_config  # a stage of train_seed
from worker.pipelines.stages import download, load_models, scene_facts
from worker.pipelines.training_checks import (
    DatasetTrainRequest,
    SamplesPlan,
    SamplesTrainRequest,
    TrainRequest,
    TrainResult,
    dataset_classes,
    per_class,
    unit_of,
    usable_bands,
)

log = logging.getLogger(__name__)
CLEAR_CLASS = 0  # the cloud models' "clear" class
MAP_MAX_PX = 1024  # the comparison maps cover at most this many grid pixels along each side
PARENT_KEYS_KEPT = "base_weights_kept"
Metrics = scoring.Metrics | scoring.MultiLabelMetrics
EpochFn = Callable[[int, float, float], None]


def by_whom(request: TrainRequest | SamplesTrainRequest | DatasetTrainRequest) -> str:
    """Who started the run (default: the user running the process)."""
    return request.by or getpass.getuser()


def epoch_reporter(run: RunContext, epochs: int, on_epoch: EpochFn | None, score: str | None) -> EpochFn:
    """The per-epoch callback of a fit: progress (with `score`, the name of the per-epoch metric, when it is worth
    showing) and `on_epoch` (the admin page's chart)."""

    def report(epoch: int, loss: float, value: float) -> None:
        shown = f", {score} {value:.3f}" if score else ""
        run.report(epoch / epochs, f"epoch {epoch}/{epochs}, loss {loss:.4f}{shown}")
        if on_epoch is not None:
            on_epoch(epoch, loss, value)

    return report


@dataclass(frozen=True)
class HeldOut:
    """How a new model and its parent scored on the held-out samples, what each class had, and what the counts
    count."""

    legend: tuple[str, ...]
    metrics: Metrics
    parent_metrics: Metrics | None
    train_counts: np.ndarray
    val_counts: np.ndarray
    warnings: list[str]
    unit: str = "pixels"


def finish(
    run: RunContext, new: NewVersion, scores: HeldOut, settings: Settings, announce: bool = True
) -> TrainResult:
    """Install `new` as a version of its id unless a cancel came in meanwhile (during the last epoch or the
    scoring: nothing is installed), say so (`announce`), and return what it scored."""
    run.check_cancelled()
    installed = install_version(settings.cache_dir / "models", new)
    if announce:
        run.report(
            1.0,
            f"Trained {new.model_id} version {installed.version} ({installed.state}): "
            f"{scores.metrics.summary(scores.unit)}",
        )
    return TrainResult(
        new.model_id,
        installed.version,
        installed.state,
        installed.folder,
        scores.metrics,
        scores.parent_metrics,
        per_class(scores.legend, scores.train_counts),
        per_class(scores.legend, scores.val_counts),
        scores.warnings,
    )


# Labels over imagery


@dataclass(frozen=True)
class Imagery:
    """The area of a training run, the models of its job, the clearest date's scenes and how tiles are cut."""

    area: JobArea
    clearest: analysis.DateResult
    layout: TileLayout
    card: ModelCard  # the base as the job loaded it (the normalisation features are computed with)
    tiling: TilingOptions


def clearest_imagery(
    spec: JobSpec, cards: Catalogue, base: ModelCard, settings: Settings, run: RunContext
) -> Imagery:
    """The job's own search, download and cloud masking, and its clearest date."""
    tiling = TilingOptions(settings.batch_size, settings.tile_overlap_px)
    area = JobArea.of(spec)
    levels = cards.job_models(spec.task, spec.model_id).trained_levels
    scenes = find_scenes(
        spec.sources, area.aoi.geometry, spec.start, spec.end, spec.max_cloud_pct, settings, levels
    )
    models = load_models(cards, spec, *scene_facts(scenes), settings)
    groups = download(models, area, scenes, tiling, settings, run.within(0.05, 0.15, "Downloading"))
    if models.cloud_model is None:
        raise AppError(f"Training a {base.task} model needs the cloud model to choose and mask the date.")
    cloud = analysis.predict_dates(
        groups,
        models.cloud_model,
        area.grid,
        area.aoi_grid,
        run.within(0.15, 0.5, "Cloud masking", run.work_dir / "cloud"),
        tiling,
    )
    clearest = analysis.select_date(cloud, None)
    return Imagery(area, clearest, tile_layout(base, area.grid, tiling.overlap_px), models.model.card, tiling)


@dataclass(frozen=True)
class LabelledPixels:
    """Labels rasterised on the job grid (IGNORE under clouds), the spatial-block split (True: validation), the
    pixels per class on each side and the warnings about thin classes."""

    label_px: np.ndarray
    val: np.ndarray
    train_counts: np.ndarray
    val_counts: np.ndarray
    warnings: list[str]


def labelled_pixels(
    labels: Labels, imagery: Imagery, request: TrainRequest, run: RunContext
) -> LabelledPixels:
    """The labels on the job grid where the clearest date is clear, split into whole blocks."""
    label_px = rasterise_labels(labels, imagery.area.grid, imagery.area.aoi_grid)
    if not (label_px != IGNORE).any():
        raise LabelError(
            f"None of the labels in {request.labels.name} lies inside the area (or every labelled pixel is "
            "claimed by two classes); draw the area over the labels."
        )
    with rasterio.open(imagery.clearest.classes_path) as dataset:
        clear = dataset.read(1) == CLEAR_CLASS
    label_px[~clear] = IGNORE  # clouds, shadows and no data are not what the label says
    val = scoring.block_split(label_px, request.block_px, request.val_fraction, request.seed)
    n_classes = len(labels.legend)
    train_counts = scoring.class_counts(np.where(val, IGNORE, label_px), n_classes)
    val_counts = scoring.class_counts(np.where(val, label_px, IGNORE), n_classes)
    warnings = scoring.check_samples(train_counts, val_counts, labels.legend)
    for warning in warnings:
        log.warning("%s", warning)
    run.report(
        0.5,
        f"Samples on {imagery.clearest.date}: {int(train_counts.sum())} training, {int(val_counts.sum())} "
        "validation px",
    )
    return LabelledPixels(label_px, val, train_counts, val_counts, warnings)


def pixel_features(
    imagery: Imagery,
    network: FeatureNetwork,
    pixels: LabelledPixels,
    legend: tuple[str, ...],
    run: RunContext,
) -> HeadRecipe:
    """The base's features at the labelled pixels that a tile saw, as a head's training and validation samples
    (class weights from the training pixels)."""
    samples = np.full(pixels.label_px.shape, -1, np.int64)
    labelled = pixels.label_px != IGNORE
    samples[labelled] = np.arange(int(labelled.sum()))
    with SceneReader(list(imagery.clearest.scenes), imagery.card.bands, imagery.layout.context) as reader:
        features = scoring.labelled_features(
            reader.read,
            imagery.layout,
            imagery.card,
            network.features(),
            samples,
            run.within(0.5, 0.8, "Features"),
            imagery.tiling.batch_size,
        )
    y = pixels.label_px[labelled].astype(np.int64)
    is_val = pixels.val[labelled]
    seen = ~np.isnan(features).any(axis=1)
    train_x, train_y = features[seen & ~is_val], y[seen & ~is_val]
    val_x, val_y = features[seen & is_val], y[seen & is_val]
    if len(val_y) == 0:
        raise LabelError("No validation pixel is left; label a larger area or lower --block-px.")
    weights = scoring.class_weights(scoring.class_counts(train_y.astype(np.uint8), len(legend)))
    return HeadRecipe(train_x, train_y, val_x, val_y, legend, weights)


@dataclass(frozen=True)
class ValidationArea:
    """The clearest date's scenes, the job grid, the labels on it and the validation blocks."""

    scenes: list[Scene]
    grid: Grid
    label_px: np.ndarray
    val: np.ndarray


def labels_record(
    request: TrainRequest, imagery: Imagery, pixels: LabelledPixels, legend: tuple[str, ...]
) -> dict[str, Any]:
    """What the card records of a run on labels over imagery (best_epoch, trained_at and by come later)."""
    scenes = imagery.clearest.scenes
    return {
        "dataset_sha256": scoring.dataset_hash(
            pixels.label_px, pixels.val, [s.id for s in scenes], request.base_id
        ),
        "labels": request.labels.name,
        "label_field": request.label_field,
        "date": imagery.clearest.date.isoformat(),
        "processing_level": scenes[0].processing_level,
        "train_pixels": per_class(legend, pixels.train_counts),
        "val_pixels": per_class(legend, pixels.val_counts),
        "block_px": request.block_px,
    }


def comparison_maps(
    base: ModelCard,
    candidate: nn.Module,
    parent: nn.Module,
    legend: tuple[str, ...],
    area: ValidationArea,
    run: RunContext,
    tiling: TilingOptions,
    device: str,
) -> dict[str, Path]:
    """PNG maps over the validation area (the box around the validation blocks' labels, at most MAP_MAX_PX a
    side) of the new model, its parent and the validation labels, on the training date: the admin page shows
    them side by side. Returns {"candidate" | "parent" | "validation": PNG}."""
    label_px, val = area.label_px, area.val
    rows, cols = np.nonzero(val & (label_px != IGNORE))
    if rows.size == 0:
        return {}
    top = max(0, min(int(rows.min()), int(rows.max()) + 1 - MAP_MAX_PX))
    left = max(0, min(int(cols.min()), int(cols.max()) + 1 - MAP_MAX_PX))
    height, width = min(int(rows.max()) + 1 - top, MAP_MAX_PX), min(int(cols.max()) + 1 - left, MAP_MAX_PX)
    sub = Grid(area.grid.crs, area.grid.transform @ Affine.translation(left, top), width, height)
    new_classes = tuple(ClassInfo(v, name, PALETTE[v % len(PALETTE)]) for v, name in enumerate(legend))
    layout = tile_layout(base, sub, tiling.overlap_px)
    run.work_dir.mkdir(parents=True, exist_ok=True)
    maps: dict[str, Path] = {}
    for name, net, classes in (("candidate", candidate, new_classes), ("parent", parent, base.classes)):
        run.check_cancelled()
        model = CardModel(
            base.replace(classes=[asdict(c) for c in classes]), TorchPredictor(net, device).predict
        )
        with SceneReader(area.scenes, base.bands, layout.context) as reader:
            predict_grid(
                reader.read, model, layout, box(*sub.bounds), run.within(0, 1, name, run.work_dir / name),
                batch_size=tiling.batch_size,
            )  # fmt: skip
        maps[name] = run.work_dir / f"{name}.png"
        write_preview_png(run.work_dir / name / "classes.tif", maps[name], classes, IGNORE, name)
    # Pixels of the box without a validation label are drawn light grey, so the three maps line up.
    outside = len(legend)
    truth = label_px[top : top + height, left : left + width].copy()
    truth[~val[top : top + height, left : left + width] | (truth == IGNORE)] = outside
    with rasterio.open(
        run.work_dir / "validation.tif", "w", driver="GTiff", width=width, height=height, count=1,
        dtype="uint8", crs=sub.crs, transform=sub.transform, nodata=IGNORE,
    ) as out:  # fmt: skip
        out.write(truth[None])
    maps["validation"] = run.work_dir / "validation.png"
    shown = (*new_classes, ClassInfo(outside, "no validation label", "#e6e6e6"))
    write_preview_png(run.work_dir / "validation.tif", maps["validation"], shown, IGNORE, "validation labels")
    return maps


@dataclass(frozen=True)
class PatchSplit:
    """Samples for fine-tuning: `arrays(i)` is sample i as (C, S, S) normalised input and (S, S) labels (255
    unlabelled); the training and the validation samples' ids."""

    arrays: Callable[[int], tuple[np.ndarray, np.ndarray]]
    train_ids: list[int]
    val_ids: list[int]


@contextmanager
def tile_patches(layout: TileLayout, area: ValidationArea, base: ModelCard) -> Iterator[PatchSplit]:
    """Decoder or full fine-tuning from labels over imagery: the job's own tiles of the clearest date are the
    samples. A tile's training target holds the training blocks' labels inside its output window and its
    validation target the validation blocks' (each labelled pixel in the first tile that holds it), so the
    spatial-block split stays as the head's."""
    label_px, val = area.label_px, area.val
    tiles = layout.tiles
    claimed = np.zeros(label_px.shape, bool)
    targets: list[np.ndarray] = []
    kept: list[int] = []
    for k, tile in enumerate(tiles):
        rows = slice(int(tile.out.row_off), int(tile.out.row_off + tile.out.height))
        cols = slice(int(tile.out.col_off), int(tile.out.col_off + tile.out.width))
        inside = (label_px[rows, cols] != IGNORE) & ~claimed[rows, cols]
        if not inside.any():
            continue
        claimed[rows, cols] |= inside
        pair = np.full((2, layout.size, layout.size), IGNORE, np.int64)  # training and validation targets
        in_tile = np.s_[
            tile.row_in_tile : tile.row_in_tile + int(tile.out.height),
            tile.col_in_tile : tile.col_in_tile + int(tile.out.width),
        ]
        labels_here = np.where(inside, label_px[rows, cols], IGNORE)
        pair[0][in_tile] = np.where(val[rows, cols], IGNORE, labels_here)
        pair[1][in_tile] = np.where(val[rows, cols], labels_here, IGNORE)
        targets.append(pair)
        kept.append(k)
    if not kept:
        raise LabelError("No labelled pixel lies in a tile of the area; label pixels the scenes cover.")
    with SceneReader(area.scenes, base.bands, layout.context) as reader:

        @lru_cache(maxsize=64)
        def tile_input(j: int) -> np.ndarray:
            x, valid = prepare_tile(reader.read, tiles[kept[j]].read, base, layout.size, 1)
            return x.astype(np.float32)

        def patch_arrays(i: int) -> tuple[np.ndarray, np.ndarray]:
            j, side = i % len(kept), i // len(kept)  # ids len(kept).. are the validation targets
            return tile_input(j), targets[j][side]

        def has(j: int, side: int) -> bool:
            return bool((targets[j][side] != IGNORE).any())

        train_ids = [j for j in range(len(kept)) if has(j, 0)]
        val_ids = [len(kept) + j for j in range(len(kept)) if has(j, 1)]
        yield PatchSplit(patch_arrays, train_ids, val_ids)


# A new head on a Dynamic World base's features, then (decoder, full) the network fine-tuned with it


@dataclass(frozen=True)
class OnFeatures:
    """A new head's samples on a base's features (`recipe`), the base and its frozen network, and the training
    pixels per class (the fine-tune's class weights)."""

    network: FeatureNetwork
    base: ModelCard
    recipe: HeadRecipe
    train_counts: np.ndarray


@dataclass(frozen=True)
class NewNetwork:
    """The new model (the base with its new head, or fine-tuned), its best epoch, and how it and its parent
    scored on the same validation pixels."""

    module: nn.Module
    best_epoch: int
    metrics: scoring.Metrics
    parent_metrics: scoring.Metrics | None


def head_then_tune(
    request: TrainRequest | DatasetTrainRequest,
    start: OnFeatures,
    patches: Callable[[], AbstractContextManager[PatchSplit]],
    run: RunContext,
    head_run: RunContext,
    on_epoch: EpochFn | None,
) -> NewNetwork:
    """Fit the new head (`head_run`: its progress; --epochs in head mode, else the usual 200 as the starting
    point) and score it and the parent's own head on the validation pixels; in decoder or full mode, fine-tune
    the base with that head on whole samples (`patches`) and score both on every labelled validation pixel."""
    recipe, legend = start.recipe, start.recipe.legend
    config = replace(HEAD_CONFIG, epochs=request.epochs if request.mode == "head" else 200, seed=request.seed)
    report_epoch = epoch_reporter(head_run, config.epochs, on_epoch, "val macro F1")
    shown = report_epoch if request.mode == "head" else None
    # a cancelled or killed run resumes at its last epoch
    fitted = fitted_head(
        fit(recipe, config, Hooks(shown, should_stop=run.check_cancelled, checkpoint_dir=run.work_dir))
    )
    if request.mode == "head":
        metrics = scoring.evaluate(recipe.val_y, fitted.predict(recipe.val_x), legend)
        to_new = to_legend(start.base.classes, legend, request.parent_classes)
        parent_metrics = None
        if not (to_new == len(legend)).all():
            network = start.network
            parent_predicted = np.argmax(recipe.val_x @ network.head_weight.T + network.head_bias, axis=1)
            parent_metrics = scoring.evaluate(recipe.val_y, to_new[parent_predicted], legend)
        return NewNetwork(with_head(start.network, fitted), fitted.best_epoch, metrics, parent_metrics)
    with patches() as split:
        return tune_network(request, start, fitted, split, run, on_epoch)


def tune_network(
    request: TrainRequest | DatasetTrainRequest,
    start: OnFeatures,
    fitted: FittedHead,
    split: PatchSplit,
    run: RunContext,
    on_epoch: EpochFn | None,
) -> NewNetwork:
    """Give the base's network the new head, fine-tune it on `split.train_ids` with early stopping on
    `split.val_ids`, then score it and the untouched parent on every labelled pixel of the validation samples."""
    legend, parent = start.recipe.legend, start.network.module
    config = replace(TUNE_CONFIG, epochs=request.epochs, seed=request.seed)
    epochs_run = run.within(0.7, 0.95, "Fine-tuning")
    report_epoch = epoch_reporter(epochs_run, config.epochs, on_epoch, "val macro F1")
    recipe = TuneRecipe(
        with_head(start.network, fitted),
        request.mode,
        split.arrays,
        split.train_ids,
        split.val_ids,
        legend,
        scoring.class_weights(start.train_counts),
    )
    hooks = Hooks(report_epoch, should_stop=run.check_cancelled, checkpoint_dir=run.work_dir)
    tuned = fit(recipe, config, hooks)
    to_parent_legend = to_legend(start.base.classes, legend, request.parent_classes)
    truths, ours, theirs = [], [], []
    with torch.no_grad():
        for i in split.val_ids:
            x, y = split.arrays(i)
            batch = torch.from_numpy(x)[None]
            labelled = y != DATASET_IGNORE
            truths.append(y[labelled])
            ours.append(tuned.module(batch).argmax(dim=1)[0].numpy()[labelled])
            theirs.append(to_parent_legend[parent(batch).argmax(dim=1)[0].numpy()][labelled])
    truth = np.concatenate(truths)
    metrics = scoring.evaluate(truth, np.concatenate(ours), legend)
    parent_metrics = None
    if not (to_parent_legend == len(legend)).all():
        parent_metrics = scoring.evaluate(truth, np.concatenate(theirs), legend)
    return NewNetwork(tuned.module, tuned.best_epoch, metrics, parent_metrics)


def on_features_version(
    request: TrainRequest | DatasetTrainRequest,
    start: OnFeatures,
    new: NewNetwork,
    record: dict[str, Any],
    maps: dict[str, Path] | None = None,
) -> NewVersion:
    """The new version of a model trained on a base's features: the whole network's weights and its card."""
    base, legend = start.base, start.recipe.legend
    record = {
        "base": base.id,
        "base_version": base.version,
        "mode": request.mode,
        **record,
        "seed": request.seed,
        "epochs": request.epochs,
        "best_epoch": new.best_epoch,
        "parent_classes": request.parent_classes,
        "trained_at": utc_now(),
        "by": by_whom(request),
    }
    metrics = {"validation": new.metrics, "parent_validation": new.parent_metrics}
    state = {k: v.detach().clone() for k, v in new.module.state_dict().items()}

    def card(file: WeightsFile) -> ModelCard:
        return trained_card(
            base, request.new_id, file.version, legend, file.name, file.sha256, record, metrics
        )

    return NewVersion(request.new_id, state, card, record["by"], maps=maps or {})


# Patch datasets on a Dynamic World base


@dataclass(frozen=True)
class PatchPixels:
    """A dataset's sampled labelled pixels as a new head's samples on the base's features, the split by whole
    patches (True: validation), the dataset's classes that have training pixels (the new legend, in dataset
    values), the pixels per class on each side, the warnings, and the hash of what the head learns from."""

    start: OnFeatures
    is_val_patch: np.ndarray
    present: list[int]
    val_counts: np.ndarray
    warnings: list[str]
    dataset_sha256: str


def patch_pixels(
    request: DatasetTrainRequest,
    dataset: PatchDataset,
    network: FeatureNetwork,
    base: ModelCard,
    run: RunContext,
) -> PatchPixels:
    """The base's features at up to `request.pixels_per_patch` labelled pixels of each patch (seeded), whole
    patches held out for validation; the new legend is the dataset's classes that have training pixels (a
    release rarely holds all of them)."""
    rng = np.random.default_rng(request.seed)
    is_val_patch = scoring.patch_split([p.group for p in dataset.patches], request.val_fraction, rng)
    compute = network.features()
    features, labels, in_val = [], [], []
    reading = run.within(0.02, 0.6, "Features")
    for i, patch in enumerate(dataset.patches):
        run.check_cancelled()
        sample = dataset.read(patch, base.bands)
        reflectance, valid, patch_labels = sample.image, sample.valid, sample.target
        height, width = patch_labels.shape
        size = -(-max(height, width) // 32) * 32
        tile = fill_nodata(normalise(reflectance, base.normalisation), valid, base.nodata_fill)
        patch_features = compute(pad_tile(tile, size)[None])[0, :, :height, :width]
        rows, cols = np.nonzero((patch_labels != DATASET_IGNORE) & valid)
        if len(rows) > request.pixels_per_patch:
            keep = np.sort(rng.choice(len(rows), request.pixels_per_patch, replace=False))
            rows, cols = rows[keep], cols[keep]
        features.append(patch_features[:, rows, cols].T)
        labels.append(patch_labels[rows, cols].astype(np.int64))
        in_val.append(np.full(len(rows), is_val_patch[i]))
        reading.report((i + 1) / len(dataset.patches), f"{i + 1}/{len(dataset.patches)} patches")
    x, y_full, val = np.concatenate(features), np.concatenate(labels), np.concatenate(in_val)
    present = sorted(set(y_full[~val].tolist()))
    legend = tuple(dataset.legend[v] for v in present)
    scoring.check_legend(legend)
    to_new = np.full(len(dataset.legend), -1, np.int64)
    to_new[present] = np.arange(len(present))
    y = to_new[y_full]
    kept = (
        y >= 0
    )  # validation pixels of a class no training patch has cannot be learnt: left out, and counted
    n_classes = len(legend)
    train_counts = scoring.class_counts(np.where(val | ~kept, IGNORE, y).astype(np.uint8), n_classes)
    val_counts = scoring.class_counts(np.where(val & kept, y, IGNORE).astype(np.uint8), n_classes)
    warnings = scoring.check_samples(train_counts, val_counts, legend)
    dropped = int((val & ~kept).sum())
    if dropped:
        warnings.append(
            f"{dropped} validation pixels are of classes no training patch has; they are not scored."
        )
    if not (val & kept).any():
        raise LabelError(
            "No validation pixel is left; give a dataset with more patches or raise --val-fraction."
        )
    recipe = HeadRecipe(
        x[~val & kept],
        y[~val & kept],
        x[val & kept],
        y[val & kept],
        legend,
        scoring.class_weights(train_counts),
    )
    # the sampled labels, the split and the patches' ids: what this head learnt from
    digest = scoring.dataset_hash(y_full, val, [p.patch_id for p in dataset.patches], base.id)
    start = OnFeatures(network, base, recipe, train_counts)
    return PatchPixels(start, is_val_patch, present, val_counts, warnings, digest)


def dataset_record(request: DatasetTrainRequest, pixels: PatchPixels) -> dict[str, Any]:
    """What the card records of a run on a patch dataset's pixels (best_epoch, trained_at and by come later)."""
    legend = pixels.start.recipe.legend
    return {
        "dataset": f"{request.format}: {request.dataset.name}",
        "dataset_sha256": pixels.dataset_sha256,
        "patches": {"train": int((~pixels.is_val_patch).sum()), "validation": int(pixels.is_val_patch.sum())},
        "processing_level": "L1C",
        "train_pixels": per_class(legend, pixels.start.train_counts),
        "val_pixels": per_class(legend, pixels.val_counts),
        "pixels_per_patch": request.pixels_per_patch,
    }


@contextmanager
def dataset_patches(
    dataset: PatchDataset, base: ModelCard, present: list[int], is_val_patch: np.ndarray, mode: str
) -> Iterator[PatchSplit]:
    """Fine-tuning on whole patches of a dataset (all of one size), split as the head's pixels were."""
    to_new = np.full(len(dataset.legend) + 1, DATASET_IGNORE, np.int64)
    to_new[present] = np.arange(len(present))
    sizes = {dataset.read(p, base.bands[:1]).target.shape for p in dataset.patches}
    if len(sizes) != 1:
        raise AppError(f"--mode {mode} needs patches of one size; this dataset has {sorted(sizes)}.")
    height, width = sizes.pop()
    size = -(-max(height, width) // 32) * 32

    def patch_arrays(i: int) -> tuple[np.ndarray, np.ndarray]:
        sample = dataset.read(dataset.patches[i], base.bands)
        reflectance, valid, labels = sample.image, sample.valid, sample.target
        x = pad_tile(fill_nodata(normalise(reflectance, base.normalisation), valid, base.nodata_fill), size)
        y = np.full((size, size), DATASET_IGNORE, np.int64)
        values = np.where(labels == DATASET_IGNORE, len(dataset.legend), labels).astype(np.int64)
        y[:height, :width] = np.where(valid, to_new[values], DATASET_IGNORE)
        return x.astype(np.float32), y

    ids = list(range(len(dataset.patches)))
    yield PatchSplit(
        patch_arrays, [i for i in ids if not is_val_patch[i]], [i for i in ids if is_val_patch[i]]
    )


# Sample tables on a Presto crop model's encoder


@dataclass(frozen=True)
class SampleFeatures:
    """The samples' Presto embeddings and classes (-1: ignore), which train and which are held out (whole 0.1
    degree cells), the samples per class on each side and the warnings."""

    features: np.ndarray
    y: np.ndarray
    train: np.ndarray
    held_out: np.ndarray
    train_counts: np.ndarray
    val_counts: np.ndarray
    warnings: list[str]


def sample_features(
    plan: SamplesPlan, base: PrestoHead, seed: int, settings: Settings, run: RunContext
) -> SampleFeatures:
    """Hold out a quarter of the samples by spatial block, then run the Presto encoder on every sample."""
    series, classes, y = plan.series, plan.classes, plan.y
    held_out = block_holdout(spatial_blocks(series.latlon_deg), y, 0.25, seed)
    train = (y >= 0) & ~held_out
    train_counts = np.bincount(y[train], minlength=len(classes))
    val_counts = np.bincount(y[held_out], minlength=len(classes))
    warnings = scoring.check_samples(train_counts, val_counts, classes, unit="samples", few=10)
    run.report(0.15, f"Presto on {len(series)} samples")
    run.check_cancelled()
    features = embeddings(base.encoder, series, settings.device)
    return SampleFeatures(features, y, train, held_out, train_counts, val_counts, warnings)


def fit_sample_head(
    request: SamplesTrainRequest,
    plan: SamplesPlan,
    samples: SampleFeatures,
    run: RunContext,
    on_epoch: EpochFn | None,
) -> FittedHead:
    """A head on the training samples' embeddings for --epochs. No early stopping here (the recipe of the shipped
    heads): the per-epoch score is on the training samples."""
    features, y, train = samples.features, samples.y, samples.train
    config = replace(HEAD_CONFIG, epochs=request.epochs, patience=request.epochs, seed=request.seed)
    report_epoch = epoch_reporter(run, config.epochs, on_epoch, None)
    weights = scoring.class_weights(samples.train_counts)
    recipe = HeadRecipe(features[train], y[train], features[train], y[train], plan.classes, weights)
    hooks = Hooks(report_epoch, should_stop=run.check_cancelled, checkpoint_dir=run.work_dir)
    return fitted_head(fit(recipe, config, hooks))


def score_sample_head(
    plan: SamplesPlan, base: PrestoHead, samples: SampleFeatures, fitted: FittedHead
) -> HeldOut:
    """The new head on the held-out samples, and the base on the same samples when it has the legend's classes
    (its classes as ours by name; one of its own is simply wrong)."""
    classes, y, held_out, features = plan.classes, samples.y, samples.held_out, samples.features
    metrics = scoring.evaluate(y[held_out], fitted.predict(features[held_out]), classes)
    parent_metrics = None
    if plan.legend_name == base.legend_name and set(classes) <= set(base.classes):
        to_ours = np.array([classes.index(c) if c in classes else len(classes) for c in base.classes])
        predicted = to_ours[base.head(features[held_out]).argmax(axis=1)]
        parent_metrics = scoring.evaluate(y[held_out], predicted, classes)
    return HeldOut(
        classes,
        metrics,
        parent_metrics,
        samples.train_counts,
        samples.val_counts,
        samples.warnings,
        "samples",
    )


def crop_head_version(
    request: SamplesTrainRequest, plan: SamplesPlan, base_card: ModelCard, fitted: FittedHead, scores: HeldOut
) -> NewVersion:
    """The new version of a crop head on a Presto encoder: the head's weights and the base's card with the new
    classes and the legend they come from."""
    classes, legend_name, metrics, parent_metrics = (
        plan.classes,
        plan.legend_name,
        scores.metrics,
        scores.parent_metrics,
    )
    trained: dict[str, Any] = {
        "base": f"{base_card.id} {base_card.version}",
        "mode": "head",
        "samples": [p.name for p in request.samples],
        "legend": legend_name,
        "counts": {"train": int(scores.train_counts.sum()), "held_out": int(scores.val_counts.sum())},
        "seed": request.seed,
        "epochs": request.epochs,
        "best_epoch": fitted.best_epoch,
        "trained_at": utc_now(),
        "by": by_whom(request),
    }
    state = {"weight": torch.from_numpy(fitted.weight.copy()), "bias": torch.from_numpy(fitted.bias.copy())}
    palette = [c.color for c in base_card.classes] + ["#e7298a", "#66a61e", "#1b9e77", "#7570b3"]

    def card(file: WeightsFile) -> ModelCard:
        return base_card.replace(
            id=request.new_id,
            version=file.version,
            description=(
                f"Crops in {len(classes)} classes ({', '.join(classes)}) of the legend {legend_name}: the Presto "
                f"encoder of {base_card.id} with a head trained here on {len(plan.series)} samples."
            ),
            classes=[asdict(ClassInfo(v, n, palette[v % len(palette)])) for v, n in enumerate(classes)],
            status="trained-here",
            provenance=f"Head trained by TerraSeg on {trained['trained_at']} from {base_card.id} "
            f"{base_card.version} on {', '.join(p.name for p in request.samples)}.",
            weights=[file.name],
            weights_sha256={file.name: file.sha256},
            metrics={"held_out": metrics.model_dump()}
            | ({"base_on_held_out": parent_metrics.model_dump()} if parent_metrics else {}),
            training=trained,
            builder_args={k: v for k, v in base_card.builder_args.items() if k != "cropland_model"}
            | {"legend_classes": plan.legend_classes},
            label_mapping=legend_name,
            default_for_task=False,
        )

    return NewVersion(request.new_id, state, card, str(trained["by"]), suffix="-head")


# A seed architecture trained whole on a patch dataset


@dataclass(frozen=True)
class SeedStart:
    """A seed architecture's recipe on a dataset, with what the run records: how many of the base's tensors the
    network kept, the split by whole groups (True: validation), the validation counts per class (pixels, or
    patches for tags) and the warnings."""

    recipe: SeedRecipe
    kept: int
    is_val: np.ndarray
    val_counts: np.ndarray
    warnings: list[str]


def seed_start(
    request: DatasetTrainRequest, dataset: PatchDataset, base: ModelCard, cards: Catalogue, run: RunContext
) -> SeedStart:
    """The dataset split by whole groups, its classes, how its patches become batches, and the network
    (random, or the base's weights where names and shapes match)."""
    bands = usable_bands(base, dataset)
    is_val = scoring.patch_split(
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
    recipe = SeedRecipe(base, args, network, inputs, legend, train_counts, train_ids, val_ids)
    return SeedStart(recipe, kept, is_val, val_counts, warnings)


def fit_seed(
    start: SeedStart, config: TrainConfig, settings: Settings, run: RunContext, on_epoch: EpochFn | None
) -> Trained:
    """The seed architecture trained with the one loop, with progress per epoch and per batch."""
    epochs_run = run.within(0.1, 0.9, "Training")
    report_epoch = epoch_reporter(
        epochs_run, config.epochs, on_epoch, start.recipe.configure_objective().name
    )

    def report_batch(epoch: int, done: int, batches: int, loss: float, per_s: float) -> None:
        epochs_run.report(
            (epoch - 1 + done / batches) / config.epochs,
            f"epoch {epoch}/{config.epochs}, batch {done}/{batches}, loss {loss:.4f}, {per_s:.1f} samples/s",
        )

    hooks = Hooks(report_epoch, report_batch, run.check_cancelled, run.work_dir, settings.device)
    return fit(start.recipe, config, hooks)


def seed_version(
    request: DatasetTrainRequest,
    start: SeedStart,
    trained: Trained,
    scores: HeldOut,
    cpu_s_per_mpx: float,
    settings: Settings,
) -> NewVersion:
    """The new version of a seed architecture: the network's weights and a card with the dataset's bands,
    legend, level and pixel size."""
    recipe, dataset = start.recipe, start.recipe.inputs.dataset
    base, unit = recipe.base, unit_of(dataset)
    val_ids = recipe.val_ids
    record = {
        "base": base.id,
        "base_version": base.version,
        "base_status": base.status,
        PARENT_KEYS_KEPT: start.kept,
        "mode": "full",
        "dataset": f"{request.format}: {request.dataset.name}",
        "dataset_sha256": dataset_sha256(dataset, start.is_val, base.id),
        "patches": {"train": len(recipe.train_ids), "validation": len(val_ids)},
        "validation_groups": sorted({dataset.patches[i].group for i in val_ids}),
        "processing_level": dataset.processing_level,
        f"train_{unit}": per_class(recipe.legend, recipe.train_counts),
        f"val_{unit}": per_class(recipe.legend, start.val_counts),
        "seed": request.seed,
        "epochs": request.epochs,
        "best_epoch": trained.best_epoch,
        "validation_score": {"name": recipe.configure_objective().name, "value": trained.best_score},
        "samples_per_s": round(trained.samples_per_s, 2),
        "device": settings.device,
        "trained_at": utc_now(),
        "by": by_whom(request),
    }
    metrics = {
        "validation": scores.metrics.model_dump(),
        "parent_validation": scores.parent_metrics.model_dump()
        if scores.parent_metrics is not None
        else None,
    }
    measured = cpu_s_per_mpx if settings.device in ("cpu", "auto") else None
    model = SeedModel(base, request.new_id, recipe.legend, recipe.args, recipe.inputs, measured)
    state = {k: v.detach().clone() for k, v in trained.module.state_dict().items()}
    return NewVersion(
        request.new_id, state, lambda file: seed_card(model, file, record, metrics), str(record["by"])
    )


def score_network(
    network: nn.Module,
    calling: str,
    inputs: PatchInputs,
    val_ids: list[int],
    legend: tuple[str, ...],
    dataset: PatchDataset,
    run: RunContext,
) -> tuple[scoring.Metrics | scoring.MultiLabelMetrics, float]:
    """The trained network's scores on the validation patches, and its forward seconds per million 10 m pixels
    on this machine (for the pre-flight estimate)."""
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
        return scoring.evaluate_multilabel(np.concatenate(truths), np.concatenate(guesses), legend), per_mpx
    return scoring.evaluate(np.concatenate(truths), np.concatenate(guesses), legend), per_mpx


def score_parent(
    base: ModelCard,
    cards: Catalogue,
    dataset: PatchDataset,
    val_ids: list[int],
    legend: tuple[str, ...],
    run: RunContext,
) -> scoring.Metrics | scoring.MultiLabelMetrics | None:
    """The base model as it is, on the same validation patches, its classes counted as the new legend's of the
    same name; None when no class matches."""
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
        return scoring.evaluate_multilabel(np.concatenate(truths), np.concatenate(guesses), legend)
    return scoring.evaluate(np.concatenate(truths), np.concatenate(guesses), legend)


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
