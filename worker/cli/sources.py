"""`terraseg sources`: the kinds of data source."""

import argparse

from core.sources import SOURCE_HELP


def add_sources_parser(verbs: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    verbs.add_parser("sources", help="list the kinds of data source")


def command_sources() -> int:
    """Print the source kinds."""
    for name, text in SOURCE_HELP.items():
        print(f"{name:19s} {text}")
    return 0
