"""A training run, as a list of stage calls: imagery through the job's own search, download and cloud masking;
labels rasterised on the job grid; a spatial-block split; a new head on the base model's features; the new and
the parent model scored on the same validation pixels; the result installed as a model jobs can run.
"""

import getpass
import glob
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio

from core import analysis, training
from core.config import Settings
from core.errors import AppError
from core.inference import tile_layout
from core.jobs import (
    DatasetTraining,
    JobArea,
    JobRequest,
    JobSpec,
    LabelsTraining,
    SamplesTraining,
    TrainingSpec,
    build_spec,
)
from core.labels import IGNORE, LabelError, Labels, rasterise_labels, read_labels
from core.preflight import find_scenes
from core.progress import ProgressFn, RunContext, TilingOptions
from core.reading import SceneReader
from core.sources import parse_source
from core.types import ClassInfo, ModelCard
from models.catalogue import catalogue
from worker.pipelines.stages import download, load_models, scene_facts

if TYPE_CHECKING:
    from core.crop_samples import SampleSeries
    from core.datasets import PatchDataset, PatchSample
    from core.grid import Grid
    from core.labels import LabelClass
    from core.preflight import Estimate
    from core.tiling import TileLayout
    from core.types import Scene
    from models.catalogue import Catalogue
    from models.registry import LoadedModel
    from models.training import FeatureNetwork, FittedHead, TunedNetwork

log = logging.getLogger(__name__)
CLEAR_CLASS = 0  # the cloud models' "clear" class


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
class TrainResult:
    """The installed model and how it scored, next to its parent on the same validation pixels."""

    model_id: str
    version: str
    state: str  # production (the id's first version) or candidate
    folder: Path
    metrics: training.Metrics | training.MultiLabelMetrics  # multi-label: a tagging model's scores
    parent_metrics: training.Metrics | training.MultiLabelMetrics | None
    train_counts: dict[str, int]
    val_counts: dict[str, int]
    warnings: list[str]


def per_class(legend: tuple[str, ...], counts: np.ndarray) -> dict[str, int]:
    """{class name: count}, in legend order."""
    return {name: int(n) for name, n in zip(legend, counts, strict=True)}


def epoch_reporter(
    run: RunContext, epochs: int, on_epoch: Callable[[int, float, float], None] | None, score: str | None
) -> Callable[[int, float, float], None]:
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
    """How a new model and its parent scored on the held-out samples, and what each class had."""

    legend: tuple[str, ...]
    metrics: training.Metrics
    parent_metrics: training.Metrics | None
    train_counts: np.ndarray
    val_counts: np.ndarray
    warnings: list[str]


def install_head(
    run: RunContext,
    network: "FeatureNetwork",
    fitted: "FittedHead",
    base: ModelCard,
    new_id: str,
    record: dict[str, Any],
    scores: HeldOut,
    settings: Settings,
    tuned: "dict[str, Any] | None" = None,
    maps: dict[str, Path] | None = None,
) -> TrainResult:
    """Install a model trained on a Dynamic World base as a new version of `new_id` (the base with the new head,
    or the whole fine-tuned network), unless a cancel came in meanwhile."""
    from models.training import save_head_model

    run.check_cancelled()  # a cancel during the last epoch or the scoring: nothing is installed
    folder, version, state = save_head_model(
        network,
        fitted,
        base,
        new_id,
        scores.legend,
        settings.cache_dir / "models",
        record,
        {"validation": scores.metrics, "parent_validation": scores.parent_metrics},
        tuned,
        maps,
    )
    run.report(1.0, f"Trained {new_id} version {version} ({state}): {scores.metrics.summary()}")
    return TrainResult(
        new_id,
        version,
        state,
        folder,
        scores.metrics,
        scores.parent_metrics,
        per_class(scores.legend, scores.train_counts),
        per_class(scores.legend, scores.val_counts),
        scores.warnings,
    )


def parse_class_pairs(text: str | None, option: str) -> dict[str, str]:
    """'cultivated land=crops,forest=trees' -> {'cultivated land': 'crops', 'forest': 'trees'}."""
    if not text:
        return {}
    pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
    if any(len(pair) != 2 for pair in pairs):
        raise AppError(f"{option} takes 'your class=model class' pairs separated by commas.")
    return {new.strip(): parent.strip() for new, parent in pairs}


def check_train_request(
    request: TrainRequest, settings: Settings, check_source: Callable[[str], object] | None = None
) -> tuple[Labels, JobSpec]:
    """Everything about a training request that can be checked before any imagery is read: the new id, the
    base and mode, the labels and their legend, and the area, dates and sources (`check_source`: as for a job;
    the web app passes its operator's limits). Returns the labels and the spec of the imagery they describe."""
    from models.catalogue import check_trainable
    from models.importing import check_model_id

    check_model_id(request.new_id)
    cards = catalogue(settings.cache_dir)
    if request.new_id in cards.cards and request.new_id not in cards.versions:
        raise AppError(
            f"A model {request.new_id} exists already and is not one trained here; choose another --as id."
        )
    if request.new_id in cards.versions and cards.get(request.new_id).task != cards.get(request.base_id).task:
        raise AppError(
            f"{request.new_id} is a {cards.get(request.new_id).task} model; its versions keep that task."
        )
    check_trainable(cards, request.base_id, request.mode, built=("head", "decoder", "full"), seeds=False)
    base = cards.get(request.base_id)
    labels, spec = labels_over_imagery(
        request, base, request.parent_classes, "--parent-classes", settings, check_source
    )
    training.check_legend(labels.legend)
    return labels, spec


def train_model(
    request: TrainRequest,
    settings: Settings,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> TrainResult:
    """Train `request.new_id` from `request.base_id` and install it under `<cache>/models/`.

    `on_epoch(epoch, loss, val_macro_f1)` after each epoch of fitting (the admin page's loss chart)."""
    from models.training import HeadConfig, feature_network, fit_head, utc_now

    labels, spec = check_train_request(request, settings)
    cards = catalogue(settings.cache_dir)
    network = feature_network(cards, request.base_id, request.mode)
    base = cards.get(request.base_id)
    work = settings.cache_dir / "training" / f"{request.new_id}-{spec.spec_hash(base.version)[:16]}"
    run = RunContext(work, progress, should_stop)
    tiling = TilingOptions(settings.batch_size, settings.tile_overlap_px)
    area = JobArea.of(spec)
    run.report(0.02, f"Labels: {len(labels.geometries)} features, classes {', '.join(labels.legend)}")
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
    label_px = rasterise_labels(labels, area.grid, area.aoi_grid)
    if not (label_px != IGNORE).any():
        raise LabelError(
            f"None of the labels in {request.labels.name} lies inside the area (or every labelled pixel is "
            "claimed by two classes); draw the area over the labels."
        )
    with rasterio.open(clearest.classes_path) as dataset:
        clear = dataset.read(1) == CLEAR_CLASS
    label_px[~clear] = IGNORE  # clouds, shadows and no data are not what the label says
    val = training.block_split(label_px, request.block_px, request.val_fraction, request.seed)
    n_classes = len(labels.legend)
    train_counts = training.class_counts(np.where(val, IGNORE, label_px), n_classes)
    val_counts = training.class_counts(np.where(val, label_px, IGNORE), n_classes)
    warnings = training.check_samples(train_counts, val_counts, labels.legend)
    for warning in warnings:
        log.warning("%s", warning)
    run.report(
        0.5,
        f"Samples on {clearest.date}: {int(train_counts.sum())} training, {int(val_counts.sum())} validation px",
    )
    samples = np.full(label_px.shape, -1, np.int64)
    labelled = label_px != IGNORE
    samples[labelled] = np.arange(int(labelled.sum()))
    layout = tile_layout(base, area.grid, tiling.overlap_px)
    with SceneReader(list(clearest.scenes), base.bands, layout.context) as reader:
        features = training.labelled_features(
            reader.read,
            layout,
            models.model.card,
            network.features(),
            samples,
            run.within(0.5, 0.8, "Features"),
            tiling.batch_size,
        )
    y = label_px[labelled].astype(np.int64)
    is_val = val[labelled]
    seen = ~np.isnan(features).any(axis=1)
    train_x, train_y = features[seen & ~is_val], y[seen & ~is_val]
    val_x, val_y = features[seen & is_val], y[seen & is_val]
    if len(val_y) == 0:
        raise LabelError("No validation pixel is left; label a larger area or lower --block-px.")
    # The head alone takes --epochs; before fine-tuning, it is the starting point and takes the usual 200.
    config = HeadConfig(epochs=request.epochs if request.mode == "head" else 200, seed=request.seed)
    epochs_run = run.within(0.8, 0.97 if request.mode == "head" else 0.85, "Training")

    report_epoch = epoch_reporter(epochs_run, config.epochs, on_epoch, "val macro F1")

    fitted = fit_head(
        train_x,
        train_y,
        val_x,
        val_y,
        labels.legend,
        training.class_weights(training.class_counts(train_y.astype(np.uint8), n_classes)),
        config,
        report_epoch if request.mode == "head" else None,
        run.check_cancelled,
        checkpoint_dir=run.work_dir,  # a cancelled or killed run resumes at its last epoch
    )
    tuned = None
    if request.mode == "head":
        metrics = training.evaluate(val_y, fitted.predict(val_x), labels.legend)
        parent_metrics = parent_scores(
            network, base.classes, val_x, val_y, labels.legend, request.parent_classes
        )
    else:
        tuning = Tuning(
            request.mode, request.epochs, request.seed, labels.legend, request.parent_classes, train_counts
        )
        tuned, metrics, parent_metrics = tune_on_tiles(
            tuning, layout, list(clearest.scenes), base, network, fitted, label_px, val, run, on_epoch
        )
    record = {
        "base": base.id,
        "base_version": base.version,
        "mode": request.mode,
        "dataset_sha256": training.dataset_hash(label_px, val, [s.id for s in clearest.scenes], base.id),
        "labels": request.labels.name,
        "label_field": request.label_field,
        "date": clearest.date.isoformat(),
        "processing_level": clearest.scenes[0].processing_level,
        "train_pixels": per_class(labels.legend, train_counts),
        "val_pixels": per_class(labels.legend, val_counts),
        "block_px": request.block_px,
        "seed": request.seed,
        "epochs": request.epochs,
        "best_epoch": fitted.best_epoch if tuned is None else tuned.best_epoch,
        "parent_classes": request.parent_classes,
        "trained_at": utc_now(),
        "by": request.by or getpass.getuser(),
    }
    scores = HeldOut(labels.legend, metrics, parent_metrics, train_counts, val_counts, warnings)
    maps = comparison_maps(
        cards, base, network, fitted, tuned is not None, labels.legend, list(clearest.scenes), area.grid,
        label_px, val, run.within(0.97, 0.99, "Maps", run.work_dir / "maps"), tiling, settings.device,
    )  # fmt: skip
    return install_head(
        run,
        network,
        fitted,
        base,
        request.new_id,
        record,
        scores,
        settings,
        tuned.state if tuned else None,
        maps,
    )


MAP_MAX_PX = 1024  # the comparison maps cover at most this many grid pixels along each side


def comparison_maps(
    cards: "Catalogue",
    base: ModelCard,
    network: "FeatureNetwork",
    fitted: "FittedHead",
    is_tuned: bool,
    legend: tuple[str, ...],
    scenes: list["Scene"],
    grid: "Grid",
    label_px: np.ndarray,
    val: np.ndarray,
    run: RunContext,
    tiling: TilingOptions,
    device: str,
) -> dict[str, Path]:
    """PNG maps over the validation area (the box around the validation blocks' labels, at most MAP_MAX_PX a
    side) of the new model, its parent and the validation labels, on the training date: the admin page shows
    them side by side. Returns {"candidate" | "parent" | "validation": PNG}."""
    from affine import Affine
    from shapely.geometry import box

    from core.export import write_preview_png
    from core.grid import Grid
    from core.inference import CardModel, predict_grid
    from models.torch_predictor import TorchPredictor
    from models.training import PALETTE, feature_network, with_head

    rows, cols = np.nonzero(val & (label_px != IGNORE))
    if rows.size == 0:
        return {}
    top = max(0, min(int(rows.min()), int(rows.max()) + 1 - MAP_MAX_PX))
    left = max(0, min(int(cols.min()), int(cols.max()) + 1 - MAP_MAX_PX))
    height, width = min(int(rows.max()) + 1 - top, MAP_MAX_PX), min(int(cols.max()) + 1 - left, MAP_MAX_PX)
    sub = Grid(grid.crs, grid.transform @ Affine.translation(left, top), width, height)
    new_classes = tuple(ClassInfo(v, name, PALETTE[v % len(PALETTE)]) for v, name in enumerate(legend))
    new_net = network.module if is_tuned else with_head(network, fitted)
    parent_net = feature_network(cards, base.id, "head").module if is_tuned else network.module
    layout = tile_layout(base, sub, tiling.overlap_px)
    run.work_dir.mkdir(parents=True, exist_ok=True)
    maps: dict[str, Path] = {}
    for name, net, classes in (("candidate", new_net, new_classes), ("parent", parent_net, base.classes)):
        run.check_cancelled()
        model = CardModel(
            base.replace(classes=[asdict(c) for c in classes]), TorchPredictor(net, device).predict
        )
        with SceneReader(scenes, base.bands, layout.context) as reader:
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


def tune_on_tiles(
    tuning: "Tuning",
    layout: "TileLayout",
    scenes: list["Scene"],
    base: ModelCard,
    network: "FeatureNetwork",
    fitted: "FittedHead",
    label_px: np.ndarray,
    val: np.ndarray,
    run: RunContext,
    on_epoch: Callable[[int, float, float], None] | None,
) -> tuple["TunedNetwork", training.Metrics, training.Metrics | None]:
    """Decoder or full fine-tuning from labels over imagery: the job's own tiles of the clearest date are the
    samples. A tile's training target holds the training blocks' labels inside its output window and its
    validation target the validation blocks' (each labelled pixel in the first tile that holds it), so the
    spatial-block split stays as the head's."""
    from functools import lru_cache

    from core.inference import prepare_tile

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
    with SceneReader(scenes, base.bands, layout.context) as reader:

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
        return tune_network(tuning, network, fitted, base, patch_arrays, train_ids, val_ids, run, on_epoch)


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
class TrainingPreflight:
    """What a training run will have to work with, before it is queued (the admin page shows it)."""

    classes: list["LabelClass"]
    estimate: "Estimate"  # the imagery part: a land-cover job of the area (cloud masking and features)
    warnings: list[str]


def preflight_training(
    request: TrainRequest, settings: Settings, check_source: Callable[[str], object] | None = None
) -> TrainingPreflight:
    """Check `request` as queue_training does, search its imagery and estimate the run; per-class feature counts
    and areas, with a warning for a class too small to learn from or to validate on."""
    from core.labels import class_summary
    from core.preflight import estimate_job

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
        if c.approx_pixels < 2 * training.FEW_SAMPLES
    ]
    return TrainingPreflight(classes, estimate, warnings)


def queue_training(
    request: "TrainRequest | SamplesTrainRequest | DatasetTrainRequest",
    settings: Settings,
    check_source: Callable[[str], object] | None = None,
) -> str:
    """Check `request` now (a bad one gets its sentence before anything is queued) and queue it on the
    `training` queue with copies of its files; returns the run's id."""
    from worker.queue.client import TrainingClient

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
    from core.jobstore import write_json_atomic

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
    if isinstance(result.metrics, training.MultiLabelMetrics):
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


def to_legend(
    model_classes: tuple[ClassInfo, ...], legend: tuple[str, ...], mapping: dict[str, str]
) -> np.ndarray:
    """Model class value -> legend value, by class name or `mapping` (legend class -> model class); a model class
    with no counterpart maps to len(legend), a prediction that is always wrong."""
    by_name = {c.name.lower(): c.value for c in model_classes}
    translated = np.full(len(model_classes), len(legend), np.int64)
    for value, name in enumerate(legend):
        model_name = mapping.get(name, name).lower()
        if model_name in by_name:
            translated[by_name[model_name]] = value
    return translated


def parent_scores(
    network: "FeatureNetwork",
    parent_classes: tuple[ClassInfo, ...],
    val_x: np.ndarray,
    val_y: np.ndarray,
    legend: tuple[str, ...],
    mapping: dict[str, str],
) -> training.Metrics | None:
    """The parent's own head on the same validation pixels, its classes mapped to the new legend by name (or by
    `mapping`); None when no class of the new legend has a counterpart in the parent's."""
    to_new = to_legend(parent_classes, legend, mapping)
    if (to_new == len(legend)).all():
        return None
    parent_predicted = np.argmax(val_x @ network.head_weight.T + network.head_bias, axis=1)
    return training.evaluate(val_y, to_new[parent_predicted], legend)


@dataclass(frozen=True, kw_only=True)
class EvaluateRequest(LabelledArea):
    """What `terraseg evaluate` was asked: a model, and labels over the imagery of an area and dates."""

    model_id: str
    class_map: dict[str, str] = field(default_factory=dict)  # label class -> the model's class it matches


@dataclass(frozen=True)
class Evaluation:
    """A model's map scored against labels, and each scored pixel for a predictions table."""

    metrics: training.Metrics
    rows: list[tuple[float, float, str, str]]  # x, y (the grid's CRS), true class, predicted class
    crs: str
    date: str


def evaluate_model(
    request: EvaluateRequest, settings: Settings, work_dir: Path, progress: ProgressFn | None = None
) -> Evaluation:
    """Run `request.model_id` as a job does over the area (clearest date, clouds masked) and score its map on
    every labelled pixel it mapped; its classes count as the labels' classes of the same name (or `class_map`)."""
    from worker.pipelines.map_job import run_job

    cards = catalogue(settings.cache_dir)
    card = cards.get(request.model_id)
    labels, spec = labels_over_imagery(request, card, request.class_map, "--class-map", settings)
    to_label = to_legend(card.classes, labels.legend, request.class_map)
    if (to_label == len(labels.legend)).all():
        raise AppError(
            f"No class of {card.id} ({', '.join(c.name for c in card.classes)}) matches a label class "
            f"({', '.join(labels.legend)}); say which match with --class-map 'label class=model class,...'."
        )
    result = run_job(spec, work_dir / "map", settings, progress=progress)
    area = JobArea.of(spec)
    label_px = rasterise_labels(labels, area.grid, area.aoi_grid)
    with rasterio.open(result.out_dir / "classes.tif") as dataset:
        mapped = dataset.read(1)
    scored = (label_px != IGNORE) & (mapped != card.nodata_value)
    if not scored.any():
        raise LabelError(
            "No labelled pixel was mapped (outside the area, no data or cloud); nothing to score."
        )
    truth = label_px[scored].astype(np.int64)
    predicted = to_label[mapped[scored]]  # mapped[scored] holds class values only (no data was left out)
    rows_px, cols_px = np.nonzero(scored)
    xs, ys = rasterio.transform.xy(area.grid.transform, rows_px, cols_px)
    names = {info.value: info.name for info in card.classes}
    rows = [
        (float(x), float(y), labels.legend[t], names[int(m)])
        for x, y, t, m in zip(xs, ys, truth, mapped[scored], strict=True)
    ]
    return Evaluation(
        training.evaluate(truth, predicted, labels.legend), rows, area.grid.crs, result.selected_date
    )


@dataclass(frozen=True)
class SampleEvaluation:
    """A Presto crop model scored on a samples table: metrics on the samples its legend maps to one of its
    classes, and one row per sample (sample_id, ewoc_code, label under the legend or "", predicted class,
    probability of the predicted class)."""

    metrics: training.Metrics
    rows: list[tuple[str, int, str, str, float]]
    legend: str


def evaluate_samples(model_id: str, samples: Path, settings: Settings) -> SampleEvaluation:
    """Score model `model_id` (a Presto head model) on a WorldCereal samples parquet."""
    from core.crop_samples import read_samples_table, to_series
    from models.presto_heads import BUILDER, load_head_model

    cards = catalogue(settings.cache_dir)
    card = cards.require_weights(model_id)
    if card.builder != BUILDER:
        raise AppError(
            f"Model {model_id} does not read pixel time series; --samples scores Presto crop models "
            f"({', '.join(c.id for c in cards.cards.values() if c.builder == BUILDER)})."
        )
    if not samples.is_file():
        raise AppError(f"No samples file {samples.name}.")
    series = to_series(read_samples_table(str(samples)))
    model = load_head_model(card, cards.folder(model_id))
    legend_names, truth = model.labels(series)
    probabilities = model.probabilities(series)
    predicted = probabilities.argmax(axis=1)
    scored = truth >= 0
    if not scored.any():
        raise AppError(
            f"Every sample's class is 'ignore' under the legend {model.legend_name}; nothing to score."
        )
    rows = [
        (str(sid), int(code), name or "", model.classes[int(p)], float(probabilities[i, p]))
        for i, (sid, code, name, p) in enumerate(
            zip(series.sample_id, series.ewoc_code, legend_names, predicted, strict=True)
        )
    ]
    metrics = training.evaluate(truth[scored], predicted[scored], model.classes)
    return SampleEvaluation(metrics, rows, model.legend_name)


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


@dataclass(frozen=True)
class SamplesPlan:
    """What sample tables give a new crop head, before any model runs: the samples and the head's classes."""

    series: "SampleSeries"
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
    from core.crop_samples import concatenate, labels_under, read_samples_table, to_series
    from models.importing import check_model_id
    from models.presto_heads import BUILDER, model_classes, plan_classes, worldcereal_legends

    check_model_id(request.new_id)
    cards = catalogue(settings.cache_dir)
    if request.new_id in cards.cards and request.new_id not in cards.versions:
        raise AppError(
            f"A model {request.new_id} exists already and is not one trained here; choose another --as id."
        )
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
    training.check_legend(classes)
    return SamplesPlan(
        series, legend_name, classes, legend_classes, model_classes(names, legend_classes, classes)
    )


def train_from_samples(
    request: SamplesTrainRequest,
    settings: Settings,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> TrainResult:
    """Train a head on the base Presto model's encoder from WorldCereal sample tables, scored on held-out 0.1
    degree cells (against the base, when its classes cover the legend), installed as a new version."""
    from models.presto_heads import block_holdout, embeddings, load_head_model, spatial_blocks
    from models.training import HeadConfig, fit_head, install_version, utc_now

    run = RunContext(settings.cache_dir / "training" / f"{request.new_id}-samples", progress, should_stop)
    run.report(0.05, f"Reading {len(request.samples)} samples table(s)")
    plan = check_samples_request(request, settings)
    cards = catalogue(settings.cache_dir)
    base_card = cards.get(request.base_id)
    base = load_head_model(base_card, cards.folder(request.base_id))
    series, legend_name, classes, legend_classes, y = (
        plan.series,
        plan.legend_name,
        plan.classes,
        plan.legend_classes,
        plan.y,
    )
    held_out = block_holdout(spatial_blocks(series.latlon_deg), y, 0.25, request.seed)
    train = (y >= 0) & ~held_out
    train_counts = np.bincount(y[train], minlength=len(classes))
    val_counts = np.bincount(y[held_out], minlength=len(classes))
    warnings = training.check_samples(train_counts, val_counts, classes, unit="samples", few=10)
    run.report(0.15, f"Presto on {len(series)} samples")
    run.check_cancelled()
    features = embeddings(base.encoder, series, settings.device)
    run.report(0.5, f"Training a head for {len(classes)} classes on {int(train.sum())} samples")
    weights = training.class_weights(train_counts)
    config = HeadConfig(epochs=request.epochs, patience=request.epochs, seed=request.seed)
    epochs_run = run.within(0.5, 0.9, "Training")

    # No early stopping here (the recipe of the shipped heads): the per-epoch score is on the training samples.
    report_epoch = epoch_reporter(epochs_run, config.epochs, on_epoch, None)

    fitted = fit_head(
        features[train],
        y[train],
        features[train],
        y[train],
        classes,
        weights,
        config,
        report_epoch,
        run.check_cancelled,
        checkpoint_dir=run.work_dir,
    )
    metrics = training.evaluate(y[held_out], fitted.predict(features[held_out]), classes)
    parent_metrics = None
    if legend_name == base.legend_name and set(classes) <= set(base.classes):
        # the base on the same held-out samples, its classes as ours by name (one of its own is simply wrong)
        to_ours = np.array([classes.index(c) if c in classes else len(classes) for c in base.classes])
        predicted = to_ours[base.head(features[held_out]).argmax(axis=1)]
        parent_metrics = training.evaluate(y[held_out], predicted, classes)
    trained: dict[str, Any] = {
        "base": f"{base_card.id} {base_card.version}",
        "mode": "head",
        "samples": [p.name for p in request.samples],
        "legend": legend_name,
        "counts": {"train": int(train.sum()), "held_out": int(held_out.sum())},
        "seed": request.seed,
        "epochs": request.epochs,
        "best_epoch": fitted.best_epoch,
        "trained_at": utc_now(),
        "by": request.by or getpass.getuser(),
    }
    run.check_cancelled()  # nothing is installed after a cancel

    def write(staging: Path, version: str) -> ModelCard:
        import hashlib

        import torch

        weights_name = f"{request.new_id}-v{version}-head.pt"
        torch.save(
            {"weight": torch.from_numpy(fitted.weight.copy()), "bias": torch.from_numpy(fitted.bias.copy())},
            staging / weights_name,
        )
        palette = [c.color for c in base_card.classes] + ["#e7298a", "#66a61e", "#1b9e77", "#7570b3"]
        return base_card.replace(
            id=request.new_id,
            version=version,
            description=(
                f"Crops in {len(classes)} classes ({', '.join(classes)}) of the legend {legend_name}: the Presto "
                f"encoder of {base_card.id} with a head trained here on {len(series)} samples."
            ),
            classes=[asdict(ClassInfo(v, n, palette[v % len(palette)])) for v, n in enumerate(classes)],
            status="trained-here",
            provenance=f"Head trained by TerraSeg on {trained['trained_at']} from {base_card.id} "
            f"{base_card.version} on {', '.join(p.name for p in request.samples)}.",
            weights=[weights_name],
            weights_sha256={weights_name: hashlib.sha256((staging / weights_name).read_bytes()).hexdigest()},
            metrics={"held_out": metrics.model_dump()}
            | ({"base_on_held_out": parent_metrics.model_dump()} if parent_metrics else {}),
            training=trained,
            builder_args={k: v for k, v in base_card.builder_args.items() if k != "cropland_model"}
            | {"legend_classes": legend_classes},
            label_mapping=legend_name,
            default_for_task=False,
        )

    run.report(0.9, "Installing")
    folder, version, state = install_version(
        settings.cache_dir / "models", request.new_id, write, str(trained["by"])
    )
    return TrainResult(
        request.new_id,
        version,
        state,
        folder,
        metrics,
        parent_metrics,
        per_class(classes, train_counts),
        per_class(classes, val_counts),
        warnings,
    )


@dataclass(frozen=True)
class DatasetEvaluation:
    """A model scored on a patch dataset, and one row per patch for a predictions table (`header` names the
    columns: pixels scored, accuracy and the commonest true and predicted class; for tags, the true and the
    predicted tags)."""

    metrics: training.Metrics | training.MultiLabelMetrics
    header: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    legend: tuple[str, ...]


def evaluate_dataset(
    model_id: str,
    root: Path,
    fmt: str,
    class_map: dict[str, str],
    settings: Settings,
    progress: ProgressFn | None = None,
) -> DatasetEvaluation:
    """Run `model_id` on every patch of a dataset in its published layout (core.datasets) and score it on the
    labelled pixels (or each patch's tags); its classes count as the dataset's classes of the same name, or as
    `class_map` says."""
    from core.datasets import DatasetError, open_dataset
    from models.registry import LoadOptions, load

    dataset = open_dataset(root, fmt)
    cards = catalogue(settings.cache_dir)
    card = cards.require_weights(model_id)
    unknown = sorted(set(class_map) - set(dataset.legend))
    if unknown:
        raise AppError(
            f"--class-map names classes {fmt} does not have: {', '.join(unknown)} (it has {', '.join(dataset.legend)})."
        )
    to_label = to_legend(card.classes, dataset.legend, class_map)
    if (to_label == len(dataset.legend)).all():
        raise AppError(
            f"No class of {card.id} ({', '.join(c.name for c in card.classes)}) matches a {fmt} class "
            f"({', '.join(dataset.legend)}); say which match with --class-map 'dataset class=model class,...'."
        )
    kind = "multilabel" if card.output == "scene-tags" else "series" if card.is_series else "segmentation"
    if kind != dataset.kind or card.resolution_m != dataset.resolution_m or card.per_pixel:
        from core.datasets.types import KIND_WORDS

        raise DatasetError(
            f"{card.id} maps {KIND_WORDS[kind]} at {card.resolution_m:g} m; {fmt} patches are "
            f"{KIND_WORDS[dataset.kind]} at {dataset.resolution_m:g} m."
        )
    loaded = load(
        cards,
        model_id,
        LoadOptions(
            dataset.processing_level,
            frozenset(dataset.bands),
            device=settings.device,
            cache_dir=settings.cache_dir,
        ),
    )
    report = progress or (lambda fraction, message: None)
    truths, predictions = [], []
    rows: list[tuple[Any, ...]] = []
    for i, patch in enumerate(dataset.patches):
        sample = dataset.read(patch, loaded.card.bands)
        truth, guess = predict_patch(loaded, sample, to_label, dataset.legend)
        truths.append(truth)
        predictions.append(guess)
        if kind == "multilabel":
            named = [
                ";".join(n for n, t in zip(dataset.legend, tags, strict=True) if t)
                for tags in (truth[0], guess[0] >= 0.5)
            ]
            rows.append((patch.patch_id, *named))
        elif truth.size:
            rows.append(
                (
                    patch.patch_id,
                    int(truth.size),
                    f"{float((truth == guess).mean()):.4f}",
                    dataset.legend[int(np.bincount(truth).argmax())],
                    _class_name(int(np.bincount(guess).argmax()), dataset.legend),
                )
            )
        report((i + 1) / len(dataset.patches), f"Patches: {i + 1}/{len(dataset.patches)}")
    truth_all = np.concatenate(truths)
    if kind == "multilabel":
        metrics: training.Metrics | training.MultiLabelMetrics = training.evaluate_multilabel(
            truth_all, np.concatenate(predictions), dataset.legend
        )
        return DatasetEvaluation(metrics, ("patch", "true_tags", "predicted_tags"), rows, dataset.legend)
    if truth_all.size == 0:
        raise DatasetError(f"No patch of {root} has a labelled pixel with valid data; nothing to score.")
    metrics = training.evaluate(truth_all, np.concatenate(predictions), dataset.legend)
    header = ("patch", "pixels", "accuracy", "commonest_true", "commonest_predicted")
    return DatasetEvaluation(metrics, header, rows, dataset.legend)


def predict_patch(
    loaded: "LoadedModel", sample: "PatchSample", to_label: np.ndarray, legend: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """A model on one patch: the labelled valid pixels' classes and the model's there (its classes mapped by
    `to_label`), or for tags (1, K) true tags and (1, K) probabilities in the dataset's legend."""
    from core.datasets import IGNORE as DATASET_IGNORE
    from core.inference import normalise
    from core.tiling import fill_nodata, pad_tile
    from models.seed_training import CALLING

    card = loaded.card
    x = fill_nodata(normalise(sample.image, card.normalisation), sample.valid, card.nodata_fill)
    if card.output == "scene-tags":
        scores = loaded.predict(x[None])[0]
        mapped = np.zeros(len(legend), np.float32)
        for value, target in enumerate(to_label):
            if target < len(legend):
                mapped[target] = max(mapped[target], scores[value])
        return sample.target[None].astype(bool), mapped[None]
    height, width = sample.target.shape
    multiple = CALLING.get(card.builder, ("image", 32))[1]  # Dynamic World halves the image 5 times
    size = -(-max(height, width) // multiple) * multiple
    if loaded.for_dates is not None:
        scores = loaded.for_dates(list(sample.dates))(pad_tile(x, size)[None])[0, :, :height, :width]
        valid = sample.valid.any(axis=0)
    else:
        scores = loaded.predict(pad_tile(x, size)[None])[0, :, :height, :width]
        valid = sample.valid
    predicted = to_label[scores.argmax(axis=0)]
    scored = (sample.target != DATASET_IGNORE) & valid
    return sample.target[scored].astype(np.int64), predicted[scored]


def _class_name(value: int, legend: tuple[str, ...]) -> str:
    """A legend class, or what a prediction without a counterpart in the legend is called."""
    return legend[value] if value < len(legend) else "(no counterpart)"


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


def check_dataset_request(request: DatasetTrainRequest, settings: Settings) -> "PatchDataset":
    """The new id, the base, the dataset's layout and the class matches, checked before any model runs."""
    from core.datasets import open_dataset
    from models.catalogue import SEED_BUILDERS, check_trainable
    from models.importing import check_model_id

    check_model_id(request.new_id)
    cards = catalogue(settings.cache_dir)
    if request.new_id in cards.cards and request.new_id not in cards.versions:
        raise AppError(
            f"A model {request.new_id} exists already and is not one trained here; choose another --as id."
        )
    if request.epochs < 1 or not 0 < request.val_fraction < 1:
        raise AppError("--epochs must be at least 1 and the validation fraction between 0 and 1.")
    check_trainable(cards, request.base_id, request.mode, built=("head", "decoder", "full"))
    dataset = open_dataset(request.dataset, request.format)
    base = cards.get(request.base_id)
    if base.builder in SEED_BUILDERS:
        from worker.pipelines.training_seeds import check_seed_dataset

        check_seed_dataset(base, dataset)
    elif dataset.kind != "segmentation" or dataset.resolution_m != base.resolution_m:
        from core.datasets.types import KIND_WORDS

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
    from worker.pipelines.training_seeds import dataset_classes, unit_of

    dataset = check_dataset_request(request, settings)
    is_val = training.patch_split(
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


def train_from_dataset(
    request: DatasetTrainRequest,
    settings: Settings,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> TrainResult:
    """Train a head on the base's features at the labelled pixels of a patch dataset (core.datasets); whole
    patches are held out for validation, where the new head and the parent are scored on the same pixels."""
    from core.datasets import IGNORE as DATASET_IGNORE
    from core.inference import normalise
    from core.tiling import fill_nodata, pad_tile
    from models.training import HeadConfig, feature_network, fit_head, utc_now

    dataset = check_dataset_request(request, settings)
    cards = catalogue(settings.cache_dir)
    base = cards.get(request.base_id)
    if base.builder != "dynamic-world":  # a seed architecture, trained whole
        from worker.pipelines.training_seeds import train_seed_from_dataset

        return train_seed_from_dataset(request, dataset, settings, progress, should_stop, on_epoch)
    network = feature_network(cards, request.base_id, "head")
    run = RunContext(settings.cache_dir / "training" / f"{request.new_id}-dataset", progress, should_stop)
    rng = np.random.default_rng(request.seed)
    is_val_patch = training.patch_split([p.group for p in dataset.patches], request.val_fraction, rng)
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
    # The new legend: the dataset's classes that have training pixels (a release rarely holds all of them).
    present = sorted(set(y_full[~val].tolist()))
    legend = tuple(dataset.legend[v] for v in present)
    training.check_legend(legend)
    to_new = np.full(len(dataset.legend), -1, np.int64)
    to_new[present] = np.arange(len(present))
    y = to_new[y_full]
    kept = (
        y >= 0
    )  # validation pixels of a class no training patch has cannot be learnt: left out, and counted
    n_classes = len(legend)
    train_counts = training.class_counts(np.where(val | ~kept, IGNORE, y).astype(np.uint8), n_classes)
    val_counts = training.class_counts(np.where(val & kept, y, IGNORE).astype(np.uint8), n_classes)
    warnings = training.check_samples(train_counts, val_counts, legend)
    dropped = int((val & ~kept).sum())
    if dropped:
        warnings.append(
            f"{dropped} validation pixels are of classes no training patch has; they are not scored."
        )
    train_x, train_y = x[~val & kept], y[~val & kept]
    val_x, val_y = x[val & kept], y[val & kept]
    if len(val_y) == 0:
        raise LabelError(
            "No validation pixel is left; give a dataset with more patches or raise --val-fraction."
        )
    # The head alone takes --epochs; before fine-tuning, it is the starting point and takes the usual 200.
    config = HeadConfig(epochs=request.epochs if request.mode == "head" else 200, seed=request.seed)
    epochs_run = run.within(0.6, 0.95 if request.mode == "head" else 0.7, "Training")

    report_epoch = epoch_reporter(epochs_run, config.epochs, on_epoch, "val macro F1")

    fitted = fit_head(
        train_x,
        train_y,
        val_x,
        val_y,
        legend,
        training.class_weights(train_counts),
        config,
        report_epoch if request.mode == "head" else None,
        run.check_cancelled,
        checkpoint_dir=run.work_dir,
    )
    tuned = None
    if request.mode == "head":
        metrics = training.evaluate(val_y, fitted.predict(val_x), legend)
        parent_metrics = parent_scores(network, base.classes, val_x, val_y, legend, request.parent_classes)
    else:
        tuned, metrics, parent_metrics = tune_on_patches(
            request,
            dataset,
            base,
            network,
            fitted,
            legend,
            present,
            is_val_patch,
            train_counts,
            run,
            on_epoch,
        )
    record = {
        "base": base.id,
        "base_version": base.version,
        "mode": request.mode,
        "dataset": f"{request.format}: {request.dataset.name}",
        # the sampled labels, the split and the patches' ids: what this head learnt from
        "dataset_sha256": training.dataset_hash(y_full, val, [p.patch_id for p in dataset.patches], base.id),
        "patches": {"train": int((~is_val_patch).sum()), "validation": int(is_val_patch.sum())},
        "processing_level": "L1C",
        "train_pixels": per_class(legend, train_counts),
        "val_pixels": per_class(legend, val_counts),
        "pixels_per_patch": request.pixels_per_patch,
        "seed": request.seed,
        "epochs": request.epochs,
        "best_epoch": fitted.best_epoch if tuned is None else tuned.best_epoch,
        "parent_classes": request.parent_classes,
        "trained_at": utc_now(),
        "by": request.by or getpass.getuser(),
    }
    scores = HeldOut(legend, metrics, parent_metrics, train_counts, val_counts, warnings)
    return install_head(
        run, network, fitted, base, request.new_id, record, scores, settings, tuned.state if tuned else None
    )


def tune_on_patches(
    request: DatasetTrainRequest,
    dataset: "PatchDataset",
    base: ModelCard,
    network: "FeatureNetwork",
    fitted: "FittedHead",
    legend: tuple[str, ...],
    present: list[int],
    is_val_patch: np.ndarray,
    train_counts: np.ndarray,
    run: RunContext,
    on_epoch: Callable[[int, float, float], None] | None,
) -> tuple["TunedNetwork", training.Metrics, training.Metrics | None]:
    """Fine-tune the base with its new head (`fitted`, the starting point) on whole patches (`request.mode`:
    decoder or full), then score it and the untouched parent on every labelled pixel of the validation patches."""
    from core.datasets import IGNORE as DATASET_IGNORE
    from core.inference import normalise
    from core.tiling import fill_nodata, pad_tile

    to_new = np.full(len(dataset.legend) + 1, DATASET_IGNORE, np.int64)
    to_new[present] = np.arange(len(present))
    sizes = {dataset.read(p, base.bands[:1]).target.shape for p in dataset.patches}
    if len(sizes) != 1:
        raise AppError(f"--mode {request.mode} needs patches of one size; this dataset has {sorted(sizes)}.")
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
    train_ids = [i for i in ids if not is_val_patch[i]]
    val_ids = [i for i in ids if is_val_patch[i]]
    tuning = Tuning(request.mode, request.epochs, request.seed, legend, request.parent_classes, train_counts)
    return tune_network(tuning, network, fitted, base, patch_arrays, train_ids, val_ids, run, on_epoch)


@dataclass(frozen=True)
class Tuning:
    """What a decoder or full fine-tune after the new head is asked: mode, epochs, seed, the new legend, how the
    parent's classes match it, and the training samples per class (for the class weights)."""

    mode: str
    epochs: int
    seed: int
    legend: tuple[str, ...]
    parent_classes: dict[str, str]
    train_counts: np.ndarray


def tune_network(
    tuning: Tuning,
    network: "FeatureNetwork",
    fitted: "FittedHead",
    base: ModelCard,
    patch_arrays: Callable[[int], tuple[np.ndarray, np.ndarray]],
    train_ids: list[int],
    val_ids: list[int],
    run: RunContext,
    on_epoch: Callable[[int, float, float], None] | None,
) -> tuple["TunedNetwork", training.Metrics, training.Metrics | None]:
    """Give the base's network the new head, fine-tune it on `train_ids` (`patch_arrays(i)`: (C, S, S) input
    and (S, S) labels, 255 unlabelled) with early stopping on `val_ids`, then score it and the untouched parent
    on every labelled pixel of the validation samples."""
    import copy

    import torch
    from torch import nn

    from core.datasets import IGNORE as DATASET_IGNORE
    from models.training import TuneConfig, fine_tune

    legend = tuning.legend
    parent = copy.deepcopy(network.module)
    module = network.module
    head = nn.Conv2d(fitted.weight.shape[1], len(legend), 1)
    head.weight = nn.Parameter(torch.from_numpy(fitted.weight.copy())[:, :, None, None])
    head.bias = nn.Parameter(torch.from_numpy(fitted.bias.copy()))
    module.head = head
    config = TuneConfig(epochs=tuning.epochs, seed=tuning.seed)
    epochs_run = run.within(0.7, 0.95, "Fine-tuning")

    report_epoch = epoch_reporter(epochs_run, config.epochs, on_epoch, "val macro F1")

    tuned = fine_tune(
        module,
        tuning.mode,
        patch_arrays,
        train_ids,
        val_ids,
        legend,
        training.class_weights(tuning.train_counts),
        config,
        report_epoch,
        run.check_cancelled,
        checkpoint_dir=run.work_dir,
    )
    to_parent_legend = to_legend(base.classes, legend, tuning.parent_classes)
    truths, ours, theirs = [], [], []
    with torch.no_grad():
        for i in val_ids:
            x, y = patch_arrays(i)
            batch = torch.from_numpy(x)[None]
            labelled = y != DATASET_IGNORE
            truths.append(y[labelled])
            ours.append(module(batch).argmax(dim=1)[0].numpy()[labelled])
            theirs.append(to_parent_legend[parent(batch).argmax(dim=1)[0].numpy()][labelled])
    truth = np.concatenate(truths)
    metrics = training.evaluate(truth, np.concatenate(ours), legend)
    parent_metrics = None
    if not (to_parent_legend == len(legend)).all():
        parent_metrics = training.evaluate(truth, np.concatenate(theirs), legend)
    return tuned, metrics, parent_metrics
