"""Recipes on a base model's features: a new linear head on features gathered once at the labelled pixels
("head" mode; seconds on a CPU, the way microsoft/landcover's in-browser retraining and WorldCereal's custom
heads do), and a Dynamic World base fine-tuned with its new head on whole labelled patches ("decoder" and "full").
"""

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.learning.metrics import Features
from models import dynamic_world
from models.catalogue import Catalogue, check_trainable
from models.training.loop import Batch, Hooks, Objective, Recipe, TrainConfig, Trained, fit
from models.training.objectives import macro_f1

# The parameters each mode trains (DynamicWorldNet): the decoder is what follows the encoder (stem, block1,
# block2): the side branch, block3 and the head.
TRAINABLE = {"decoder": ("side.", "block3.", "head."), "full": ("",)}


@dataclass(frozen=True)
class FittedHead:
    """The head's weights (K, F) and bias (K,), and each epoch's training loss and validation macro F1."""

    weight: np.ndarray
    bias: np.ndarray
    best_epoch: int
    history: list[dict[str, float]]

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Class values of (N, F) features."""
        return np.argmax(features @ self.weight.T + self.bias, axis=1)


@dataclass
class FeatureNetwork:
    """A frozen network that gives per-pixel features, with the head it came with (for the parent's scores)."""

    module: nn.Module
    head_weight: np.ndarray  # (K0, F)
    head_bias: np.ndarray  # (K0,)
    weights_file: Path

    def features(self) -> Features:
        """(B, C, S, S) float32 -> (B, F, S, S) float32, in inference mode."""
        module = self.module

        def run(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module.features(torch.from_numpy(batch)).float().numpy()  # type: ignore[operator]

        return run


def feature_network(cards: Catalogue, model_id: str, mode: str) -> FeatureNetwork:
    """The base model's network, frozen, for training a new head; ModelError when that cannot be done."""
    check_trainable(cards, model_id, mode, built=("head", "decoder", "full"), seeds=False)
    card = cards.get(model_id)
    weights = cards.folder(model_id) / card.weights[0]
    net, _ = dynamic_world.load_network(card.weights_sha256[weights.name], weights, card.n_classes)
    net.requires_grad_(False)
    state = net.head.state_dict()  # the 1x1 conv: weight (K, F, 1, 1), bias (K,)
    return FeatureNetwork(
        net, state["weight"].numpy()[:, :, 0, 0].copy(), state["bias"].numpy().copy(), weights
    )


def with_head(network: FeatureNetwork, fitted: FittedHead) -> nn.Module:
    """A copy of the network with the fitted head as its classifier."""
    module = copy.deepcopy(network.module)
    head = nn.Conv2d(fitted.weight.shape[1], fitted.weight.shape[0], 1)
    head.weight = nn.Parameter(torch.from_numpy(fitted.weight.copy())[:, :, None, None])
    head.bias = nn.Parameter(torch.from_numpy(fitted.bias.copy()))
    module.head = head
    return module.eval()


@dataclass
class HeadRecipe(Recipe):
    """A linear head on (N, F) features, from the config's seed: class-weighted cross-entropy, early stopping on
    the validation samples' macro F1 (scored in one batch)."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    legend: tuple[str, ...]
    class_weights: np.ndarray
    train_ids: list[int] = field(init=False)
    val_ids: list[int] = field(init=False)
    x: torch.Tensor = field(init=False)
    y: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        n_train, n_val = len(self.train_x), len(self.val_x)
        self.train_ids, self.val_ids = list(range(n_train)), list(range(n_train, n_train + n_val))
        self.val_batch_size = max(1, n_val)
        self.x = torch.from_numpy(np.concatenate([self.train_x, self.val_x]))
        self.y = torch.from_numpy(np.concatenate([self.train_y, self.val_y]).astype(np.int64))

    def configure_model(self) -> nn.Module:
        return nn.Linear(self.train_x.shape[1], len(self.legend))

    def configure_objective(self) -> Objective:
        return macro_f1(self.legend, self.class_weights)

    def batch(self, ids: list[int]) -> Batch:
        index = torch.tensor(ids, dtype=torch.int64)
        return Batch((self.x[index],), self.y[index])

    def fingerprint(self, config: TrainConfig) -> str:
        digest = hashlib.sha256(json.dumps([asdict(config), list(self.legend)]).encode())
        for array in (self.train_x, self.train_y, self.val_x, self.val_y, self.class_weights):
            digest.update(str((array.dtype, array.shape)).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


def fit_head(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    legend: tuple[str, ...],
    class_weights: np.ndarray,
    config: TrainConfig,
    hooks: Hooks | None = None,
) -> FittedHead:
    """Fit a linear head on (N, F) features with the one loop (HeadRecipe), keeping the best epoch's weights."""
    return fitted_head(fit(HeadRecipe(train_x, train_y, val_x, val_y, legend, class_weights), config, hooks))


def fitted_head(trained: Trained) -> FittedHead:
    """The weights of a head the loop fitted (HeadRecipe), as arrays."""
    state = trained.state
    return FittedHead(state["weight"].numpy(), state["bias"].numpy(), trained.best_epoch, trained.history)


@dataclass
class TuneRecipe(Recipe):
    """A network (its head already the new legend's) fine-tuned on whole labelled patches: only the parameters
    of `mode` (TRAINABLE) learn, batch norms keep their statistics (a few patches per batch cannot estimate
    them), class-weighted cross-entropy that skips unlabelled pixels, early stopping on the validation macro F1.

    `patches(i)` gives patch i as (C, S, S) normalised input and (S, S) int64 labels (255: no label), all of one
    size S."""

    module: nn.Module
    mode: str
    patches: Callable[[int], tuple[np.ndarray, np.ndarray]]
    train_ids: list[int]
    val_ids: list[int]
    legend: tuple[str, ...]
    class_weights: np.ndarray
    freeze_batchnorm = True

    def configure_model(self) -> nn.Module:
        return self.module

    def learns(self, name: str) -> bool:
        return name.startswith(TRAINABLE[self.mode])

    def configure_objective(self) -> Objective:
        return macro_f1(self.legend, self.class_weights)

    def batch(self, ids: list[int]) -> Batch:
        pairs = [self.patches(i) for i in ids]
        return Batch(
            (torch.from_numpy(np.stack([x for x, _ in pairs])),),
            torch.from_numpy(np.stack([y for _, y in pairs])),
        )

    def fingerprint(self, config: TrainConfig) -> str:
        digest = hashlib.sha256(
            json.dumps([asdict(config), self.mode, list(self.legend), self.train_ids, self.val_ids]).encode()
        )
        for i in self.train_ids + self.val_ids:
            x, y = self.patches(i)
            digest.update(x.tobytes() + y.tobytes())
        return digest.hexdigest()
