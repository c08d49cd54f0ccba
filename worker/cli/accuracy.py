"""`terraseg sample` and `terraseg accuracy`: a stratified random sample of a finished map's pixels to label, and
accuracy and error-adjusted areas (with 95 % confidence intervals) from the labelled sample."""

import argparse
import json
from pathlib import Path

from core.config import Settings
from core.jobs.store import JOB_ID_PATTERN, JobStore
from core.learning import reference_sample as sampling
from core.learning.area_estimates import SampleError


def add_accuracy_parsers(verbs: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    job_help = "a job id, or a folder holding a class map classes.tif (a --out folder)"
    sample = verbs.add_parser("sample", help="draw a stratified random sample of a map's pixels to label")
    sample.add_argument("job", help=job_help)
    sample.add_argument("--out", type=Path, required=True, help="the sample's GeoPackage (a CSV copy beside it)")
    sample.add_argument("--per-class", type=int, help="this many points per class (equal allocation)")
    sample.add_argument(
        "--target-se", type=float, default=0.01, help="the overall accuracy's standard error to aim for (0.01)"
    )
    sample.add_argument(
        "--expected-accuracy",
        action="append",
        default=[],
        metavar="CLASS=U",
        help="a class's expected user's accuracy (0.8 where not given); repeatable",
    )
    sample.add_argument("--min-per-class", type=int, default=50, help="at least this many points per class (50)")
    sample.add_argument("--seed", type=int, default=0, help="the random seed (the same seed draws the same sample)")
    accuracy = verbs.add_parser(
        "accuracy", help="accuracy and error-adjusted areas from labelled reference points"
    )
    accuracy.add_argument("job", help=job_help)
    accuracy.add_argument(
        "--reference", type=Path, required=True, help="labelled points: GeoPackage, GeoJSON, zipped Shapefile, CSV"
    )
    accuracy.add_argument("--label-field", required=True, help="the field with each point's reference class")
    accuracy.add_argument(
        "--stratum-field", help="where the sample's strata are not this map's classes: the field naming each stratum"
    )
    accuracy.add_argument(
        "--strata-pixels", metavar="STRATUM=PIXELS,...", help="with --stratum-field: each stratum's size in pixels"
    )
    accuracy.add_argument("--json", action="store_true", help="print one JSON object")


def class_map_path(job: str, settings: Settings) -> Path:
    """The class raster a JOB argument names: a job's published classes.tif, or a folder's."""
    if JOB_ID_PATTERN.match(job):
        folder = JobStore(settings.cache_dir / "jobs").outputs_dir(job)
        if not (folder / "classes.tif").is_file():
            raise SampleError(f"Job {job} has no published class map (is it finished?).")
        return folder / "classes.tif"
    folder = Path(job)
    if not (folder / "classes.tif").is_file():
        raise SampleError(f"{job} is neither a job id nor a folder holding classes.tif.")
    return folder / "classes.tif"


def expected_accuracies(pairs: list[str]) -> dict[str, float]:
    expected = {}
    for pair in pairs:
        name, _, value = pair.rpartition("=")
        try:
            expected[name.strip()] = float(value)
        except ValueError:
            raise SampleError(f"--expected-accuracy takes CLASS=U with U a number (got {pair!r}).") from None
        if not name.strip():
            raise SampleError(f"--expected-accuracy takes CLASS=U (got {pair!r}).")
    return expected


def strata_pixels(text: str | None) -> dict[str, int] | None:
    if text is None:
        return None
    sizes = {}
    for pair in text.split(","):
        name, _, value = pair.rpartition("=")
        if not name.strip() or not value.strip().isdigit():
            raise SampleError(f"--strata-pixels takes STRATUM=PIXELS,... (got {pair!r}).")
        sizes[name.strip()] = int(value)
    return sizes


def command_sample(args: argparse.Namespace, settings: Settings) -> int:
    """Draw the sample, write it (GeoPackage and CSV) and print the points per class."""
    class_map = sampling.read_class_map(class_map_path(args.job, settings))
    if args.out.suffix.lower() != ".gpkg":
        raise SampleError(f"--out must name a GeoPackage (.gpkg), not {args.out.name}.")
    plan = sampling.design(
        class_map, args.per_class, args.target_se, expected_accuracies(args.expected_accuracy), args.min_per_class
    )
    points = sampling.draw(class_map, plan, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    csv_path = sampling.write_sample(points, args.out)
    print(f"Sample size: {plan.rule}.")
    for name, count in plan.per_class.items():
        print(f"  {name}: {count}")
    print(f"  in all: {plan.total}")
    print(f"Wrote {args.out} and {csv_path.name}: fill the 'reference' column, then run `terraseg accuracy`.")
    return 0


def command_accuracy(args: argparse.Namespace, settings: Settings) -> int:
    """Estimate, print (a table or JSON), and save accuracy.json and accuracy.csv beside the class map."""
    path = class_map_path(args.job, settings)
    sizes = strata_pixels(args.strata_pixels)
    if (sizes is None) != (args.stratum_field is None):
        raise SampleError("--stratum-field and --strata-pixels go together (a sample drawn on another map).")
    points = sampling.read_reference(args.reference, args.label_field, args.stratum_field)
    assessment = sampling.assess(sampling.read_class_map(path), points, sizes)
    result = sampling.save_assessment(path.parent, assessment)
    print(json.dumps(result, indent=2) if args.json else sampling.report_text(assessment))
    return 0
