"""`terraseg models`: the model cards; a trained model's versions, promote and roll back."""

import argparse

from core.config import Settings
from core.errors import ModelError
from models import versions
from models.catalogue import catalogue


def add_models_parser(verbs: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    models = verbs.add_parser("models", help="list the models; versions, promote and roll back trained ones")
    actions = models.add_subparsers(dest="models_action")
    actions.add_parser("versions", help="a trained model's versions, states and metrics").add_argument(
        "model"
    )
    promote = actions.add_parser("promote", help="put a version of a trained model in production")
    promote.add_argument("model")
    promote.add_argument("version")
    actions.add_parser("rollback", help="put the previous production version back").add_argument("model")


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
