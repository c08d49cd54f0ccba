"""The web app's pages in Streamlit's AppTest, against a real redis-server and real `terraseg worker` processes.

The map component (st_folium) renders only in a browser; AppTest gets its default return value, so tests that
"draw" an AOI patch st_folium's return value with what the Draw plugin sends (a GeoJSON Feature).
"""

import functools
import io
import json
import time
import zipfile
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import rasterio
import shapely.geometry
import streamlit_folium
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest

from core.config import Settings, get_settings
from core.geometry.aoi import parse_aoi
from core.sources import SAMPLE_DIR
from tests.services import RedisServer, WorkerProcess, large_spec, sample_spec, wait_for
from worker.queue.client import JobClient

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_AOI_TEXT = (SAMPLE_DIR / "aoi.geojson").read_text()
SAMPLE_BBOX = "14.5525,45.8665,14.5630,45.8745"  # inside the embedded sample's footprint


# The accounts every app test has: two users and an admin (passwords as a user would choose them).
PASSWORDS = {
    "analyst": "analyst's long passphrase",
    "other": "another user's passphrase",
    "admin": "correct horse battery staple",
}


@functools.cache
def accounts_toml() -> str:
    """The accounts file, as `terraseg account NAME [--admin]` prints its tables (hashed once per process)."""
    from core.accounts import account_table

    return "".join(account_table(name, password, name == "admin") for name, password in PASSWORDS.items())


@pytest.fixture
def app_env(settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Settings]:
    """Point the app (run in this process by AppTest) at the test's Redis and cache folder, with the accounts
    of PASSWORDS."""
    monkeypatch.setenv("TERRASEG_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("TERRASEG_CACHE_DIR", str(settings.cache_dir))
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(accounts_toml())
    monkeypatch.setenv("TERRASEG_ACCOUNTS_FILE", str(accounts))
    for name in ("TERRASEG_MAX_AOI_KM2", "TERRASEG_APP_SIGN_IN", "TERRASEG_ADMIN_PASSWORD_HASH"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    # AppTest resets PagesManager.uses_pages_directory before every run, so a rerun on a page found in pages/
    # runs that file alone, without app.py (its sidebar). A real server clears the flag for good on the first
    # st.navigation call; do the same after each reset.
    original_init = PagesManager.__init__

    def init_as_after_navigation(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        original_init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init_as_after_navigation)
    yield settings
    get_settings.cache_clear()


def sign_in(at: AppTest, name: str, password: str | None = None) -> AppTest:
    """Type a name and password into the app's sign-in form (PASSWORDS' by default) and press Sign in."""
    next(t for t in at.text_input if t.label == "Account name").input(name)
    next(t for t in at.text_input if t.label == "Password").input(
        PASSWORDS.get(name, "") if password is None else password
    )
    next(b for b in at.button if b.label == "Sign in").click()
    return at.run()


def open_page(
    page: str,
    drawn: dict[str, Any] | None = None,
    monkeypatch: pytest.MonkeyPatch | None = None,
    account: str | None = "admin",
) -> AppTest:
    """Run app.py (sign-in, navigation and sidebar), sign in as `account` (None: stay a visitor; "admin" sees the
    jobs the tests submit from the command line) and switch to `page`."""
    if monkeypatch is not None:
        monkeypatch.setattr(streamlit_folium, "st_folium", lambda *a, **k: {"last_active_drawing": drawn})
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    if account is None:
        return at
    if get_settings().app_sign_in:
        at = sign_in(at, account)
    if page != "pages/new_job.py":
        at.switch_page(page)
    return at.run()


def texts(elements: Any) -> list[str]:
    return [str(e.value) for e in elements]


def sources_box(at: AppTest) -> Any:
    """The Sources field of the page as last drawn (an element of an older run would send that run's widgets,
    some of which may be gone)."""
    return next(t for t in at.text_input if t.label.startswith("Sources"))


def submit_button(at: AppTest) -> Any:
    return next(b for b in at.button if b.label == "Submit")


def assert_no_crash(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


# -- New job ----------------------------------------------------------------------------------------------
def test_a_drawn_rectangle_shows_its_area_an_estimate_and_submits_a_job(app_env, client, monkeypatch):
    drawn = {"type": "Feature", "properties": {}, "geometry": json.loads(SAMPLE_AOI_TEXT)}
    at = open_page("pages/new_job.py", drawn, monkeypatch)
    assert_no_crash(at)
    assert any("Area of interest: 0.9" in t and "km² (drawn on the map)" in t for t in texts(at.success))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Scenes found"] == "5" and metrics["Dates"] == "5"  # a real search of the sample
    assert metrics["Download"] == "0 MB" and metrics["Expected run time"].endswith("s")
    assert not submit_button(at).disabled
    submit_button(at).click()
    at.run()
    assert_no_crash(at)
    [job] = client.list_jobs()
    assert any(job.job_id in t for t in texts(at.success))
    spec = client.spec(job.job_id)
    assert (spec.task, spec.model_id, spec.sources) == ("cloud", "cloud-csmask", ("sample",))
    assert (str(spec.start), str(spec.end)) == ("2015-07-01", "2015-09-30")
    assert spec.aoi.to_aoi().area_km2 == pytest.approx(parse_aoi(SAMPLE_AOI_TEXT).area_km2, rel=1e-9)
    at.date_input[1].set_value("2015-08-31").run()  # another request: the message was about the last one
    assert not any(job.job_id in t for t in texts(at.success))


def test_a_typed_bbox_and_an_uploaded_geojson_both_become_the_aoi(app_env, monkeypatch):
    at = open_page("pages/new_job.py", None, monkeypatch)
    assert submit_button(at).disabled  # nothing drawn yet
    at.radio[0].set_value("Type a bbox").run()
    at.text_input[0].set_value(SAMPLE_BBOX).run()
    assert any("(bbox)" in t for t in texts(at.success)) and not submit_button(at).disabled
    at.radio[0].set_value("Upload a file").run()
    at.get("file_uploader")[0].set_value(("area.geojson", SAMPLE_AOI_TEXT.encode(), "application/geo+json"))
    at.run()
    assert_no_crash(at)
    assert any("(area.geojson)" in t for t in texts(at.success)) and not submit_button(at).disabled


def shapefile_zip(with_prj: bool) -> bytes:
    """A real zipped Shapefile of the sample AOI, written by GDAL, with or without its .prj."""
    import tempfile

    import pyogrio
    import shapely

    geometry = shapely.from_geojson(SAMPLE_AOI_TEXT)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "aoi.shp"
        pyogrio.raw.write(
            path,
            [shapely.to_wkb(geometry)],
            {},
            [],
            [],
            crs="EPSG:4326",
            driver="ESRI Shapefile",
            geometry_type="Polygon",
        )
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for part in sorted(Path(folder).iterdir()):
                if with_prj or part.suffix != ".prj":
                    archive.write(part, part.name)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("broken.geojson", b'{"type": "Polygon", "coordinates": [[[14.5, 45.8], ', "is not valid GeoJSON"),
        ("big.geojson", b" " * (10 * 2**20 + 1), "the limit for an AOI file is 10 MB"),
        ("no_prj.zip", None, "has no .prj file"),
    ],
)
def test_a_bad_upload_gets_its_message_and_submit_stays_disabled(
    app_env, monkeypatch, name, content, message
):
    at = open_page("pages/new_job.py", None, monkeypatch)
    at.radio[0].set_value("Upload a file").run()
    at.get("file_uploader")[0].set_value(
        (name, content if content is not None else shapefile_zip(False), "x")
    )
    at.run()
    assert_no_crash(at)
    assert any(message in t for t in texts(at.error)), texts(at.error)
    assert submit_button(at).disabled


def test_a_zipped_shapefile_with_its_prj_is_accepted(app_env, monkeypatch):
    at = open_page("pages/new_job.py", None, monkeypatch)
    at.radio[0].set_value("Upload a file").run()
    at.get("file_uploader")[0].set_value(("aoi.zip", shapefile_zip(True), "application/zip")).run()
    assert_no_crash(at)
    assert any("(aoi.zip)" in t for t in texts(at.success)), texts(at.error)


@pytest.mark.parametrize(
    ("bbox", "message"),
    [
        ("10,40,13,42", "the limit is 50,000 km²"),  # about 56,000 km2
        ("14.55,45.86,14.56", "west,south,east,north"),
        ("/etc/hostname", "is not a bounding box"),  # never read as a file on the server
    ],
)
def test_a_bad_bbox_gets_its_message(app_env, monkeypatch, bbox, message):
    at = open_page("pages/new_job.py", None, monkeypatch)
    at.radio[0].set_value("Type a bbox").run()
    at.text_input[0].set_value(bbox).run()
    assert_no_crash(at)
    assert any(message in t for t in texts(at.error)), texts(at.error)
    assert submit_button(at).disabled


def test_reversed_dates_an_unknown_source_and_no_scenes_each_block_submit(app_env, monkeypatch):
    at = open_page("pages/new_job.py", None, monkeypatch)
    at.radio[0].set_value("Type a bbox").run()
    at.text_input[0].set_value(SAMPLE_BBOX).run()
    assert not submit_button(at).disabled
    at.date_input[0].set_value("2015-09-30").run()
    at.date_input[1].set_value("2015-07-01").run()
    [swapped] = [t for t in texts(at.error) if "is before the start date" in t and "Swap them" in t]  # said once
    dates_column = next(column for column in at.columns if column.date_input)
    assert texts(dates_column.error) == [swapped]  # beside the date fields, not under the pre-flight
    assert submit_button(at).disabled
    at.date_input[0].set_value("2015-07-01").run()
    at.date_input[1].set_value("2015-09-30").run()
    assert not at.error and not submit_button(at).disabled
    sources_box(at).set_value("sample, ftp://nowhere").run()
    assert any("Unknown source 'ftp://nowhere'" in t for t in texts(at.error))
    assert submit_button(at).disabled
    sources_box(at).set_value("sample").run()
    at.date_input[0].set_value("2019-01-01").run()
    at.date_input[1].set_value("2019-02-01").run()
    assert any(
        "No S2 scene of sample over the area falls between 2019-01-01 and 2019-02-01" in t
        for t in texts(at.error)
    )
    assert submit_button(at).disabled
    assert_no_crash(at)


def test_the_date_fields_reach_from_sentinel_2s_first_day_to_today(app_env, monkeypatch):
    at = open_page("pages/new_job.py", None, monkeypatch)
    for field in at.date_input:
        assert (field.min, field.max) == (date(2015, 6, 23), date.today()), field.label
    at.radio[0].set_value("Type a bbox").run()
    at.text_input[0].set_value(SAMPLE_BBOX).run()
    last_month = date.today().replace(day=1) - timedelta(days=1)
    at.date_input[0].set_value(last_month.replace(day=1)).run()
    at.date_input[1].set_value(last_month).run()
    # Recent dates are asked for: the sample has no scene then, and says so (not a date error).
    assert any("No S2 scene of sample over the area falls between" in t for t in texts(at.error)), texts(
        at.error
    )
    assert_no_crash(at)


def test_the_task_and_model_lists_come_from_the_registry(app_env, monkeypatch):
    from models.catalogue import catalogue

    cards = catalogue().all()
    at = open_page("pages/new_job.py", None, monkeypatch)
    task_box = next(s for s in at.selectbox if s.label == "Task")
    model_box = next(s for s in at.selectbox if s.label == "Model")
    assert (
        set(task_box.options)
        == {c.task for c in cards if c.output == "map"}
        == {"cloud", "crop", "landcover"}
    )
    labels = {c.id + (" (no trained weights)" if c.status == "untrained" else "") for c in cards}
    assert set(model_box.options) == {
        label for label in labels if label.split()[0].startswith(task_box.value)
    }
    assert model_box.value == "cloud-csmask"
    assert any("Classes: clear, cloud, cloud shadow" in t for t in texts(at.caption))


# -- Jobs -------------------------------------------------------------------------------------------------
def job_markdown(at: AppTest, job_id: str) -> str:
    return next(t for t in texts(at.markdown) if job_id in t)


def rerun_until(at: AppTest, condition: Callable[[AppTest], bool], timeout_s: float = 120) -> AppTest:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        at.run()
        if condition(at):
            return at
        time.sleep(0.3)
    pytest.fail("the page never showed the expected state: " + " | ".join(texts(at.markdown)))


def test_the_jobs_page_follows_a_job_live_and_cancel_retry_delete_work(
    app_env, client: JobClient, start_worker: Callable[..., WorkerProcess], large_source, monkeypatch
):
    at = open_page("pages/jobs.py", None, monkeypatch)
    assert any("No jobs yet" in t for t in texts(at.info))
    start_worker()
    job_id = client.submit(large_spec(large_source))
    wait_for(client, job_id, ("running",), min_fraction=0.15)
    at = rerun_until(at, lambda a: "· running ·" in job_markdown(a, job_id) and a.get("progress"))
    progress = at.get("progress")[0]
    assert 15 <= progress.value <= 100 and "Predicting" in progress.proto.text  # percent
    assert "Predicting · Predicting" not in progress.proto.text  # the stage is said once
    assert any("ETA" in t and "elapsed" in t for t in texts(at.caption))
    next(b for b in at.button if b.key == f"cancel-{job_id}").click()
    at.run()
    wait_for(client, job_id, ("cancelled",), timeout_s=10)
    at = rerun_until(at, lambda a: "· cancelled ·" in job_markdown(a, job_id))
    assert not [b for b in at.button if b.key == f"cancel-{job_id}"]
    next(b for b in at.button if b.key == f"retry-{job_id}").click()
    at.run()
    at = rerun_until(at, lambda a: "· finished ·" in job_markdown(a, job_id), timeout_s=240)
    assert client.status(job_id).attempts == 2
    next(b for b in at.button if b.key == f"delete-{job_id}").click()
    at.run()
    assert any("cannot be undone" in t for t in texts(at.warning)) and client.list_jobs()  # it asks first
    next(b for b in at.button if b.key == f"delete-no-{job_id}").click()
    at.run()
    assert not any("cannot be undone" in t for t in texts(at.warning)) and client.list_jobs()
    next(b for b in at.button if b.key == f"delete-{job_id}").click()
    at.run()
    next(b for b in at.button if b.key == f"delete-yes-{job_id}").click()
    at.run()
    assert not client.list_jobs()
    assert any("No jobs yet" in t for t in texts(at.info))  # the card is gone at once


def test_the_progress_line_says_the_stage_once():
    from pages.widgets.formatting import progress_text

    assert progress_text("Planning", "Planning: 0.93 km2") == "Planning: 0.93 km2"
    assert progress_text("Downloading", "3 of 5 windows") == "Downloading · 3 of 5 windows"
    assert progress_text("", "waiting for a worker") == "waiting for a worker"


def test_times_read_as_the_users_clock_shows_them():
    from datetime import UTC, datetime

    from pages.widgets.formatting import local_time

    now = datetime(2026, 12, 2, 22, 30, tzinfo=UTC)
    assert local_time("2026-12-02T13:46:00+00:00", "Europe/Ljubljana", now) == "today 14:46"
    assert local_time("2026-12-01T08:05:00+00:00", "Europe/Ljubljana", now) == "yesterday 09:05"
    assert local_time("2026-11-29T18:02:00+00:00", "UTC", now) == "2026-11-29 18:02"
    assert local_time("2026-12-02T23:30:00+00:00", "Asia/Tokyo", now) == "today 08:30"  # it is the 3rd there
    assert local_time("2026-12-02T13:46:00+00:00", "Not/AZone", now) == "today 13:46"  # unknown zone: UTC
    assert local_time(None) == "-"


def test_a_job_whose_worker_died_reads_queued_and_waiting_for_a_worker(
    app_env, client: JobClient, start_worker: Callable[..., WorkerProcess], large_source, monkeypatch
):
    """The only worker is killed mid-job: the Jobs page says at once that the job is queued again and waits for
    a worker (not "running" with an ETA), with the time since submission and the attempt."""
    worker = start_worker()
    job_id = client.submit(large_spec(large_source))
    wait_for(client, job_id, ("running",), min_fraction=0.15)
    worker.kill()
    at = open_page("pages/jobs.py", None, monkeypatch)
    at = rerun_until(at, lambda a: "· queued ·" in job_markdown(a, job_id), timeout_s=10)
    # ... and once the dead worker's last beat has expired (ALIVE_S), that it waits for a worker
    at = rerun_until(
        at, lambda a: a.get("progress")[0].proto.text.endswith("waiting for a worker"), timeout_s=30
    )
    progress = at.get("progress")[0].proto.text
    assert "re-queued: its worker stopped" in progress and progress.endswith("waiting for a worker"), progress
    assert not any("ETA" in t for t in texts(at.caption))
    assert any(t.startswith("submitted today ") and "elapsed" in t for t in texts(at.caption))


def test_a_failed_job_shows_its_reason_first_and_the_log_on_demand(
    app_env, client: JobClient, start_worker: Callable[..., WorkerProcess], monkeypatch
):
    start_worker()
    job_id = client.submit(sample_spec(start="2019-01-01", end="2019-02-01"))
    wait_for(client, job_id, ("failed",))
    at = open_page("pages/jobs.py", None, monkeypatch)
    [error] = texts(at.error)
    assert error == client.status(job_id).error and "scene" in error
    log_toggle = next(t for t in at.toggle if t.key == f"log-{job_id}")
    assert not at.code
    log_toggle.set_value(True).run()
    assert "failed:" in at.code[0].value


# -- Results ----------------------------------------------------------------------------------------------
@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """What each download button would send, by file name (recorded from Streamlit's media storage)."""
    recorded: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def record(self, path_or_data, mimetype, kind, filename=None):  # noqa: ANN001, ANN202
        if filename:
            recorded[filename] = path_or_data
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", record)
    return recorded


def test_the_results_page_shows_map_legend_areas_and_downloads_the_real_files(
    app_env, client: JobClient, start_worker: Callable[..., WorkerProcess], downloads, monkeypatch
):
    start_worker()
    job_id = client.submit(sample_spec())
    wait_for(client, job_id, ("finished",))
    at = open_page("pages/results.py", None, monkeypatch)
    assert_no_crash(at)
    outputs = {Path(p).name: Path(p) for p in client.status(job_id).outputs}
    stats = json.loads(outputs["stats.json"].read_text())
    legend = next(h.proto.body for h in at.get("html"))
    for entry in stats["classes"]:
        assert entry["name"] in legend and entry["color"] in legend
    areas = at.dataframe[0].value
    assert list(areas["class"]) == [c["name"] for c in stats["classes"]]
    assert list(areas["area (ha)"]) == [c["area_ha"] for c in stats["classes"]]
    dates = at.dataframe[1].value
    assert list(dates["date"]) == [d["date"] for d in stats["dates"]]  # per-date cloud fractions
    assert len(at.get("image")) == 3  # image and classes side by side, and the map of the chosen date
    assert at.slider[0].label == "Class overlay opacity"
    labels = {b.proto.label for b in at.get("download_button")}
    assert {
        "Classes (COG)",
        "Confidence (COG)",
        "Preview (PNG)",
        "Areas (CSV)",
        "Run record (JSON)",
    } <= labels
    for name in (
        "classes.tif",
        "confidence.tif",
        "scene.tif",
        "preview.png",
        "stats.csv",
        "stats.json",
        "run.json",
    ):
        # `<job name or id>_<output>`: two jobs' files do not collide in a downloads folder
        assert downloads[f"{job_id}_{name}"] == outputs[name].read_bytes(), name
    with rasterio.open(io.BytesIO(downloads[f"{job_id}_classes.tif"])) as cog:
        assert cog.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    csv_lines = downloads[f"{job_id}_stats.csv"].decode().splitlines()
    assert csv_lines[0] == "value,class,pixels,area_ha,percent" and len(csv_lines) == 1 + len(
        stats["classes"]
    )


def test_results_without_finished_jobs_say_so(app_env, monkeypatch):
    at = open_page("pages/results.py", None, monkeypatch)
    assert_no_crash(at)
    assert any("No finished job yet" in t for t in texts(at.info))


# -- Health -----------------------------------------------------------------------------------------------
def test_every_page_says_plainly_when_redis_is_down(app_env, redis_server: RedisServer, client, monkeypatch):
    client.submit(sample_spec())  # queued while Redis is up, no worker
    at = open_page("pages/new_job.py", None, monkeypatch)
    assert any("No worker is running" in t for t in texts(at.warning)), texts(at.warning) + texts(
        at.sidebar.markdown
    )
    redis_server.kill()
    time.sleep(2.5)  # the app caches health for 2 s
    for page in ("pages/new_job.py", "pages/jobs.py", "pages/results.py"):
        at = open_page(page, None, monkeypatch)
        assert_no_crash(at)
        assert any("is unreachable" in t for t in texts(at.warning)), page
        assert any("unreachable" in t for t in texts(at.sidebar.markdown)), page
    jobs = open_page("pages/jobs.py", None, monkeypatch)
    assert any("· queued ·" in t for t in texts(jobs.markdown))  # the job list still comes from disk


def test_choosing_the_landcover_task_offers_dynamic_world_and_submits_it(app_env, client, monkeypatch):
    drawn = {"type": "Feature", "properties": {}, "geometry": json.loads(SAMPLE_AOI_TEXT)}
    at = open_page("pages/new_job.py", drawn, monkeypatch)
    next(s for s in at.selectbox if s.label == "Task").set_value("landcover").run()
    model_box = next(s for s in at.selectbox if s.label == "Model")
    assert "landcover-dynamic-world" in model_box.options and model_box.value == "landcover-dynamic-world"
    assert "landcover-dfc2020-unet (no trained weights)" in model_box.options
    assert any("Classes: water, trees, grass" in t for t in texts(at.caption))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Scenes found"] == "5" and metrics["Expected run time"].endswith("s")
    submit_button(at).click()
    at.run()
    [job] = client.list_jobs()
    spec = client.spec(job.job_id)
    assert (spec.task, spec.model_id) == ("landcover", "landcover-dynamic-world")


def test_land_cover_on_an_l2a_only_source_shows_the_models_caveat_before_submitting(
    app_env, monkeypatch, tmp_path
):
    from tests.worker.pipelines.test_levels import CAVEAT, tagged_copy

    l2a = tagged_copy(tmp_path / "roots" / "l2a", "L2A")  # the sample's pixels tagged L2A
    monkeypatch.setenv("TERRASEG_APP_LOCAL_ROOTS", json.dumps([str(tmp_path / "roots")]))
    get_settings.cache_clear()
    drawn = {"type": "Feature", "properties": {}, "geometry": json.loads(SAMPLE_AOI_TEXT)}
    at = open_page("pages/new_job.py", drawn, monkeypatch)
    next(s for s in at.selectbox if s.label == "Task").set_value("landcover").run()
    sources_box(at).set_value(f"local:{l2a}").run()
    assert_no_crash(at)
    assert CAVEAT in texts(at.warning) and not submit_button(at).disabled  # it runs, and says how
    sources_box(at).set_value(f"local:{l2a}, sample").run()  # an L1C source later in the list wins
    assert CAVEAT not in texts(at.warning)
    assert {m.label: m.value for m in at.metric}["Scenes found"] == "5"


def test_an_untrained_model_is_explained_and_cannot_be_submitted(app_env, monkeypatch):
    drawn = {"type": "Feature", "properties": {}, "geometry": json.loads(SAMPLE_AOI_TEXT)}
    at = open_page("pages/new_job.py", drawn, monkeypatch)
    next(s for s in at.selectbox if s.label == "Task").set_value("landcover").run()
    next(s for s in at.selectbox if s.label == "Model").set_value("landcover-dfc2020-unet").run()
    assert_no_crash(at)
    assert any(
        "Model landcover-dfc2020-unet has no trained weights yet; import published weights or train it first"
        in t
        for t in texts(at.error)
    )
    assert len(at.error) == 1  # said once, next to the model
    assert submit_button(at).disabled
    [link] = [link.proto for link in at.get("page_link")]  # an admin is pointed to the training
    assert (link.label, link.page) == ("Train a model on the Admin page", "admin")
    user = open_page("pages/new_job.py", drawn, monkeypatch, account="analyst")
    next(s for s in user.selectbox if s.label == "Task").set_value("landcover").run()
    next(s for s in user.selectbox if s.label == "Model").set_value("landcover-dfc2020-unet").run()
    assert not user.get("page_link") and any("An admin can train it" in t for t in texts(user.caption))


def test_results_show_an_empty_date_and_put_a_warning_about_a_nearly_empty_map_above_it(
    app_env, client, start_worker, monkeypatch
):
    start_worker()
    job_id = client.submit(sample_spec())
    wait_for(client, job_id, ("finished",))
    stats_path = client.store.outputs_dir(job_id) / "stats.json"
    stats = json.loads(stats_path.read_text())
    assert stats["warnings"] == []  # the sample's own AOI: nothing to warn about
    # As the job writes them for an AOI far past the imagery: a date without data, and a warning.
    stats["dates"][0]["valid_fraction"] = 0.0
    stats["dates"][0]["fractions"] = {name: None for name in stats["dates"][0]["fractions"]}
    stats["warnings"] = [
        "The scenes of 2015-07-11 cover only 3.0 % of the area of interest; the rest is no data."
    ]
    stats_path.write_text(json.dumps(stats))
    at = open_page("pages/results.py", None, monkeypatch)
    assert_no_crash(at)
    dates = at.dataframe[1].value
    assert dates.iloc[0]["valid (%)"] == 0 and dates.iloc[0].isna()["cloud (%)"]
    assert [w.value for w in at.warning] == stats["warnings"]


def test_a_shared_server_limits_local_folders_to_its_roots(app_env, monkeypatch, tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    monkeypatch.setenv("TERRASEG_APP_LOCAL_ROOTS", json.dumps([str(allowed)]))
    get_settings.cache_clear()
    at = open_page("pages/new_job.py", None, monkeypatch)
    sources_box(at).set_value("local:/etc").run()
    assert any("local folders must be inside" in t and "/etc is not" in t for t in texts(at.error))
    sources_box(at).set_value(
        "local:/no-such-folder-here"
    ).run()  # refused the same way: nothing says it is missing
    assert any("/no-such-folder-here is not." in t for t in texts(at.error))
    assert not any("does not exist" in t for t in texts(at.error))
    assert submit_button(at).disabled
    sources_box(at).set_value(f"local:{allowed}").run()
    assert not any("local folders must be inside" in t for t in texts(at.error))


def test_by_default_the_app_accepts_no_local_folder_and_says_nothing_about_the_servers_files(
    app_env, monkeypatch
):
    at = open_page("pages/new_job.py", None, monkeypatch)
    answers = []
    for folder in ("/etc", "/no-such-folder-here", str(SAMPLE_DIR)):
        sources_box(at).set_value(f"local:{folder}").run()
        answers.append([t for t in texts(at.error) if "local folders" in t])
        assert submit_button(at).disabled
    assert answers[0] == answers[1] == answers[2] and len(answers[0]) == 1
    assert "accepts no local folders" in answers[0][0] and "TERRASEG_APP_LOCAL_ROOTS" in answers[0][0]


def test_the_app_never_shows_error_details_and_listens_on_this_machine_by_default():
    """A traceback on a page shows server paths and internals: Streamlit's default ("full") is turned off in
    the config `streamlit run` reads, and `make app` binds to 127.0.0.1 unless the operator says otherwise."""
    import subprocess
    import tomllib

    root = Path(__file__).resolve().parents[2]
    config = tomllib.loads((root / ".streamlit" / "config.toml").read_text())
    assert config["client"]["showErrorDetails"] == "none"
    dry_run = subprocess.run(
        ["make", "--no-print-directory", "-n", "app"], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    [command] = [line for line in dry_run.splitlines() if "streamlit run app.py" in line]
    assert command.endswith("--server.address 127.0.0.1")


def test_the_app_fetches_no_url_a_user_types_unless_the_operator_listed_it(app_env, monkeypatch):
    """Security (SSRF): a `stac:`/`dhus:` URL typed in the app reaches the network only when the operator has
    listed it (TERRASEG_APP_SOURCE_URLS); a loopback server records whether anything arrived."""
    import http.server
    import threading

    seen: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(self.path)
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/internal/"
    drawn = {
        "type": "Feature",
        "properties": {},
        "geometry": json.loads(SAMPLE_AOI_TEXT),
    }  # so the search runs
    try:
        at = open_page("pages/new_job.py", drawn, monkeypatch)
        for kind in ("stac", "dhus"):
            sources_box(at).set_value(f"{kind}:{url}").run()
            assert any("is not one of them" in t and "earth-search" in t for t in texts(at.error)), texts(
                at.error
            )
            assert submit_button(at).disabled
        assert seen == []  # nothing was fetched
        monkeypatch.setenv("TERRASEG_APP_SOURCE_URLS", json.dumps([url]))
        get_settings.cache_clear()
        at = open_page("pages/new_job.py", drawn, monkeypatch)
        next(t for t in at.text_input if t.label.startswith("Sources")).set_value(f"stac:{url}").run()
        assert not any("is not one of them" in t for t in texts(at.error))
        assert seen  # listed by the operator: the pre-flight search went to it
    finally:
        server.shutdown()
        get_settings.cache_clear()


def test_results_give_areas_per_feature_and_the_map_as_a_geopackage_geopandas_opens(
    app_env, client: JobClient, start_worker: Callable[..., WorkerProcess], downloads, monkeypatch, tmp_path
):
    import geopandas

    two_fields = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {}, "geometry": box.__geo_interface__}
            for box in (
                shapely.geometry.box(14.5525, 45.8665, 14.5570, 45.8745),
                shapely.geometry.box(14.5585, 45.8665, 14.5630, 45.8745),
            )
        ],
    }
    start_worker()
    job_id = client.submit(sample_spec(aoi=json.dumps(two_fields)))
    wait_for(client, job_id, ("finished",))
    at = open_page("pages/results.py", None, monkeypatch)
    assert_no_crash(at)
    stats = json.loads((client.store.outputs_dir(job_id) / "stats.json").read_text())
    zones = next(d.value for d in at.dataframe if "feature" in d.value.columns)
    assert sorted(set(zones["feature"])) == ["feature 1", "feature 2"]
    for entry in stats["classes"]:  # the two features make up the whole area
        assert zones[zones["class"] == entry["name"]]["pixels"].sum() == entry["pixels"]
    assert "zonal_stats.csv" in downloads
    next(n for n in at.number_input if n.label == "Minimum mapping unit (m²)").set_value(200.0)
    next(n for n in at.number_input if n.label == "Simplification tolerance (m)").set_value(0.0)
    next(t for t in at.toggle if t.label == "Make the vector files").set_value(True)
    at = at.run()
    assert_no_crash(at)
    assert any("polygons in the map's CRS" in t for t in texts(at.caption))
    (tmp_path / "classes.gpkg").write_bytes(downloads[f"{job_id}_classes.gpkg"])
    frame = geopandas.read_file(tmp_path / "classes.gpkg")
    assert len(frame) > 0 and set(frame["class"]) <= {c["name"] for c in stats["classes"]}
    assert frame.geometry.area.min() >= 200.0 - 1e-6  # the minimum mapping unit the user set
    assert frame.crs.to_epsg() == 32633  # the job's UTM grid
    assert f"{job_id}_classes.parquet" in downloads


def test_the_map_draws_only_in_draw_mode_goes_to_a_typed_bbox_or_a_place_and_the_trash_clears_the_area(
    app_env, monkeypatch
):
    """What the New job page hands the map component: the Draw tools in draw mode only; a view to move to for
    a typed bbox or a place searched for (none after a drawing: the view stays where the user drew); and the
    trash tool's empty drawing list clears the area."""
    from folium.plugins import Draw

    calls: list[dict[str, Any]] = []
    answer: dict[str, Any] = {}

    def component(fig, **kwargs):  # noqa: ANN001, ANN003, ANN202
        calls.append({"draw": any(isinstance(c, Draw) for c in fig._children.values())} | kwargs)
        return answer

    monkeypatch.setattr(streamlit_folium, "st_folium", component)
    at = open_page("pages/new_job.py")
    assert calls[-1]["draw"] and calls[-1]["center"] is None
    next(t for t in at.text_input if t.label == "Go to a place").set_value("Ljubljana")
    at = at.run()
    assert "Ljubljana, SI" in next(s for s in at.selectbox if s.label == "Places found").value.label
    assert calls[-1]["center"] == pytest.approx((46.051, 14.505), abs=1e-3) and calls[-1]["zoom"] == 12
    drawn = {"type": "Feature", "properties": {}, "geometry": json.loads(SAMPLE_AOI_TEXT)}
    answer.update(last_active_drawing=drawn, all_drawings=[drawn])
    next(t for t in at.text_input if t.label == "Go to a place").set_value("")
    at = at.run()
    assert any("drawn on the map" in t for t in texts(at.success))
    assert calls[-1]["center"] is None  # no jump after a drawing
    answer.update(all_drawings=[])  # the trash tool's "Clear all"
    at = at.run()
    assert not at.success and any("Draw a rectangle" in t for t in texts(at.info))
    at.radio[0].set_value("Type a bbox").run()
    assert not calls[-1]["draw"]  # no drawing tools while typing a bbox
    at.text_input[0].set_value(SAMPLE_BBOX).run()
    assert calls[-1]["center"] == pytest.approx((45.8705, 14.55775), abs=1e-4)
    assert any("centred at 45.870° N, 14.558° E" in t for t in texts(at.success))
    at.text_input[0].set_value("200,14.5,201,14.6").run()  # wrong either way: no hint
    assert any("is outside longitude" in t for t in texts(at.error))
    assert not any("look swapped" in t for t in texts(at.error))
    at.text_input[0].set_value("45.8665,114.5525,45.8745,114.5630").run()
    assert any("look swapped: did you mean 114.5525,45.8665,114.563,45.8745?" in t for t in texts(at.error))


def test_results_compare_two_jobs_over_the_same_area_with_a_transition_matrix_and_a_change_map(
    app_env, client: JobClient, start_worker: Callable[..., WorkerProcess], downloads, monkeypatch, tmp_path
):
    start_worker()
    clear = client.submit(sample_spec(selected_date="2015-07-11"), name="clear day")
    cloudy = client.submit(sample_spec(selected_date="2015-07-31"), name="cloudy day")
    elsewhere = client.submit(sample_spec(aoi="14.5525,45.8665,14.5600,45.8745"))  # another grid: not offered
    for job_id in (clear, cloudy, elsewhere):
        wait_for(client, job_id, ("finished",))
    at = open_page("pages/results.py", None, monkeypatch)
    at.query_params["job"] = cloudy
    at.selectbox[0].set_value(cloudy)
    at = at.run()
    box = next(s for s in at.selectbox if s.label == "Compare with")
    assert box.options == [  # the job's own other dates, and the other job over this area
        "-",
        "this job, 2015-07-11",
        "this job, 2015-08-20",
        "this job, 2015-08-30",
        "this job, 2015-09-09",
        f"clear day ({clear})",
    ]
    assert next(s for s in at.selectbox if s.label == "Date").options == [
        "2015-07-11",
        "2015-07-31",
        "2015-08-20",
        "2015-08-30",
        "2015-09-09",
    ]  # every date the job computed, to look at
    box.set_value(clear)
    at = at.run()
    assert_no_crash(at)
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["Changed share"].split()[0]) > 80  # a clear day against a cloudy one
    matrix = next(d.value for d in at.dataframe if "from clear" in list(d.value.index))
    assert list(matrix.columns) == ["clear", "cloud", "cloud shadow"]
    assert matrix.to_numpy().sum() == pytest.approx(float(metrics["Compared area"].split()[0]), abs=0.02)
    captions = [str(i.proto) for i in at.get("image")]
    assert any("Before: 2015-07-11" in c for c in captions) and any(
        "After: 2015-07-31" in c for c in captions
    )
    (tmp_path / "change.tif").write_bytes(downloads["change.tif"])
    with rasterio.open(tmp_path / "change.tif") as change:
        assert change.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    assert downloads["transitions.csv"].decode().splitlines()[0] == ",clear,cloud,cloud shadow"
    # The job's own map of 2015-07-11 is the clear day's map: the same comparison, to the pixel.
    next(s for s in at.selectbox if s.label == "Compare with").set_value("date-2015-07-11.tif")
    at = at.run()
    assert_no_crash(at)
    assert {m.label: m.value for m in at.metric} == metrics


def test_the_compare_map_swipes_between_the_two_maps_with_its_own_script():
    """Before and after both on the map, the swipe drawn by the map's own script (no plugin from a CDN: the app runs
    offline) and tied to the after image; the change layer offered but off. tests/pages/test_browser.py moves the
    swipe in Chromium."""
    import io
    import re

    from PIL import Image

    from core.outputs.overlay import Overlay
    from pages.widgets.compare_map import compare_figure

    def overlay(colour: tuple[int, int, int, int]) -> Overlay:
        buffer = io.BytesIO()
        Image.new("RGBA", (4, 4), colour).save(buffer, format="PNG")
        return Overlay(buffer.getvalue(), ((45.80, 14.55), (45.81, 14.56)), 4, 4)

    red, blue, black = (overlay(c) for c in ((255, 0, 0, 255), (0, 0, 255, 255), (0, 0, 0, 255)))
    fmap = compare_figure(red, blue, black, "2015-07-11", "2015-07-31")
    html = fmap.get_root().render()
    layers = re.findall(r"var (image_overlay_[0-9a-f]+) = L\.imageOverlay", html)
    assert len(layers) == 3  # before, after, change
    map_name = fmap.get_name()
    before, after, change = layers
    assert f"{before}.addTo({map_name})" in html and f"{after}.addTo({map_name})" in html
    assert f"{change}.addTo({map_name})" not in html  # listed in the layer control, off at first
    assert f"var after = {after};" in html and "terraseg-swipe" in html
    assert "sideBySide" not in html and "leaflet-side-by-side" not in html
    assert (
        "Before (2015-07-11): left of the swipe" in html and "After (2015-07-31): right of the swipe" in html
    )
    assert re.search(r"L\.control\.layers\([^;]*\"collapsed\": true", html, re.S)  # off the swipe's right side


def test_the_date_to_map_is_chosen_from_the_dates_found_and_submitted(app_env, client, monkeypatch):
    drawn = {"type": "Feature", "properties": {}, "geometry": json.loads(SAMPLE_AOI_TEXT)}
    at = open_page("pages/new_job.py", drawn, monkeypatch)
    chosen = next(s for s in at.selectbox if s.label == "Date to map")
    assert chosen.options == [
        "the clearest date (chosen by the cloud model)",
        "2015-07-11",
        "2015-07-31",
        "2015-08-20",
        "2015-08-30",
        "2015-09-09",
    ]  # the sample's dates: a user cannot choose a date without a scene
    chosen.set_value("2015-07-31").run()
    submit_button(at).click()
    at.run()
    [job] = client.list_jobs()
    assert str(client.spec(job.job_id).selected_date) == "2015-07-31"
