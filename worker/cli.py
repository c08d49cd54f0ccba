"""The `terraseg` command: the same job path as the app, headless.

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback), 1 internal error (traceback in a log
file under the cache folder, its path on stderr).
"""

import argparse
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import redis
from pydantic import ValidationError

from core.config import Settings, get_settings
from core.errors import AppError, InvalidPolygon, ModelError, SourceUnavailable, UntrainedModel
from core.jobs import JobRequest, build_spec
from core.sources import SOURCE_HELP, parse_source
from models.catalogue import catalogue
from worker.queue.client import redacted

if TYPE_CHECKING:
    from core.jobstore import JobStatus
    from core.training import Metrics, MultiLabelMetrics
    from worker.pipelines.training import DatasetTrainRequest, SamplesTrainRequest, TrainRequest, TrainResult
    from worker.queue.client import JobClient

log = logging.getLogger("terraseg")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one sub-command per verb."""
    parser = argparse.ArgumentParser(prog="terraseg", description="Segmentation maps from Sentinel imagery.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log INFO messages to stderr")
    verbs = parser.add_subparsers(dest="verb", required=True)
    run = verbs.add_parser("run", help="run one job in this process and write its outputs to --out")
    run.add_argument("--task", required=True, choices=catalogue().runnable_tasks())
    run.add_argument(
        "--aoi",
        required=True,
        help="GeoJSON file, zipped Shapefile, GeoPackage, KML, or 'west,south,east,north' degrees",
    )
    run.add_argument("--start", required=True, help="first date, YYYY-MM-DD")
    run.add_argument("--end", required=True, help="last date, YYYY-MM-DD (inclusive)")
    run.add_argument(
        "--source",
        action="append",
        dest="sources",
        help="'sample' or 'local:DIR'; repeat to give fall-backs in order (default: sample)",
    )
    run.add_argument("--out", required=True, type=Path, help="output folder")
    run.add_argument("--model", help="model id (default: the task's default; see 'terraseg models')")
    run.add_argument("--date", help="publish this date's map instead of the least cloudy one (YYYY-MM-DD)")
    run.add_argument(
        "--max-cloud-pct", type=float, help="skip scenes whose metadata says more cloud than this"
    )
    run.add_argument("--fix-aoi", action="store_true", help="repair an invalid (self-intersecting) AOI")
    run.add_argument(
        "--queue",
        action="store_true",
        help="submit to the workers instead of running here; prints the job id last, and a copy of the "
        "outputs lands in --out when the job finishes",
    )
    verbs.add_parser("sources", help="list the kinds of data source")
    models = verbs.add_parser("models", help="list the models; versions, promote and roll back trained ones")
    actions = models.add_subparsers(dest="models_action")
    actions.add_parser("versions", help="a trained model's versions, states and metrics").add_argument(
        "model"
    )
    promote = actions.add_parser("promote", help="put a version of a trained model in production")
    promote.add_argument("model")
    promote.add_argument("version")
    actions.add_parser("rollback", help="put the previous production version back").add_argument("model")
    importing = verbs.add_parser("import", help="install published weights for an untrained architecture")
    importing.add_argument("model", help="the untrained model id, e.g. landcover-dfc2020-unet")
    importing.add_argument(
        "files", nargs="+", type=Path, help="its checkpoint file(s), e.g. args.pkl checkpoint.pth"
    )
    importing.add_argument("--as", dest="new_id", help="id of the installed model (default: MODEL-imported)")
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
    train.add_argument(
        "--dataset", type=Path, help="a patch dataset's release folder, in its published layout (--format)"
    )
    train.add_argument(
        "--format", default="dfc2020", help="the --dataset's layout: dfc2020, 38-cloud, bigearthnet or pastis"
    )
    train.add_argument("--labels", type=Path, help="GeoJSON, GeoPackage, zipped Shapefile or KML")
    train.add_argument("--label-field", help="the labels' field that holds the class")
    train.add_argument("--aoi", help="the area whose imagery the labels describe (as for run)")
    train.add_argument("--start", help="first date, YYYY-MM-DD")
    train.add_argument("--end", help="last date, YYYY-MM-DD (inclusive)")
    train.add_argument("--source", action="append", dest="sources", help="as for run (default: sample)")
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
    evaluate.add_argument(
        "--dataset", type=Path, help="a patch dataset's release folder, in its published layout (--format)"
    )
    evaluate.add_argument(
        "--format", default="dfc2020", help="the --dataset's layout: dfc2020, 38-cloud, bigearthnet or pastis"
    )
    evaluate.add_argument("--labels", type=Path, help="GeoJSON, GeoPackage, zipped Shapefile or KML")
    evaluate.add_argument("--label-field", help="the labels' field that holds the class")
    evaluate.add_argument("--aoi", help="the area to map and score (as for run)")
    evaluate.add_argument("--start", help="first date, YYYY-MM-DD")
    evaluate.add_argument("--end", help="last date, YYYY-MM-DD (inclusive)")
    evaluate.add_argument("--source", action="append", dest="sources", help="as for run (default: sample)")
    evaluate.add_argument(
        "--class-map", help="how your classes match the model's: 'your class=model class,...'"
    )
    evaluate.add_argument("--predictions", type=Path, help="write one CSV row per scored pixel here")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    account = verbs.add_parser(
        "account",
        help="read a new web-app account's password on stdin and print its table for .streamlit/secrets.toml",
    )
    account.add_argument("name", help="the account's name (lowercase letters, digits, '.', '_', '-')")
    account.add_argument("--admin", action="store_true", help="an admin: sees every job and the admin page")
    verbs.add_parser(
        "admin-password",
        help="read a new password on stdin and print its hash for TERRASEG_ADMIN_PASSWORD_HASH (the account 'admin')",
    )
    worker = verbs.add_parser("worker", help="serve jobs from Redis (default: every queue)")
    worker.add_argument("--queues", nargs="+", metavar="QUEUE", help="download, inference and/or training")
    worker.add_argument("--burst", action="store_true", help="stop when the queues are empty")
    worker.add_argument(
        "--no-fork",
        dest="fork",
        action="store_false",
        default=None,
        help="run jobs in the worker process (warm, faster start) instead of a forked process per job",
    )
    status = verbs.add_parser("status", help="show one job's state and progress")
    status.add_argument("job_id")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    jobs = verbs.add_parser("jobs", help="list jobs, newest first")
    jobs.add_argument("--json", action="store_true", help="print a JSON list")
    for verb, text in (
        ("cancel", "cancel a queued or running job"),
        ("logs", "print a job's log"),
        ("retry", "queue a failed or cancelled job again"),
        ("delete", "delete a job that has ended, with its outputs"),
    ):
        verbs.add_parser(verb, help=text).add_argument("job_id")
    verbs.add_parser("recover", help="re-queue jobs whose worker died or that Redis lost")
    health = verbs.add_parser("health", help="Redis, live workers and jobs; exit 1 when Redis is unreachable")
    health.add_argument(
        "--this-host",
        action="store_true",
        help="exit 1 also when no live worker runs on this host (a container's health check)",
    )
    return parser


def print_progress(fraction: float, message: str, _state: dict[str, float] = {"last": 0.0}) -> None:  # noqa: B006
    """Progress lines on stderr, at most about 4 a second (the last one always)."""
    now = time.monotonic()
    if fraction < 1.0 and now - _state["last"] < 0.25:
        return
    _state["last"] = now
    print(f"[{100 * fraction:5.1f}%] {message}", file=sys.stderr, flush=True)


def command_run(args: argparse.Namespace, settings: Settings) -> int:
    """Validate the request, run it, print where the outputs are."""
    request = JobRequest(
        aoi=args.aoi,
        start=args.start,
        end=args.end,
        task=args.task,
        model_id=args.model,
        sources=tuple(args.sources or ["sample"]),
        selected_date=args.date,
        max_cloud_pct=args.max_cloud_pct,
        fix_aoi=args.fix_aoi,
    )
    try:
        spec = build_spec(
            request, settings, catalogue(settings.cache_dir), lambda name: parse_source(name, settings)
        )
    except InvalidPolygon as err:
        raise InvalidPolygon(f"{err} Or add --fix-aoi to repair it automatically.") from None
    if args.queue:
        from core.export import check_writable
        from worker.queue.client import JobClient

        check_writable(args.out.resolve())
        client = JobClient(settings)
        job_id = client.submit(spec, copy_to=args.out.resolve())
        status = client.status(job_id)
        print(f"terraseg: job {job_id} {status.state}: {status.message}", file=sys.stderr)
        print(job_id)
        return 0
    from worker.pipelines.map_job import (
        run_job,  # PyTorch and GDAL's stages load after the request is checked: 2.5 s
    )

    result = run_job(spec, args.out.resolve(), settings, progress=print_progress)
    for path in result.outputs:
        print(path)
    for warning in result.warnings:  # the map is (nearly) empty: say so where the user looks
        print(f"terraseg: warning: {warning}", file=sys.stderr)
    return 0


def format_status(status: "JobStatus") -> str:
    """One human line per job: id, state, progress, message, and the error sentence when it failed."""
    eta = (
        f", about {status.eta_s:.0f} s left" if status.eta_s is not None and status.state == "running" else ""
    )
    text = f"{status.job_id}  {status.state:9s} {100 * status.fraction:5.1f}%  {status.message}{eta}"
    return text + (f"\n    error: {status.error}" if status.error and status.error != status.message else "")


def command_jobs(args: argparse.Namespace, settings: Settings) -> int:
    """The job verbs: status, jobs, cancel, logs, retry, delete, recover, worker."""
    from worker.queue.client import ChunkClient, JobClient, TrainingClient

    client = JobClient(settings)
    runs = TrainingClient(settings)
    job_id = getattr(args, "job_id", None)
    if job_id is not None and not client.store.exists(job_id) and runs.store.exists(job_id):
        client = runs  # a training run's id: the same verbs work on it
    if args.verb == "worker":
        from worker.queue.service import QUEUES, serve

        return serve(settings, args.queues or QUEUES, burst=args.burst, fork=args.fork)
    if args.verb == "status":
        status = client.status(args.job_id)
        print(json.dumps(status.to_dict(), indent=1) if args.json else format_status(status))
    elif args.verb == "jobs":
        statuses = client.list_jobs() + runs.list_jobs()
        if args.json:
            print(json.dumps([s.to_dict() for s in statuses], indent=1))
        for status in [] if args.json else statuses:
            print(format_status(status))
    elif args.verb == "cancel":
        print(format_status(client.cancel(args.job_id)))
    elif args.verb == "logs":
        print(client.logs(args.job_id), end="")
    elif args.verb == "retry":
        print(format_status(client.retry(args.job_id)))
    elif args.verb == "delete":
        client.delete(args.job_id)
        print(f"deleted {args.job_id}")
    elif args.verb == "recover":
        requeued = client.recover() + runs.recover() + ChunkClient(settings).recover()
        print(f"re-queued {len(requeued)} job(s)" + (": " + " ".join(requeued) if requeued else ""))
    elif args.verb == "health":
        return command_health(client, args.this_host)
    return 0


def command_health(client: "JobClient", this_host: bool) -> int:
    """One line of health; 1 when Redis is unreachable or (`this_host`) no live worker runs here."""
    import socket

    health = client.health()
    print(
        f"redis: {'up' if health.redis_ok else 'down'}; workers: {health.workers}; queued: {health.queued}; "
        f"running: {health.running}; {health.message}"
    )
    if not health.redis_ok:
        return 1
    if this_host:
        here = client.live_workers(socket.gethostname())
        print(
            f"workers on this host ({socket.gethostname()}): {len(here)}"
            + (f" ({', '.join(here)})" if here else "")
        )
        return 0 if here else 1
    return 0


def command_sources() -> int:
    """Print the source kinds."""
    for name, text in SOURCE_HELP.items():
        print(f"{name:19s} {text}")
    return 0


def command_models(args: argparse.Namespace, settings: Settings) -> int:
    """Print one line per model card, or a trained model's versions, or promote / roll back one."""
    if args.models_action:
        return command_versions(args, settings)
    cards = catalogue(settings.cache_dir).all()
    id_width, task_width = max(len(c.id) for c in cards), max(len(c.task) for c in cards)
    for card in cards:
        default = " (default)" if card.default_for_task else ""
        classes = ", ".join(c.name for c in card.classes)
        print(
            f"{card.id:{id_width}s} {card.task:{task_width}s} {card.status:11s} v{card.version}{default}: "
            f"{card.description} Classes: {classes}."
        )
    return 0


def command_versions(args: argparse.Namespace, settings: Settings) -> int:
    """`terraseg models versions|promote|rollback`: one line per version after the change."""
    from models import versions

    cards = catalogue(settings.cache_dir)
    if args.model not in cards.versions:
        cards.get(args.model)  # an unknown id: the error lists the known ones
        raise ModelError(
            f"{args.model} has no versions: only models trained here have (see 'terraseg train')."
        )
    model_dir = cards.folder(args.model).parent
    if args.models_action == "promote":
        versions.promote(model_dir, args.version)
    elif args.models_action == "rollback":
        versions.rollback(model_dir)
    record = versions.read_versions(model_dir)
    for version, (card, _, _) in catalogue(settings.cache_dir).versions[args.model].items():
        state = record.state(version) if record else "?"
        validation = card.metrics.get("validation") or {}
        parent = card.metrics.get("parent_validation") or {}
        scores = (
            f"val macro F1 {validation['macro_f1']:.3f}"
            if isinstance(validation, dict) and validation
            else "no metrics"
        )
        if isinstance(parent, dict) and parent:
            scores += f" (parent {parent['macro_f1']:.3f})"
        made = card.training.get("trained_at", "?")
        by = card.training.get("by", "?")
        print(
            f"{args.model}@{version:4s} {state:10s} {made} by {by}, from {card.training.get('base', '?')}: {scores}"
        )
    return 0


def command_import(args: argparse.Namespace, settings: Settings) -> int:
    """Check and install weights; prints the new model id as the last stdout line."""
    from models.catalogue import read_card
    from models.importing import import_weights

    cards = catalogue(settings.cache_dir)
    card_path = import_weights(
        cards.get(args.model), args.files, settings.cache_dir / "models", set(cards.cards), args.new_id
    )
    installed = read_card(card_path)  # the card the registry will read, checked now rather than at next start
    sources = ", ".join(f.name for f in args.files)
    print(f"Installed {installed.id} ({installed.status}) from {sources} in {card_path.parent}")
    print(installed.id)
    return 0


def command_train(args: argparse.Namespace, settings: Settings) -> int:
    """Train and install a model; metrics on stderr, the new model id as the last stdout line."""
    from models.catalogue import SEED_BUILDERS, catalogue
    from models.importing import check_model_id
    from worker.pipelines.training import TrainRequest, parse_class_pairs, train_model

    check_model_id(args.new_id)
    is_seed = catalogue(settings.cache_dir).get(args.base).builder in SEED_BUILDERS
    args.mode = args.mode or ("full" if is_seed else "head")
    if args.samples:
        return command_train_samples(args, settings)
    epochs = 200 if args.epochs is None else args.epochs
    if args.dataset:
        from worker.pipelines.training import DatasetTrainRequest, train_from_dataset

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
    from worker.pipelines.training import queue_training
    from worker.queue.client import TrainingClient

    run_id = queue_training(request, settings)
    status = TrainingClient(settings).status(run_id)
    print(f"terraseg: training run {run_id} {status.state}: {status.message}", file=sys.stderr)
    print(run_id)
    return 0


def absent_area_options(args: argparse.Namespace) -> list[str]:
    """The options of labels over imagery (train and evaluate without --samples) that were not given."""
    given = (
        ("--labels", args.labels),
        ("--label-field", args.label_field),
        ("--aoi", args.aoi),
        ("--start", args.start),
        ("--end", args.end),
    )
    return [option for option, value in given if not value]


def command_train_samples(args: argparse.Namespace, settings: Settings) -> int:
    """`terraseg train --samples`: a new head on a Presto crop model's encoder."""
    from worker.pipelines.training import SamplesTrainRequest, train_from_samples

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
    from core.training import MultiLabelMetrics

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


def command_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    """Map the area with the model and print its scores against the labels (a table, or JSON)."""
    import csv
    import tempfile

    from worker.pipelines.training import EvaluateRequest, evaluate_model, parse_class_pairs

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
        with open(args.predictions, "w", newline="") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow([f"x ({evaluation.crs})", f"y ({evaluation.crs})", "true", "predicted"])
            writer.writerows(evaluation.rows)
    if args.json:
        print(json.dumps(metrics.model_dump() | {"model": args.model, "date": evaluation.date}, indent=1))
        return 0
    print(f"{args.model} on {evaluation.date}: {metrics.summary()}")
    print_metrics_table(metrics)
    return 0


def command_evaluate_samples(args: argparse.Namespace, settings: Settings) -> int:
    """Score a Presto crop model on a samples parquet; print the scores, write the per-sample CSV."""
    import csv

    from worker.pipelines.training import evaluate_samples

    evaluation = evaluate_samples(args.model, args.samples, settings)
    metrics = evaluation.metrics
    if args.predictions:
        with open(args.predictions, "w", newline="") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(["sample_id", "ewoc_code", "label", "predicted", "probability"])
            writer.writerows(
                (sid, code, label, predicted, f"{p:.4f}")
                for sid, code, label, predicted, p in evaluation.rows
            )
    if args.json:
        print(json.dumps(metrics.model_dump() | {"model": args.model, "legend": evaluation.legend}, indent=1))
        return 0
    print(f"{args.model} on {args.samples.name} (legend {evaluation.legend}): {metrics.summary('samples')}")
    print_metrics_table(metrics)
    return 0


def command_evaluate_dataset(args: argparse.Namespace, settings: Settings) -> int:
    """Score a model on a patch dataset; print the scores, write one CSV row per patch."""
    import csv

    from core.training import MultiLabelMetrics
    from worker.pipelines.training import evaluate_dataset, parse_class_pairs

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
        with open(args.predictions, "w", newline="") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(evaluation.header)
            writer.writerows(evaluation.rows)
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


def read_new_password(prompt: str) -> str:
    """A new password: asked twice on a terminal, one line on a pipe."""
    import getpass

    if sys.stdin.isatty():
        password = getpass.getpass(prompt)
        if getpass.getpass("Again: ") != password:
            raise AppError("The two passwords differ; nothing was changed.")
        return password
    return sys.stdin.readline().rstrip("\n")


def command_admin_password() -> int:
    """Print only the argon2 hash of a new password for the account "admin" (the older form of an account)."""
    from core.accounts import hash_password

    print(hash_password(read_new_password("New admin password: ")))
    print(
        "Set it as TERRASEG_ADMIN_PASSWORD_HASH (or admin_password_hash in .streamlit/secrets.toml); the app's "
        "account 'admin' signs in with it.",
        file=sys.stderr,
    )
    return 0


def command_account(name: str, admin: bool) -> int:
    """Print the `[accounts.NAME]` table of a new web-app account (its password only as an argon2 hash)."""
    from core.accounts import account_table

    print(account_table(name, read_new_password(f"Password for {name}: "), admin), end="")
    print(
        "Add it to .streamlit/secrets.toml (or TERRASEG_ACCOUNTS_FILE); the app reads it on the next page load.",
        file=sys.stderr,
    )
    return 0


def log_internal_error(settings: Settings) -> Path | None:
    """Write the current traceback to a log file under the cache folder; return its path (None if impossible)."""
    try:
        log_dir = settings.cache_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        path = log_dir / f"terraseg-{datetime.now():%Y%m%d-%H%M%S}.log"
        path.write_text(traceback.format_exc())
        return path.resolve()
    except OSError:
        return None


def attach_dash_values(argv: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """`--aoi -4.1,52.3,-3.9,52.4` as `--aoi=-4.1,...`: a value that starts with '-' and is no option of ours.

    argparse takes any word starting with '-' (other than a plain negative number) for an option, so every
    bounding box west of Greenwich would fail with "expected one argument". A real missing value (`--aoi
    --start ...`) is left alone, so argparse still says so.
    """
    takes_value: set[str] = set()
    known: set[str] = set()
    parsers = [parser]
    while parsers:
        current = parsers.pop()
        for action in current._actions:
            known.update(action.option_strings)
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
            elif action.option_strings and action.nargs is None and action.const is None:
                takes_value.update(action.option_strings)
    words = list(argv)
    joined: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        following = words[index + 1] if index + 1 < len(words) else None
        if (
            word in takes_value
            and following is not None
            and following.startswith("-")
            and following not in known
        ):
            joined.append(f"{word}={following}")
            index += 2
            continue
        joined.append(word)
        index += 1
    return joined


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `terraseg` console script."""
    parser = build_parser()
    args = parser.parse_args(attach_dash_values(sys.argv[1:] if argv is None else argv, parser))
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = get_settings()
    except ValidationError as err:
        problems = "; ".join(
            f"TERRASEG_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in err.errors()
        )
        print(f"terraseg: invalid settings: {problems}.", file=sys.stderr)
        return 2
    os.environ.setdefault(
        "GDAL_CACHEMAX", str(settings.gdal_cache_mb)
    )  # read by GDAL at its first block read
    try:
        if args.verb == "run":
            return command_run(args, settings)
        if args.verb == "sources":
            return command_sources()
        if args.verb == "models":
            return command_models(args, settings)
        if args.verb == "import":
            return command_import(args, settings)
        if args.verb == "train":
            return command_train(args, settings)
        if args.verb == "evaluate":
            return command_evaluate(args, settings)
        if args.verb == "admin-password":
            return command_admin_password()
        if args.verb == "account":
            return command_account(args.name, args.admin)
        return command_jobs(args, settings)
    except UntrainedModel as err:  # the remedy on the command line
        print(
            f"terraseg: {err} Published weights: 'terraseg import {err.model_id} FILE...'.", file=sys.stderr
        )
        return 2
    except ModelError as err:
        print(f"terraseg: {err} See 'terraseg models'.", file=sys.stderr)
        return 2
    except (AppError, SourceUnavailable) as err:
        print(f"terraseg: {err}", file=sys.stderr)
        return 2
    except redis.exceptions.RedisError as err:
        print(
            f"terraseg: Redis at {redacted(settings.redis_url)} is unreachable ({err}); start it or set "
            "TERRASEG_REDIS_URL.",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("terraseg: interrupted; no outputs were published.", file=sys.stderr)
        return 130
    except Exception as err:
        path = log_internal_error(settings)
        where = f"; details in {path}" if path else ""
        print(f"terraseg: internal error ({type(err).__name__}){where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
