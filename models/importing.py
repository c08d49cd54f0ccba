"""Importing published weights for an untrained architecture: `terraseg import MODEL_ID FILE...`.

The importer of the architecture checks the files (keys, shapes, a safe `args.pkl`), and the weights are saved
as a plain PyTorch state dict with a new model card in `<cache>/models/<new id>/`, status "pretrained", the
source files' sha256 in its provenance. The registry picks the card up at the next start (CLI run, worker,
app), and jobs can name the new id.
"""

import hashlib
import re
import shutil
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import torch

from core.errors import ModelError
from core.types import ModelCard
from models.dfc2020 import import_dfc2020
from models.registry import BUILDERS
from models.torch_files import save_state
from models.utae import import_utae_checkpoint
from models.weights import check_state_dict, sha256_of

WEIGHTS_NAME = "weights.pt"
MODEL_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def _import_dfc2020(card: ModelCard, files: list[Path]) -> tuple[dict[str, Any], dict[str, Any]]:
    pickles = [f for f in files if f.suffix == ".pkl"]
    checkpoints = [f for f in files if f.suffix in (".pth", ".pt", ".tar")]
    if len(pickles) != 1 or len(checkpoints) != 1:
        raise ModelError(f"{card.id} needs the baseline's args.pkl and one checkpoint .pth file.")
    model, config = import_dfc2020(pickles[0], checkpoints[0])
    expected = "unet" if card.builder == "dfc2020-unet" else "deeplab"
    if config.model != expected:
        raise ModelError(
            f"args.pkl describes a {config.model} model; import it as the matching DFC2020 card."
        )
    n_bands, n_classes = len(config.bands), len(config.classes)
    args = {"n_channels": n_bands, "n_classes": n_classes} if expected == "unet" else {
        "n_in": n_bands, "num_classes": n_classes, "output_stride": config.output_stride,
    }  # fmt: skip
    changes = {
        "bands": config.bands,
        "classes": config.classes,
        "normalisation": {
            "kind": "scale-clip",
            "scale": [1.0 if b.startswith("B") else 1 / 25 for b in config.bands],
            "offset": [0.0 if b.startswith("B") else 1.0 for b in config.bands],
            "low": 0.0,
            "high": 1.0,
        },
        "sensor": "S1+S2" if "VV" in config.bands else "S2",
        "builder_args": args,
    }
    return model.state_dict(), changes


def _import_utae(card: ModelCard, files: list[Path]) -> tuple[dict[str, Any], dict[str, Any]]:
    if len(files) != 1:
        raise ModelError(f"{card.id} needs one checkpoint file (model.pth.tar).")
    return import_utae_checkpoint(files[0]), {
        "temporal": card.temporal.model_copy(update={"position_origin": date(2018, 9, 1)})
    }


def _import_state_dict(card: ModelCard, files: list[Path]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A state dict saved from TerraSeg's own class (e.g. trained elsewhere), checked against the builder."""
    if len(files) != 1:
        raise ModelError(f"{card.id} needs one state-dict file.")
    try:
        state = torch.load(files[0], map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise ModelError(f"{files[0].name} is not a readable PyTorch checkpoint ({err}).") from err
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"{files[0].name} holds no state dict.")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    check_state_dict(BUILDERS[card.builder][0](dict(card.builder_args)), state, files[0].name)
    return state, {}


IMPORTERS = {
    "dfc2020-unet": _import_dfc2020,
    "dfc2020-deeplab": _import_dfc2020,
    "utae": _import_utae,
    "convrnn": _import_state_dict,
    "cloud-unet": _import_state_dict,
}


def import_weights(
    card: ModelCard, files: list[Path], models_dir: Path, taken_ids: set[str], new_id: str | None = None
) -> Path:
    """Check `files` with the importer of `card`'s architecture and install them as a new model in `models_dir`
    (`<cache>/models`); returns its card. `taken_ids`: the ids of the models installed already."""
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ModelError(f"Not found: {', '.join(missing)}.")
    if card.builder not in IMPORTERS:
        raise ModelError(
            f"Model {card.id} has no importer; its weights come with TerraSeg or are trained here."
        )
    model_id = new_id or f"{card.id}-imported"
    check_model_id(model_id)
    folder = models_dir / model_id
    if folder.exists() or model_id in taken_ids:
        raise ModelError(f"A model {model_id!r} is already installed; choose another id with --as.")
    state, changes = IMPORTERS[card.builder](card, files)
    staging = models_dir / f".{model_id}.staging"
    shutil.rmtree(staging, ignore_errors=True)  # left by an import that was interrupted
    staging.mkdir(parents=True)
    save_state(state, staging / WEIGHTS_NAME)
    sources = ", ".join(f"{f.name} (sha256 {sha256_of(f)[:16]}...)" for f in files)
    imported = card.replace(
        id=model_id,
        status="pretrained",
        weights=(WEIGHTS_NAME,),
        weights_sha256={WEIGHTS_NAME: hashlib.sha256((staging / WEIGHTS_NAME).read_bytes()).hexdigest()},
        provenance=f"imported on {datetime.now(UTC):%Y-%m-%d} from {sources}; architecture: {card.provenance}",
        licence="as published by the weights' authors (check their licence before sharing maps)",
        **changes,
    )
    (staging / "card.json").write_text(imported.model_dump_json(indent=2) + "\n")
    staging.rename(folder)  # the card appears complete or not at all
    return folder / "card.json"


def check_model_id(model_id: str) -> None:
    """Refuse an id that could not name a model folder safely (imported or trained models)."""
    if not MODEL_ID_PATTERN.fullmatch(model_id):
        raise ModelError(
            f"{model_id!r} is not a usable model id: use lower-case letters, digits, '.', '-' or '_'."
        )
