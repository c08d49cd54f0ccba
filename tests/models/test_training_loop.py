"""The one training loop (models.training.loop) with a small recipe: a run resumed from its checkpoint ends with
the weights of an uninterrupted one, a cancel stops it and keeps the last epoch's checkpoint, and early stopping
keeps the best epoch's weights."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from core.errors import JobCancelled
from models.training.heads import HeadRecipe
from models.training.loop import Batch, Hooks, Objective, Recipe, TrainConfig, fit
from models.training.objectives import cross_entropy

CONFIG = TrainConfig(epochs=12, learning_rate=0.05, batch_size=32, patience=100, seed=5)


def head_recipe(noise: float = 0.5) -> HeadRecipe:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    y = np.argmax(x[:, :3] + rng.normal(scale=noise, size=(300, 3)), axis=1)
    return HeadRecipe(x[:200], y[:200], x[200:], y[200:], ("a", "b", "c"), np.ones(3, np.float32))


def test_a_run_resumed_from_its_checkpoint_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    whole = fit(head_recipe(), CONFIG)
    batches = []

    def cancel_in_epoch_5() -> None:  # seven batches an epoch: the third batch of epoch 5
        batches.append(1)
        if len(batches) == 4 * 7 + 3:
            raise JobCancelled("cancelled")

    epochs_seen: list[int] = []
    with pytest.raises(JobCancelled):
        fit(
            head_recipe(),
            CONFIG,
            Hooks(lambda e, loss, s: epochs_seen.append(e), None, cancel_in_epoch_5, tmp_path),
        )
    assert epochs_seen == [1, 2, 3, 4] and len(list(tmp_path.glob("checkpoint-*.pt"))) == 1
    resumed_epochs: list[int] = []
    resumed = fit(
        head_recipe(), CONFIG, Hooks(lambda e, loss, s: resumed_epochs.append(e), checkpoint_dir=tmp_path)
    )
    assert resumed_epochs == list(range(1, 13))  # the four saved epochs reported again, then 5..12
    assert resumed.history == whole.history and resumed.best_epoch == whole.best_epoch
    assert all(torch.equal(resumed.state[k], whole.state[k]) for k in whole.state)
    assert not list(tmp_path.iterdir())  # a finished run leaves no checkpoint


def test_another_run_does_not_resume_from_a_checkpoint_that_is_not_its_own(tmp_path):
    batches = []

    def cancel() -> None:  # in epoch 2, after epoch 1's checkpoint
        batches.append(1)
        if len(batches) > 7:
            raise JobCancelled("cancelled")

    with pytest.raises(JobCancelled):
        fit(head_recipe(), CONFIG, Hooks(should_stop=cancel, checkpoint_dir=tmp_path))
    other_config = dataclasses.replace(CONFIG, seed=6)
    assert (
        fit(head_recipe(), other_config, Hooks(checkpoint_dir=tmp_path)).history
        == fit(head_recipe(), other_config).history
    )
    assert len(list(tmp_path.glob("checkpoint-*.pt"))) == 1  # the cancelled run's, still there for it


class Plateau(Recipe):
    """A recipe whose validation score is given per epoch (the loop asks it once an epoch)."""

    def __init__(self, scores: list[float]) -> None:
        self.scores = iter(scores)
        self.weights: list[dict[str, torch.Tensor]] = []  # after each epoch, as validated
        self.train_ids, self.val_ids = list(range(8)), [0]
        self.x = torch.linspace(-1, 1, 8)[:, None]

    def configure_model(self) -> nn.Module:
        self.model = nn.Linear(1, 2)
        return self.model

    def score(self) -> float:
        self.weights.append({k: v.clone() for k, v in self.model.state_dict().items()})
        return next(self.scores)

    def configure_objective(self) -> Objective:
        return Objective(
            cross_entropy(np.ones(2, np.float32)),
            lambda logits, target: (np.zeros(1), np.zeros(1)),
            lambda truth, guess: self.score(),
            "val score",
        )

    def batch(self, ids: list[int]) -> Batch:
        return Batch((self.x[ids],), (self.x[ids, 0] > 0).long())

    def fingerprint(self, config: TrainConfig) -> str:
        return "plateau"


def test_early_stopping_ends_after_patience_epochs_without_a_better_score_and_keeps_the_best_epoch():
    scores = [0.1, 0.5, 0.4, 0.5, 0.3, 0.2, 0.9, 0.9]
    config = dataclasses.replace(CONFIG, epochs=8, patience=3)
    epochs = []
    recipe = Plateau(scores)
    trained = fit(recipe, config, Hooks(lambda e, loss, s: epochs.append(e)))
    assert epochs == [1, 2, 3, 4, 5]  # epoch 2's 0.5 not bettered in the 3 epochs after it
    assert trained.best_epoch == 2 and trained.best_score == 0.5
    assert [row["val_macro_f1"] for row in trained.history] == scores[:5]
    # the network ends with the best epoch's weights (not the last one's), frozen, in eval mode
    assert all(torch.equal(v, recipe.weights[1][k]) for k, v in trained.module.state_dict().items())
    assert not torch.equal(recipe.weights[1]["weight"], recipe.weights[4]["weight"])
    assert not any(p.requires_grad for p in trained.module.parameters()) and not trained.module.training
