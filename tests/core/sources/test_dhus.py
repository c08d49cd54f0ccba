"""The DHuS source (sentinelsat) and full-product downloads against a local DHuS server on 127.0.0.1 that speaks
the recorded OpenSearch/OData dialect, with the faults a real mirror shows."""

import hashlib
import json
import logging
import re
import threading
import time
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio

from core.config import Settings, dhus_credentials
from core.errors import JobCancelled, NoScenesFound, SourceError, SourceUnavailable
from core.geometry.aoi import parse_aoi
from core.geometry.grid import grid_for_aoi
from core.jobs.progress import RunContext
from core.mapping.reading import SceneReader
from core.sources import SAMPLE_DIR, parse_source, search_scenes
from core.sources.dhus import DhusSource, needs_fetch
from core.sources.download import fetch_scenes
from core.sources.transfer import NETWORK_CHUNK_BYTES, download_slot
from core.types import S2_BANDS
from tests.core.sources.dhus_server import PASSWORD, USER, DhusServerProcess

# Real jobs and model runs: left out of `make check`'s quick loop (see the Makefile).
pytestmark = pytest.mark.slow

AOI = parse_aoi(SAMPLE_DIR / "aoi.geojson")
SUMMER = (date(2015, 7, 1), date(2015, 9, 30))


@pytest.fixture(scope="module")
def dhus(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    server = DhusServerProcess(tmp_path_factory.mktemp("dhus") / "server")
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def clean_faults(dhus: DhusServerProcess):  # noqa: ANN201
    for name in ("down", "fail_next", "drop_after", "corrupt_next", "slow", "offline", "triggered"):
        dhus.flag(name, None)
    dhus.clear_log()
    yield


def source(
    dhus: DhusServerProcess, tmp_path: Path, password: str = PASSWORD, **settings: object
) -> DhusSource:
    options = {"download_backoff_s": 0.05, "lta_poll_s": 0.1, **settings}
    # The test mirror is plain HTTP on loopback: its account says so (allow_http), as an operator's would.
    config = Settings(
        cache_dir=tmp_path / "cache",
        dhus_user=USER,
        dhus_password=password,  # type: ignore[arg-type]
        dhus_url=dhus.url,
        dhus_allow_http=True,
        **options,  # type: ignore[arg-type]
    )
    return DhusSource(dhus.url, "dhus-test", config)


def product(dhus: DhusServerProcess, day: str) -> dict[str, object]:
    return next(p for p in dhus.products if day in p["name"])


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def test_sentinelsat_search_finds_the_products_with_their_metadata(dhus, tmp_path):
    scenes = source(dhus, tmp_path).search(AOI.geometry, *SUMMER)
    assert [s.date_iso for s in scenes] == [
        "2015-07-11",
        "2015-07-31",
        "2015-08-20",
        "2015-08-30",
        "2015-09-09",
    ]
    first = scenes[0]
    assert first.sensor == "S2" and first.processing_level == "L1C" and first.processing_baseline == "02.09"
    assert set(first.bands) == set(S2_BANDS) and needs_fetch(first)
    assert first.extra["uuid"] == product(dhus, "20150711")["uuid"]
    assert first.footprint.intersects(AOI.geometry)
    query = dhus.requests()[0][1]
    assert "platformname%3A%22Sentinel-2%22" in query and "footprint%3A%22Intersects%28POLYGON" in query


def test_the_cloud_limit_and_dates_go_into_the_query(dhus, tmp_path):
    cloudy = product(dhus, "20150820")
    scenes = source(dhus, tmp_path).search(AOI.geometry, *SUMMER, max_cloud_pct=50)
    assert cloudy["name"] not in {s.id for s in scenes} and len(scenes) == 4
    assert "cloudcoverpercentage%3A%5B%220%22+TO+%2250%22%5D" in dhus.requests()[-1][1]
    assert [s.date_iso for s in source(dhus, tmp_path).search(AOI.geometry, date(2015, 8, 1), date(2015, 8, 31))] == [
        "2015-08-20", "2015-08-30",
    ]  # fmt: skip


def test_no_results_says_what_to_do(dhus, tmp_path):
    with pytest.raises(
        NoScenesFound, match="no S2 scenes for this AOI and dates; widen the dates or raise the cloud"
    ):
        source(dhus, tmp_path).search(AOI.geometry, date(2019, 1, 1), date(2019, 2, 1))


def test_wrong_credentials_name_the_source_and_never_show_the_password(dhus, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SourceError, match="dhus-test rejected the credentials \\(HTTP 401\\)") as err:
        source(dhus, tmp_path, password="not-the-password").search(AOI.geometry, *SUMMER)
    assert "not-the-password" not in str(err.value) and "not-the-password" not in caplog.text
    config = Settings(dhus_user=USER, dhus_password="not-the-password")  # type: ignore[arg-type]
    assert "not-the-password" not in repr(config) and "not-the-password" not in str(config.model_dump())


def test_credentials_come_from_the_environment_or_streamlit_secrets_each_for_its_mirror(
    tmp_path, monkeypatch
):
    cesnet, other = "https://dhr1.cesnet.cz/", "https://mirror.example.org/dhus/"
    legacy = tmp_path / "legacy.toml"  # the older flat table: an account of the cesnet preset
    legacy.write_text('[dhus]\nuser = "analyst"\npassword = "from-secrets"\n')
    assert dhus_credentials(Settings(), cesnet, (tmp_path / "missing.toml", legacy)) == (
        "analyst",
        "from-secrets",
    )
    assert dhus_credentials(Settings(), other, (legacy,)) is None
    tables = tmp_path / "secrets.toml"
    tables.write_text(
        f'[dhus.example]\nurl = "{other}"\nuser = "ex"\npassword = "ex-pass"\n'
        '[dhus.lab]\nurl = "http://10.0.0.5:8081/dhus/"\nuser = "lab"\npassword = "lab-pass"\n'
    )
    assert dhus_credentials(Settings(), other + "odata/v1/Products", (tables,)) == ("ex", "ex-pass")
    assert dhus_credentials(Settings(), "https://mirror.example.org/dhus-evil/", (tables,)) is None
    assert dhus_credentials(Settings(), "http://mirror.example.org/dhus/", (tables,)) is None  # not https
    assert dhus_credentials(Settings(), "http://10.0.0.5:8081/dhus/", (tables,)) is None  # http not allowed
    tables.write_text(
        tables.read_text().replace('password = "lab-pass"', 'password = "lab-pass"\nallow_http = true')
    )
    assert dhus_credentials(Settings(), "http://10.0.0.5:8081/dhus/", (tables,)) == ("lab", "lab-pass")
    monkeypatch.setenv("TERRASEG_DHUS_USER", "operator")
    monkeypatch.setenv("TERRASEG_DHUS_PASSWORD", "from-env")
    assert dhus_credentials(Settings(), cesnet, (legacy,)) == ("operator", "from-env")
    assert dhus_credentials(Settings(), other, ()) is None  # the environment's account is cesnet's
    assert dhus_credentials(Settings(dhus_user=None, dhus_password=None), cesnet, ()) is None


def passwords_seen(dhus: DhusServerProcess) -> set[str]:
    """The passwords in the Authorization headers the mirror received."""
    import base64

    headers = {r[5] for r in dhus.requests() if r[5]}
    return {base64.b64decode(h.removeprefix("Basic ")).decode().split(":", 1)[1] for h in headers}


def test_the_password_goes_only_to_the_mirror_it_is_configured_for(dhus, tmp_path):
    """Security: the account for one URL is never sent to another host (here: the same server reached under
    another name, as a user could type any URL), nor over plain HTTP unless allowed for that mirror."""
    configured = source(dhus, tmp_path)
    configured.search(AOI.geometry, date(2015, 8, 30), date(2015, 8, 30))
    assert passwords_seen(dhus) == {PASSWORD}
    dhus.clear_log()
    elsewhere = dhus.url.replace("127.0.0.1", "localhost")
    with pytest.raises(SourceError, match="refuses anonymous access"):
        DhusSource(elsewhere, "typed-url", configured.settings).search(AOI.geometry, *SUMMER)
    assert dhus.requests() and passwords_seen(dhus) == set()
    dhus.clear_log()
    no_plain_http = configured.settings.model_copy(update={"dhus_allow_http": False})
    with pytest.raises(SourceError, match="refuses anonymous access"):
        DhusSource(dhus.url, "dhus-test", no_plain_http).search(AOI.geometry, *SUMMER)
    assert dhus.requests() and passwords_seen(dhus) == set()


def test_a_download_is_verified_and_reads_as_the_same_reflectance_as_the_sample(dhus, tmp_path):
    dhus_source = source(dhus, tmp_path)
    [scene] = dhus_source.search(AOI.geometry, date(2015, 8, 30), date(2015, 8, 30))
    fetched = dhus_source.fetch(scene, tmp_path / "cache")
    zip_path = Path(fetched.extra["product"])
    assert md5(zip_path) == product(dhus, "20150830")["md5"] and not needs_fetch(fetched)
    [sample] = parse_source("sample", Settings()).search(AOI.geometry, date(2015, 8, 30), date(2015, 8, 30))
    grid = grid_for_aoi(AOI.geometry)
    window = rasterio.windows.Window(0, 0, grid.width, grid.height)
    with SceneReader([fetched], S2_BANDS, grid) as got, SceneReader([sample], S2_BANDS, grid) as want:
        np.testing.assert_array_equal(got.read(window)[0], want.read(window)[0])
    served = len(dhus.downloads())
    assert dhus_source.fetch(scene, tmp_path / "cache").extra["product"] == str(
        zip_path
    )  # cached: no download
    assert len(dhus.downloads()) == served


def test_a_dropped_connection_resumes_where_it_stopped(dhus, tmp_path):
    dhus_source = source(dhus, tmp_path)
    [scene] = dhus_source.search(AOI.geometry, date(2015, 7, 11), date(2015, 7, 11))
    size = product(dhus, "20150711")["size"]
    dhus.flag("drop_after", f"{size // 2} 1")
    fetched = dhus_source.fetch(scene, tmp_path / "cache")
    assert md5(Path(fetched.extra["product"])) == product(dhus, "20150711")["md5"]
    first, second = dhus.downloads()
    assert first[2] is None and first[4] == size // 2
    resumed_at = int(second[2].removeprefix("bytes=").removesuffix("-"))
    # what arrived before the drop was kept, up to the last whole network chunk
    assert (
        size // 2 - NETWORK_CHUNK_BYTES < resumed_at <= size // 2
        and second[3] == 206
        and second[4] == size - resumed_at
    )


def test_bytes_corrupted_in_flight_are_downloaded_again_and_never_published(dhus, tmp_path):
    dhus_source = source(dhus, tmp_path)
    [scene] = dhus_source.search(AOI.geometry, date(2015, 7, 31), date(2015, 7, 31))
    dhus.flag("corrupt_next", "1")
    fetched = dhus_source.fetch(scene, tmp_path / "cache")
    assert md5(Path(fetched.extra["product"])) == product(dhus, "20150731")["md5"]
    assert [r[2] for r in dhus.downloads()] == [None, None]  # the bad copy was discarded, not resumed

    dhus.flag("corrupt_next", "10")
    stubborn = source(dhus, tmp_path / "other", download_attempts=3)
    with pytest.raises(SourceError, match="arrived corrupt 3 times \\(MD5 mismatch\\)"):
        stubborn.fetch(scene, tmp_path / "other" / "cache")
    assert not stubborn.product_path(scene, tmp_path / "other" / "cache").exists()


@pytest.mark.parametrize("status", [429, 500, 503])
def test_rate_limits_and_server_errors_are_waited_out(dhus, tmp_path, status):
    dhus_source = source(dhus, tmp_path)
    [scene] = dhus_source.search(AOI.geometry, date(2015, 9, 9), date(2015, 9, 9))
    dhus.flag("fail_next", f"{status} 2")
    started = time.monotonic()
    fetched = dhus_source.fetch(scene, tmp_path / "cache")
    assert md5(Path(fetched.extra["product"])) == product(dhus, "20150909")["md5"]
    assert [r[3] for r in dhus.downloads()] == [status, status, 200]
    if status in (429, 503):  # Retry-After: 1 was honoured both times
        assert time.monotonic() - started >= 2.0


def test_an_offline_product_is_requested_from_the_archive_and_fetched_once_online(dhus, tmp_path):
    dhus_source = source(dhus, tmp_path)
    [scene] = dhus_source.search(AOI.geometry, date(2015, 8, 20), date(2015, 8, 20))
    dhus.flag("offline", f"{scene.extra['uuid']} 2\n")
    messages: list[str] = []
    fetched = dhus_source.fetch(scene, tmp_path / "cache", status=messages.append)
    assert md5(Path(fetched.extra["product"])) == product(dhus, "20150820")["md5"]
    value_requests = [r for r in dhus.requests() if "/$value" in r[1]]
    assert value_requests[0][3] == 202  # the retrieval trigger
    polls = [r for r in value_requests if "/Online/$value" in r[1]]
    assert len(polls) == 3  # offline, offline, online
    assert messages and all("waiting for the archive" in m for m in messages)


def test_an_archive_that_never_delivers_gives_up_with_a_clear_message(dhus, tmp_path):
    dhus_source = source(dhus, tmp_path, lta_timeout_s=0.5)
    [scene] = dhus_source.search(AOI.geometry, date(2015, 8, 20), date(2015, 8, 20))
    dhus.flag("offline", f"{scene.extra['uuid']} 1000\n")
    with pytest.raises(SourceError, match="did not bring .* back from its long-term archive within"):
        dhus_source.fetch(scene, tmp_path / "cache")


def test_a_cancel_stops_between_chunks_and_the_next_run_resumes(dhus, tmp_path):
    dhus_source = source(dhus, tmp_path)
    [scene] = dhus_source.search(AOI.geometry, date(2015, 7, 11), date(2015, 7, 11))
    dhus.flag("slow", "0.2")
    received: list[int] = []
    with pytest.raises(JobCancelled):
        dhus_source.fetch(scene, tmp_path / "cache", lambda have, size: received.append(have),
                          should_stop=lambda: bool(received))  # fmt: skip
    partial = dhus_source.product_path(scene, tmp_path / "cache").with_suffix(".zip.part")
    kept = partial.stat().st_size
    assert 0 < kept < product(dhus, "20150711")["size"]
    dhus.flag("slow", None)
    fetched = dhus_source.fetch(scene, tmp_path / "cache")
    assert md5(Path(fetched.extra["product"])) == product(dhus, "20150711")["md5"]
    assert dhus.downloads()[-1][2] == f"bytes={kept}-" and not partial.exists()


def test_two_jobs_wanting_the_same_product_download_it_once(dhus, tmp_path):
    dhus_source = source(dhus, tmp_path)
    [scene] = dhus_source.search(AOI.geometry, date(2015, 9, 9), date(2015, 9, 9))
    dhus.flag("slow", "0.05")
    results: list[str] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(dhus_source.fetch(scene, tmp_path / "cache").extra["product"])
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 2 and results[0] == results[1]
    assert len(dhus.downloads()) == 1


def test_a_corrupt_product_in_the_cache_is_quarantined_and_fetched_again(dhus, tmp_path):
    dhus_source = source(dhus, tmp_path)
    [scene] = dhus_source.search(AOI.geometry, date(2015, 8, 30), date(2015, 8, 30))
    cached = dhus_source.product_path(scene, tmp_path / "cache")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"PK\x03\x04 truncated")
    fetched = dhus_source.fetch(scene, tmp_path / "cache")
    assert md5(Path(fetched.extra["product"])) == product(dhus, "20150830")["md5"]
    assert [p.read_bytes() for p in cached.parent.glob("*.corrupt-*")] == [b"PK\x03\x04 truncated"]


def test_download_slots_bound_parallel_downloads_per_source(tmp_path):
    active, peak, lock = [0], [0], threading.Lock()

    def download() -> None:
        with download_slot(tmp_path / "locks", 2):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            time.sleep(0.2)
            with lock:
                active[0] -= 1

    threads = [threading.Thread(target=download) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert peak[0] == 2


@pytest.fixture
def dhus_env(dhus, monkeypatch):  # noqa: ANN001, ANN201
    """The test account in TERRASEG_DHUS_*, as an operator would set it, for code that reads the settings."""
    from core.config import get_settings

    monkeypatch.setenv("TERRASEG_DHUS_USER", USER)
    monkeypatch.setenv("TERRASEG_DHUS_PASSWORD", PASSWORD)
    monkeypatch.setenv("TERRASEG_DHUS_URL", dhus.url)
    monkeypatch.setenv("TERRASEG_DHUS_ALLOW_HTTP", "true")
    monkeypatch.setenv("TERRASEG_CACHE_DIR", str(Path.cwd() / "cache"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_a_mirror_that_is_down_fails_over_to_the_next_source(dhus, dhus_env, caplog):
    dhus.flag("down", "")
    with pytest.raises(SourceUnavailable, match="is unavailable"):
        search_scenes((f"dhus:{dhus.url}",), AOI.geometry, *SUMMER, Settings())
    scenes = search_scenes((f"dhus:{dhus.url}", "sample"), AOI.geometry, *SUMMER, Settings())
    assert {s.source for s in scenes} == {"sample"}
    assert any(f"dhus:{dhus.url}" in r.getMessage() for r in caplog.records)
    dhus.flag("down", None)
    scenes = search_scenes((f"dhus:{dhus.url}", "sample"), AOI.geometry, *SUMMER, Settings())
    assert {s.source for s in scenes} == {f"dhus:{dhus.url}"}


def test_fetch_scenes_reports_progress_in_megabytes(dhus, dhus_env, tmp_path):
    scenes = search_scenes(
        (f"dhus:{dhus.url}",), AOI.geometry, date(2015, 8, 20), date(2015, 8, 30), Settings()
    )
    reports: list[tuple[float, str]] = []
    progress = RunContext(tmp_path, lambda f, m: reports.append((f, m)))
    fetched = fetch_scenes(scenes, {"B02"}, AOI.geometry, Settings(cache_dir=tmp_path / "cache"), progress)
    assert not any(needs_fetch(s) for s in fetched) and all(
        Path(s.extra["product"]).is_file() for s in fetched
    )
    assert any(re.search(r"downloading [0-2]/2 scenes done, [\d.]+/[\d.]+ MB", m) for _, m in reports)
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[-1] > 0.9  # the sizes in the search are rounded


def test_a_job_downloads_its_products_in_parallel_up_to_the_slots_of_the_source(
    dhus, dhus_env, tmp_path, monkeypatch
):
    monkeypatch.setenv("TERRASEG_DOWNLOAD_SLOTS", "2")
    scenes = search_scenes((f"dhus:{dhus.url}",), AOI.geometry, *SUMMER, Settings())
    dhus.flag("slow", "0.1")  # each product takes about 0.3 s to send
    fetched = fetch_scenes(
        scenes, {"B02"}, AOI.geometry, Settings(cache_dir=tmp_path / "cache"), RunContext(tmp_path)
    )
    assert len(fetched) == 5 and not any(needs_fetch(s) for s in fetched)
    assert dhus.peak_downloads() == 2  # parallel, and never more than the slots


def test_a_failed_product_stops_the_other_downloads_and_says_why(dhus, dhus_env, tmp_path, monkeypatch):
    monkeypatch.setenv("TERRASEG_DOWNLOAD_ATTEMPTS", "1")
    scenes = search_scenes((f"dhus:{dhus.url}",), AOI.geometry, *SUMMER, Settings())
    dhus.flag("corrupt_next", "1")
    dhus.flag("slow", "0.05")
    with pytest.raises(SourceError, match="arrived corrupt 1 times"):
        fetch_scenes(
            scenes, {"B02"}, AOI.geometry, Settings(cache_dir=tmp_path / "cache"), RunContext(tmp_path)
        )
    assert len(dhus.downloads()) < 5  # the queued products were not started
    expected_md5 = {f"{p['name']}.zip": p["md5"] for p in dhus.products}
    published = list((tmp_path / "cache" / "products").rglob("*.zip"))
    assert len(published) < 5 and all(md5(p) == expected_md5[p.name] for p in published)  # none corrupt


def test_a_job_on_a_dhus_mirror_gives_the_same_map_as_on_the_sample(dhus, tmp_path):
    from tests.worker.cli.test_cli import SAMPLE_AOI, SAMPLE_DATES, terraseg

    env = {
        "TERRASEG_DHUS_USER": USER,
        "TERRASEG_DHUS_PASSWORD": PASSWORD,
        "TERRASEG_DHUS_URL": dhus.url,
        "TERRASEG_DHUS_ALLOW_HTTP": "true",
    }
    runs = {}
    for name, source_name in (("dhus", f"dhus:{dhus.url}"), ("sample", "sample")):
        result = terraseg("run", "--task", "cloud", "--aoi", SAMPLE_AOI, *SAMPLE_DATES, "--source", source_name,
                          "--out", name, cwd=tmp_path, env=env)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert PASSWORD not in result.stdout + result.stderr
        with rasterio.open(tmp_path / name / "classes.tif") as cog:
            runs[name] = cog.read(1)
    np.testing.assert_array_equal(runs["dhus"], runs["sample"])
    record = json.loads((tmp_path / "dhus" / "run.json").read_text())
    assert {i["source"] for i in record["inputs"]} == {f"dhus:{dhus.url}"}
    assert PASSWORD not in (tmp_path / "dhus" / "run.json").read_text()
    zips = list((tmp_path / "cache" / "products").rglob("*.zip"))
    assert len(zips) == 5 and not list((tmp_path / "cache" / "products").rglob("*.part"))


def test_recorded_sentinel1_entries_become_grd_scenes_with_their_polarisations():
    import yaml
    from sentinelsat.sentinel import _parse_opensearch_response

    from core.sources.dhus import entry_to_scene
    from tests.core.sources.dhus_server import CASSETTES

    interaction = yaml.safe_load((CASSETTES / "test_footprints_s1.yaml").read_text())["interactions"][0]
    entries = json.loads(interaction["response"]["body"]["string"])["feed"]["entry"]
    parsed = _parse_opensearch_response(entries)
    scenes = {uuid: entry_to_scene(uuid, properties, "cesnet") for uuid, properties in parsed.items()}
    modes = {uuid: properties["polarisationmode"] for uuid, properties in parsed.items()}
    for uuid, scene in scenes.items():
        wanted = {p for p in modes[uuid].split() if p in ("VV", "VH")}
        if not wanted:  # HH/HV products (polar and some stripmap modes) are not used
            assert scene is None
            continue
        assert scene is not None and scene.sensor == "S1" and scene.processing_level == "GRD"
        assert set(scene.bands) == wanted and needs_fetch(scene)
        assert int(scene.extra["download_bytes"]) > 100e6  # '506 MB' and the like
    assert any(s is not None for s in scenes.values())


def test_a_sentinel1_grd_from_the_mirror_is_downloaded_calibrated_and_read_in_db(dhus, dhus_env, tmp_path):
    from rasterio.windows import Window

    from tests.safe_factory import s1_aoi_geojson, s1_expected_db

    aoi = parse_aoi(s1_aoi_geojson())
    [scene] = search_scenes(
        (f"dhus:{dhus.url}",), aoi.geometry, date(2021, 1, 1), date(2021, 1, 31), Settings(), sensor="S1"
    )
    assert scene.sensor == "S1" and set(scene.bands) == {"VV", "VH"} and needs_fetch(scene)
    assert "producttype%3A%22GRD%22" in dhus.requests()[-1][1]
    [ready] = fetch_scenes(
        [scene], {"VV", "VH"}, aoi.geometry, Settings(cache_dir=tmp_path / "cache"), RunContext(tmp_path)
    )
    assert Path(ready.extra["product"]).name.endswith(".zip") and ready.extra["s1_calibrated"]
    grid = grid_for_aoi(aoi.geometry)
    with SceneReader([ready], ("VV", "VH"), grid) as reader:
        db, valid = reader.read(Window(0, 0, grid.width, grid.height))
    expected, inside = s1_expected_db(grid, "VV")
    inside &= valid
    assert inside.sum() > 0.5 * valid.size
    assert np.median(np.abs(db[0][inside] - expected[inside])) < 0.1
    # Sentinel-2 searches of the same area find nothing: the product type keeps the sensors apart.
    with pytest.raises(NoScenesFound):
        search_scenes((f"dhus:{dhus.url}",), aoi.geometry, date(2021, 1, 1), date(2021, 1, 31), Settings())
