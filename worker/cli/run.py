"""`terraseg run`: one job, in this process or (--queue) on the workers."""

import argparse
import sys
from pathlib import Path

from core.config import Settings
from core.errors import InvalidPolygon
from core.jobs.request import JobRequest, build_spec
from core.sources import parse_source
from models.catalogue import catalogue
from worker.cli.options import AOI_HELP, add_area_options, print_progress
from worker.queue.client import JobClient


def add_run_parser(verbs: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    run = verbs.add_parser("run", help="run one job in this process and write its outputs to --out")
    run.add_argument("--task", required=True, choices=catalogue().runnable_tasks())
    add_area_options(
        run,
        aoi_help=AOI_HELP,
        source_help="'sample' or 'local:DIR'; repeat to give fall-backs in order (default: sample)",
        required=True,
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
        from core.outputs.export import check_writable  # PIL: not in the light verbs

        check_writable(args.out.resolve())
        client = JobClient(settings)
        job_id = client.submit(spec, copy_to=args.out.resolve())
        status = client.status(job_id)
        print(f"terraseg: job {job_id} {status.state}: {status.message}", file=sys.stderr)
        print(job_id)
        return 0
    from worker.pipelines.map_job import run_job  # torch, GDAL stages (2.5 s): after the request is checked

    result = run_job(spec, args.out.resolve(), settings, progress=print_progress)
    for path in result.outputs:
        print(path)
    for warning in result.warnings:  # the map is (nearly) empty: say so where the user looks
        print(f"terraseg: warning: {warning}", file=sys.stderr)
    return 0
