"""Loading models: each card's `builder` names its loader here, for the shipped runtimes (csmask's ONNX,
s2cloudless's LightGBM, Dynamic World's converted network) and for PyTorch architectures whose weights sit next to
the card. Weights are checked against the sha256 the card pins and, for PyTorch models, every state-dict key and
shape against the architecture. Which models exist is models.catalogue's business (no torch needed there).
"""

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.errors import ModelError
from core.types import ModelCard, Series, StandardNormalisation
from models import dynamic_world
from models.bigearthnet import BigEarthNetResNet50
from models.catalogue import Catalogue
from models.cloud_unet import build_cloud_unet
from models.convrnn import ConvRNNSegmenter
from models.dfc2020 import DeepLabV3Plus, DFCUNet
from models.folding import fold_batch_norms
from models.torch_predictor import SeriesTorchPredictor, TagsPredictor, TorchPredictor
from models.utae import UTAE, UTAEConfig
from models.weights import check_state_dict, verify_weights

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadOptions:
    """What loading depends on besides the card: the input the scenes offer, and where and how to run."""

    processing_level: str
    available_bands: frozenset[str]
    device: str = "auto"
    threads: int = 0
    compile: bool = False  # torch.compile where the card allows it (the operator's TERRASEG_TORCH_COMPILE)
    cache_dir: Path | None = None  # where runtimes keep machine-specific files (csmask's optimised graph)


def _build_utae(args: dict[str, Any]) -> nn.Module:
    return UTAE(UTAEConfig(**args))


def _build_convrnn(args: dict[str, Any]) -> nn.Module:
    return ConvRNNSegmenter(**args)


def _build_dfc2020_unet(args: dict[str, Any]) -> nn.Module:
    return DFCUNet(**args)


def _build_dfc2020_deeplab(args: dict[str, Any]) -> nn.Module:
    return DeepLabV3Plus(**args)


def _build_cloud_unet(args: dict[str, Any]) -> nn.Module:
    return build_cloud_unet(**args)


def _build_bigearthnet(args: dict[str, Any]) -> nn.Module:
    return BigEarthNetResNet50(**args)


# architecture -> (constructor from builder_args, how the network is called: "image", "series-dates", "series",
# or "tags": one image -> (B, K) logits, a set of classes for the whole image)
BUILDERS: dict[str, tuple[Callable[[dict[str, Any]], nn.Module], str]] = {
    "utae": (_build_utae, "series-dates"),
    "convrnn": (_build_convrnn, "series"),
    "dfc2020-unet": (_build_dfc2020_unet, "image"),
    "dfc2020-deeplab": (_build_dfc2020_deeplab, "image"),
    "cloud-unet": (_build_cloud_unet, "image"),
    "bigearthnet-resnet50": (_build_bigearthnet, "tags"),
}
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
    caveat: str = ""  # the card's caveat for a processing level it was not trained on, when it runs on one


def load(models: Catalogue, model_id: str, options: LoadOptions) -> LoadedModel:
    """Load `model_id` for input of `options.processing_level` with `options.available_bands`."""
    card = models.require_weights(model_id)
    if not card.runs_on(options.processing_level):
        raise ModelError(
            f"Model {model_id} works on {'/'.join(card.runnable_levels)} data, but the scenes "
            f"are {options.processing_level}. Choose another model or source."
        )
    if card.builder not in LOADERS:
        raise ModelError(
            f"Model {model_id}: unknown builder {card.builder!r}; known: {', '.join(sorted(LOADERS))}."
        )
    loaded = LOADERS[card.builder](card, models.folder(model_id), options)
    if not (caveat := card.caveat_for(options.processing_level)):
        return loaded
    log.warning("Model %s runs on %s scenes, a level it was not trained on", model_id, options.processing_level)
    return dataclasses.replace(loaded, caveat=caveat)


def _load_csmask(card: ModelCard, folder: Path, options: LoadOptions) -> LoadedModel:
    """csmask's 6-band variant when the scenes have the SWIR bands, else the 4-band one; the card returned
    names the variant's bands and standardisation."""
    from models.csmask_model import (  # onnxruntime and ukis_csmask: csmask cards only
        CSMASK_BANDS_4,
        CSMASK_BANDS_6,
        CSMaskPredictor,
        variant_normalisation,
    )

    bands = CSMASK_BANDS_6 if set(CSMASK_BANDS_6) <= options.available_bands else CSMASK_BANDS_4
    _require_bands(card.id, bands, options.available_bands)
    csmask = CSMaskPredictor(
        len(bands),
        options.processing_level,
        card.weights_sha256,
        device=options.device,
        threads=options.threads,
        cache_dir=options.cache_dir,
    )
    mean, std = variant_normalisation(len(bands), options.processing_level)
    variant = card.replace(bands=bands, normalisation=StandardNormalisation(mean=mean, std=std))
    return LoadedModel(variant, csmask.predict, csmask.weights_file.name, csmask.sha256)


def _load_s2cloudless(card: ModelCard, folder: Path, options: LoadOptions) -> LoadedModel:
    from models.s2cloudless_model import (  # lightgbm, sklearn (1 s): s2cloudless cards only
        WEIGHTS_FILE,
        S2CloudlessPredictor,
    )

    _require_bands(card.id, card.bands, options.available_bands)
    s2c = S2CloudlessPredictor(card.weights_sha256[WEIGHTS_FILE.name], threads=options.threads)

    def predict(batch: np.ndarray) -> np.ndarray:
        cloud = s2c.predict(batch)[:, 1:2]
        # Shift the decision to the package's threshold while keeping calibrated-looking probabilities:
        # p' = p / (2 * t) below t, else 0.5 + (p - t) / (2 * (1 - t)); monotonic, p' > 0.5 <=> p > t.
        t = S2CLOUDLESS_THRESHOLD
        shifted = np.where(cloud <= t, cloud / (2 * t), 0.5 + (cloud - t) / (2 * (1 - t)))
        return np.concatenate([1.0 - shifted, shifted], axis=1).astype(np.float32)

    return LoadedModel(card, predict, WEIGHTS_FILE.name, s2c.sha256)


def for_inference(net: nn.Module, card: ModelCard) -> nn.Module:
    """The loaded network in eval mode, its batch norms folded when the card says so (the registry owns it: no
    one trains this copy)."""
    net.eval()
    if card.inference.fold_batch_norms:
        folded = fold_batch_norms(net)
        log.debug("Model %s: %d batch norms folded into their convolutions", card.id, folded)
    return net


def tuning(card: ModelCard, options: LoadOptions) -> dict[str, bool]:
    """The card's measured choices for a TorchPredictor; compiling also needs the operator's word."""
    return {"compile": card.inference.compile and options.compile, "cpu_bf16": card.inference.cpu_bf16}


def _load_dynamic_world(card: ModelCard, folder: Path, options: LoadOptions) -> LoadedModel:
    _require_bands(card.id, card.bands, options.available_bands)
    weights = folder / card.weights[0]  # Google's converted weights, or a copy with a head trained here
    network, sha256 = dynamic_world.load_network(card.weights_sha256[weights.name], weights, card.n_classes)
    net = for_inference(network, card)
    if options.threads:
        torch.set_num_threads(options.threads)
    predictor = TorchPredictor(net, options.device, **tuning(card, options))
    return LoadedModel(card, predictor.predict, weights.name, sha256)


def _load_built(card: ModelCard, folder: Path, options: LoadOptions) -> LoadedModel:
    """A PyTorch model from its card's builder and the weights file next to the card (sha256 and keys checked)."""
    if len(card.weights) != 1:
        raise ModelError(f"Model {card.id}: its card must name exactly one weights file.")
    build, calling = BUILDERS[card.builder]
    path = folder / card.weights[0]
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
    net = for_inference(net, card)
    if options.threads:
        torch.set_num_threads(options.threads)
    device = options.device
    if card.is_series != calling.startswith("series"):
        raise ModelError(
            f"Model {card.id}: its card says temporal mode {card.temporal.mode!r}, but builder "
            f"{card.builder!r} takes {'a series' if calling != 'image' else 'single images'}."
        )
    if calling == "image":
        return LoadedModel(card, TorchPredictor(net, device, **tuning(card, options)).predict, path.name, sha256)
    if calling == "tags":
        return LoadedModel(card, TagsPredictor(net, device=device).predict, path.name, sha256)
    origin = card.temporal.position_origin if isinstance(card.temporal, Series) else None

    def for_dates(dates: list[date]) -> Callable[[np.ndarray], np.ndarray]:
        reference = origin or dates[0]
        positions = np.array([d.toordinal() - reference.toordinal() for d in dates], np.float32)
        series = SeriesTorchPredictor(net, positions if calling == "series-dates" else None, device=device)
        return series.predict

    def refuse(batch: np.ndarray) -> np.ndarray:
        raise ModelError(f"Model {card.id} is a series model; call for_dates(dates) first.")

    return LoadedModel(card, refuse, path.name, sha256, for_dates)


def _require_bands(model_id: str, bands: tuple[str, ...], available: frozenset[str]) -> None:
    missing = [b for b in bands if b not in available]
    if missing:
        raise ModelError(f"Model {model_id} needs bands {', '.join(missing)}, which the scenes do not have.")


# builder name on the card -> loader; PyTorch architectures in BUILDERS share _load_built.
LOADERS: dict[str, Callable[[ModelCard, Path, LoadOptions], LoadedModel]] = {
    "csmask": _load_csmask,
    "s2cloudless": _load_s2cloudless,
    "dynamic-world": _load_dynamic_world,
    **{architecture: _load_built for architecture in BUILDERS},
}
