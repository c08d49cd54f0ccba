"""Model cards: JSON files that load, agree with the code that uses them, and say clearly when they are wrong."""

import json
import shutil
from pathlib import Path

import pytest

from core.errors import ModelError
from core.types import STATUSES, LogSigmoidNormalisation, Series
from models import dynamic_world
from models.catalogue import card_files, catalogue, read_card

DW_CARD = Path(dynamic_world.__file__).parent / "weights" / "dynamic_world" / "card.json"


def test_every_card_loads_and_every_task_default_exists():
    cards = [read_card(path) for path in card_files(None)]
    assert len({c.id for c in cards}) == len(cards) >= 10
    assert DW_CARD in card_files(None)  # the card lies next to the weights it describes
    defaults = {c.task: c.id for c in cards if c.default_for_task}
    assert defaults == {
        "cloud": "cloud-csmask",
        "landcover": "landcover-dynamic-world",
        "crop": "crop-presto-croptype",
    }
    for model_id in defaults.values():
        assert catalogue().require_weights(model_id).status in ("pretrained", "trained-here")
    for card in cards:
        assert card.status in STATUSES and card.weights_sha256.keys() >= set(
            card.weights if card.status != "untrained" else ()
        )


def test_the_tasks_a_job_can_run_come_from_the_cards():
    models = catalogue()
    assert models.runnable_tasks() == ["cloud", "crop", "landcover"]  # scene tags make no map
    assert models.job_models("landcover", None).cloud_model == models.get("cloud-csmask")
    assert models.job_models("cloud", "cloud-s2cloudless").cloud_model is None
    with pytest.raises(ModelError, match="Unknown task 'scene-tags'"):
        models.job_models("scene-tags", None)
    with pytest.raises(ModelError, match="is a cloud model, not a landcover model"):
        models.job_models("landcover", "cloud-csmask")
    crop = models.job_models("crop", None)
    assert crop.model.id == "crop-presto-croptype" and crop.cloud_model is None  # its cube is cloud-free


def test_tagged_fields_are_typed_where_they_are_read():
    card = catalogue().get("landcover-dynamic-world")
    assert isinstance(card.normalisation, LogSigmoidNormalisation) and card.normalisation.slope == 5.0
    series = catalogue().get("landcover-mtlcc-convlstm")
    assert isinstance(series.temporal, Series) and series.temporal.max_dates == 30 and series.is_series


def test_the_dynamic_world_card_matches_the_port():
    card = catalogue().get("landcover-dynamic-world")
    assert card.bands == dynamic_world.BANDS and card.normalisation == dynamic_world.NORMALISATION
    assert [c.color for c in card.classes] == list(dynamic_world.CLASS_COLORS)
    assert card.weights == (dynamic_world.WEIGHTS_FILE.name,)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("bands"), "malformed: bands: Field required"),
        (
            lambda d: d.update(status="great"),
            "status: Input should be 'pretrained', 'trained-here' or 'untrained'",
        ),
        (lambda d: d.update(colour="red"), "colour: Extra inputs are not permitted"),
        (lambda d: d.update(weights_sha256={}), "no sha256 pinned for dynamic_world_forward.pt"),
        (lambda d: d["classes"].pop(0), "classes must be numbered 0..K-1"),
        (lambda d: d["normalisation"].update(kind="z-score"), "normalisation: Input tag 'z-score' found"),
        (lambda d: d["normalisation"].pop("slope"), r"normalisation.log-sigmoid.slope: Field required"),
        (lambda d: d.update(temporal={"mode": "series"}), "temporal.series.max_dates: Field required"),
        (lambda d: d.update(nodata_fill="mean"), "nodata_fill: Input should be 'nearest' or 'zero'"),
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
    with pytest.raises(ModelError, match=r"card.json cannot be read: it is not valid JSON"):
        read_card(path)


def test_listing_cards_and_planning_a_job_do_not_load_torch():
    # The web app lists cards, builds requests and estimates jobs; PyTorch is for the workers.
    import subprocess
    import sys

    code = (
        "import sys, core.jobs.request, core.jobs.preflight, core.jobs.report, core.outputs.overlay\n"
        "import worker.queue.client, models.catalogue\n"
        "models.catalogue.catalogue().all()\n"
        "print(sorted(m for m in ('torch', 'onnxruntime', 'lightgbm') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
