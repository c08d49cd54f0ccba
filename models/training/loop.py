"""The one training loop: epochs, a checkpoint after every epoch that a cancelled or killed run resumes from
(ending as an uninterrupted run would on a CPU), cancel, per-epoch metrics and early stopping on a validation
score. AdamW with a cosine schedule, a fixed seed, and mixed precision on a GPU.

What differs between kinds of training (a linear head on features, a fine-tuned network, an architecture
trained from scratch on a patch dataset) is a `Recipe`, in the spirit of TorchGeo's BaseTask: it says which
network trains and which of its parameters learn (configure_model, learns), what the loss and the score are
(configure_objective), what a batch is (batch) and what the run depends on (fingerprint). The loop knows nothing
of images, series or tags.
"""

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.torch_files import save_state
from models.torch_predictor import resolve_device

# A progress callback per epoch: (epoch, mean training loss, validation score); and per batch:
# (epoch, batches done, batches in the epoch, running mean loss, samples per second).
EpochFn = Callable[[int, float, float], None]
BatchFn = Callable[[int, int, int, float, float], None]
CHECKPOINT_FORMAT = 2  # checkpoints of another format (or none) are not resumed from


@dataclass(frozen=True)
class TrainConfig:
    """The hyper-parameters of a fit. Same data, recipe and config give the same weights on a CPU."""

    epochs: int
    learning_rate: float
    weight_decay: float = 1e-4
    batch_size: int = 4
    patience: int = 8  # epochs without a better validation score before stopping
    seed: int = 0


# A linear head on features (seconds on a CPU) and a network fine-tuned on a few patches per batch.
HEAD_CONFIG = TrainConfig(epochs=200, learning_rate=0.01, weight_decay=1e-4, batch_size=512, patience=20)
TUNE_CONFIG = TrainConfig(epochs=30, learning_rate=1e-4, weight_decay=1e-4, batch_size=4, patience=8)


@dataclass(frozen=True)
class Hooks:
    """How a fit is followed and where it runs: per-epoch and per-batch progress, `should_stop` (raises to
    cancel; checked before every batch), the checkpoint folder (None: no checkpoints) and the device ("auto"
    takes CUDA when present)."""

    on_epoch: EpochFn | None = None
    on_batch: BatchFn | None = None
    should_stop: Callable[[], None] | None = None
    checkpoint_dir: Path | None = None
    device: str = "cpu"


@dataclass(frozen=True)
class Batch:
    """The network's positional `inputs` and keyword `options` (dates, padding masks) and the `target`."""

    inputs: tuple[torch.Tensor, ...]
    target: torch.Tensor
    options: dict[str, torch.Tensor] = field(default_factory=dict)

    def to(self, device: torch.device) -> "Batch":
        return Batch(
            tuple(x.to(device) for x in self.inputs),
            self.target.to(device),
            {k: v.to(device) for k, v in self.options.items()},
        )


@dataclass(frozen=True)
class Objective:
    """What is minimised and what is watched.

    loss: (logits, target) -> scalar tensor.
    collect: (logits, target) of a validation batch -> (truth, prediction) arrays to score; rows are concatenated.
    score: (truth, prediction) of the whole validation set -> the number early stopping maximises.
    name: how the score is called in progress messages, e.g. "val macro F1".
    """

    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    collect: Callable[[torch.Tensor, torch.Tensor], tuple[np.ndarray, np.ndarray]]
    score: Callable[[np.ndarray, np.ndarray], float]
    name: str


class Recipe(ABC):
    """What one kind of training supplies to the loop."""

    train_ids: list[int]
    val_ids: list[int]
    freeze_batchnorm = False  # keep batch-norm statistics (fine-tuning on a few patches per batch)
    val_batch_size = 0  # validation batch size; 0: the training batch size

    @abstractmethod
    def configure_model(self) -> nn.Module:
        """The network that trains (called after the loop has seeded torch's generator)."""

    def learns(self, name: str) -> bool:
        """Whether the parameter `name` learns (default: all)."""
        return True

    @abstractmethod
    def configure_objective(self) -> Objective:
        """The loss, the validation collection and score."""

    @abstractmethod
    def batch(self, ids: list[int]) -> Batch:
        """A batch of the samples `ids`."""

    @abstractmethod
    def fingerprint(self, config: TrainConfig) -> str:
        """sha256 of everything the run depends on: a checkpoint resumes only the run it was made by."""


@dataclass(frozen=True)
class Trained:
    """The trained network (the best validation epoch's weights, on the CPU, in eval mode), that epoch and its
    score, and each epoch's training loss and score."""

    module: nn.Module
    state: dict[str, torch.Tensor]
    best_epoch: int
    best_score: float
    history: list[dict[str, float]]
    samples_per_s: float  # training samples per second over the epochs this process ran


def fit(recipe: Recipe, config: TrainConfig, hooks: Hooks | None = None) -> Trained:
    """Train the parameters of the recipe's network that it `learns` on `recipe.train_ids` and keep the weights
    of the epoch with the best score on `recipe.val_ids`.

    With `hooks.checkpoint_dir`, the state after each epoch is saved under a name made of the recipe's
    fingerprint, and a run with the same fingerprint resumes after the last saved epoch (its epochs reported
    again, so a resumed run's progress and chart show them); the checkpoint is removed at the end.
    """
    hooks = hooks or Hooks()
    device = resolve_device(hooks.device)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    module = recipe.configure_model()
    objective = recipe.configure_objective()
    for name, parameter in module.named_parameters():
        parameter.requires_grad_(recipe.learns(name))
    module.to(device)
    trainable = [p for p in module.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("no parameter of the module learns")
    optimiser = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.epochs)
    # Mixed precision on a GPU: bf16 where the GPU has it (no loss scaling needed), else fp16 with a scaler.
    amp_dtype = None
    if device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    state: dict[str, Any] = {
        "best_score": -1.0,
        "best_epoch": 0,
        "best_state": {k: v.detach().clone().cpu() for k, v in module.state_dict().items()},
        "history": [],
        "stopped": False,
    }
    checkpoint = None
    if hooks.checkpoint_dir is not None:
        checkpoint = hooks.checkpoint_dir / f"checkpoint-{recipe.fingerprint(config)[:24]}.pt"
        saved = resume(checkpoint, hooks.on_epoch)
        if saved is not None:
            module.load_state_dict(saved.pop("module"))
            optimiser.load_state_dict(saved.pop("optimiser"))
            schedule.load_state_dict(saved.pop("schedule"))
            generator.set_state(saved.pop("generator"))
            state = saved

    def forward(batch: Batch) -> torch.Tensor:
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            return module(*batch.inputs, **batch.options)

    def validate() -> float:
        module.eval()
        ids, size = recipe.val_ids, recipe.val_batch_size or config.batch_size
        truths, guesses = [], []
        with torch.no_grad():
            for start in range(0, len(ids), size):
                batch = recipe.batch(ids[start : start + size]).to(device)
                truth, guess = objective.collect(forward(batch).float(), batch.target)
                truths.append(truth)
                guesses.append(guess)
        return objective.score(np.concatenate(truths), np.concatenate(guesses))

    trained_samples, trained_s = 0, 0.0
    first_epoch = config.epochs + 1 if state["stopped"] else len(state["history"]) + 1
    for epoch in range(first_epoch, config.epochs + 1):
        order = [recipe.train_ids[int(k)] for k in torch.randperm(len(recipe.train_ids), generator=generator)]
        total, seen = 0.0, 0
        started = time.perf_counter()
        module.train()
        if recipe.freeze_batchnorm:
            for m in module.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        n_batches = -(-len(order) // config.batch_size)
        for index, start in enumerate(range(0, len(order), config.batch_size)):
            if hooks.should_stop is not None:
                hooks.should_stop()
            ids = order[start : start + config.batch_size]
            batch = recipe.batch(ids).to(device)
            optimiser.zero_grad(set_to_none=True)
            loss = objective.loss(forward(batch).float(), batch.target)
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            total += float(loss.detach()) * len(ids)
            seen += len(ids)
            if hooks.on_batch is not None:
                elapsed = time.perf_counter() - started
                hooks.on_batch(epoch, index + 1, n_batches, total / seen, seen / max(elapsed, 1e-9))
        trained_samples += seen
        trained_s += time.perf_counter() - started
        schedule.step()
        score = validate()
        state["history"].append({"epoch": epoch, "loss": total / max(seen, 1), "val_macro_f1": score})
        if score > state["best_score"]:
            state["best_score"], state["best_epoch"] = score, epoch
            state["best_state"] = {k: v.detach().clone().cpu() for k, v in module.state_dict().items()}
        state["stopped"] = state["best_epoch"] != epoch and epoch - state["best_epoch"] >= config.patience
        if checkpoint is not None:
            save_checkpoint(
                checkpoint,
                state
                | {
                    "format": CHECKPOINT_FORMAT,
                    "module": module.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "schedule": schedule.state_dict(),
                    "generator": generator.get_state(),
                },
            )
        if hooks.on_epoch is not None:
            hooks.on_epoch(epoch, total / max(seen, 1), score)
        if state["stopped"]:
            break
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    module.load_state_dict(state["best_state"])
    module.to("cpu").eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return Trained(
        module,
        state["best_state"],
        state["best_epoch"],
        state["best_score"],
        state["history"],
        trained_samples / max(trained_s, 1e-9),
    )


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a training checkpoint atomically: a kill mid-save leaves the previous epoch's."""
    partial = path.with_suffix(".part")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_state(state, partial)
    os.replace(partial, path)


def resume(path: Path, on_epoch: EpochFn | None) -> dict[str, Any] | None:
    """The checkpoint at `path` (None when there is none, or one of another format); its epochs are reported
    again, as if they had just run."""
    if not path.exists():
        return None
    saved: dict[str, Any] = torch.load(path, weights_only=False)
    if saved.get("format") != CHECKPOINT_FORMAT:
        return None
    saved.pop("format")
    if on_epoch is not None:
        for row in saved["history"]:
            on_epoch(int(row["epoch"]), row["loss"], row["val_macro_f1"])
    return saved
