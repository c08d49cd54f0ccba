"""Training in PyTorch: a new classifier head on a frozen network's features ("head" mode), and saving the
result as an installed model (card + weights + sha256) that jobs run like any other.

Head mode fits a linear layer on features gathered once at the labelled pixels (core.training), the way
microsoft/landcover's in-browser retraining and WorldCereal's custom heads do: seconds on a CPU. Decoder and
full fine-tuning of a Dynamic World base (`fine_tune`) and training a seed architecture from scratch go through
the shared loop of models.trainer.
"""

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.errors import ModelError
from core.jobstore import file_lock
from core.training import Features, Metrics, evaluate
from core.types import ClassInfo, ModelCard
from models.catalogue import Catalogue, check_trainable
from models.versions import next_version, read_versions, record_new_version

# Colours for a new legend (tab10), in class order.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip


@dataclass(frozen=True)
class HeadConfig:
    """How the head is fitted. Same data and seed give the same head on a CPU."""

    epochs: int = 200
    learning_rate: float = 0.01
    weight_decay: float = 1e-4
    batch_size: int = 512
    patience: int = 20  # epochs without a better validation macro F1 before stopping
    seed: int = 0


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
    from models import dynamic_world

    weights = cards.folder(model_id) / card.weights[0]
    net, _ = dynamic_world.load_network(card.weights_sha256[weights.name], weights, card.n_classes)
    net.requires_grad_(False)
    state = net.head.state_dict()  # the 1x1 conv: weight (K, F, 1, 1), bias (K,)
    return FeatureNetwork(
        net, state["weight"].numpy()[:, :, 0, 0].copy(), state["bias"].numpy().copy(), weights
    )


def with_head(network: FeatureNetwork, fitted: FittedHead) -> nn.Module:
    """A copy of the network with the fitted head as its classifier."""
    import copy

    module = copy.deepcopy(network.module)
    head = nn.Conv2d(fitted.weight.shape[1], fitted.weight.shape[0], 1)
    head.weight = nn.Parameter(torch.from_numpy(fitted.weight.copy())[:, :, None, None])
    head.bias = nn.Parameter(torch.from_numpy(fitted.bias.copy()))
    module.head = head
    return module.eval()


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a training checkpoint atomically: a kill mid-save leaves the previous epoch's."""
    partial = path.with_suffix(".part")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, partial)
    os.replace(partial, path)


def resume_checkpoint(
    path: Path, progress: Callable[[int, float, float], None] | None
) -> dict[str, Any] | None:
    """The checkpoint at `path` (None when there is none); its epochs are reported again, as if they had just
    run, so a resumed run's progress and chart show them."""
    if not path.exists():
        return None
    saved: dict[str, Any] = torch.load(path, weights_only=False)
    if progress is not None:
        for row in saved["history"]:
            progress(int(row["epoch"]), row["loss"], row["val_macro_f1"])
    return saved


def fit_head(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    legend: tuple[str, ...],
    class_weights: np.ndarray,
    config: HeadConfig,
    progress: Callable[[int, float, float], None] | None = None,
    should_stop: Callable[[], None] | None = None,
    checkpoint_dir: Path | None = None,
) -> FittedHead:
    """Fit a linear head (class-weighted cross-entropy, AdamW, cosine schedule) on (N, F) features.

    Stops early when the validation macro F1 has not improved for `config.patience` epochs and keeps the best
    epoch's weights. `progress(epoch, loss, val_macro_f1)` after each epoch; `should_stop()` raises to cancel.
    With `checkpoint_dir`, the whole state (head, optimiser, schedule, shuffling generator, best epoch, history)
    is saved after every epoch, and a fit of the same data and config that was cancelled or killed resumes
    from its last epoch and ends exactly as an uninterrupted fit; the checkpoint is removed when the fit ends.
    """
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    n_features, n_classes = train_x.shape[1], len(legend)
    head = nn.Linear(n_features, n_classes)
    optimiser = torch.optim.AdamW(
        head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.epochs)
    loss_fn = nn.CrossEntropyLoss(weight=torch.from_numpy(class_weights))
    x, y = torch.from_numpy(train_x), torch.from_numpy(train_y.astype(np.int64))
    best_f1, best_epoch, best_state = -1.0, 0, {k: v.clone() for k, v in head.state_dict().items()}
    history: list[dict[str, float]] = []
    checkpoint, first_epoch = None, 1
    if checkpoint_dir is not None:
        key = fit_fingerprint(train_x, train_y, val_x, val_y, legend, class_weights, config)
        checkpoint = checkpoint_dir / f"head-{key[:24]}.pt"
        saved = resume_checkpoint(checkpoint, progress)
        if saved is not None:
            head.load_state_dict(saved["head"])
            optimiser.load_state_dict(saved["optimiser"])
            schedule.load_state_dict(saved["schedule"])
            generator.set_state(saved["generator"])
            best_f1, best_epoch, best_state = saved["best_f1"], saved["best_epoch"], saved["best_state"]
            history = saved["history"]
            # A fit that had stopped (killed before it returned) does not go on: it returns what it had.
            first_epoch = config.epochs + 1 if saved["stopped"] else len(history) + 1
    for epoch in range(first_epoch, config.epochs + 1):
        if should_stop is not None:
            should_stop()
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), config.batch_size):
            batch = order[start : start + config.batch_size]
            optimiser.zero_grad()
            loss = loss_fn(head(x[batch]), y[batch])
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
        schedule.step()
        with torch.no_grad():
            predicted = head(torch.from_numpy(val_x)).argmax(dim=1).numpy()
        val_f1 = evaluate(val_y, predicted, legend).macro_f1
        history.append({"epoch": epoch, "loss": total / len(x), "val_macro_f1": val_f1})
        if val_f1 > best_f1:
            best_f1, best_epoch = val_f1, epoch
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
        stopped = best_epoch != epoch and epoch - best_epoch >= config.patience
        if checkpoint is not None:
            state = {
                "head": head.state_dict(),
                "optimiser": optimiser.state_dict(),
                "schedule": schedule.state_dict(),
                "generator": generator.get_state(),
                "best_f1": best_f1,
                "best_epoch": best_epoch,
                "best_state": best_state,
                "history": history,
                "stopped": stopped,
            }
            save_checkpoint(checkpoint, state)
        if progress is not None:
            progress(epoch, total / len(x), val_f1)
        if stopped:
            break
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    return FittedHead(best_state["weight"].numpy(), best_state["bias"].numpy(), best_epoch, history)


@dataclass(frozen=True)
class TuneConfig:
    """How a network is fine-tuned on labelled patches. Same data and seed give the same weights on a CPU."""

    epochs: int = 30
    learning_rate: float = 1e-4
    weight_decay: float = 1e-4
    batch_size: int = 4
    patience: int = 8  # epochs without a better validation macro F1 before stopping
    seed: int = 0


# The parameters each mode trains (DynamicWorldNet): the decoder is what follows the encoder (stem, block1,
# block2): the side branch, block3 and the head.
TRAINABLE = {"decoder": ("side.", "block3.", "head."), "full": ("",)}


@dataclass(frozen=True)
class TunedNetwork:
    """The fine-tuned weights (best validation epoch) and each epoch's training loss and validation macro F1."""

    state: dict[str, torch.Tensor]
    best_epoch: int
    history: list[dict[str, float]]


def fine_tune(
    module: nn.Module,
    mode: str,
    patches: Callable[[int], tuple[np.ndarray, np.ndarray]],
    train_ids: list[int],
    val_ids: list[int],
    legend: tuple[str, ...],
    class_weights: np.ndarray,
    config: TuneConfig,
    progress: Callable[[int, float, float], None] | None = None,
    should_stop: Callable[[], None] | None = None,
    checkpoint_dir: Path | None = None,
    device: str = "cpu",
) -> TunedNetwork:
    """Fine-tune `module` (its head already the new legend's) on whole labelled patches: class-weighted
    cross-entropy that skips unlabelled pixels (255), AdamW with a cosine schedule, early stopping on the
    validation macro F1; batch norms keep their statistics (a few patches per batch cannot estimate them).

    `patches(i)` gives patch i as (C, S, S) normalised input and (S, S) int64 labels (255: no label), all of one
    size S. Only the parameters of `mode` (TRAINABLE) learn. With `checkpoint_dir`, a cancelled or killed run
    resumes at its last epoch and ends as an uninterrupted one (models.trainer.train_loop).
    """
    from models.trainer import Batch, LoopConfig, Objective, collect_pixels, cross_entropy, train_loop

    digest = hashlib.sha256(json.dumps([asdict(config), mode, list(legend), train_ids, val_ids]).encode())
    for i in train_ids + val_ids:
        x, y = patches(i)
        digest.update(x.tobytes() + y.tobytes())

    def batch_of(ids: list[int]) -> Batch:
        pairs = [patches(i) for i in ids]
        return Batch(
            (torch.from_numpy(np.stack([x for x, _ in pairs])),),
            torch.from_numpy(np.stack([y for _, y in pairs])),
        )

    objective = Objective(
        cross_entropy(class_weights),
        collect_pixels,
        lambda truth, guess: evaluate(truth, guess, legend).macro_f1,
        "val macro F1",
    )
    loop = LoopConfig(
        epochs=config.epochs,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        batch_size=config.batch_size,
        patience=config.patience,
        seed=config.seed,
        device=device,
        freeze_batchnorm=True,
    )
    prefixes = TRAINABLE[mode]
    trained = train_loop(
        module,
        batch_of,
        train_ids,
        val_ids,
        objective,
        loop,
        learns=lambda name: name.startswith(prefixes),
        fingerprint=digest.hexdigest(),
        checkpoint_dir=checkpoint_dir,
        on_epoch=progress,
        should_stop=should_stop,
    )
    return TunedNetwork(trained.state, trained.best_epoch, trained.history)


def fit_fingerprint(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    legend: tuple[str, ...],
    class_weights: np.ndarray,
    config: HeadConfig,
) -> str:
    """sha256 of everything a fit depends on: a checkpoint resumes only the fit it was made by."""
    digest = hashlib.sha256(json.dumps([asdict(config), list(legend)]).encode())
    for array in (train_x, train_y, val_x, val_y, class_weights):
        digest.update(str((array.dtype, array.shape)).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def trained_card(
    base: ModelCard,
    new_id: str,
    version: str,
    legend: tuple[str, ...],
    weights_name: str,
    sha256: str,
    training: dict[str, Any],
    metrics: dict[str, Metrics | None],
) -> ModelCard:
    """The new model's card: the base's input and normalisation, the new legend, where it came from."""
    classes = tuple(
        ClassInfo(value, name, PALETTE[value % len(PALETTE)]) for value, name in enumerate(legend)
    )
    # A head fitted on scenes of a level the base only ran on with a caveat has learnt that level (preferred
    # now); the base's features still know the levels they were trained on.
    level = str(training.get("processing_level", ""))
    levels = base.processing_levels
    if level and level not in levels:
        levels = (level, *levels)
    return base.replace(
        id=new_id,
        processing_levels=levels,
        level_caveats={lv: text for lv, text in base.level_caveats.items() if lv not in levels},
        version=version,
        description=(
            f"{base.task.capitalize()} in {len(legend)} classes ({', '.join(legend)}): the features of "
            f"{base.id} {base.version} with a classifier head trained here on labelled pixels."
        ),
        architecture=f"{base.architecture}; classifier head retrained here",
        classes=[asdict(c) for c in classes],
        status="trained-here",
        licence=f"{base.licence} (the base's terms apply to the frozen layers)",
        provenance=(
            f"Head trained by TerraSeg on {training['trained_at']} from {base.id} {base.version} "
            f"(dataset sha256 {training['dataset_sha256'][:16]}...)."
        ),
        weights=[weights_name],
        weights_sha256={weights_name: sha256},
        metrics={name: m.model_dump() if m is not None else None for name, m in metrics.items()},
        default_for_task=False,
        training=training,
    )


def save_head_model(
    network: FeatureNetwork,
    fitted: FittedHead,
    base: ModelCard,
    new_id: str,
    legend: tuple[str, ...],
    installed_dir: Path,
    training: dict[str, Any],
    metrics: dict[str, Metrics | None],
    tuned: dict[str, torch.Tensor] | None = None,
    maps: dict[str, Path] | None = None,
) -> tuple[Path, str, str]:
    """Install the model as a new version `<installed_dir>/<new_id>/v<N>/` (weights with the new head, or the
    whole `tuned` state of a fine-tuned network, and a sha256-pinned card); returns the folder, the version and
    the state it starts in."""
    if tuned is not None:
        state = {k: v.clone() for k, v in tuned.items()}
    else:
        state = {k: v.clone() for k, v in network.module.state_dict().items()}
        state["head.weight"] = torch.from_numpy(fitted.weight.copy())[:, :, None, None]
        state["head.bias"] = torch.from_numpy(fitted.bias.copy())

    def write(staging: Path, version: str) -> ModelCard:
        weights_name = f"{new_id}-v{version}.pt"
        torch.save(state, staging / weights_name)
        if maps:  # the comparison maps of the validation area travel with the version (the admin page)
            (staging / "maps").mkdir()
            for name, path in maps.items():
                shutil.copyfile(path, staging / "maps" / f"{name}.png")
        sha256 = hashlib.sha256((staging / weights_name).read_bytes()).hexdigest()
        return trained_card(base, new_id, version, legend, weights_name, sha256, training, metrics)

    return install_version(installed_dir, new_id, write, training.get("by"))


def install_version(
    installed_dir: Path, new_id: str, write: Callable[[Path, str], ModelCard], by: str | None
) -> tuple[Path, str, str]:
    """Install a new version of `new_id`: `write(staging, version)` writes its weights into a staging folder and
    returns its card; the card is written next to them and the folder renamed into place as
    `<installed_dir>/<new_id>/v<N>/`. Returns the folder, the version and the state it starts in (the first
    version of an id goes to production, later ones are candidates)."""
    model_dir = installed_dir / new_id
    if model_dir.exists() and read_versions(model_dir) is None:
        raise ModelError(
            f"A model {new_id} is installed already and has no versions; choose another --as id."
        )
    model_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(model_dir / ".install.lock", wait_s=60):
        version = next_version(model_dir)
        staging = Path(tempfile.mkdtemp(dir=model_dir, prefix=f".v{version}."))
        try:
            card = write(staging, version)
            (staging / "card.json").write_text(json.dumps(card.model_dump(mode="json"), indent=1))
            os.rename(staging, model_dir / f"v{version}")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        started_as = record_new_version(model_dir, version, by)
    return model_dir / f"v{version}", version, started_as


def utc_now() -> str:
    """Now, ISO-8601 UTC to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")
