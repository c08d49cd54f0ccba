"""A trainable cloud UNet, the cloud_detection seed's approach: a UNet on 10 m RGB + NIR trained with a soft
F-beta loss (F1 balances missed clouds and false alarms; F2 weighs recall, i.e. missing a cloud costs more).

It sits beside the two pretrained cloud models (cloud-csmask, cloud-s2cloudless) for users who have their own
labels: it has no weights until someone trains it (status "untrained"), and the pipeline refuses to run it
until then.
"""

import torch
import torch.nn.functional as F
from torch import nn

from models.unet import UNet

BANDS = ("B02", "B03", "B04", "B08")
CLASSES = ("clear", "cloud")
IGNORE_INDEX = 255


def build_cloud_unet(
    base_width: int = 32, levels: int = 4, in_channels: int = len(BANDS), n_classes: int = len(CLASSES)
) -> UNet:
    """(B, 4, H, W) reflectance (B02 B03 B04 B08) -> (B, 2, H, W) logits (clear, cloud); H, W divisible by 2**levels.
    A model trained here on other bands or classes records them in its card's builder_args."""
    return UNet(in_channels, n_classes, base_width=base_width, levels=levels)


def soft_fbeta_loss(
    logits: torch.Tensor, target: torch.Tensor, beta: float = 1.0, eps: float = 1e-6
) -> torch.Tensor:
    """1 - soft F-beta of the cloud class, over a batch.

    Args:
        logits: (B, 2, H, W) clear/cloud logits.
        target: (B, H, W) int64 labels, 0 clear, 1 cloud, IGNORE_INDEX (255) not labelled.
        beta: 1 for F1, 2 for F2 (recall counts four times as much as precision).

    Soft counts use the cloud probability instead of a thresholded mask, so the loss is differentiable:
    tp = sum(p * y), fp = sum(p * (1 - y)), fn = sum((1 - p) * y), F = (1 + b^2) tp / ((1 + b^2) tp + b^2 fn + fp).
    """
    valid = (target != IGNORE_INDEX).float()
    cloud = (target == 1).float()
    probability = torch.softmax(logits.float(), dim=1)[:, 1]
    tp = (probability * cloud * valid).sum()
    fp = (probability * (1 - cloud) * valid).sum()
    fn = ((1 - probability) * cloud * valid).sum()
    b2 = beta * beta
    fbeta = ((1 + b2) * tp + eps) / ((1 + b2) * tp + b2 * fn + fp + eps)
    return 1 - fbeta


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    target: torch.Tensor,
    beta: float = 1.0,
) -> float:
    """One optimisation step on a batch; returns the loss (soft F-beta plus a light cross-entropy to start well)."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    logits = model(images)
    loss = soft_fbeta_loss(logits, target, beta) + 0.1 * F.cross_entropy(
        logits.float(), target, ignore_index=IGNORE_INDEX
    )
    loss.backward()
    optimizer.step()
    return float(loss.detach())
