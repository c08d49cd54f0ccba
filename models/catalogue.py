"""Model cards: the one place the CLI, the pipeline and the app learn what models exist and which a task uses.

Each model version has a JSON card: `models/cards/<id>.json`, or `models/weights/<folder>/card.json` next to
weights TerraSeg ships, or `<cache>/models/<folder>/card.json` beside weights imported or trained on this
installation. Reading cards needs no PyTorch (the web app lists them); models.registry loads the models.
"""

import logging
from pathlib import Path

from pydantic import ValidationError

from core.errors import ModelError, UntrainedModel
from core.jobs.request import JobModels
from core.mapping.presto_inputs import PRESTO_BUILDER
from core.types import ModelCard, ModelRef, UnknownNormalisation
from models.versions import VERSIONS_FILE, State, read_versions, version_folders

log = logging.getLogger(__name__)
MODELS_DIR = Path(__file__).resolve().parent
# The task whose model judges dates (clear fraction) and masks clouds for the other tasks.
CLOUD_TASK = "cloud"


def card_files(installed_dir: Path | None) -> list[Path]:
    """Every card file: shipped ones, then those installed under `installed_dir` (`<cache>/models`): imported
    models (`<id>/card.json`); models trained here keep one folder per version (`<id>/v<N>/card.json`, read by
    `build_catalogue` through models.versions)."""
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

    def __init__(
        self,
        cards: dict[str, ModelCard],
        paths: dict[str, Path],
        versions: dict[str, dict[str, tuple[ModelCard, Path, State]]] | None = None,
    ) -> None:
        # `cards` holds each id's card (for a versioned model: its production version); `versions` every version
        # of the models trained here, which `get("id@N")` reaches.
        self.cards, self.paths, self.versions = cards, paths, versions or {}

    def _pinned(self, model_id: str) -> tuple[ModelCard, Path] | None:
        """The card and path of `id@N`, or None when `model_id` names no version."""
        ref = ModelRef.parse(model_id)
        base, version = ref.model_id, ref.version
        if version is None:
            return None
        if base not in self.versions:
            raise ModelError(
                f"{base} has no versions to choose from (only models trained here have); drop '@{version}'."
            )
        if version not in self.versions[base]:
            known = ", ".join(self.versions[base])
            raise ModelError(f"{base} has no version {version}; its versions are {known}.")
        card, path, _ = self.versions[base][version]
        return card, path

    def all(self) -> list[ModelCard]:
        """All cards, by task then id."""
        return sorted(self.cards.values(), key=lambda c: (c.task, c.id))

    def get(self, model_id: str) -> ModelCard:
        """The card of `model_id` (`id@N`: version N of a model trained here), or a ModelError listing the ids."""
        if pinned := self._pinned(model_id):
            return pinned[0]
        if model_id not in self.cards:
            raise ModelError(f"Unknown model {model_id!r}. Known models: {', '.join(sorted(self.cards))}.")
        return self.cards[model_id]

    def pinned(self, model_id: str) -> str:
        """`id@N` for a model trained here (N: its production version now, unless `model_id` names one), else
        `model_id` as it is."""
        if ModelRef.parse(model_id).is_pinned or model_id not in self.versions:
            return model_id
        return f"{model_id}@{self.get(model_id).version}"

    def folder(self, model_id: str) -> Path:
        """The folder of the card's file (where weights that travel with a card lie)."""
        if pinned := self._pinned(model_id):
            return pinned[1].parent
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
        # Presto crop models read monthly composites whose clouds are masked already: no cloud model runs.
        cloud = None if task == CLOUD_TASK or card.builder == PRESTO_BUILDER else self.default_for(CLOUD_TASK)
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
                f"the statistics its weights were trained with in {self.folder(model_id) / 'card.json'}.",
                model_id,
            )
        if not card.builder:
            raise ModelError(f"Model {model_id}'s card names no builder, so it cannot be loaded yet.")
        return card


MODES = ("head", "decoder", "full")  # what `terraseg train --mode` names


# The seed architectures a patch dataset trains (models.training.seeds.CALLING), whole ("full" mode).
SEED_BUILDERS = ("cloud-unet", "dfc2020-unet", "dfc2020-deeplab", "utae", "convrnn", "bigearthnet-resnet50")


def check_trainable(
    cards: "Catalogue", model_id: str, mode: str, built: tuple[str, ...] = ("head",), seeds: bool = True
) -> None:
    """ModelError when `model_id` cannot be trained in `mode` (nothing is loaded); `built`: the modes the
    caller's kind of training data has for Dynamic World bases (head, decoder, full); `seeds`: whether it can
    train the seed architectures (patch datasets can, labels over imagery cannot)."""
    if mode not in MODES:
        raise ModelError(f"Unknown training mode {mode!r}; the modes are {', '.join(MODES)}.")
    card = cards.get(model_id)
    if card.builder in SEED_BUILDERS:
        if mode != "full":
            untrained = "it has no trained weights, and " if card.status == "untrained" else ""
            raise ModelError(
                f"Model {model_id}: {untrained}its architecture trains whole, --mode full (head and decoder "
                "modes build on Dynamic World's features)."
            )
        if not seeds or "full" not in built:
            raise ModelError(
                f"Model {model_id} trains on a patch dataset in its published layout: give --dataset DIR "
                "--format F (dfc2020, 38-cloud, bigearthnet or pastis)."
            )
        return
    if card.status == "untrained":
        raise ModelError(
            f"Model {model_id} has no trained weights and no architecture TerraSeg can train, so --mode {mode} "
            "has nothing to build on."
        )
    if mode not in built:
        raise ModelError(f"--mode {mode} is not built yet for this kind of training data; --mode head is.")
    if card.builder != "dynamic-world":
        raise ModelError(
            f"Head training reads the features of Dynamic World models; {model_id} ({card.builder or 'no builder'}) "
            "is not one yet. Use --base landcover-dynamic-world."
        )


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
    versions: dict[str, dict[str, tuple[ModelCard, Path, State]]] = {}
    for model_dir in (
        sorted(installed_dir.iterdir()) if installed_dir is not None and installed_dir.is_dir() else []
    ):
        try:
            record = read_versions(model_dir)
            if record is None:
                continue
            found = {}
            for version, folder in version_folders(model_dir).items():
                card = read_card(folder / "card.json")
                found[version] = (card, folder / "card.json", record.state(version))
        except ModelError as err:
            log.warning("Skipping a trained model: %s", err)
            continue
        if record.production not in found or model_dir.name in cards:
            log.warning("Skipping %s: no production version, or its id is taken", model_dir)
            continue
        versions[model_dir.name] = found
        cards[model_dir.name], paths[model_dir.name] = (
            found[record.production][0],
            found[record.production][1],
        )
    return Catalogue(cards, paths, versions)


_BUILT: dict[Path | None, tuple[tuple[object, ...], Catalogue]] = {}


def _signature(installed_dir: Path | None) -> tuple[object, ...]:
    """What changes when a model is installed, trained, promoted or rolled back (a few stat calls)."""
    if installed_dir is None:
        return ()
    try:
        stamps: list[object] = [installed_dir.stat().st_mtime_ns]
    except OSError:
        return ("missing",)
    for path in sorted(installed_dir.glob(f"*/{VERSIONS_FILE}")):
        try:
            stamps.append((path.parent.name, path.stat().st_mtime_ns))
        except OSError:
            continue
    return tuple(stamps)


def catalogue(cache_dir: Path | None = None) -> Catalogue:
    """The cards of the installation whose cache folder is `cache_dir` (None: the shipped cards only).

    Read again only when the installed models changed (a model imported or trained, a version promoted or rolled
    back), so running workers and the app see a promotion without a restart.
    """
    installed = cache_dir / "models" if cache_dir is not None else None
    signature = _signature(installed)
    known = _BUILT.get(installed)
    if known is not None and known[0] == signature:
        return known[1]
    built = build_catalogue(installed)
    _BUILT[installed] = (signature, built)
    return built
