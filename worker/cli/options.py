"""The options several verbs share, declared once (as rasterio's `rio/options.py` does), and their helpers."""

import argparse
import sys
import time
from pathlib import Path

AOI_HELP = "GeoJSON file, zipped Shapefile, GeoPackage, KML, or 'west,south,east,north' degrees"
FORMAT_HELP = "the --dataset's layout: dfc2020, 38-cloud, bigearthnet or pastis"


def add_area_options(
    parser: argparse.ArgumentParser, aoi_help: str, source_help: str, required: bool
) -> None:
    """--aoi, --start, --end and the repeatable --source: the area and dates a job (or labels) cover."""
    parser.add_argument("--aoi", required=required, help=aoi_help)
    parser.add_argument("--start", required=required, help="first date, YYYY-MM-DD")
    parser.add_argument("--end", required=required, help="last date, YYYY-MM-DD (inclusive)")
    parser.add_argument("--source", action="append", dest="sources", help=source_help)


def add_label_options(parser: argparse.ArgumentParser) -> None:
    """--labels and --label-field: polygons or points with a class each."""
    parser.add_argument("--labels", type=Path, help="GeoJSON, GeoPackage, zipped Shapefile or KML")
    parser.add_argument("--label-field", help="the labels' field that holds the class")


def add_dataset_options(parser: argparse.ArgumentParser) -> None:
    """--dataset and --format: a patch dataset's release folder in its published layout."""
    parser.add_argument(
        "--dataset", type=Path, help="a patch dataset's release folder, in its published layout (--format)"
    )
    parser.add_argument("--format", default="dfc2020", help=FORMAT_HELP)


def print_progress(fraction: float, message: str, _state: dict[str, float] = {"last": 0.0}) -> None:  # noqa: B006
    """Progress lines on stderr, at most about 4 a second (the last one always)."""
    now = time.monotonic()
    if fraction < 1.0 and now - _state["last"] < 0.25:
        return
    _state["last"] = now
    print(f"[{100 * fraction:5.1f}%] {message}", file=sys.stderr, flush=True)


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
