"""Training a PyTorch network on labelled patches: the loop every mode and architecture shares (a fine-tuned
Dynamic World, a seed architecture trained from scratch on its dataset). AdamW with a cosine schedule, early
stopping on a validation score, a checkpoint after every epoch that a cancelled or killed run resumes from (ending
as an uninterrupted run would on a CPU), a fixed seed, and mixed precision on a GPU.

The caller says what a batch is (`Batch`: the network's inputs and the targets), what the loss and the score are
(`Objective`), and which parameters learn; the loop knows nothing of images, series or tags.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.torch_predictor import resolve_device

IGNORE_INDEX = 255


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


@dataclass(frozen=True)
class LoopConfig:
    """How a network is trained. Same data and seed give the same weights on a CPU."""

    epochs: int = 30
    learning_rate: float = 1e-4
    weight_decay: float = 1e-4
    batch_size: int = 4
    patience: int = 8  # epochs without a better validation score before stopping
    seed: int = 0
    device: str = "cpu"  # "auto" takes CUDA when present
    freeze_batchnorm: bool = False  # keep batch-norm statistics (fine-tuning on a few patches per batch)


@dataclass(frozen=True)
class TrainedNetwork:
    """The weights of the best validation epoch, that epoch, and each epoch's training loss and score."""

    state: dict[str, torch.Tensor]
    best_epoch: int
    best_score: float
    history: list[dict[str, float]]
    samples_per_s: float  # training samples per second over the epochs this process ran


# A progress callback per epoch: (epoch, mean training loss, validation score); and per batch:
# (epoch, batches done, batches in the epoch, running mean loss, samples per second).
EpochFn = Callable[[int, float, float], None]
BatchFn = Callable[[int, int, int, float, float], None]


def train_loop(
    module: nn.Module,
    batch_of: Callable[[list[int]], Batch],
    train_ids: list[int],
    val_ids: list[int],
    objective: Objective,
    config: LoopConfig,
    learns: Callable[[str], bool] = lambda name: True,
    fingerprint: str = "",
    checkpoint_dir: Path | None = None,
    on_epoch: EpochFn | None = None,
    on_batch: BatchFn | None = None,
    should_stop: Callable[[], None] | None = None,
) -> TrainedNetwork:
    """Train the parameters of `module` whose names `learns` on the samples `train_ids` and keep the weights of
    the epoch with the best `objective.score` on `val_ids`; `module` ends with those weights, in eval mode.

    `batch_of(ids)` builds a batch of those samples. With `checkpoint_dir`, the state after each epoch is saved
    under a name made of `fingerprint` (everything the run depends on), and a run with the same fingerprint
    resumes after the last saved epoch; the checkpoint is removed at the end. `should_stop` raises to cancel
    (checked before every batch).
    """
    from models.training import resume_checkpoint, save_checkpoint

    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    for name, parameter in module.named_parameters():
        parameter.requires_grad_(learns(name))
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
    best_score, best_epoch = -1.0, 0
    best_state = {k: v.detach().clone().cpu() for k, v in module.state_dict().items()}
    history: list[dict[str, float]] = []
    checkpoint, first_epoch = None, 1
    if checkpoint_dir is not None:
        checkpoint = checkpoint_dir / f"train-{fingerprint[:24]}.pt"
        saved = resume_checkpoint(checkpoint, on_epoch)
        if saved is not None:
            module.load_state_dict(saved["module"])
            optimiser.load_state_dict(saved["optimiser"])
            schedule.load_state_dict(saved["schedule"])
            generator.set_state(saved["generator"])
            best_score, best_epoch, best_state = saved["best_f1"], saved["best_epoch"], saved["best_state"]
            history = saved["history"]
            first_epoch = config.epochs + 1 if saved["stopped"] else len(history) + 1

    def forward(batch: Batch) -> torch.Tensor:
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            return module(*batch.inputs, **batch.options)

    def validate() -> float:
        module.eval()
        truths, guesses = [], []
        with torch.no_grad():
            for start in range(0, len(val_ids), config.batch_size):
                batch = batch_of(val_ids[start : start + config.batch_size]).to(device)
                truth, guess = objective.collect(forward(batch).float(), batch.target)
                truths.append(truth)
                guesses.append(guess)
        return objective.score(np.concatenate(truths), np.concatenate(guesses))

    trained_samples, trained_s = 0, 0.0
    for epoch in range(first_epoch, config.epochs + 1):
        order = [train_ids[int(k)] for k in torch.randperm(len(train_ids), generator=generator)]
        total, seen = 0.0, 0
        started = time.perf_counter()
        module.train()
        if config.freeze_batchnorm:
            for m in module.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        n_batches = -(-len(order) // config.batch_size)
        for index, start in enumerate(range(0, len(order), config.batch_size)):
            if should_stop is not None:
                should_stop()
            ids = order[start : start + config.batch_size]
            batch = batch_of(ids).to(device)
            optimiser.zero_grad(set_to_none=True)
            loss = objective.loss(forward(batch).float(), batch.target)
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            total += float(loss.detach()) * len(ids)
            seen += len(ids)
            if on_batch is not None:
                elapsed = time.perf_counter() - started
                on_batch(epoch, index + 1, n_batches, total / seen, seen / max(elapsed, 1e-9))
        trained_samples += seen
        trained_s += time.perf_counter() - started
        schedule.step()
        score = validate()
        history.append({"epoch": epoch, "loss": total / max(seen, 1), "val_macro_f1": score})
        if score > best_score:
            best_score, best_epoch = score, epoch
            best_state = {k: v.detach().clone().cpu() for k, v in module.state_dict().items()}
        stopped = best_epoch != epoch and epoch - best_epoch >= config.patience
        if checkpoint is not None:
            save_checkpoint(
                checkpoint,
                {
                    "module": module.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "schedule": schedule.state_dict(),
                    "generator": generator.get_state(),
                    "best_f1": best_score,
                    "best_epoch": best_epoch,
                    "best_state": best_state,
                    "history": history,
                    "stopped": stopped,
                },
            )
        if on_epoch is not None:
            on_epoch(epoch, total / max(seen, 1), score)
        if stopped:
            break
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    module.load_state_dict(best_state)
    module.to("cpu").eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return TrainedNetwork(best_state, best_epoch, best_score, history, trained_samples / max(trained_s, 1e-9))


# Losses. Targets: (B, H, W) int64 classes with IGNORE_INDEX for segmentation, (B, K) float 0/1 for tags.


def cross_entropy(class_weights: np.ndarray) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Class-weighted cross-entropy that skips unlabelled pixels."""
    weight = torch.from_numpy(np.asarray(class_weights, np.float32))

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, weight=weight.to(logits.device), ignore_index=IGNORE_INDEX)

    return loss


def soft_fbeta_and_cross_entropy(
    class_weights: np.ndarray, cloud_class: int, beta: float = 2.0
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The cloud seed's loss: 1 - soft F-beta of the cloud class (beta 2: a missed cloud costs four times a false
    alarm) plus 0.1 x the weighted cross-entropy, which starts training well (models.cloud_unet)."""
    from models.cloud_unet import soft_fbeta_loss

    ce = cross_entropy(class_weights)

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if cloud_class != 1 or logits.shape[1] != 2:
            raise ValueError("the soft F-beta loss is for two classes, clear 0 and cloud 1")
        return soft_fbeta_loss(logits, target, beta) + 0.1 * ce(logits, target)

    return loss


def binary_cross_entropy(
    positives: np.ndarray, samples: int
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
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
