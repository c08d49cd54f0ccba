"""Scoring a model as it is: a job's map against labels over imagery (`terraseg evaluate --labels`), a Presto
crop model on a samples table (`--samples`), and any model on a patch dataset in its published layout
(`--dataset`)."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio

from core.config import Settings
from core.errors import AppError
from core.geometry.tiling import fill_nodata, pad_tile
from core.jobs.progress import ProgressFn
from core.jobs.request import JobArea
from core.learning import metrics as scoring
from core.learning.crop_samples import read_samples_table, to_series
from core.learning.datasets import IGNORE as DATASET_IGNORE
from core.learning.datasets import DatasetError, PatchSample, open_dataset
from core.learning.datasets.types import KIND_WORDS
from core.learning.labels import IGNORE, LabelError, rasterise_labels
from core.learning.metrics import to_legend
from core.mapping.inference import normalise
from models.catalogue import catalogue
from worker.pipelines.training_checks import LabelledArea, labels_over_imagery

if TYPE_CHECKING:
    from models.registry import LoadedModel


@dataclass(frozen=True, kw_only=True)
class EvaluateRequest(LabelledArea):
    """What `terraseg evaluate` was asked: a model, and labels over the imagery of an area and dates."""

    model_id: str
    class_map: dict[str, str] = field(default_factory=dict)  # label class -> the model's class it matches


@dataclass(frozen=True)
class Evaluation:
    """A model's map scored against labels, and each scored pixel for a predictions table."""

    metrics: scoring.Metrics
    rows: list[tuple[float, float, str, str]]  # x, y (the grid's CRS), true class, predicted class
    crs: str
    date: str


def evaluate_model(
    request: EvaluateRequest, settings: Settings, work_dir: Path, progress: ProgressFn | None = None
) -> Evaluation:
    """Run `request.model_id` as a job does over the area (clearest date, clouds masked) and score its map on
    every labelled pixel it mapped; its classes count as the labels' classes of the same name (or `class_map`)."""
    from worker.pipelines.map_job import run_job  # torch: kept out of the web app's process

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
        scoring.evaluate(truth, predicted, labels.legend), rows, area.grid.crs, result.selected_date
    )


@dataclass(frozen=True)
class SampleEvaluation:
    """A Presto crop model scored on a samples table: metrics on the samples its legend maps to one of its
    classes, and one row per sample (sample_id, ewoc_code, label under the legend or "", predicted class,
    probability of the predicted class)."""

    metrics: scoring.Metrics
    rows: list[tuple[str, int, str, str, float]]
    legend: str


def evaluate_samples(model_id: str, samples: Path, settings: Settings) -> SampleEvaluation:
    """Score model `model_id` (a Presto head model) on a WorldCereal samples parquet."""
    from models.presto_heads import BUILDER, load_head_model  # torch: kept out of the web app's process

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
    metrics = scoring.evaluate(truth[scored], predicted[scored], model.classes)
    return SampleEvaluation(metrics, rows, model.legend_name)


@dataclass(frozen=True)
class DatasetEvaluation:
    """A model scored on a patch dataset, and one row per patch for a predictions table (`header` names the
    columns: pixels scored, accuracy and the commonest true and predicted class; for tags, the true and the
    predicted tags)."""

    metrics: scoring.Metrics | scoring.MultiLabelMetrics
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
    """Run `model_id` on every patch of a dataset in its published layout (core.learning.datasets) and score it on the
    labelled pixels (or each patch's tags); its classes count as the dataset's classes of the same name, or as
    `class_map` says."""
    from models.registry import LoadOptions, load  # torch: kept out of the web app's process

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
        metrics: scoring.Metrics | scoring.MultiLabelMetrics = scoring.evaluate_multilabel(
            truth_all, np.concatenate(predictions), dataset.legend
        )
        return DatasetEvaluation(metrics, ("patch", "true_tags", "predicted_tags"), rows, dataset.legend)
    if truth_all.size == 0:
        raise DatasetError(f"No patch of {root} has a labelled pixel with valid data; nothing to score.")
    metrics = scoring.evaluate(truth_all, np.concatenate(predictions), dataset.legend)
    header = ("patch", "pixels", "accuracy", "commonest_true", "commonest_predicted")
    return DatasetEvaluation(metrics, header, rows, dataset.legend)


def predict_patch(
    loaded: "LoadedModel", sample: PatchSample, to_label: np.ndarray, legend: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """A model on one patch: the labelled valid pixels' classes and the model's there (its classes mapped by
    `to_label`), or for tags (1, K) true tags and (1, K) probabilities in the dataset's legend."""
    from models.training.seeds import CALLING  # torch: kept out of the web app's process

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
