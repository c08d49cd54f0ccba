"""`terraseg import`: install published weights for an untrained architecture."""

import argparse
from pathlib import Path

from core.config import Settings
from models.catalogue import catalogue, read_card


def add_import_parser(verbs: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    importing = verbs.add_parser("import", help="install published weights for an untrained architecture")
    importing.add_argument("model", help="the untrained model id, e.g. landcover-dfc2020-unet")
    importing.add_argument(
        "files", nargs="+", type=Path, help="its checkpoint file(s), e.g. args.pkl checkpoint.pth"
    )
    importing.add_argument("--as", dest="new_id", help="id of the installed model (default: MODEL-imported)")


def command_import(args: argparse.Namespace, settings: Settings) -> int:
    """Check and install weights; prints the new model id as the last stdout line."""
    from models.importing import import_weights  # torch: not in the light verbs

    cards = catalogue(settings.cache_dir)
    card_path = import_weights(
        cards.get(args.model), args.files, settings.cache_dir / "models", set(cards.cards), args.new_id
    )
    installed = read_card(card_path)  # the card the registry will read, checked now rather than at next start
    sources = ", ".join(f.name for f in args.files)
    print(f"Installed {installed.id} ({installed.status}) from {sources} in {card_path.parent}")
    print(installed.id)
    return 0
