"""One request type: build_spec checks a request once, the same for the CLI and the page; a stored spec is
trusted (its schema version only is checked)."""

import json
import time
from datetime import date

import pytest

from core.config import Settings
from core.errors import AOIError, DateRangeError, ModelError, SourceError, SpecError
from core.geometry.aoi import parse_aoi
from core.jobs.request import SPEC_SCHEMA_VERSION, JobRequest, JobSpec, build_spec
from core.jobs.store import JobInfo, JobStore
from core.sources import SAMPLE_DIR, check_app_source, parse_source
from models.catalogue import catalogue

SAMPLE_AOI_TEXT = (SAMPLE_DIR / "aoi.geojson").read_text()


def build(settings: Settings | None = None, **changes: object) -> JobSpec:
    settings = settings or Settings()
    fields: dict[str, object] = {
        "aoi": SAMPLE_AOI_TEXT,
        "start": "2015-07-01",
        "end": "2015-09-30",
        "task": "cloud",
    } | changes
    return build_spec(JobRequest(**fields), settings, catalogue(), lambda n: parse_source(n, settings))  # type: ignore[arg-type]


def test_a_request_becomes_a_spec_with_a_validated_aoi_value_and_the_default_model():
    spec = build()
    assert spec.schema_version == SPEC_SCHEMA_VERSION and spec.model_id == "cloud-csmask"
    assert spec.start == date(2015, 7, 1) and spec.sources == ("sample",)
    expected = parse_aoi(SAMPLE_AOI_TEXT)
    assert spec.aoi.area_km2 == pytest.approx(expected.area_km2)
    assert spec.aoi.to_aoi().geometry.equals(expected.geometry)
    landcover = build(task="landcover")
    assert landcover.model_id == "landcover-dynamic-world"


def test_an_aoi_parsed_already_passes_as_it_is_and_gives_the_same_spec():
    # The page parses the area to show it; the CLI passes the text: the two specs (and their hashes) agree.
    parsed = build(aoi=parse_aoi(SAMPLE_AOI_TEXT))
    assert parsed == build() and parsed.spec_hash("1") == build().spec_hash("1")


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"aoi": "1,2,3"}, AOIError, "has 3 numbers; give four"),
        ({"end": "2015-06-01"}, DateRangeError, "before the start date"),
        ({"start": "2015-13-01"}, DateRangeError, "The start date '2015-13-01' is not a date"),
        ({"selected_date": "2016-01-01"}, DateRangeError, "outside 2015-07-01..2015-09-30"),
        (
            {"start": "9999-01-01", "end": "9999-12-31"},
            DateRangeError,
            "The end date 9999-12-31 is after today",
        ),
        ({"task": "scene-tags"}, ModelError, "Unknown task 'scene-tags'"),
        ({"task": "landcover", "model_id": "cloud-csmask"}, ModelError, "is a cloud model, not a landcover"),
        ({"model_id": "cloud-unet"}, ModelError, "has no trained weights yet"),
        ({"model_id": "nope"}, ModelError, "Unknown model 'nope'"),
        ({"sources": ()}, SpecError, "Name at least one source"),
        ({"sources": ("ftp://x",)}, SourceError, "Unknown source 'ftp://x'"),
        ({"max_cloud_pct": 120.0}, SpecError, "max_cloud_pct: Input should be less than or equal to 100"),
    ],
)
def test_each_bad_field_is_refused_with_a_sentence(changes, error, message):
    with pytest.raises(error, match=message):
        build(**changes)


def test_the_operators_limits_apply_to_the_area():
    with pytest.raises(AOIError, match="the limit is 0.50 km²"):
        build(Settings(max_aoi_km2=0.5))


def test_the_web_apps_source_rules_run_before_anything_reads_the_source(tmp_path):
    settings = Settings()
    request = JobRequest(aoi=SAMPLE_AOI_TEXT, start="2015-07-01", end="2015-09-30", task="cloud",
                         sources=(f"local:{tmp_path}",))  # fmt: skip
    with pytest.raises(SourceError, match="accepts no local folders"):
        build_spec(request, settings, catalogue(), lambda name: check_app_source(name, settings))


def test_a_stored_spec_is_read_back_unchanged_and_an_older_schema_is_refused(tmp_path):
    store = JobStore(tmp_path)
    spec = build()
    job_id = "20261129-120000-a1b2c3"
    store.create(job_id, spec, JobInfo())
    assert store.read_spec(job_id) == spec
    older = json.loads((store.job_dir(job_id) / "spec.json").read_text())
    del older["schema_version"]
    older["aoi"] = older["aoi"]["geometry"]  # version 1 kept the raw GeoJSON
    (store.job_dir(job_id) / "spec.json").write_text(json.dumps(older))
    with pytest.raises(SpecError, match="made by an older TerraSeg; submit it again"):
        store.read_spec(job_id)


def test_a_lock_file_removed_by_its_holder_is_not_shared_by_two_waiters(tmp_path):
    import threading

    from core.jobs.store import file_lock

    path = tmp_path / "work.lock"
    first_holds, first_may_go = threading.Event(), threading.Event()
    second_holds, second_may_go = threading.Event(), threading.Event()

    def hold(holds: threading.Event, may_go: threading.Event) -> None:
        with file_lock(path, wait_s=10, remove=True) as held:
            assert held
            holds.set()
            may_go.wait(10)

    first = threading.Thread(target=hold, args=(first_holds, first_may_go))
    first.start()
    assert first_holds.wait(10)
    second = threading.Thread(target=hold, args=(second_holds, second_may_go))
    second.start()  # waits on the first one's file
    time.sleep(0.3)
    assert not second_holds.is_set()
    first_may_go.set()  # the first releases and deletes its file
    first.join(10)
    assert second_holds.wait(10)
    with file_lock(path, wait_s=0.3) as held:
        assert not held  # the second holds the file now at `path`: a third process must wait
    second_may_go.set()
    second.join(10)
    assert not path.exists()  # removed by its last holder


def test_a_process_forked_while_another_thread_holds_a_lock_does_not_keep_it(tmp_path):
    """RQ's scheduler and work horse are forked from the worker while its recovery thread may hold a job's lock:
    the child must not keep that lock after the thread releases it (it would keep the job from ever running)."""
    import multiprocessing
    import threading

    from core.jobs.store import file_lock

    path = tmp_path / ".lock"
    holds, may_release, released = threading.Event(), threading.Event(), threading.Event()

    def recovery_probe() -> None:
        with file_lock(path) as held:
            assert held
            holds.set()
            may_release.wait(10)
        released.set()

    thread = threading.Thread(target=recovery_probe)
    thread.start()
    assert holds.wait(10)
    child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(30,))
    child.start()  # forked by this (main) thread while the other thread holds the lock
    try:
        may_release.set()
        assert released.wait(10)
        with file_lock(path, wait_s=2.0) as held:
            assert held, "the forked child kept the lock its parent's thread released"
        with file_lock(path) as held:  # the parent's own locks still work after the fork
            assert held
    finally:
        child.kill()
        child.join(10)
        thread.join(10)


def test_recovery_order_is_submission_order_within_one_second(tmp_path):
    """Job ids order jobs to the second only; recovery re-queues by when each job was really submitted."""
    store = JobStore(tmp_path / "jobs")
    spec = build()
    later_ids = ["20261129-120000-ffffff", "20261129-120000-000000", "20261129-120000-7a7a7a"]
    for job_id in later_ids:
        store.create(job_id, spec, JobInfo(spec_hash="x"))
        time.sleep(0.01)
    assert store.in_submission_order() == later_ids


def test_a_job_cards_summary_names_the_chosen_date_and_no_server_folder():
    from worker.queue.client import job_summary

    spec = build(selected_date="2015-08-30").model_copy(
        update={"sources": ("local:/srv/terraseg/scenes/", "sample")}
    )
    summary = job_summary(spec)
    assert "2015-07-01..2015-09-30 (date 2015-08-30)" in summary
    assert summary.endswith("local:scenes, sample") and "/srv" not in summary
