"""Model cards and loading: the one place the CLI, the pipeline and the app learn what models exist.

Each model version has a JSON card: `models/cards/<id>.json`, or `models/weights/<folder>/card.json` next to
weights TerraSeg ships. `load` checks the weights against the sha256 the card pins and, for PyTorch models, every
state-dict key and shape against the architecture.
"""

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.config import get_settings
from core.errors import ModelError
from core.inference import NORMALISATION_KINDS
from core.tiling import NODATA_FILLS
from core.types import ClassInfo, ModelCard

log = logging.getLogger(__name__)
MODELS_DIR = Path(__file__).resolve().parent
STATUSES = ("pretrained", "trained-here", "untrained")


def card_files() -> list[Path]:
    """Every model card: `models/cards/<id>.json`, `models/weights/<folder>/card.json` beside shipped weights,
    and `<cache>/models/<folder>/card.json` beside weights trained or imported on this installation."""
    trained_here = get_settings().cache_dir / "models"
    return (
        sorted((MODELS_DIR / "cards").glob("*.json"))
        + sorted((MODELS_DIR / "weights").glob("*/card.json"))
        + sorted(trained_here.glob("*/card.json"))
    )


def read_card(path: Path) -> ModelCard:
    """A card from its JSON file, checked field by field; ModelError names the file and what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelError(f"The model card {path} cannot be read: {err}.") from err
    if not isinstance(data, dict):
        raise ModelError(f"The model card {path} is not a JSON object.")
    known = {f.name for f in dataclasses.fields(ModelCard)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ModelError(f"The model card {path.name} has unknown fields: {', '.join(unknown)}.")
    try:
        classes = tuple(
            ClassInfo(int(c["value"]), str(c["name"]), str(c["color"])) for c in data.pop("classes")
        )
        for name in ("bands", "processing_levels", "weights"):
            if name in data:
                data[name] = tuple(data[name])
        card = ModelCard(classes=classes, **data)
    except (KeyError, TypeError, ValueError) as err:
        raise ModelError(f"The model card {path.name} is incomplete or malformed ({err}).") from err
    if card.status not in STATUSES:
        raise ModelError(
            f"The model card {path.name} has status {card.status!r}; use one of {', '.join(STATUSES)}."
        )
    if [c.value for c in card.classes] != list(range(len(card.classes))) or card.nodata_value < len(
        card.classes
    ):
        raise ModelError(
            f"The model card {path.name} must number its classes 0..K-1, below its nodata value."
        )
    if card.nodata_fill not in NODATA_FILLS:
        raise ModelError(
            f"The model card {path.name} has nodata_fill {card.nodata_fill!r}; use one of {', '.join(NODATA_FILLS)}."
        )
    missing = [w for w in card.weights if card.status != "untrained" and w not in card.weights_sha256]
    if missing:
        raise ModelError(f"The model card {path.name} pins no sha256 for {', '.join(missing)}.")
    return card


def _load_cards() -> tuple[dict[str, ModelCard], dict[str, Path]]:
    cards: dict[str, ModelCard] = {}
    paths: dict[str, Path] = {}
    for path in card_files():
        try:
            card = read_card(path)
        except ModelError as err:
            if path.is_relative_to(MODELS_DIR):
                raise  # a card shipped with TerraSeg must be right
            log.warning("Skipping an installed model: %s", err)  # one bad import must not stop the app
            continue
        if card.id in cards:
            if path.is_relative_to(MODELS_DIR):
                raise ModelError(f"Two model cards use the id {card.id!r}; the second is {path}.")
            log.warning("Skipping %s: the id %r is taken by %s", path, card.id, paths[card.id])
            continue
        cards[card.id], paths[card.id] = card, path
    return cards, paths


CARDS, CARD_PATHS = _load_cards()


def _build_utae(args: dict[str, Any]) -> nn.Module:
    from models.utae import UTAE

    return UTAE(**args)


def _build_convrnn(args: dict[str, Any]) -> nn.Module:
    from models.convrnn import ConvRNNSegmenter

    return ConvRNNSegmenter(**args)


def _build_dfc2020_unet(args: dict[str, Any]) -> nn.Module:
    from models.dfc2020 import DFCUNet

    return DFCUNet(**args)


def _build_dfc2020_deeplab(args: dict[str, Any]) -> nn.Module:
    from models.dfc2020 import DeepLabV3Plus

    return DeepLabV3Plus(**args)


def _build_cloud_unet(args: dict[str, Any]) -> nn.Module:
    from models.cloud_unet import build_cloud_unet

    return build_cloud_unet(**args)


# builder name -> (constructor from builder_args, how the network is called: "image", "series-dates", "series")
BUILDERS: dict[str, tuple[Callable[[dict[str, Any]], nn.Module], str]] = {
    "utae": (_build_utae, "series-dates"),
    "convrnn": (_build_convrnn, "series"),
    "dfc2020-unet": (_build_dfc2020_unet, "image"),
    "dfc2020-deeplab": (_build_dfc2020_deeplab, "image"),
    "cloud-unet": (_build_cloud_unet, "image"),
}
DEFAULT_MODEL_BY_TASK = {"cloud": "cloud-csmask", "landcover": "landcover-dynamic-world"}
# s2cloudless says "cloud" above this probability; argmax over [1-p, p] would use 0.5.
S2CLOUDLESS_THRESHOLD = 0.4


@dataclass(frozen=True)
class LoadedModel:
    """A ready model: the card as it applies to this input, the predict callable, and what to record.

    Series models predict (B, T, C, S, S) batches and need the dates first: `for_dates(dates)` gives their
    predict callable (`predict` itself refuses to run for them).
    """

    card: ModelCard
    predict: Callable[[np.ndarray], np.ndarray]
    weights_file: str
    weights_sha256: str
    for_dates: Callable[[list[date]], Callable[[np.ndarray], np.ndarray]] | None = None


def list_cards() -> list[ModelCard]:
    """All model cards, by task then id."""
    return sorted(CARDS.values(), key=lambda c: (c.task, c.id))


def get_card(model_id: str) -> ModelCard:
    """The card of `model_id`, or a ModelError listing the known ids."""
    if model_id not in CARDS:
        raise ModelError(
            f"Unknown model {model_id!r}. Known models: {', '.join(sorted(CARDS))} (run 'terraseg models')."
        )
    return CARDS[model_id]


def default_model(task: str) -> str:
    """The model a job of `task` uses when none is named."""
    if task not in DEFAULT_MODEL_BY_TASK:
        raise ModelError(
            f"Unknown task {task!r}. Tasks with a model: {', '.join(sorted(DEFAULT_MODEL_BY_TASK))}."
        )
    return DEFAULT_MODEL_BY_TASK[task]


def require_weights(model_id: str) -> ModelCard:
    """The card of a model that has weights; an untrained one is refused with how to get them."""
    card = get_card(model_id)
    if card.status == "untrained":
        raise ModelError(
            f"Model {model_id} has no trained weights yet; import published weights ('terraseg import "
            f"{model_id} FILE...') or train it first."
        )
    kind = card.normalisation.get("kind")
    if kind not in NORMALISATION_KINDS:
        raise ModelError(
            f"Model {model_id}'s card does not say how to normalise its input (normalisation {kind!r}); set "
            f"the statistics its weights were trained with in {CARD_PATHS[model_id]}."
        )
    return card


def load(
    model_id: str, *, processing_level: str, available_bands: set[str], device: str = "auto", threads: int = 0
) -> LoadedModel:
    """Load `model_id` for input of `processing_level` with `available_bands`; weights are sha256-checked."""
    card = require_weights(model_id)
    if processing_level not in card.processing_levels:
        raise ModelError(
            f"Model {model_id} works on {'/'.join(card.processing_levels)} data, but the scenes "
            f"are {processing_level}. Choose another model or source."
        )
    if model_id == "cloud-csmask":
        from models.csmask_model import CSMASK_BANDS_4, CSMASK_BANDS_6, CSMaskPredictor, variant_normalisation

        bands = CSMASK_BANDS_6 if set(CSMASK_BANDS_6) <= available_bands else CSMASK_BANDS_4
        _require_bands(model_id, bands, available_bands)
        csmask = CSMaskPredictor(
            len(bands), processing_level, card.weights_sha256, device=device, threads=threads
        )
        card = dataclasses.replace(
            card, bands=bands, normalisation=variant_normalisation(len(bands), processing_level)
        )
        return LoadedModel(card, csmask.predict, csmask.weights_file.name, csmask.sha256)
    if model_id == "cloud-s2cloudless":
        from models.s2cloudless_model import WEIGHTS_FILE, S2CloudlessPredictor

        _require_bands(model_id, card.bands, available_bands)
        s2c = S2CloudlessPredictor(card.weights_sha256[WEIGHTS_FILE.name], threads=threads)

        def predict(batch: np.ndarray) -> np.ndarray:
            cloud = s2c.predict(batch)[:, 1:2]
            # Shift the decision to the package's threshold while keeping calibrated-looking probabilities:
            # p' = p / (2 * t) below t, else 0.5 + (p - t) / (2 * (1 - t)); monotonic, p' > 0.5 <=> p > t.
            t = S2CLOUDLESS_THRESHOLD
            shifted = np.where(cloud <= t, cloud / (2 * t), 0.5 + (cloud - t) / (2 * (1 - t)))
            return np.concatenate([1.0 - shifted, shifted], axis=1).astype(np.float32)

        return LoadedModel(card, predict, WEIGHTS_FILE.name, s2c.sha256)
    if model_id == "landcover-dynamic-world":
        from models import dynamic_world
        from models.torch_predictor import TorchPredictor

        _require_bands(model_id, card.bands, available_bands)
        net, sha256 = dynamic_world.load_network(
            expected_sha256=card.weights_sha256[dynamic_world.WEIGHTS_FILE.name]
        )
        if threads:
            import torch

            torch.set_num_threads(threads)
        return LoadedModel(
            card, TorchPredictor(net, device=device).predict, dynamic_world.WEIGHTS_FILE.name, sha256
        )
    if card.builder:
        return _load_built(card, device, threads)
    raise ModelError(f"Model {model_id} has a card but no loader.")


def _load_built(card: ModelCard, device: str, threads: int) -> LoadedModel:
    """A PyTorch model from its card's builder and the weights file next to the card (sha256 and keys checked)."""
    from models.torch_predictor import SeriesTorchPredictor, TorchPredictor
    from models.weights import check_state_dict, verify_weights

    if card.builder not in BUILDERS:
        raise ModelError(
            f"Model {card.id}: unknown builder {card.builder!r}; known: {', '.join(sorted(BUILDERS))}."
        )
    if len(card.weights) != 1:
        raise ModelError(f"Model {card.id}: its card must name exactly one weights file.")
    build, calling = BUILDERS[card.builder]
    path = CARD_PATHS[card.id].parent / card.weights[0]
    sha256 = verify_weights(path, card.weights_sha256.get(card.weights[0], ""), card.id)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise ModelError(
            f"Model {card.id}: {path.name} is not a readable PyTorch state dict ({err})."
        ) from err
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    net = build(dict(card.builder_args))
    check_state_dict(net, state, path.name)
    net.load_state_dict(state)
    if threads:
        torch.set_num_threads(threads)
    series_card = card.temporal.get("mode") == "series"
    if series_card != (calling != "image"):
        raise ModelError(
            f"Model {card.id}: its card says temporal mode {card.temporal.get('mode')!r}, but builder "
            f"{card.builder!r} takes {'a series' if calling != 'image' else 'single images'}."
        )
    if calling == "image":
        return LoadedModel(card, TorchPredictor(net, device=device).predict, path.name, sha256)
    origin = card.temporal.get("position_origin")

    def for_dates(dates: list[date]) -> Callable[[np.ndarray], np.ndarray]:
        reference = date.fromisoformat(str(origin)) if origin else dates[0]
        positions = np.array([d.toordinal() - reference.toordinal() for d in dates], np.float32)
        series = SeriesTorchPredictor(net, positions if calling == "series-dates" else None, device=device)
        return series.predict

    def refuse(batch: np.ndarray) -> np.ndarray:
        raise ModelError(f"Model {card.id} is a series model; call for_dates(dates) first.")

    return LoadedModel(card, refuse, path.name, sha256, for_dates)


def _require_bands(model_id: str, bands: tuple[str, ...], available: set[str]) -> None:
    missing = [b for b in bands if b not in available]
    if missing:
        raise ModelError(f"Model {model_id} needs bands {', '.join(missing)}, which the scenes do not have.")
