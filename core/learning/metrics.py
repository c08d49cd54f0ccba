"""Training data and evaluation, without a deep-learning framework: spatial splits, sample checks, metrics, and the
features a frozen network gives at labelled pixels (the network comes in as a callable, as in core.mapping.inference).
"""

import hashlib
from collections.abc import Callable

import numpy as np
from pydantic import BaseModel

from core.geometry.tiling import Tile, TileLayout, blend_weights
from core.jobs.progress import RunContext
from core.learning.labels import IGNORE, LabelError
from core.mapping.inference import ReadWindow, prepare_tile
from core.types import ClassInfo, ModelCard

# Fewer training samples than this in a class gets a warning before training.
FEW_SAMPLES = 50
Features = Callable[[np.ndarray], np.ndarray]  # (B, C, S, S) normalised input -> (B, F, S, S) features


def block_split(labels: np.ndarray, block_px: int, val_fraction: float, seed: int) -> np.ndarray:
    """A validation mask over `labels` made of whole square blocks, so no two neighbouring pixels sit on both sides.

    Blocks (`block_px` wide, on the grid) are taken in a seeded random order until they hold `val_fraction` of
    the labelled pixels. Returns (H, W) bool, True for validation.
    """
    height, width = labels.shape
    block_rows, block_cols = -(-height // block_px), -(-width // block_px)
    block_of = (np.arange(height)[:, None] // block_px) * block_cols + np.arange(width)[None, :] // block_px
    labelled = labels != IGNORE
    per_block = np.bincount(block_of[labelled], minlength=block_rows * block_cols)
    order = np.random.default_rng(seed).permutation(block_rows * block_cols)
    order = order[per_block[order] > 0]
    target = val_fraction * labelled.sum()
    taken, chosen = 0, []
    for block in order:
        if taken >= target:
            break
        chosen.append(block)
        taken += per_block[block]
    return np.isin(block_of, chosen)


def patch_split(groups: list[str], val_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """(N,) bool, True for the patches held out for validation. Patches of one group (a scene, a product, a
    fold) neighbour each other, so whole groups are held out, in a seeded order, until they hold `val_fraction`
    of the patches (at least one group stays for training). With one group, single patches are held out."""
    names = sorted(set(groups))
    is_val = np.zeros(len(groups), bool)
    target = max(1, round(val_fraction * len(groups)))
    if len(names) < 2:
        is_val[rng.permutation(len(groups))[:target]] = True
        return is_val
    members = np.array(groups)
    for k in rng.permutation(len(names))[: len(names) - 1]:
        if is_val.sum() >= target:
            break
        is_val |= members == names[k]
    return is_val


def class_counts(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Pixels per class (IGNORE skipped)."""
    return np.bincount(labels[labels != IGNORE].astype(np.int64), minlength=n_classes)[:n_classes]


def check_legend(legend: tuple[str, ...]) -> None:
    """A classifier needs two classes at least (checked before any imagery is fetched)."""
    if len(legend) < 2:
        raise LabelError(
            f"The labels hold one class only ({legend[0]!r}); a classifier needs at least two. Label other "
            "classes too."
        )


def check_samples(
    train: np.ndarray, val: np.ndarray, legend: tuple[str, ...], unit: str = "pixels", few: int = FEW_SAMPLES
) -> list[str]:
    """Refuse what cannot be trained (one class, a class without training samples); warn about thin classes."""
    check_legend(legend)
    empty = [name for name, count in zip(legend, train, strict=True) if count == 0]
    if empty:
        raise LabelError(
            f"No training {unit.rstrip('s')} for {', '.join(repr(n) for n in empty)}: their labels lie outside the "
            "area, under clouds or in the validation blocks only. Label more of them inside the area, or leave the "
            "class out."
        )
    return [
        f"Only {count} training {unit} for {name!r} (fewer than {few}): its metrics will be shaky."
        for name, count in zip(legend, train, strict=True)
        if count < few
    ] + [
        f"No validation {unit.rstrip('s')} for {name!r}."
        for name, count in zip(legend, val, strict=True)
        if count == 0
    ]


def class_weights(counts: np.ndarray) -> np.ndarray:
    """Inverse-frequency weights, mean 1 over the classes present (so rare classes are not drowned)."""
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max(1, (counts > 0).sum()), 0.0)
    return (weights / weights[counts > 0].mean()).astype(np.float32)


class ClassMetrics(BaseModel):
    """One class's scores on the validation pixels."""

    name: str
    support: int
    precision: float
    recall: float
    f1: float
    iou: float
    # F2 weighs recall four times as much as precision: what cloud masks are judged by (a missed cloud spoils a
    # map, a false one costs a pixel). 0 in records made before it was computed.
    f2: float = 0.0


class Metrics(BaseModel):
    """Scores of predictions against labels; the confusion matrix is rows = truth, columns = prediction."""

    samples: int
    overall_accuracy: float
    balanced_accuracy: float
    macro_f1: float
    miou: float
    per_class: list[ClassMetrics]
    confusion: list[list[int]]

    def summary(self, unit: str = "pixels") -> str:
        """One line: 'OA 0.912, balanced 0.874, macro F1 0.861, mIoU 0.771 on 1,234 pixels' (with the cloud
        class's F2 when the legend has a class named cloud)."""
        cloud = [f", cloud F2 {c.f2:.3f}" for c in self.per_class if c.name.lower() == "cloud"]
        return (
            f"OA {self.overall_accuracy:.3f}, balanced {self.balanced_accuracy:.3f}, macro F1 "
            f"{self.macro_f1:.3f}, mIoU {self.miou:.3f}{''.join(cloud)} on {self.samples:,} {unit}"
        )


def evaluate(truth: np.ndarray, predicted: np.ndarray, legend: tuple[str, ...]) -> Metrics:
    """Metrics of `predicted` class values against `truth` (1-D arrays; a prediction outside the legend, e.g.
    a parent class with no counterpart, is simply wrong). Means are over classes present in `truth`."""
    n = len(legend)
    inside = predicted < n
    confusion = np.zeros((n, n), np.int64)
    np.add.at(confusion, (truth[inside], predicted[inside]), 1)
    support = np.bincount(truth, minlength=n)[:n]
    hits = np.diag(confusion)
    predicted_as = confusion.sum(axis=0)
    precision = np.divide(hits, predicted_as, out=np.zeros(n), where=predicted_as > 0)
    recall = np.divide(hits, support, out=np.zeros(n), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n), where=precision + recall > 0)
    f2 = np.divide(
        5 * precision * recall, 4 * precision + recall, out=np.zeros(n), where=4 * precision + recall > 0
    )
    union = support + predicted_as - hits
    iou = np.divide(hits, union, out=np.zeros(n), where=union > 0)
    present = support > 0
    return Metrics(
        samples=int(truth.size),
        overall_accuracy=float(hits.sum() / max(1, truth.size)),
        balanced_accuracy=float(recall[present].mean()) if present.any() else 0.0,
        macro_f1=float(f1[present].mean()) if present.any() else 0.0,
        miou=float(iou[present].mean()) if present.any() else 0.0,
        per_class=[
            ClassMetrics(
                name=legend[k],
                support=int(support[k]),
                precision=float(precision[k]),
                recall=float(recall[k]),
                f1=float(f1[k]),
                iou=float(iou[k]),
                f2=float(f2[k]),
            )
            for k in range(n)
        ],
        confusion=confusion.tolist(),
    )


class TagMetrics(BaseModel):
    """One class's scores in a multi-label evaluation (a patch has the class or not)."""

    name: str
    support: int  # patches that have the class
    average_precision: float  # area under the precision-recall curve of the class's scores
    precision: float  # at the threshold
    recall: float
    f1: float


class MultiLabelMetrics(BaseModel):
    """Scores of per-class probabilities against each patch's set of classes (BigEarthNet's measures): mean
    average precision over the classes present, and micro and macro F1 at `threshold`."""

    samples: int
    threshold: float
    mean_average_precision: float
    micro_precision: float
    micro_recall: float
    micro_f1: float
    macro_f1: float
    per_class: list[TagMetrics]

    def summary(self, unit: str = "patches") -> str:
        """One line: 'mAP 0.812, micro F1 0.734, macro F1 0.655 on 1,234 patches'."""
        return (
            f"mAP {self.mean_average_precision:.3f}, micro F1 {self.micro_f1:.3f}, macro F1 {self.macro_f1:.3f} "
            f"on {self.samples:,} {unit}"
        )


def average_precision(truth: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve, summed over distinct score thresholds from the highest:
    sum over thresholds of (recall gained) x (precision there). `truth` (N,) bool, `scores` (N,) float."""
    positives = int(truth.sum())
    if positives == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    ranked_scores, ranked_truth = scores[order], truth[order]
    hits = np.cumsum(ranked_truth)
    # the last index of each run of equal scores: a threshold takes all tied samples at once
    last = np.r_[np.nonzero(np.diff(ranked_scores))[0], len(scores) - 1]
    precision = hits[last] / (last + 1)
    recall = hits[last] / positives
    gained = np.diff(np.r_[0.0, recall])
    return float((gained * precision).sum())


def evaluate_multilabel(
    truth: np.ndarray, scores: np.ndarray, legend: tuple[str, ...], threshold: float = 0.5
) -> MultiLabelMetrics:
    """Metrics of (N, K) class probabilities `scores` against (N, K) bool `truth`; macro means are over the
    classes some patch has."""
    if truth.shape != scores.shape or truth.shape[1] != len(legend):
        raise ValueError(f"truth {truth.shape} and scores {scores.shape} must both be (N, {len(legend)})")
    predicted = scores >= threshold
    tp = (predicted & truth).sum(axis=0)
    fp = (predicted & ~truth).sum(axis=0)
    support = truth.sum(axis=0)
    precision = np.divide(tp, tp + fp, out=np.zeros(len(legend)), where=tp + fp > 0)
    recall = np.divide(tp, support, out=np.zeros(len(legend)), where=support > 0)
    f1 = np.divide(
        2 * precision * recall, precision + recall, out=np.zeros(len(legend)), where=precision + recall > 0
    )
    ap = np.array([average_precision(truth[:, k], scores[:, k]) for k in range(len(legend))])
    present = support > 0
    micro_p = float(tp.sum() / max(1, tp.sum() + fp.sum()))
    micro_r = float(tp.sum() / max(1, support.sum()))
    return MultiLabelMetrics(
        samples=int(truth.shape[0]),
        threshold=threshold,
        mean_average_precision=float(ap[present].mean()) if present.any() else 0.0,
        micro_precision=micro_p,
        micro_recall=micro_r,
        micro_f1=2 * micro_p * micro_r / (micro_p + micro_r) if micro_p + micro_r > 0 else 0.0,
        macro_f1=float(f1[present].mean()) if present.any() else 0.0,
        per_class=[
            TagMetrics(
                name=legend[k],
                support=int(support[k]),
                average_precision=float(ap[k]),
                precision=float(precision[k]),
                recall=float(recall[k]),
                f1=float(f1[k]),
            )
            for k in range(len(legend))
        ],
    )


def labelled_features(
    read: ReadWindow,
    layout: TileLayout,
    card: ModelCard,
    features: Features,
    samples: np.ndarray,
    run: RunContext,
    batch_size: int = 4,
) -> np.ndarray:
    """The network's features at labelled pixels, blended across overlapping tiles as inference blends scores.

    Args:
        samples: (H, W) int64 on `layout.grid`: the sample index of each labelled pixel, -1 elsewhere.
    Returns:
        (N, F) float32 features for samples 0..N-1; a row is NaN where no tile saw the pixel with valid data.
    """
    n_samples = int(samples.max()) + 1
    size = layout.size
    weights = blend_weights(size, min(layout.overlap, size // 2))
    sums: np.ndarray | None = None
    weight_sums = np.zeros(n_samples, np.float64)

    def has_samples(tile: Tile) -> bool:
        rows = slice(int(tile.out.row_off), int(tile.out.row_off + tile.out.height))
        cols = slice(int(tile.out.col_off), int(tile.out.col_off + tile.out.width))
        return bool((samples[rows, cols] >= 0).any())

    tiles = [t for t in layout.tiles if has_samples(t)]
    for start in range(0, len(tiles), batch_size):
        run.check_cancelled()
        batch = tiles[start : start + batch_size]
        prepared = [prepare_tile(read, t.read, card, size, 1) for t in batch]
        output = features(np.stack([tile for tile, _ in prepared]))
        if sums is None:
            sums = np.zeros((n_samples, output.shape[1]), np.float64)
        for tile, (_, valid), tile_features in zip(batch, prepared, output, strict=True):
            rows = slice(tile.row_in_tile, tile.row_in_tile + int(tile.out.height))
            cols = slice(tile.col_in_tile, tile.col_in_tile + int(tile.out.width))
            out_rows = slice(int(tile.out.row_off), int(tile.out.row_off + tile.out.height))
            out_cols = slice(int(tile.out.col_off), int(tile.out.col_off + tile.out.width))
            index = samples[out_rows, out_cols]
            keep = (index >= 0) & valid[rows, cols]
            w = weights[rows, cols][keep]
            np.add.at(sums, index[keep], (tile_features[:, rows, cols][:, keep] * w).T)
            np.add.at(weight_sums, index[keep], w)
        run.report((start + len(batch)) / len(tiles), f"features of tiles {start + len(batch)}/{len(tiles)}")
    if sums is None:
        raise LabelError("No labelled pixel has image data under it; label pixels the scenes cover.")
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums / weight_sums[:, None]).astype(np.float32)


def dataset_hash(labels: np.ndarray, val: np.ndarray, scenes: list[str], base: str) -> str:
    """A content hash of what a model was trained on: label raster, split, the scenes' ids and the base."""
    digest = hashlib.sha256()
    digest.update(labels.tobytes())
    digest.update(np.packbits(val).tobytes())
    digest.update("\n".join([base, *sorted(scenes)]).encode())
    return digest.hexdigest()


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
