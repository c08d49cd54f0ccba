"""`terraseg evaluate`: score a model against labels over imagery, sample tables or a patch dataset."""

import argparse
import csv
import json
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from core.config import Settings
from core.errors import AppError
from worker.cli.options import (
    absent_area_options,
    add_area_options,
    add_dataset_options,
    add_label_options,
    print_progress,
)

if TYPE_CHECKING:
    from core.learning.metrics import Metrics, MultiLabelMetrics


def add_evaluate_parser(verbs: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    evaluate = verbs.add_parser(
        "evaluate",
        help="score a model's map against labelled polygons or points, or a crop model on a samples parquet",
    )
    evaluate.add_argument("--model", required=True, help="the model to score")
    evaluate.add_argument(
        "--samples",
        type=Path,
        help="WorldCereal reference samples (geo)parquet: score a Presto crop model on them (no map is made)",
    )
    add_dataset_options(evaluate)
    add_label_options(evaluate)
    add_area_options(
        evaluate,
        aoi_help="the area to map and score (as for run)",
        source_help="as for run (default: sample)",
        required=False,
    )
    evaluate.add_argument(
        "--class-map", help="how your classes match the model's: 'your class=model class,...'"
    )
    evaluate.add_argument("--predictions", type=Path, help="write one CSV row per scored pixel here")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")


def command_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    """Map the area with the model and print its scores against the labels (a table, or JSON)."""
    from worker.pipelines.training import (  # scipy, PIL: not in the light verbs
        EvaluateRequest,
        evaluate_model,
        parse_class_pairs,
    )

    if args.samples:
        return command_evaluate_samples(args, settings)
    if args.dataset:
        return command_evaluate_dataset(args, settings)
    absent = absent_area_options(args)
    if absent:
        raise AppError(
            f"evaluate needs --samples FILE, --dataset DIR, or {', '.join(absent)} to map an area and score it."
        )
    request = EvaluateRequest(
        model_id=args.model,
        labels=args.labels,
        label_field=args.label_field,
        aoi=args.aoi,
        start=args.start,
        end=args.end,
        sources=tuple(args.sources or ["sample"]),
        class_map=parse_class_pairs(args.class_map, "--class-map"),
    )
    with tempfile.TemporaryDirectory(dir=settings.cache_dir if settings.cache_dir.exists() else None) as work:
        evaluation = evaluate_model(request, settings, Path(work), progress=print_progress)
    metrics = evaluation.metrics
    if args.predictions:
        header = [f"x ({evaluation.crs})", f"y ({evaluation.crs})", "true", "predicted"]
        write_predictions(args.predictions, header, evaluation.rows)
    if args.json:
        print(json.dumps(metrics.model_dump() | {"model": args.model, "date": evaluation.date}, indent=1))
        return 0
    print(f"{args.model} on {evaluation.date}: {metrics.summary()}")
    print_metrics_table(metrics)
    return 0


def command_evaluate_samples(args: argparse.Namespace, settings: Settings) -> int:
    """Score a Presto crop model on a samples parquet; print the scores, write the per-sample CSV."""
    from worker.pipelines.training import evaluate_samples  # scipy, PIL: not in the light verbs

    evaluation = evaluate_samples(args.model, args.samples, settings)
    metrics = evaluation.metrics
    if args.predictions:
        write_predictions(
            args.predictions,
            ["sample_id", "ewoc_code", "label", "predicted", "probability"],
            [(sid, code, label, predicted, f"{p:.4f}") for sid, code, label, predicted, p in evaluation.rows],
        )
    if args.json:
        print(json.dumps(metrics.model_dump() | {"model": args.model, "legend": evaluation.legend}, indent=1))
        return 0
    print(f"{args.model} on {args.samples.name} (legend {evaluation.legend}): {metrics.summary('samples')}")
    print_metrics_table(metrics)
    return 0


def command_evaluate_dataset(args: argparse.Namespace, settings: Settings) -> int:
    """Score a model on a patch dataset; print the scores, write one CSV row per patch."""
    from core.learning.metrics import MultiLabelMetrics  # scipy, PIL: not in the light verbs
    from worker.pipelines.training import (  # scipy, PIL: not in the light verbs
        evaluate_dataset,
        parse_class_pairs,
    )

    evaluation = evaluate_dataset(
        args.model,
        args.dataset,
        args.format,
        parse_class_pairs(args.class_map, "--class-map"),
        settings,
        progress=print_progress,
    )
    metrics = evaluation.metrics
    if args.predictions:
        write_predictions(args.predictions, evaluation.header, evaluation.rows)
    if args.json:
        print(json.dumps(metrics.model_dump() | {"model": args.model, "format": args.format}, indent=1))
        return 0
    if isinstance(metrics, MultiLabelMetrics):
        print(f"{args.model} on {metrics.samples} {args.format} patches: {metrics.summary()}")
        print_tag_table(metrics)
        return 0
    print(f"{args.model} on {len(evaluation.rows)} {args.format} patches: {metrics.summary()}")
    print_metrics_table(metrics)
    return 0


def write_predictions(path: Path, header: Sequence[object], rows: Iterable[Sequence[object]]) -> None:
    """The --predictions CSV: a header, then one row per scored pixel, sample or patch."""
    with open(path, "w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def print_tag_table(metrics: "MultiLabelMetrics") -> None:
    """Per-class scores of a multi-label evaluation, as text."""
    print(f"{'class':48s} {'support':>8s} {'AP':>6s} {'precision':>9s} {'recall':>7s} {'F1':>6s}")
    for c in metrics.per_class:
        print(
            f"{c.name[:48]:48s} {c.support:8d} {c.average_precision:6.3f} {c.precision:9.3f} "
            f"{c.recall:7.3f} {c.f1:6.3f}"
        )
    print(
        f"micro precision {metrics.micro_precision:.3f}, micro recall {metrics.micro_recall:.3f} at {metrics.threshold}"
    )


def print_metrics_table(metrics: "Metrics") -> None:
    """Per-class scores and the confusion matrix, as text."""
    print(f"{'class':24s} {'support':>8s} {'precision':>9s} {'recall':>7s} {'F1':>6s} {'F2':>6s} {'IoU':>6s}")
    for c in metrics.per_class:
        print(
            f"{c.name:24s} {c.support:8d} {c.precision:9.3f} {c.recall:7.3f} {c.f1:6.3f} {c.f2:6.3f} {c.iou:6.3f}"
        )
    names = [c.name[:10] for c in metrics.per_class]
    print("confusion (rows: true, columns: predicted): " + " | ".join(names))
    for name, row in zip(names, metrics.confusion, strict=True):
        print(f"{name:10s} " + " ".join(f"{n:7d}" for n in row))
