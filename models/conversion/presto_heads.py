"""Train the shipped Presto crop heads on WorldCereal's real French samples, and score a RandomForest anchor.

    python -m models.conversion.presto_heads [--samples FILE ...] [--out models/weights] [--json]

Both heads sit on WorldCereal's fine-tuned Presto encoder. Split (never a parcel of the training set in the
scores): the samples' 0.1 degree cells (about 10 km) are held out whole, class by class, until about 25 % of
each class is (models.presto_heads.block_holdout). Not by S2 tile: the 791 samples lie in 7 tiles, and 56 of
the 57 wheat parcels in one (30UYU), so a tile split would leave wheat out of training or out of validation.
The head: 100 epochs of class-weighted cross-entropy on the rest (models.training.heads.fit_head; the epoch kept is
the one with the best macro F1 on the training samples, so no held-out sample takes part).

The anchor, on the same split: a RandomForest (300 trees, balanced class weights) on the raw monthly values of
the 16 input channels. Both are scored on `SPLITS` seeded splits; the shipped head is the one trained on the
first split, and its card holds that split's scores and the mean over all of them.
"""

import argparse
import hashlib
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from core.learning.crop_samples import SampleSeries, concatenate, labels_under, read_samples_table, to_series
from core.learning.metrics import Metrics, class_weights, evaluate
from core.mapping.presto_inputs import CHANNELS
from core.types import ClassInfo, ModelCard, PrestoNormalisation, Series
from models import presto
from models.presto_heads import (
    BUILDER,
    WEIGHTS_DIR,
    block_holdout,
    embeddings,
    model_classes,
    raw_monthly_features,
    spatial_blocks,
    worldcereal_legends,
)
from models.training.heads import fit_head
from models.training.loop import TrainConfig
from models.weights import sha256_of

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SAMPLES = (
    REPO / "tests/data/worldcereal/reference_2022_FRA_month.geoparquet",
    REPO / "tests/data/worldcereal/reference_2023_FRA_dekad_part.geoparquet",
)
ENCODER = "presto/presto_worldcereal_finetuned.pt"
HOLDOUT_FRACTION, SPLITS = 0.25, 4
CPU_S_PER_MPX = 800.0
HEAD = TrainConfig(epochs=100, learning_rate=0.01, weight_decay=1e-4, batch_size=512, patience=100, seed=0)


@dataclass(frozen=True)
class HeadPlan:
    """A shipped head: its id, legend, classes (value order) with colours, and how legend classes merge."""

    model_id: str
    legend: str
    classes: tuple[tuple[str, str], ...]  # (name, colour)
    legend_classes: dict[str, str]
    description: str
    default_for_task: bool = False
    cropland_model: str = ""  # a crop job also writes this model's map (cropland.tif)


PLANS = (
    HeadPlan(
        "crop-presto-croptype",
        "CROPTYPE20_EUROPE",
        (
            ("no_crop", "#bdbdbd"),
            ("wheat", "#e6ab02"),
            ("maize", "#ff7f00"),
            ("barley", "#a6761d"),
            ("rapeseed_rape", "#ffff33"),
            ("grass_fodder_crops", "#66a61e"),
            ("other_crop", "#e7298a"),
        ),
        # classes with fewer than 10 samples in the shipped data go to other_crop
        {"*": "other_crop"},
        "Crop types (wheat, maize, barley, rapeseed, grass and fodder, other crops, no crop) from a 12-month "
        "S1 + S2 series: WorldCereal's fine-tuned Presto encoder with a linear head trained here on 791 real "
        "French LPIS parcels.",
        default_for_task=True,
        cropland_model="crop-presto-cropland",
    ),
    HeadPlan(
        "crop-presto-cropland",
        "LANDCOVER10",
        (("other", "#bdbdbd"), ("cropland", "#e6ab02")),
        {"temporary_crops": "cropland", "*": "other"},
        "Cropland (temporary crops) against everything else from a 12-month S1 + S2 series: WorldCereal's "
        "fine-tuned Presto encoder with a linear head trained here on 791 real French LPIS parcels.",
    ),
)


@dataclass(frozen=True)
class HeadResult:
    model_id: str
    classes: tuple[str, ...]
    samples: dict[str, int]
    presto_head: Metrics  # on the first split's held-out samples
    random_forest: Metrics
    mean_over_splits: dict[
        str, dict[str, float]
    ]  # {"presto_head"|"random_forest": {"overall_accuracy", "macro_f1"}}
    weight: np.ndarray
    bias: np.ndarray
    best_epoch: int


def train_plan(plan: HeadPlan, series: SampleSeries, features: np.ndarray) -> HeadResult:
    """Fit the plan's head on `features` (the samples' Presto embeddings) and the anchor on each split; score
    both on the held-out samples. The head returned is the first split's."""
    from sklearn.ensemble import RandomForestClassifier  # sklearn: the comparison run only (test extra)

    classes = tuple(name for name, _ in plan.classes)
    names = labels_under(series.ewoc_code, plan.legend, worldcereal_legends())
    y = model_classes(names, plan.legend_classes, classes)
    blocks = spatial_blocks(series.latlon_deg)
    raw = raw_monthly_features(series)
    runs = []
    for seed in range(SPLITS):
        held_out = block_holdout(blocks, y, HOLDOUT_FRACTION, seed)
        train = (y >= 0) & ~held_out
        weights = class_weights(np.bincount(y[train], minlength=len(classes)))
        head = fit_head(features[train], y[train], features[train], y[train], classes, weights, HEAD)
        forest = RandomForestClassifier(
            n_estimators=300, class_weight="balanced", random_state=seed, n_jobs=2
        )
        forest.fit(raw[train], y[train])
        runs.append(
            (
                head,
                evaluate(y[held_out], head.predict(features[held_out]), classes),
                evaluate(y[held_out], forest.predict(raw[held_out]), classes),
                {"train": int(train.sum()), "held_out": int(held_out.sum())},
            )
        )
    head, presto_metrics, forest_metrics, samples = runs[0]
    mean = {
        name: {
            score: float(np.mean([getattr(run[index], score) for run in runs]))
            for score in ("overall_accuracy", "macro_f1")
        }
        for index, name in ((1, "presto_head"), (2, "random_forest"))
    }
    return HeadResult(
        plan.model_id, classes, samples, presto_metrics, forest_metrics, mean, head.weight, head.bias,
        head.best_epoch,
    )  # fmt: skip


def training_bbox(latlon_deg: np.ndarray) -> list[float]:
    """[west, south, east, north] of the samples, rounded outward to 0.1 degree."""
    lat, lon = latlon_deg[:, 0], latlon_deg[:, 1]
    return [
        math.floor(lon.min() * 10) / 10,
        math.floor(lat.min() * 10) / 10,
        math.ceil(lon.max() * 10) / 10,
        math.ceil(lat.max() * 10) / 10,
    ]


def write_model(
    plan: HeadPlan,
    result: HeadResult,
    out_dir: Path,
    samples: list[Path],
    n_samples: int,
    latlon_deg: np.ndarray,
) -> Path:
    """The model folder: head weights, card, NOTICE."""
    folder = out_dir / plan.model_id
    folder.mkdir(parents=True, exist_ok=True)
    weights_name = f"{plan.model_id}-head.pt"
    torch.save(
        {"weight": torch.from_numpy(result.weight.copy()), "bias": torch.from_numpy(result.bias.copy())},
        folder / weights_name,
    )
    card = ModelCard(
        id=plan.model_id,
        version="1.0.0",
        task="crop",
        description=plan.description,
        architecture=(
            "presto-head: Presto encoder (2 transformer blocks, 128-d tokens per channel group and month, "
            "masked mean pooling; 0.4 M parameters) + linear head 128 -> "
            f"{len(plan.classes)}"
        ),
        sensor="S1+S2",
        bands=CHANNELS[:12],
        processing_levels=("L2A",),
        resolution_m=10.0,
        tile_px=256,
        normalisation=PrestoNormalisation(),
        classes=tuple(ClassInfo(v, name, colour) for v, (name, colour) in enumerate(plan.classes)),
        status="trained-here",
        licence="encoder: MIT (WorldCereal, nasaharvest/presto); head: GPL-3.0-or-later (trained by TerraSeg)",
        provenance=(
            "Encoder: WorldCereal's fine-tuned Presto (Tseng et al. 2023), MIT. Head trained by TerraSeg "
            f"(python -m models.conversion.presto_heads) on {n_samples} WorldCereal reference samples of the French "
            "LPIS (" + ", ".join(p.name for p in samples) + ")."
        ),
        weights=(weights_name,),
        # Presto on a 2-core CPU: 1,250 pixels/s or more in 64-pixel batches (bench/crop_presto.py: 1,550-1,661 here,
        # about 2x the 650 of a slower machine with the old batch), both heads from one pass.
        cpu_s_per_mpx=CPU_S_PER_MPX,
        weights_sha256={weights_name: sha256_of(folder / weights_name)},
        temporal=Series(
            max_dates=12,
            date_choice="12 monthly composites: a job's cube (--source cube:FILE.nc); for a sample, the 12 "
            "months centred on its label's date",
        ),
        metrics={
            "held_out": result.presto_head.model_dump(),
            "random_forest_anchor": result.random_forest.model_dump(),
            "split": "held-out 0.1 degree cells, about 25 % of each class (models/conversion/presto_heads.py)",
            f"mean_over_{SPLITS}_splits": result.mean_over_splits,
        },
        training={
            "samples": result.samples,
            "best_epoch": result.best_epoch,
            "head": asdict(HEAD),
            "encoder": ENCODER,
        },
        builder=BUILDER,
        builder_args={
            "encoder": ENCODER,
            "encoder_sha256": sha256_of(WEIGHTS_DIR / ENCODER),
            "legend_classes": plan.legend_classes,
            # where the training parcels lie (west, south, east, north, rounded outward to 0.1 degree): a crop
            # job far outside it says its classes are likely wrong there
            "training_bbox_deg": training_bbox(latlon_deg),
            **({"cropland_model": plan.cropland_model} if plan.cropland_model else {}),
        },
        default_for_task=plan.default_for_task,
        label_mapping=plan.legend,
    )
    (folder / "card.json").write_text(json.dumps(card.model_dump(mode="json"), indent=1) + "\n")
    (folder / "NOTICE").write_text(
        "The head in this folder was trained by TerraSeg (GPL-3.0-or-later) on WorldCereal reference samples "
        "(WorldCereal/worldcereal-classification, MIT; labels from the French LPIS, open licence; modified "
        "Copernicus Sentinel data). It runs on WorldCereal's fine-tuned Presto encoder "
        "(models/weights/presto, MIT; Tseng et al. 2023, nasaharvest/presto).\n"
    )
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", nargs="+", type=Path, default=list(DEFAULT_SAMPLES))
    parser.add_argument("--out", type=Path, help="write the model folders here (default: only score)")
    args = parser.parse_args(argv)
    series = concatenate([to_series(read_samples_table(str(p))) for p in args.samples])
    encoder = presto.load_encoder(WEIGHTS_DIR / ENCODER)
    features = embeddings(encoder, series)
    report = {}
    for plan in PLANS:
        result = train_plan(plan, series, features)
        report[plan.model_id] = {
            "samples": result.samples,
            "first_split": {
                "presto_head": {k: getattr(result.presto_head, k) for k in ("overall_accuracy", "macro_f1")},
                "random_forest": {
                    k: getattr(result.random_forest, k) for k in ("overall_accuracy", "macro_f1")
                },
            },
            f"mean_over_{SPLITS}_splits": result.mean_over_splits,
        }
        if args.out:
            write_model(plan, result, args.out, args.samples, len(series), series.latlon_deg)
    json.dump(report, sys.stdout, indent=1)
    print()
    # the sha256 of the inputs, so a rerun can be compared
    print(hashlib.sha256(features.tobytes()).hexdigest()[:16], file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
