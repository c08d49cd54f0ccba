"""The admin page in AppTest: off without a password hash; sign-in with lock-out; promote and roll back the
versions of a model trained here; every action in the audit log."""

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from core.accounts import SignInGate, SignInRefused, hash_password, read_audit
from core.config import AccountEntry, get_settings
from models import versions
from models.catalogue import catalogue
from tests.pages.test_pages import (  # noqa: F401 (app_env: fixture)
    PASSWORDS,
    app_env,
    assert_no_crash,
    open_page,
    sign_in,
    texts,
)

PASSWORD = PASSWORDS["admin"]


@pytest.fixture
def admin_env(app_env):  # noqa: ANN001, ANN201, F811
    return app_env


def install_versions(cache_dir: Path) -> Path:
    """A model trained here with two versions: Dynamic World's card and weights under another id."""
    shipped = catalogue()
    card = shipped.get("landcover-dynamic-world")
    model_dir = cache_dir / "models" / "slovenia"
    for version in ("1", "2"):
        folder = model_dir / f"v{version}"
        folder.mkdir(parents=True)
        shutil.copy(shipped.folder(card.id) / card.weights[0], folder / card.weights[0])
        trained = card.replace(
            id="slovenia",
            version=version,
            status="trained-here",
            default_for_task=False,
            metrics={"validation": {"macro_f1": 0.4 + 0.1 * int(version)}},
            training={"trained_at": "2026-11-29T12:00:00+00:00", "by": "tester", "base": card.id},
        )
        (folder / "card.json").write_text(json.dumps(trained.model_dump(mode="json")))
        versions.record_new_version(model_dir, version, by="tester")
    return model_dir


def test_the_admin_page_is_neither_listed_nor_shown_to_a_user(admin_env):
    at = open_page("pages/new_job.py", account="analyst")
    assert_no_crash(at)
    assert "Admin" not in [p.proto.label for p in at.get("page_link")] + texts(at.sidebar.markdown)
    with pytest.raises(Exception, match="admin"):  # not in the user's navigation at all
        at.switch_page("pages/admin.py").run()
    at = open_page("pages/admin.py", account="admin")
    assert_no_crash(at)
    assert any("Train a model" in t for t in texts(at.subheader))


def questions(at) -> list[str]:  # noqa: ANN001
    """The promotion and rollback questions the page asks (not its other warnings)."""
    return [t for t in texts(at.main.warning) if t.startswith(("Promote ", "Roll "))]


def test_an_admin_promotes_and_rolls_back_a_version(admin_env):
    model_dir = install_versions(admin_env.cache_dir)
    at = open_page("pages/admin.py")
    assert_no_crash(at)
    assert not at.error
    at.selectbox(key="version-slovenia").select("2")
    next(b for b in at.button if b.label == "Promote to production").click()
    at = at.run()
    assert_no_crash(at)
    assert versions.read_versions(model_dir).production == "1"  # type: ignore[union-attr]  # not before a yes
    assert questions(at) == ["Promote slovenia version 2 to production? Jobs submitted from now on use it."]
    at.button(key="cancel-change-slovenia").click().run()
    assert not questions(at) and versions.read_versions(model_dir).production == "1"  # type: ignore[union-attr]
    next(b for b in at.button if b.label == "Promote to production").click()
    at.run().button(key="confirm-slovenia").click()
    at = at.run()
    assert versions.read_versions(model_dir).production == "2"  # type: ignore[union-attr]
    assert texts(at.success) == ["slovenia version 2 is in production."]
    next(b for b in at.button if b.label == "Roll back").click()
    at = at.run()
    assert questions(at)[0].startswith("Roll slovenia back from version 2 to the version in production before")
    at.button(key="confirm-slovenia").click()
    at = at.run()
    assert versions.read_versions(model_dir).production == "1"  # type: ignore[union-attr]
    assert texts(at.success) == ["slovenia is back on version 1."]
    actions = [e["action"] for e in read_audit(admin_env.cache_dir / "admin")]
    assert actions[:3] == ["rolled back slovenia", "promoted slovenia version 2", "signed in"]
    # With version 2 (macro F1 0.6) in production, promoting version 1 (0.5) warns that it scores lower.
    versions.promote(model_dir, "2")
    at = open_page("pages/admin.py")
    at.selectbox(key="version-slovenia").select("1")
    next(b for b in at.button if b.label == "Promote to production").click()
    assert questions(at.run()) == [
        "Promote slovenia version 1 to production? Jobs submitted from now on use it, and it scores lower than "
        "version 2 (macro F1 0.500 against 0.600)."
    ]


def test_the_gate_checks_the_hash_and_never_stores_the_password(tmp_path):
    gate = SignInGate({"admin": AccountEntry("admin", hash_password(PASSWORD), "admin")}, tmp_path)
    with pytest.raises(SignInRefused, match="Wrong name or password"):
        gate.sign_in("admin", "nope")
    with pytest.raises(SignInRefused, match="Wrong name or password"):  # the same sentence for a wrong name
        gate.sign_in("root", PASSWORD)
    account = gate.sign_in(" Admin ", PASSWORD)
    assert (account.name, account.is_admin) == ("admin", True)
    assert gate.wait_s("admin") == 0
    assert hash_password(PASSWORD).startswith("$argon2id$")
    with pytest.raises(Exception, match="at least 12 characters"):
        hash_password("short")
    stored = "".join(p.read_text() for p in tmp_path.iterdir() if p.is_file())
    assert PASSWORD not in stored


def by_label(elements, label: str):  # noqa: ANN001, ANN201
    return next(e for e in elements if e.label.startswith(label))


def test_an_admin_checks_and_starts_a_training_run_and_follows_it_to_a_new_version(
    admin_env, start_worker, tmp_path
):
    """Upload real labels, choose their class field, check (samples per class, estimate), start; a training
    worker runs it and the page shows its epochs, its scores next to the base's, and the new model."""
    from tests.services import wait_for
    from tests.worker.pipelines.test_training import CLASSES, PARENT_CLASSES, label_file
    from worker.queue.client import TrainingClient

    labels = label_file(tmp_path, CLASSES)
    at = open_page("pages/admin.py")
    assert_no_crash(at)
    assert "Dynamic World" in texts(at.caption)[0] or at.selectbox[0].value == "landcover-dynamic-world"
    # Nothing to follow: the runs' list has no timer (one firing mid-upload can drop it), a Refresh button instead.
    assert [b for b in at.button if b.label == "Refresh"]
    at.get("file_uploader")[0].set_value(
        ("parcels.gpkg", labels.read_bytes(), "application/geopackage+sqlite3")
    )
    at = at.run()
    assert_no_crash(at)
    assert by_label(at.selectbox, "Class field").options == ["LULC_NAME"]
    area = by_label(at.text_input, "Area of the imagery").value
    assert len(area.split(",")) == 4  # the labels' extent, filled in
    by_label(at.text_input, "Area of the imagery").set_value("14.5525,45.8665,14.5630,45.8745")
    by_label(at.text_input, "New model id").set_value("Bad Id")
    at = at.run()
    next(b for b in at.button if b.label == "Check").click()
    at = at.run()
    assert any("is not a usable model id" in t for t in texts(at.error))
    assert not [b for b in at.button if b.label == "Start training"]
    by_label(at.text_input, "New model id").set_value("landcover-slovenia")
    by_label(at.number_input, "Epochs").set_value(60)
    by_label(at.text_input, "How the base's classes match yours").set_value(PARENT_CLASSES)
    by_label(at.text_input, "Sources").set_value("local:/etc")
    at = at.run()
    next(b for b in at.button if b.label == "Check").click()
    at = at.run()
    assert any("accepts no local folders" in t for t in texts(at.error)), texts(at.error)  # the app's rules
    by_label(at.text_input, "Sources").set_value("sample")
    at = at.run()
    next(b for b in at.button if b.label == "Check").click()
    at = at.run()
    assert_no_crash(at)
    table = at.dataframe[0].value
    assert list(table["class"]) == sorted(CLASSES) and (table["features"] > 0).all()
    assert any("date(s)" in t and "pixels" in t for t in texts(at.caption))
    next(b for b in at.button if b.label == "Start training").click()
    at = at.run()
    assert_no_crash(at)
    runs = TrainingClient(admin_env)
    [status] = runs.list_jobs()
    assert any(f"Training run {status.job_id} is queued" in t for t in texts(at.success))
    assert runs.training_spec(status.job_id).by == "admin"
    assert not [b for b in at.button if b.label == "Refresh"]  # a queued run: the list redraws itself

    start_worker("--queues", "training")
    wait_for(runs, status.job_id, ("finished",), timeout_s=240)
    at = at.run()
    assert_no_crash(at)
    assert any("installed landcover-slovenia version 1" in t for t in texts(at.caption))
    scored = [d.value for d in at.dataframe if "macro F1" in d.value.columns]
    assert list(scored[0]["model"]) == ["landcover-slovenia@1", "its base, same pixels"]
    assert scored[0]["macro F1"][0] > scored[0]["macro F1"][1]
    assert any("landcover-slovenia" in t for t in texts(at.markdown))  # among the models trained here
    assert [b for b in at.button if b.label == "Refresh"]  # the run has ended: the timer is off again
    # The version's confusion matrix next to its parent's, on the same held-out pixels.
    matrices = [d.value for d in at.dataframe if "true \\ predicted" in d.value.columns]
    assert len(matrices) == 2 and list(matrices[0]["true \\ predicted"]) == sorted(CLASSES)
    # and both maps of the validation area, with the validation labels, kept with the version
    assert any(t.startswith("The validation area on the training date (2015-") for t in texts(at.caption))
    maps = admin_env.cache_dir / "models" / "landcover-slovenia" / "v1" / "maps"
    assert sorted(p.name for p in maps.iterdir()) == ["candidate.png", "parent.png", "validation.png"]
    assert matrices[0].iloc[:, 1:].to_numpy().sum() == matrices[1].iloc[:, 1:].to_numpy().sum()
    actions = [e["action"] for e in read_audit(admin_env.cache_dir / "admin")]
    assert any(a.startswith(f"started training run {status.job_id}: landcover-slovenia") for a in actions)


def test_an_admin_trains_a_crop_head_from_uploaded_samples(admin_env, start_worker):
    """The samples tab: upload both WorldCereal tables, see the samples per class, start; a training worker
    installs the new crop head and the page shows its held-out scores next to the base's."""
    from models.conversion.presto_heads import DEFAULT_SAMPLES
    from tests.services import wait_for
    from worker.queue.client import TrainingClient

    at = open_page("pages/admin.py")
    uploader = at.get("file_uploader")[1]  # the second tab's
    uploader.set_value([(p.name, p.read_bytes(), "application/octet-stream") for p in DEFAULT_SAMPLES])
    at = at.run()
    assert_no_crash(at)
    assert by_label(at.selectbox, "Legend").value == "CROPTYPE20_EUROPE"
    at.text_input(key="samples-new-id").set_value("my-crops")
    at.number_input(key="samples-epochs").set_value(30)
    at = at.run()
    at.button(key="samples-check-button").click()
    at = at.run()
    assert_no_crash(at)
    counts = next(d.value for d in at.dataframe if "samples" in d.value.columns)
    assert list(counts["class"])[:2] == ["no_crop", "wheat"] and list(counts["samples"])[:2] == [
        190,
        57,
    ]  # as the CLI
    at.button(key="samples-start").click()
    at = at.run()
    runs = TrainingClient(admin_env)
    [status] = runs.list_jobs()
    assert runs.training_spec(status.job_id).data.kind == "samples"
    start_worker("--queues", "training")
    wait_for(runs, status.job_id, ("finished",), timeout_s=180)
    at = at.run()
    assert_no_crash(at)
    assert any("Training loss and training macro F1 per epoch" in t for t in texts(at.caption))
    scored = next(d.value for d in at.dataframe if "macro F1" in d.value.columns)
    assert list(scored["model"]) == ["my-crops@1", "its base, same samples"] and list(scored["samples"]) == [
        142,
        142,
    ]


def test_an_admin_trains_a_seed_architecture_on_a_dataset_folder_the_operator_allows(
    admin_env, start_worker, tmp_path, monkeypatch
):
    """The dataset tab: a folder outside the operator's roots is refused before anything reads it; inside, Check
    shows the patches, the split by whole scenes and the pixels per class; a training worker trains the cloud
    UNet whole and the page shows its held-out scores."""
    from tests.dataset_factory import write_38cloud
    from tests.services import wait_for
    from worker.queue.client import TrainingClient

    root = write_38cloud(tmp_path / "datasets" / "38-Cloud", patch_px=64)
    monkeypatch.setenv("TERRASEG_APP_LOCAL_ROOTS", json.dumps([str(tmp_path / "datasets")]))
    get_settings.cache_clear()
    at = open_page("pages/admin.py")
    at.selectbox(key="dataset-base").select("cloud-unet")
    at = at.run()
    assert at.selectbox(key="dataset-mode").options == ["full: then the whole network fine-tuned"]
    at.selectbox(key="dataset-format").select("38-cloud")
    at.text_input(key="dataset-folder").set_value("/etc")
    at.text_input(key="dataset-new-id").set_value("my-clouds")
    at.number_input(key="dataset-epochs").set_value(3)
    at = at.run()
    assert any("local folders must be inside" in t for t in texts(at.error)), texts(at.error)
    at.text_input(key="dataset-folder").set_value(str(root))
    at = at.run()
    at.button(key="dataset-check-button").click()
    at = at.run()
    assert_no_crash(at)
    split = "64 patches in 8 groups; 16 patches (whole groups) are held out"
    assert any(t.startswith(split) for t in texts(at.caption))
    counts = next(d.value for d in at.dataframe if "training pixels" in d.value.columns)
    assert list(counts["class"]) == ["clear", "cloud"] and (counts["validation pixels"] > 0).all()
    at.button(key="dataset-start").click()
    at = at.run()
    runs = TrainingClient(admin_env)
    [status] = runs.list_jobs()
    assert runs.training_spec(status.job_id).data.kind == "dataset"
    start_worker("--queues", "training")
    wait_for(runs, status.job_id, ("finished",), timeout_s=180)
    at = at.run()
    assert_no_crash(at)
    assert any("Training loss and validation score per epoch" in t for t in texts(at.caption))
    scored = next(d.value for d in at.dataframe if "macro F1" in d.value.columns)
    assert list(scored["model"]) == ["my-clouds@1"] and scored["pixels"][0] == 16 * 64 * 64


def test_an_admin_sees_damaged_job_folders_and_removes_them(admin_env):
    stale = admin_env.cache_dir / "jobs" / "20261201-120000-abcdef"
    stale.mkdir(parents=True)
    (stale / ".lock").touch()
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    at = open_page("pages/admin.py")
    assert_no_crash(at)
    assert "Damaged job folders" in texts(at.subheader)
    [table] = [frame for frame in at.dataframe if "what is wrong" in frame.value.columns]
    assert table.value["job"].tolist() == [stale.name]
    assert table.value["what is wrong"].tolist() == ["No status file; the folder holds .lock."]
    remove = next(b for b in at.button if b.label == "Remove the damaged folders")
    assert remove.disabled  # not before the admin says they mean it
    at.checkbox(key="damaged-sure").check().run()
    next(b for b in at.button if b.label == "Remove the damaged folders").click().run()
    assert_no_crash(at)
    assert not stale.exists()
    assert any("Removed 1 damaged job folder(s): 20261201-120000-abcdef." in s.value for s in at.success)
    assert "Damaged job folders" not in texts(at.subheader)
    assert read_audit(admin_env.cache_dir / "admin")[0]["action"] == f"removed damaged job folders: {stale.name}"
