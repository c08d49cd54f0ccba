"""A training run, as the list of its stage calls (worker.pipelines.training_stages), one per kind of data:
labels over a job's imagery (`train_model`), WorldCereal sample tables (`train_from_samples`) and a patch dataset
(`train_from_dataset`: a new head on a Dynamic World base, or a seed architecture trained whole). Each fits with
the one loop and a recipe (models.training), scores the new model and its parent on the same validation samples,
and installs the result as a model version jobs can run. Also: the pre-flights the admin page shows, queueing a
run on the `training` queue, and running a queued one.

The requests and their checks are worker.pipelines.training_checks', the evaluations worker.pipelines.evaluation's
(their names are importable from here too)."""

import functools
import getpass
import glob
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import numpy as np

from core.config import Settings
from core.jobs.diskspace import cache_full_as_error
from core.jobs.preflight import Estimate, estimate_job, find_scenes
from core.jobs.progress import ProgressFn, RunContext
from core.jobs.request import DatasetTraining, LabelsTraining, SamplesTraining, TrainingSpec
from core.jobs.store import write_json_atomic
from core.learning import metrics as scoring
from core.learning.datasets import PatchDataset
from core.learning.labels import LabelClass, class_summary, read_labels
from models.catalogue import catalogue
from worker.pipelines.evaluation import (
    DatasetEvaluation,
    EvaluateRequest,
    Evaluation,
    SampleEvaluation,
    evaluate_dataset,
    evaluate_model,
    evaluate_samples,
)
from worker.pipelines.training_checks import (
    DatasetTrainRequest,
    LabelledArea,
    SamplesPlan,
    SamplesTrainRequest,
    TrainRequest,
    TrainResult,
    check_dataset_request,
    check_samples_request,
    check_train_request,
    dataset_classes,
    parse_class_pairs,
    unit_of,
)
from worker.queue.client import TrainingClient

if TYPE_CHECKING:
    from models.catalogue import Catalogue

__all__ = [
    "DatasetEvaluation",
    "DatasetPreflight",
    "DatasetTrainRequest",
    "EvaluateRequest",
    "Evaluation",
    "LabelledArea",
    "SampleEvaluation",
    "SamplesPlan",
    "SamplesTrainRequest",
    "TrainRequest",
    "TrainResult",
    "TrainingPreflight",
    "check_dataset_request",
    "check_samples_request",
    "check_train_request",
    "evaluate_dataset",
    "evaluate_model",
    "evaluate_samples",
    "parse_class_pairs",
    "preflight_dataset",
    "preflight_training",
    "queue_training",
    "run_queued_training",
    "train_from_dataset",
    "train_from_samples",
    "train_model",
]
EpochFn = Callable[[int, float, float], None]
P = ParamSpec("P")
R = TypeVar("R")


def full_cache_is_a_sentence(train: Callable[P, R]) -> Callable[P, R]:
    """A training run that meets a full cache disk (features, checkpoints, the new version all go there) ends with
    the DiskFull sentence naming the cache folder, not an internal error; its last checkpoint is kept, so the run
    resumes from it once space is freed. `train` takes the Settings as its `settings` parameter."""

    parameters = inspect.signature(train)

    @functools.wraps(train)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        settings = parameters.bind(*args, **kwargs).arguments["settings"]
        assert isinstance(settings, Settings)
        with cache_full_as_error(settings.cache_dir):
            return train(*args, **kwargs)

    return guarded


@full_cache_is_a_sentence
def train_model(
    request: TrainRequest,
    settings: Settings,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_epoch: EpochFn | None = None,
) -> TrainResult:
    """Train `request.new_id` from `request.base_id` on labels over imagery and install it under
    `<cache>/models/`: the job's imagery and clearest date, the labels on its grid split into whole blocks, a
    new head on the base's features at the labelled pixels (then the decoder or the whole network fine-tuned on
    the job's tiles), both models scored on the validation pixels, maps of the validation area.

    `on_epoch(epoch, loss, val_macro_f1)` after each epoch of fitting (the admin page's loss chart)."""
    from worker.pipelines import training_stages as stages  # torch: kept out of the web app's process

    labels, spec = check_train_request(request, settings)
    cards = catalogue(settings.cache_dir)
    network = stages.feature_network(cards, request.base_id, request.mode)
    base = cards.get(request.base_id)
    work = settings.cache_dir / "training" / f"{request.new_id}-{spec.spec_hash(base.version)[:16]}"
    run = RunContext(work, progress, should_stop)
    run.report(0.02, f"Labels: {len(labels.geometries)} features, classes {', '.join(labels.legend)}")
    imagery = stages.clearest_imagery(spec, cards, base, settings, run)
    pixels = stages.labelled_pixels(labels, imagery, request, run)
    recipe = stages.pixel_features(imagery, network, pixels, labels.legend, run)
    start = stages.OnFeatures(network, base, recipe, pixels.train_counts)
    scenes = list(imagery.clearest.scenes)
    area = stages.ValidationArea(scenes, imagery.area.grid, pixels.label_px, pixels.val)
    new = stages.head_then_tune(
        request,
        start,
        lambda: stages.tile_patches(imagery.layout, area, base),
        run,
        run.within(0.8, 0.97 if request.mode == "head" else 0.85, "Training"),
        on_epoch,
    )
    record = stages.labels_record(request, imagery, pixels, labels.legend)
    maps = stages.comparison_maps(
        base, new.module, network.module, labels.legend, area,
        run.within(0.97, 0.99, "Maps", run.work_dir / "maps"), imagery.tiling, settings.device,
    )  # fmt: skip
    version = stages.on_features_version(request, start, new, record, maps)
    scores = stages.HeldOut(
        labels.legend,
        new.metrics,
        new.parent_metrics,
        pixels.train_counts,
        pixels.val_counts,
        pixels.warnings,
    )
    return stages.finish(run, version, scores, settings)


@full_cache_is_a_sentence
def train_from_samples(
    request: SamplesTrainRequest,
    settings: Settings,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_epoch: EpochFn | None = None,
) -> TrainResult:
    """Train a head on the base Presto model's encoder from WorldCereal sample tables, scored on held-out 0.1
    degree cells (against the base, when its classes cover the legend), installed as a new version."""
    from worker.pipelines import training_stages as stages  # torch: kept out of the web app's process

    run = RunContext(settings.cache_dir / "training" / f"{request.new_id}-samples", progress, should_stop)
    run.report(0.05, f"Reading {len(request.samples)} samples table(s)")
    plan = check_samples_request(request, settings)
    cards = catalogue(settings.cache_dir)
    base_card = cards.get(request.base_id)
    base = stages.load_head_model(base_card, cards.folder(request.base_id))
    samples = stages.sample_features(plan, base, request.seed, settings, run)
    run.report(0.5, f"Training a head for {len(plan.classes)} classes on {int(samples.train.sum())} samples")
    fitted = stages.fit_sample_head(request, plan, samples, run.within(0.5, 0.9, "Training"), on_epoch)
    scores = stages.score_sample_head(plan, base, samples, fitted)
    version = stages.crop_head_version(request, plan, base_card, fitted, scores)
    run.check_cancelled()  # nothing is installed after a cancel
    run.report(0.9, "Installing")
    return stages.finish(run, version, scores, settings, announce=False)


@full_cache_is_a_sentence
def train_from_dataset(
    request: DatasetTrainRequest,
    settings: Settings,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_epoch: EpochFn | None = None,
) -> TrainResult:
    """Train a head on the base's features at the labelled pixels of a patch dataset (core.learning.datasets), then the
    decoder or the whole network in those modes; whole patches are held out for validation, where the new model
    and the parent are scored on the same pixels. A seed architecture trains whole (train_seed)."""
    from worker.pipelines import training_stages as stages  # torch: kept out of the web app's process

    dataset = check_dataset_request(request, settings)
    cards = catalogue(settings.cache_dir)
    base = cards.get(request.base_id)
    run = RunContext(settings.cache_dir / "training" / f"{request.new_id}-dataset", progress, should_stop)
    if base.builder != "dynamic-world":  # a seed architecture, trained whole
        return train_seed(request, dataset, cards, settings, run, on_epoch)
    network = stages.feature_network(cards, request.base_id, "head")
    pixels = stages.patch_pixels(request, dataset, network, base, run)
    new = stages.head_then_tune(
        request,
        pixels.start,
        lambda: stages.dataset_patches(dataset, base, pixels.present, pixels.is_val_patch, request.mode),
        run,
        run.within(0.6, 0.95 if request.mode == "head" else 0.7, "Training"),
        on_epoch,
    )
    record = stages.dataset_record(request, pixels)
    version = stages.on_features_version(request, pixels.start, new, record)
    legend, train_counts = pixels.start.recipe.legend, pixels.start.train_counts
    scores = stages.HeldOut(
        legend, new.metrics, new.parent_metrics, train_counts, pixels.val_counts, pixels.warnings
    )
    return stages.finish(run, version, scores, settings)


def train_seed(
    request: DatasetTrainRequest,
    dataset: PatchDataset,
    cards: "Catalogue",
    settings: Settings,
    run: RunContext,
    on_epoch: EpochFn | None,
) -> TrainResult:
    """Train a seed architecture whole on a patch dataset (`terraseg train --base <seed model> --dataset DIR
    --format F --mode full`): a split by whole groups, the labels' classes, the network (random, or the base's
    weights where names and shapes match), the one loop, the new model and its parent scored on the same
    validation patches, and the new version installed."""
    from worker.pipelines import training_stages as stages  # torch: kept out of the web app's process

    base = cards.get(request.base_id)
    start = stages.seed_start(request, dataset, base, cards, run)
    recipe = start.recipe
    config = stages.seed_config(recipe.inputs.calling, request.epochs, request.seed)
    trained = stages.fit_seed(start, config, settings, run, on_epoch)
    scoring = run.within(0.9, 0.98, "Scoring")
    metrics, seconds_per_mpx = stages.score_network(
        trained.module, recipe.inputs.calling, recipe.inputs, recipe.val_ids, recipe.legend, dataset, scoring
    )
    parent_metrics = (
        stages.score_parent(base, cards, dataset, recipe.val_ids, recipe.legend, scoring)
        if base.status != "untrained"
        else None
    )
    scores = stages.HeldOut(
        recipe.legend, metrics, parent_metrics, recipe.train_counts, start.val_counts, start.warnings,
        unit_of(dataset),
    )  # fmt: skip
    version = stages.seed_version(request, start, trained, scores, seconds_per_mpx, settings)
    return stages.finish(run, version, scores, settings)


@dataclass(frozen=True)
class TrainingPreflight:
    """What a training run will have to work with, before it is queued (the admin page shows it)."""

    classes: list[LabelClass]
    estimate: Estimate  # the imagery part: a land-cover job of the area (cloud masking and features)
    warnings: list[str]


def preflight_training(
    request: TrainRequest, settings: Settings, check_source: Callable[[str], object] | None = None
) -> TrainingPreflight:
    """Check `request` as queue_training does, search its imagery and estimate the run; per-class feature counts
    and areas, with a warning for a class too small to learn from or to validate on."""
    _, spec = check_train_request(request, settings, check_source)
    labels = read_labels(request.labels, request.label_field, settings.max_label_vertices)
    classes = class_summary(labels)
    area = spec.aoi.to_aoi()
    models = catalogue(settings.cache_dir).job_models(spec.task, spec.model_id)
    scenes = find_scenes(
        spec.sources, area.geometry, spec.start, spec.end, spec.max_cloud_pct, settings, models.trained_levels
    )
    estimate = estimate_job(area, scenes, models.model, models.cloud_model)
    # About a fifth goes to validation, and clouds take their share: below twice FEW_SAMPLES, the training side
    # is likely to end up with fewer than FEW_SAMPLES pixels, which the run itself warns about.
    warnings = [
        f"'{c.name}' covers only about {c.approx_pixels} pixels; its scores will be shaky: label more of it."
        for c in classes
        if c.approx_pixels < 2 * scoring.FEW_SAMPLES
    ]
    return TrainingPreflight(classes, estimate, warnings)


@dataclass(frozen=True)
class DatasetPreflight:
    """What a dataset run would learn from, before it starts: patches, groups, the split, and per class the
    training and validation pixels (patches for tags)."""

    patches: int
    groups: int
    val_patches: int
    unit: str
    counts: dict[str, tuple[int, int]]
    warnings: list[str]


def preflight_dataset(request: DatasetTrainRequest, settings: Settings) -> DatasetPreflight:
    """Check a dataset run and count its labels as the run will split them (reads every patch's labels)."""
    dataset = check_dataset_request(request, settings)
    is_val = scoring.patch_split(
        [p.group for p in dataset.patches], request.val_fraction, np.random.default_rng(request.seed)
    )
    legend, _, train_counts, val_counts, warnings = dataset_classes(
        dataset, is_val, RunContext(settings.cache_dir / "training")
    )
    counts = {name: (int(t), int(v)) for name, t, v in zip(legend, train_counts, val_counts, strict=True)}
    groups = len({p.group for p in dataset.patches})
    if groups < 2:
        warnings.append(
            f"All patches come from one {dataset.format} group: validation patches may neighbour training ones."
        )
    return DatasetPreflight(
        len(dataset.patches), groups, int(is_val.sum()), unit_of(dataset), counts, warnings
    )


def queue_training(
    request: "TrainRequest | SamplesTrainRequest | DatasetTrainRequest",
    settings: Settings,
    check_source: Callable[[str], object] | None = None,
) -> str:
    """Check `request` now (a bad one gets its sentence before anything is queued) and queue it on the
    `training` queue with copies of its files; returns the run's id."""
    data: LabelsTraining | SamplesTraining | DatasetTraining
    files: dict[str, Path] = {}
    if isinstance(request, DatasetTrainRequest):
        check_dataset_request(request, settings)
        data = DatasetTraining(
            root=str(request.dataset.resolve()),
            format=request.format,
            mode=request.mode,
            val_fraction=request.val_fraction,
            pixels_per_patch=request.pixels_per_patch,
            parent_classes=request.parent_classes,
        )
    elif isinstance(request, SamplesTrainRequest):
        check_samples_request(request, settings)
        names = [f"samples-{i}{p.suffix.lower()}" for i, p in enumerate(request.samples)]
        files = dict(zip(names, request.samples, strict=True))
        data = SamplesTraining(
            sample_files=tuple(names), legend=request.legend, min_samples=request.min_samples
        )
    else:
        _, spec = check_train_request(request, settings, check_source)
        suffix = request.labels.suffix.lower()
        files[f"labels{suffix}"] = request.labels
        if suffix == ".shp":  # a plain Shapefile is several files of one name
            for sidecar in request.labels.parent.glob(f"{glob.escape(request.labels.stem)}.*"):
                if sidecar.suffix.lower() != ".shp":
                    files[f"labels{sidecar.suffix.lower()}"] = sidecar
        data = LabelsTraining(
            mode=request.mode,
            block_px=request.block_px,
            val_fraction=request.val_fraction,
            parent_classes=request.parent_classes,
            labels_file=f"labels{suffix}",
            label_field=request.label_field,
            aoi_geojson=json.dumps(spec.aoi.geometry),
            start=spec.start,
            end=spec.end,
            sources=spec.sources,
        )
    queued = TrainingSpec(
        base_id=request.base_id,
        new_id=request.new_id,
        epochs=request.epochs,
        seed=request.seed,
        by=request.by or getpass.getuser(),
        data=data,
    )
    return TrainingClient(settings).submit_training(queued, files)


def run_queued_training(
    spec: TrainingSpec,
    folder: Path,
    settings: Settings,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> Path:
    """Run a queued training run from its folder; returns the `outputs/training.json` it published (the new
    version, its validation metrics next to the parent's, the counts per class, the warnings)."""
    data = spec.data
    unit = "samples" if isinstance(data, SamplesTraining) else "pixels"
    if isinstance(data, DatasetTraining):
        dataset_request = DatasetTrainRequest(
            base_id=spec.base_id,
            new_id=spec.new_id,
            dataset=Path(data.root),
            format=data.format,
            mode=data.mode,
            epochs=spec.epochs,
            seed=spec.seed,
            val_fraction=data.val_fraction,
            pixels_per_patch=data.pixels_per_patch,
            parent_classes=data.parent_classes,
            by=spec.by,
        )
        result = train_from_dataset(dataset_request, settings, progress, should_stop, on_epoch)
    elif isinstance(data, SamplesTraining):
        samples_request = SamplesTrainRequest(
            base_id=spec.base_id,
            new_id=spec.new_id,
            samples=tuple(folder / name for name in data.sample_files),
            legend=data.legend,
            min_samples=data.min_samples,
            epochs=spec.epochs,
            seed=spec.seed,
            by=spec.by,
        )
        result = train_from_samples(samples_request, settings, progress, should_stop, on_epoch)
    else:
        request = TrainRequest(
            base_id=spec.base_id,
            new_id=spec.new_id,
            labels=folder / data.labels_file,
            label_field=data.label_field,
            aoi=data.aoi_geojson,
            start=data.start.isoformat(),
            end=data.end.isoformat(),
            sources=data.sources,
            mode=data.mode,
            epochs=spec.epochs,
            seed=spec.seed,
            block_px=data.block_px,
            val_fraction=data.val_fraction,
            parent_classes=data.parent_classes,
            by=spec.by,
        )
        result = train_model(request, settings, progress, should_stop, on_epoch)
    if isinstance(result.metrics, scoring.MultiLabelMetrics):
        unit = "patches"
    summary = {
        "model_id": result.model_id,
        "version": result.version,
        "state": result.state,
        "unit": unit,
        "metrics": result.metrics.model_dump(mode="json"),
        "parent_metrics": result.parent_metrics.model_dump(mode="json") if result.parent_metrics else None,
        "train_counts": result.train_counts,
        "val_counts": result.val_counts,
        "warnings": result.warnings,
    }
    outputs = folder / "outputs"
    outputs.mkdir(exist_ok=True)
    write_json_atomic(outputs / "training.json", summary)
    return outputs / "training.json"
