"""The `terraseg` command: the same job path as the app, headless. One module per verb; the options several
verbs share are declared once in `options`.

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback), 1 internal error (traceback in a log
file under the cache folder, its path on stderr).
"""

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import redis
from pydantic import ValidationError

from core.config import Settings, get_settings
from core.errors import AppError, ModelError, SourceUnavailable, UntrainedModel
from worker.cli.account import add_account_parsers, command_account, command_admin_password
from worker.cli.accuracy import add_accuracy_parsers, command_accuracy, command_sample
from worker.cli.evaluate import add_evaluate_parser, command_evaluate
from worker.cli.import_weights import add_import_parser, command_import
from worker.cli.jobs import add_job_parsers, command_jobs
from worker.cli.models import add_models_parser, command_models
from worker.cli.run import add_run_parser, command_run
from worker.cli.sources import add_sources_parser, command_sources
from worker.cli.train import add_train_parser, command_train
from worker.queue.client import redacted

log = logging.getLogger("terraseg")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one sub-command per verb (each declared in its own module)."""
    parser = argparse.ArgumentParser(prog="terraseg", description="Segmentation maps from Sentinel imagery.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log INFO messages to stderr")
    verbs = parser.add_subparsers(dest="verb", required=True)
    add_run_parser(verbs)
    add_sources_parser(verbs)
    add_models_parser(verbs)
    add_import_parser(verbs)
    add_train_parser(verbs)
    add_evaluate_parser(verbs)
    add_accuracy_parsers(verbs)
    add_account_parsers(verbs)
    add_job_parsers(verbs)
    return parser


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


def run_verb(args: argparse.Namespace, settings: Settings) -> int:
    """Call the verb's command; its exit code."""
    commands: dict[str, Callable[[], int]] = {
        "run": lambda: command_run(args, settings),
        "sources": command_sources,
        "models": lambda: command_models(args, settings),
        "import": lambda: command_import(args, settings),
        "train": lambda: command_train(args, settings),
        "evaluate": lambda: command_evaluate(args, settings),
        "sample": lambda: command_sample(args, settings),
        "accuracy": lambda: command_accuracy(args, settings),
        "admin-password": command_admin_password,
        "account": lambda: command_account(args.name, args.admin),
    }
    return commands.get(args.verb, lambda: command_jobs(args, settings))()


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
        return run_verb(args, settings)
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
