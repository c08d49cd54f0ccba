"""What a fit minimises and watches (models.training.loop.Objective): the losses and validation scores of the
kinds of training. Targets: (B, H, W) int64 classes with IGNORE_INDEX for segmentation (a linear head's (N,)
classes are the same with one pixel per sample), (B, K) float 0/1 for tags."""

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from core.learning.metrics import class_weights, evaluate, evaluate_multilabel
from models.cloud_unet import soft_fbeta_loss
from models.training.loop import Objective

IGNORE_INDEX = 255
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(weights: np.ndarray) -> Loss:
    """Class-weighted cross-entropy that skips unlabelled pixels."""
    weight = torch.from_numpy(np.asarray(weights, np.float32))

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, weight=weight.to(logits.device), ignore_index=IGNORE_INDEX)

    return loss


def soft_fbeta_and_cross_entropy(weights: np.ndarray, cloud_class: int, beta: float = 2.0) -> Loss:
    """The cloud seed's loss: 1 - soft F-beta of the cloud class (beta 2: a missed cloud costs four times a false
    alarm) plus 0.1 x the weighted cross-entropy, which starts training well (models.cloud_unet)."""
    ce = cross_entropy(weights)

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if cloud_class != 1 or logits.shape[1] != 2:
            raise ValueError("the soft F-beta loss is for two classes, clear 0 and cloud 1")
        return soft_fbeta_loss(logits, target, beta) + 0.1 * ce(logits, target)

    return loss


def binary_cross_entropy(positives: np.ndarray, samples: int) -> Loss:
    """Multi-label BCE on logits (BigEarthNet's loss), each class's positives weighted up to balance its
    negatives (at most 10x, so a class seen twice does not dominate)."""
    ratio = (samples - positives) / np.maximum(positives, 1)
    pos_weight = torch.from_numpy(np.clip(ratio, 1.0, 10.0).astype(np.float32))

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight.to(logits.device))

    return loss


def collect_pixels(logits: torch.Tensor, target: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The labelled pixels' classes and the argmax predictions there."""
    labelled = target != IGNORE_INDEX
    return target[labelled].cpu().numpy(), logits.argmax(dim=1)[labelled].cpu().numpy()


def collect_tags(logits: torch.Tensor, target: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Each patch's tags (bool) and its per-class probabilities."""
    return target.cpu().numpy() > 0.5, torch.sigmoid(logits).cpu().numpy()


def macro_f1(legend: tuple[str, ...], weights: np.ndarray) -> Objective:
    """Class-weighted cross-entropy, and the validation macro F1."""
    return Objective(
        cross_entropy(weights),
        collect_pixels,
        lambda truth, guess: evaluate(truth, guess, legend).macro_f1,
        "val macro F1",
    )


def objective_for(
    kind: str, legend: tuple[str, ...], counts: np.ndarray, n_samples: int, builder: str
) -> Objective:
    """The loss and validation score of a task: soft F2 + cross-entropy and the cloud class's F2 for the cloud
    UNet; BCE and mean average precision for tags; class-weighted cross-entropy and macro F1 otherwise."""
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
    return macro_f1(legend, weights)
