"""`terraseg train`: a new model from a base and labels over imagery, sample tables or a patch dataset."""

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from core.config import Settings
from core.errors import AppError
from models.catalogue import SEED_BUILDERS, catalogue
from worker.cli.options import (
    absent_area_options,
    add_area_options,
    add_dataset_options,
    add_label_options,
    print_progress,
)
from worker.queue.client import TrainingClient

if TYPE_CHECKING:
    from worker.pipelines.training import DatasetTrainRequest, SamplesTrainRequest, TrainRequest, TrainResult


def add_train_parser(verbs: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    train = verbs.add_parser(
        "train", help="train a new model from a base and your labels; prints the new model id last"
    )
    train.add_argument("--base", required=True, help="the model to start from, e.g. landcover-dynamic-world")
    train.add_argument(
        "--samples",
        type=Path,
        action="append",
        help="a WorldCereal samples (geo)parquet, repeatable: train a head on a Presto crop model (--base)",
    )
    train.add_argument("--legend", help="with --samples: the WorldCereal legend (default: the base's)")
    train.add_argument(
        "--min-samples", type=int, default=10, help="with --samples: rarer classes merge into 'other'"
    )
    add_dataset_options(train)
    add_label_options(train)
    add_area_options(
        train,
        aoi_help="the area whose imagery the labels describe (as for run)",
        source_help="as for run (default: sample)",
        required=False,
    )
    train.add_argument("--as", dest="new_id", required=True, help="id of the new model")
    train.add_argument(
        "--mode",
        help="head (a new classifier on frozen features), or with --dataset: decoder or full (the head, then "
        "the decoder or the whole network fine-tuned on whole patches); the seed architectures (cloud UNet, "
        "DFC2020 UNet/DeepLab, U-TAE, ConvLSTM/ConvGRU, BigEarthNet ResNet) train full on their dataset. "
        "Default: full for a seed architecture, head otherwise",
    )
    train.add_argument(
        "--epochs",
        type=int,
        help="at most this many epochs (early stopping); default 200, 100 with --samples, 30 for a seed "
        "architecture on a dataset",
    )
    train.add_argument("--seed", type=int, default=0, help="the split's and the training's random seed")
    train.add_argument("--block-px", type=int, default=32, help="spatial-split block size, grid pixels")
    train.add_argument(
        "--parent-classes",
        help="how the base's classes match yours, to score it too: 'your class=base class,...'",
    )
    train.add_argument(
        "--queue",
        action="store_true",
        help="check the request here, then run it on a worker of the training queue ('terraseg worker --queues "
        "training'); prints the run's id last (follow it with 'terraseg status ID')",
    )


def command_train(args: argparse.Namespace, settings: Settings) -> int:
    """Train and install a model; metrics on stderr, the new model id as the last stdout line."""
    from models.importing import check_model_id  # torch: not in the light verbs
    from worker.pipelines.training import (  # scipy, PIL: not in the light verbs
        TrainRequest,
        parse_class_pairs,
        train_model,
    )

    check_model_id(args.new_id)
    is_seed = catalogue(settings.cache_dir).get(args.base).builder in SEED_BUILDERS
    args.mode = args.mode or ("full" if is_seed else "head")
    if args.samples:
        return command_train_samples(args, settings)
    epochs = 200 if args.epochs is None else args.epochs
    if args.dataset:
        from worker.pipelines.training import (  # scipy, PIL: not in the light verbs
            DatasetTrainRequest,
            train_from_dataset,
        )

        if args.epochs is None and is_seed:
            epochs = 30  # a network trained whole stops early long before 200

        dataset_request = DatasetTrainRequest(
            base_id=args.base,
            new_id=args.new_id,
            dataset=args.dataset,
            format=args.format,
            mode=args.mode,
            epochs=epochs,
            seed=args.seed,
            parent_classes=parse_class_pairs(args.parent_classes, "--parent-classes"),
        )
        if args.queue:
            return queue_run(dataset_request, settings)
        return report_training(args, train_from_dataset(dataset_request, settings, progress=print_progress))
    if epochs < 1 or args.block_px < 1:
        raise AppError("--epochs and --block-px must be at least 1.")
    absent = absent_area_options(args)
    if absent:
        raise AppError(
            f"train needs --samples FILE, --dataset DIR, or {', '.join(absent)} to read labels over imagery."
        )
    request = TrainRequest(
        base_id=args.base,
        new_id=args.new_id,
        labels=args.labels,
        label_field=args.label_field,
        aoi=args.aoi,
        start=args.start,
        end=args.end,
        sources=tuple(args.sources or ["sample"]),
        mode=args.mode,
        epochs=epochs,
        seed=args.seed,
        block_px=args.block_px,
        parent_classes=parse_class_pairs(args.parent_classes, "--parent-classes"),
    )
    if args.queue:
        return queue_run(request, settings)
    result = train_model(request, settings, progress=print_progress)
    return report_training(args, result)


def queue_run(request: "TrainRequest | SamplesTrainRequest | DatasetTrainRequest", settings: Settings) -> int:
    """`train --queue`: check the request, queue it, print the run's id last."""
    from worker.pipelines.training import queue_training  # scipy, PIL: not in the light verbs

    run_id = queue_training(request, settings)
    status = TrainingClient(settings).status(run_id)
    print(f"terraseg: training run {run_id} {status.state}: {status.message}", file=sys.stderr)
    print(run_id)
    return 0


def command_train_samples(args: argparse.Namespace, settings: Settings) -> int:
    """`terraseg train --samples`: a new head on a Presto crop model's encoder."""
    from worker.pipelines.training import (  # scipy, PIL: not in the light verbs
        SamplesTrainRequest,
        train_from_samples,
    )

    epochs = 100 if args.epochs is None else args.epochs
    if epochs < 1 or args.min_samples < 1:
        raise AppError("--epochs and --min-samples must be at least 1.")
    request = SamplesTrainRequest(
        base_id=args.base,
        new_id=args.new_id,
        samples=tuple(args.samples),
        legend=args.legend or "",
        min_samples=args.min_samples,
        epochs=epochs,
        seed=args.seed,
    )
    if args.queue:
        return queue_run(request, settings)
    return report_training(args, train_from_samples(request, settings, progress=print_progress), "samples")


def report_training(args: argparse.Namespace, result: "TrainResult", unit: str = "pixels") -> int:
    """Warnings, counts and scores on stderr; the new model id as the last stdout line."""
    from core.learning.metrics import MultiLabelMetrics  # scipy, PIL: not in the light verbs

    for warning in result.warnings:
        print(f"terraseg: warning: {warning}", file=sys.stderr)
    if isinstance(result.metrics, MultiLabelMetrics):
        unit = "patches"  # a tagging model's counts are patches per class
    counts = ", ".join(
        f"{name} {result.train_counts[name]}/{result.val_counts[name]}"
        for name in result.train_counts
        if result.train_counts[name] or result.val_counts[name]
    )
    print(f"Training/validation {unit}: {counts}", file=sys.stderr)
    print(f"{result.model_id}: {result.metrics.summary(unit)}", file=sys.stderr)
    if result.parent_metrics is not None:
        print(f"{args.base} on the same {unit}: {result.parent_metrics.summary(unit)}", file=sys.stderr)
    print(f"Installed {result.model_id} version {result.version} ({result.state}) in {result.folder}")
    if result.state == "candidate":
        print(
            f"Jobs use the production version until you run 'terraseg models promote {result.model_id} "
            f"{result.version}'; try it first with --model {result.model_id}@{result.version}.",
            file=sys.stderr,
        )
    print(result.model_id)
    return 0
