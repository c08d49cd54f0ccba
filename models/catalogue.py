"""Model cards: the one place the CLI, the pipeline and the app learn what models exist and which a task uses.

Each model version has a JSON card: `models/cards/<id>.json`, or `models/weights/<folder>/card.json` next to
weights TerraSeg ships, or `<cache>/models/<folder>/card.json` beside weights imported or trained on this
installation. Reading cards needs no PyTorch (the web app lists them); models.registry loads the models.
"""

import logging
from functools import lru_cache
from pathlib import Path

from pydantic import ValidationError

from core.errors import ModelError, UntrainedModel
from core.jobs import JobModels
from core.types import ModelCard, UnknownNormalisation

log = logging.getLogger(__name__)
MODELS_DIR = Path(__file__).resolve().parent
# The task whose model judges dates (clear fraction) and masks clouds for the other tasks.
CLOUD_TASK = "cloud"


def card_files(installed_dir: Path | None) -> list[Path]:
    """Every card file: shipped ones, then those installed under `installed_dir` (`<cache>/models`)."""
    installed = sorted(installed_dir.glob("*/card.json")) if installed_dir is not None else []
    return (
        sorted((MODELS_DIR / "cards").glob("*.json"))
        + sorted((MODELS_DIR / "weights").glob("*/card.json"))
        + installed
    )


def read_card(path: Path) -> ModelCard:
    """A card from its JSON file, checked field by field; ModelError names the file and what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ModelError(f"The model card {path} cannot be read: {err}.") from err
    try:
        return ModelCard.model_validate_json(text)
    except ValidationError as err:
        first = err.errors()[0]
        if first["type"] == "json_invalid":
            raise ModelError(f"The model card {path} cannot be read: it is not valid JSON.") from None
        where = ".".join(str(p) for p in first["loc"]) or "the document"
        reason = str(first["msg"]).removeprefix("Value error, ")
        raise ModelError(f"The model card {path.name} is malformed: {where}: {reason}.") from None


class Catalogue:
    """The cards of one installation, by id; every lookup error lists what exists."""

    def __init__(self, cards: dict[str, ModelCard], paths: dict[str, Path]) -> None:
        self.cards, self.paths = cards, paths

    def all(self) -> list[ModelCard]:
        """All cards, by task then id."""
        return sorted(self.cards.values(), key=lambda c: (c.task, c.id))

    def get(self, model_id: str) -> ModelCard:
        """The card of `model_id`, or a ModelError listing the known ids."""
        if model_id not in self.cards:
            raise ModelError(f"Unknown model {model_id!r}. Known models: {', '.join(sorted(self.cards))}.")
        return self.cards[model_id]

    def folder(self, model_id: str) -> Path:
        """The folder of the card's file (where weights that travel with a card lie)."""
        return self.paths[model_id].parent

    def runnable_tasks(self) -> list[str]:
        """Tasks a job can run: those of the models that make a map (scene-tag models make none)."""
        return sorted({c.task for c in self.cards.values() if c.output == "map"})

    def default_for(self, task: str) -> ModelCard:
        """The model a job of `task` uses when none is named."""
        if task not in self.runnable_tasks():
            raise ModelError(
                f"Unknown task {task!r}. Tasks a job can run: {', '.join(self.runnable_tasks())}."
            )
        for card in self.cards.values():
            if card.task == task and card.default_for_task and card.output == "map":
                return card
        models = ", ".join(c.id for c in self.all() if c.task == task)
        raise ModelError(f"The {task} task has no default model yet; name one of {models}.")

    def job_models(self, task: str, model_id: str | None) -> JobModels:
        """The models a job of `task` runs (`model_id`, or the task's default), checked to fit the task."""
        card = self.get(model_id) if model_id else self.default_for(task)
        if task not in self.runnable_tasks():
            raise ModelError(
                f"Unknown task {task!r}. Tasks a job can run: {', '.join(self.runnable_tasks())}."
            )
        if card.task != task or card.output != "map":
            raise ModelError(f"Model {card.id} is a {card.task} model, not a {task} model.")
        cloud = None if task == CLOUD_TASK else self.default_for(CLOUD_TASK)
        return JobModels(card, cloud)

    def require_weights(self, model_id: str) -> ModelCard:
        """The card of a model that can run; an untrained one is refused with what is missing."""
        card = self.get(model_id)
        if card.status == "untrained":
            raise UntrainedModel(
                f"Model {model_id} has no trained weights yet; import published weights or train it first.",
                model_id,
            )
        if isinstance(card.normalisation, UnknownNormalisation):
            raise UntrainedModel(
                f"Model {model_id}'s card does not say how to normalise its input (normalisation 'unknown'); set "
                f"the statistics its weights were trained with in {self.paths[model_id]}.",
                model_id,
            )
        if not card.builder:
            raise ModelError(f"Model {model_id}'s card names no builder, so it cannot be loaded yet.")
        return card


def build_catalogue(installed_dir: Path | None) -> Catalogue:
    """Read every card; a shipped card must be right, a bad installed one is skipped with a warning."""
    cards: dict[str, ModelCard] = {}
    paths: dict[str, Path] = {}
    for path in card_files(installed_dir):
        shipped = path.is_relative_to(MODELS_DIR)
        try:
            card = read_card(path)
        except ModelError as err:
            if shipped:
                raise
            log.warning("Skipping an installed model: %s", err)  # one bad import must not stop the app
            continue
        if card.id in cards:
            if shipped:
                raise ModelError(f"Two model cards use the id {card.id!r}; the second is {path}.")
            log.warning("Skipping %s: the id %r is taken by %s", path, card.id, paths[card.id])
            continue
        cards[card.id], paths[card.id] = card, path
    return Catalogue(cards, paths)


@lru_cache(maxsize=4)
def catalogue(cache_dir: Path | None = None) -> Catalogue:
    """The cards of the installation whose cache folder is `cache_dir` (None: the shipped cards only), read once
    per process: a model installed meanwhile appears at the next start."""
    return build_catalogue(cache_dir / "models" if cache_dir is not None else None)
