"""Model cards: JSON files that load, agree with the code that uses them, and say clearly when they are wrong."""

import json
import shutil
from pathlib import Path

import pytest

from core.errors import ModelError
from models import dynamic_world, registry
from models.registry import card_files, read_card

DW_CARD = Path(dynamic_world.__file__).parent / "weights" / "dynamic_world" / "card.json"


def test_every_card_loads_and_every_task_default_exists():
    cards = [read_card(path) for path in card_files()]
    assert len({c.id for c in cards}) == len(cards) >= 10
    assert DW_CARD in card_files()  # the card lies next to the weights it describes
    for task, model_id in registry.DEFAULT_MODEL_BY_TASK.items():
        assert registry.get_card(model_id).task == task and registry.get_card(model_id).status == "pretrained"
    for card in cards:
        assert card.status in registry.STATUSES and card.weights_sha256.keys() >= set(
            card.weights if card.status != "untrained" else ()
        )


def test_the_dynamic_world_card_matches_the_port():
    card = registry.get_card("landcover-dynamic-world")
    assert card.bands == dynamic_world.BANDS and card.normalisation == dynamic_world.NORMALISATION
    assert [c.color for c in card.classes] == list(dynamic_world.CLASS_COLORS)
    assert card.weights == (dynamic_world.WEIGHTS_FILE.name,)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("bands"), "incomplete or malformed"),
        (lambda d: d.update(status="great"), "has status 'great'"),
        (lambda d: d.update(colour="red"), "unknown fields: colour"),
        (lambda d: d.update(weights_sha256={}), "pins no sha256 for dynamic_world_forward.pt"),
        (lambda d: d["classes"].pop(0), "must number its classes 0..K-1"),
    ],
)
def test_a_broken_card_is_refused_with_the_reason(tmp_path, change, message):
    data = json.loads(DW_CARD.read_text())
    change(data)
    path = tmp_path / "card.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match=message):
        read_card(path)


def test_a_card_that_is_not_json_names_the_file(tmp_path):
    path = tmp_path / "card.json"
    shutil.copy(DW_CARD, path)
    path.write_text(path.read_text()[:-20])
    with pytest.raises(ModelError, match=r"card.json cannot be read"):
        read_card(path)
