"""Model cards and loading: the one place the CLI, the pipeline and (later) the app learn what models exist."""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from core.errors import ModelError
from core.types import ClassInfo, ModelCard
from models import dynamic_world

CLOUD_CLASSES = (
    ClassInfo(0, "clear", "#3a7d44"),
    ClassInfo(1, "cloud", "#d9d9d9"),
    ClassInfo(2, "cloud shadow", "#4b3f8f"),
)

LANDCOVER_CLASSES = tuple(
    ClassInfo(value, name.replace("_", " "), color)
    for value, (name, color) in enumerate(
        zip(dynamic_world.CLASS_NAMES, dynamic_world.CLASS_COLORS, strict=True)
    )
)


def _untrained_seed_cards() -> tuple[ModelCard, ...]:
    """Architectures of the projects TerraSeg replaces: ready to import published weights or to be trained."""
    from models import cloud_unet, dfc2020

    dfc_bands = dfc2020.input_bands(use_s2hr=True, use_s2mr=True, use_s2lr=False, use_s1=True)
    # The baseline's input scaling: S2 reflectance clipped to 0..1, S1 dB clipped to -25..0 then / 25 + 1.
    dfc_normalisation: dict[str, object] = {
        "kind": "scale-clip",
        "scale": [1.0 if b.startswith("B") else 1 / 25 for b in dfc_bands],
        "offset": [0.0 if b.startswith("B") else 1.0 for b in dfc_bands],
        "low": 0.0,
        "high": 1.0,
    }
    dfc_common = {
        "version": "0.1.0",
        "task": "landcover",
        "sensor": "S1+S2",
        "bands": dfc_bands,
        "processing_levels": ("L1C", "L2A"),
        "resolution_m": 10.0,
        "tile_px": 256,
        "normalisation": dfc_normalisation,
        "classes": dfc2020.dfc2020_classes(no_savanna=True),
        "status": "untrained",
        "licence": "weights: as published by their authors (none shipped)",
    }
    from models import bigearthnet, convrnn, utae

    # No official colours exist for MTLCC's classes; these are distinct hues chosen here.
    mtlcc_colors = (
        "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c",
        "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3", "#808000",
    )  # fmt: skip
    mtlcc_classes = tuple(
        ClassInfo(i, name, color)
        for i, (name, color) in enumerate(zip(convrnn.CLASS_NAMES, mtlcc_colors, strict=True))
    )
    mtlcc_cards = tuple(
        ModelCard(
            id=f"landcover-mtlcc-conv{cell}",
            version="0.1.0",
            task="landcover",
            description=f"Crop and land cover in 17 MTLCC classes from a Sentinel-2 series of up to 30 dates, "
            f"bidirectional Conv{cell.upper()} encoder; train it (MTLCC's published weights are TensorFlow).",
            architecture=f"bidirectional conv{cell} 3x3, layer norm, hidden 64; final state -> conv3x3-BN-"
            "leakyReLU-conv1x1",
            sensor="S2",
            bands=convrnn.BANDS,
            processing_levels=("L1C",),
            resolution_m=convrnn.RESOLUTION_M,
            tile_px=convrnn.TILE_PX,
            normalisation={"kind": "none"},
            classes=mtlcc_classes,
            status="untrained",
            licence="weights: none shipped",
            provenance="Russwurm & Koerner 2018, ISPRS IJGI 7(4):129 (MTLCC). Class names/order and band order "
            "within resolution groups come from a third-party reader and are unconfirmed offline.",
            temporal={
                "mode": "series",
                "max_dates": convrnn.MAX_DATES,
                "date_choice": "all dates, empty ones padded",
            },
        )
        for cell in ("lstm", "gru")
    )
    tag_colors = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666")
    tags_card = ModelCard(
        id="scene-tags-bigearthnet-resnet50",
        version="0.1.0",
        task="scene-tags",
        description="Multi-label BigEarthNet-19 tags per 1.2 km patch (a coarse 'scene tags' layer and a JSON "
        "list for the AOI), ResNet-50; import published BigEarthNet weights or train it.",
        architecture="resnet-50 (torchvision layout), 12 input bands, 19 sigmoid outputs, 120 px patches",
        sensor="S2",
        bands=bigearthnet.BANDS_12,
        processing_levels=("L2A",),
        resolution_m=bigearthnet.RESOLUTION_M,
        tile_px=bigearthnet.PATCH_PX,
        normalisation=bigearthnet.NORMALISATION_12,
        classes=tuple(
            ClassInfo(i, name, tag_colors[i % len(tag_colors)])
            for i, name in enumerate(bigearthnet.CLASS_NAMES)
        ),
        status="untrained",
        licence="weights: none shipped",
        provenance="Sumbul et al. 2019 (BigEarthNet), 19-class nomenclature of Sumbul et al. 2021; band order of "
        "the authors' PyTorch code (other ports differ: check a checkpoint's conventions).",
    )
    utae_card = ModelCard(
        id="crop-utae-pastis",
        version="0.1.0",
        task="crop",
        description="Crop types in the 20 PASTIS classes from a Sentinel-2 series, U-TAE (U-Net with temporal "
        "attention); import the published PASTIS checkpoint (model.pth.tar) or train it.",
        architecture="u-tae: encoder 64-64-64-128 (GroupNorm 4), decoder 32-32-64-128, L-TAE 16 heads, d_model "
        "256, d_k 4, sinusoidal date encoding T=1000, att_group skips; 1.09 M parameters",
        sensor="S2",
        bands=utae.BANDS,
        processing_levels=("L2A",),
        resolution_m=10.0,
        tile_px=128,
        # PASTIS standardises DN per band with NORM_S2_patch.json, which ships with the dataset, not the code.
        normalisation={
            "kind": "unknown",
            "note": "PASTIS per-band mean/std (NORM_S2_patch.json), not known offline",
        },
        classes=tuple(
            ClassInfo(i, name, color)
            for i, (name, color) in enumerate(zip(utae.CLASS_NAMES, utae.CLASS_COLORS, strict=True))
        ),
        status="untrained",
        licence="weights: none shipped (the published PASTIS weights are MIT, utae-paps)",
        provenance="Garnot & Landrieu 2021 (ICCV), VSainteuf/utae-paps layout (158 keys); dates as days since "
        "2018-09-01 for the published weights; class 19 'void label' is ignored in training.",
        temporal={
            "mode": "series",
            "max_dates": 61,
            "date_choice": "every date, padded to the longest series",
        },
    )
    return (
        utae_card,
        *mtlcc_cards,
        tags_card,
        ModelCard(
            id="landcover-dfc2020-unet",
            description="DFC2020 land cover (9 classes, Savanna ignored) from Sentinel-1 + Sentinel-2, UNet; "
            "import the DFC2020 baseline's args.pkl + checkpoint, or train it.",
            architecture="unet 64-128-256-512-512, bilinear decoder (DFC2020 baseline / milesial layout)",
            provenance="architecture of lukasliebel/dfc2020_baseline (Schmitt et al., SEN12MS); no weights here",
            **dfc_common,  # type: ignore[arg-type]
        ),
        ModelCard(
            id="landcover-dfc2020-deeplab",
            description="DFC2020 land cover (9 classes, Savanna ignored) from Sentinel-1 + Sentinel-2, "
            "DeepLabv3+ with a ResNet-101; import the DFC2020 baseline's args.pkl + checkpoint, or train it.",
            architecture="deeplabv3+ resnet-101 (multi-grid 1-2-4), output stride 16, ASPP rates 6-12-18",
            provenance="architecture of lukasliebel/dfc2020_baseline (jfzhang95 DeepLab layout); no weights here",
            **dfc_common,  # type: ignore[arg-type]
        ),
        ModelCard(
            id="cloud-unet",
            version="0.1.0",
            task="cloud",
            description="A trainable cloud UNet on 10 m RGB + NIR with a soft F1/F2 loss, for your own labels.",
            architecture="unet base 32, 4 levels, transposed-conv decoder; soft F-beta + 0.1 cross-entropy loss",
            sensor="S2",
            bands=cloud_unet.BANDS,
            processing_levels=("L1C", "L2A"),
            resolution_m=10.0,
            tile_px=256,
            normalisation={"kind": "none"},
            classes=CLOUD_CLASSES[:2],
            status="untrained",
            licence="GPL-3.0-or-later (TerraSeg)",
            provenance="the cloud_detection seed's approach (UNet, F-beta loss); train it on your labels",
        ),
    )


CARDS: dict[str, ModelCard] = {
    card.id: card
    for card in (
        ModelCard(
            id="cloud-csmask",
            version="1.0.0",
            task="cloud",
            description="Clouds and cloud shadows, DLR's ukis-csmask CNN (UNet, EfficientNet-B4 encoder), "
            "run at 30 m as its authors recommend.",
            architecture="unet-efficientnet-b4 (ONNX)",
            sensor="S2",
            bands=("B02", "B03", "B04", "B08", "B11", "B12"),
            processing_levels=("L1C", "L2A"),
            resolution_m=30.0,
            tile_px=256,
            normalisation={"kind": "standard (per variant, from the package)"},
            classes=CLOUD_CLASSES,
            status="pretrained",
            licence="Apache-2.0",
            provenance="ukis-csmask 1.0.0 wheel (PyPI); Wieland et al. 2019, RSE 230; 6-band model when B11/B12 "
            "exist, else 4-band; L1C or L2A variant by the input's processing level.",
            weights=("model_6b_l1c.onnx", "model_6b_l2a.onnx", "model_4b_l1c.onnx", "model_4b_l2a.onnx"),
            cpu_s_per_mpx=0.11,  # 4 x 256^2 tiles at 30 m, onnxruntime, 2 vCPU (2026-11-26)
        ),
        ModelCard(
            id="cloud-s2cloudless",
            version="1.7.3",
            task="cloud",
            description="Cloud probability per pixel, Sinergise's s2cloudless LightGBM (no shadows); cloud where "
            "the probability exceeds 0.4 (the package's default threshold).",
            architecture="lightgbm per-pixel classifier",
            sensor="S2",
            bands=("B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12"),
            processing_levels=("L1C",),
            resolution_m=10.0,
            tile_px=256,
            normalisation={"kind": "none"},
            classes=CLOUD_CLASSES[:2],
            status="pretrained",
            licence="CC-BY-SA-4.0 (model), MIT (code)",
            provenance="s2cloudless 1.7.3 wheel (PyPI), pixel_s2_cloud_detector_lightGBM_v0.1",
            weights=("pixel_s2_cloud_detector_lightGBM_v0.1.txt",),
            cpu_s_per_mpx=7.7,  # 4 x 256^2 tiles, LightGBM, 2 vCPU (2026-11-26)
        ),
        ModelCard(
            id="landcover-dynamic-world",
            version="1.0.0",
            task="landcover",
            description="Land cover in 9 classes (water, trees, grass, flooded vegetation, crops, shrub and "
            "scrub, built, bare, snow and ice), Google's globally trained Dynamic World model, ported to "
            "PyTorch; run on the clearest date, clouds and shadows masked by the cloud model.",
            architecture="dynamic-world: 3x3 stem, antialiased 2x downsample, 3 residual pointwise/depthwise "
            "blocks (mish), bilinear upsample, l2-normalised 1x1 head",
            sensor="S2",
            bands=dynamic_world.BANDS,
            processing_levels=("L1C",),
            resolution_m=10.0,
            tile_px=256,
            normalisation=dynamic_world.NORMALISATION,
            classes=LANDCOVER_CLASSES,
            status="pretrained",
            licence="Apache-2.0, with the attribution in models/weights/dynamic_world/NOTICE",
            provenance="google/dynamicworld@0dd288fae5fb5291d988e5ea3c12eb91df481ec5 model/forward (TensorFlow "
            "SavedModel), converted by models/conversion/dynamic_world.py; PyTorch vs TensorFlow on the 3 clear "
            "real Slovenia dates: mean |p diff| 4.8e-8, max 1.2e-6, argmax agreement 100 %. Brown et al. 2022, "
            "Scientific Data 9:251.",
            weights=(dynamic_world.WEIGHTS_FILE.name,),
            cpu_s_per_mpx=5.6,  # 4 x 256^2 tiles, torch fp32 channels_last, 2 vCPU (2026-11-26)
            temporal={"mode": "single", "date_choice": "the clearest date by the cloud model; clouds masked"},
            metrics={"port_vs_tensorflow": {"mean_abs_prob_diff": 4.8e-8, "argmax_agreement": 1.0}},
        ),
        *_untrained_seed_cards(),
    )
}


DEFAULT_MODEL_BY_TASK = {"cloud": "cloud-csmask", "landcover": "landcover-dynamic-world"}
# s2cloudless says "cloud" above this probability; argmax over [1-p, p] would use 0.5.
S2CLOUDLESS_THRESHOLD = 0.4


@dataclass(frozen=True)
class LoadedModel:
    """A ready model: the card as it applies to this input, the predict callable, and what to record."""

    card: ModelCard
    predict: Callable[[np.ndarray], np.ndarray]
    weights_file: str
    weights_sha256: str


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


def load(
    model_id: str, *, processing_level: str, available_bands: set[str], device: str = "auto", threads: int = 0
) -> LoadedModel:
    """Load `model_id` for input of `processing_level` with `available_bands`; weights are sha256-checked."""
    card = get_card(model_id)
    if card.status == "untrained":
        raise ModelError(
            f"Model {model_id} has no trained weights yet; import published weights or train it first."
        )
    if processing_level not in card.processing_levels:
        raise ModelError(
            f"Model {model_id} works on {'/'.join(card.processing_levels)} data, but the scenes "
            f"are {processing_level}. Choose another model or source."
        )
    if model_id == "cloud-csmask":
        from models.csmask_model import CSMASK_BANDS_4, CSMASK_BANDS_6, CSMaskPredictor, variant_normalisation

        bands = CSMASK_BANDS_6 if set(CSMASK_BANDS_6) <= available_bands else CSMASK_BANDS_4
        _require_bands(model_id, bands, available_bands)
        csmask = CSMaskPredictor(len(bands), processing_level, device=device, threads=threads)
        card = dataclasses.replace(
            card, bands=bands, normalisation=variant_normalisation(len(bands), processing_level)
        )
        return LoadedModel(card, csmask.predict, csmask.weights_file.name, csmask.sha256)
    if model_id == "cloud-s2cloudless":
        from models.s2cloudless_model import WEIGHTS_FILE, S2CloudlessPredictor

        _require_bands(model_id, card.bands, available_bands)
        s2c = S2CloudlessPredictor(threads=threads)

        def predict(batch: np.ndarray) -> np.ndarray:
            cloud = s2c.predict(batch)[:, 1:2]
            # Shift the decision to the package's threshold while keeping calibrated-looking probabilities:
            # p' = p / (2 * t) below t, else 0.5 + (p - t) / (2 * (1 - t)); monotonic, p' > 0.5 <=> p > t.
            t = S2CLOUDLESS_THRESHOLD
            shifted = np.where(cloud <= t, cloud / (2 * t), 0.5 + (cloud - t) / (2 * (1 - t)))
            return np.concatenate([1.0 - shifted, shifted], axis=1).astype(np.float32)

        return LoadedModel(card, predict, WEIGHTS_FILE.name, s2c.sha256)
    if model_id == "landcover-dynamic-world":
        from models.torch_predictor import TorchPredictor

        _require_bands(model_id, card.bands, available_bands)
        net, sha256 = dynamic_world.load_network()
        if threads:
            import torch

            torch.set_num_threads(threads)
        return LoadedModel(
            card, TorchPredictor(net, device=device).predict, dynamic_world.WEIGHTS_FILE.name, sha256
        )
    raise ModelError(f"Model {model_id} has a card but no loader.")


def _require_bands(model_id: str, bands: tuple[str, ...], available: set[str]) -> None:
    missing = [b for b in bands if b not in available]
    if missing:
        raise ModelError(f"Model {model_id} needs bands {', '.join(missing)}, which the scenes do not have.")
