"""The STAC source against a local STAC API replaying recorded Earth Search metadata, and the window fetch."""

import dataclasses
import json
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from core.config import Settings
from core.errors import NoScenesFound, SourceError, SourceUnavailable
from core.geometry.aoi import parse_aoi
from core.geometry.grid import grid_for_aoi
from core.mapping.reading import SceneReader
from core.sources import SAMPLE_DIR, parse_source, search_scenes
from core.sources.download import fetch_windows
from core.sources.stac import item_to_scene, radiometry
from core.types import S2_BANDS
from tests.core.sources.stac_server import StacServerProcess, recorded_responses

# Real jobs and model runs: left out of `make check`'s quick loop (see the Makefile).
pytestmark = pytest.mark.slow

AOI = parse_aoi(SAMPLE_DIR / "aoi.geojson")
SUMMER = (date(2015, 7, 1), date(2015, 9, 30))


@pytest.fixture(scope="module")
def stac(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    server = StacServerProcess(tmp_path_factory.mktemp("stac") / "server")
    yield server
    server.stop()


def test_pystac_client_finds_the_items_with_their_recorded_metadata(stac):
    scenes = parse_source(f"stac:{stac.url}", Settings()).search(AOI.geometry, *SUMMER)
    assert [s.date_iso for s in scenes] == [
        "2015-07-11",
        "2015-07-31",
        "2015-08-20",
        "2015-08-30",
        "2015-09-09",
    ]
    scene = scenes[0]
    assert (scene.processing_level, scene.processing_baseline, scene.sensor) == ("L1C", "05.11", "S2")
    assert set(scene.bands) == set(S2_BANDS)
    assert scene.bands["B04"].path.startswith("/vsicurl/http://127.0.0.1")
    # raster:bands (scale 1e-4, offset -0.1) -> reflectance = (DN - 1000) x 1e-4
    assert (scene.bands["B04"].scale, scene.bands["B04"].add_offset) == (1e-4, pytest.approx(-1000.0))
    methods = {(m, p) for m, p, _, _ in stac.requests()}
    assert ("POST", "/v1/search") in methods  # pystac-client searched, unmodified


def test_remote_cogs_read_back_the_samples_reflectance_exactly(stac):
    grid = grid_for_aoi(AOI.geometry)
    window = Window(0, 0, grid.width, grid.height)
    remote = parse_source(f"stac:{stac.url}", Settings()).search(
        AOI.geometry, date(2015, 7, 11), date(2015, 7, 11)
    )
    local = parse_source("sample", Settings()).search(AOI.geometry, date(2015, 7, 11), date(2015, 7, 11))
    bands = ("B02", "B04", "B8A", "B11")
    with SceneReader(remote, bands, grid) as reader:
        remote_values, remote_valid = reader.read(window)
    with SceneReader(local, bands, grid) as reader:
        local_values, local_valid = reader.read(window)
    np.testing.assert_array_equal(remote_valid, local_valid)
    np.testing.assert_allclose(remote_values, local_values, atol=1e-7)


def test_the_baseline_rule_applies_the_offset_only_where_the_metadata_does_not_give_one():
    assert radiometry({"raster:bands": [{"scale": 1e-4, "offset": -0.1}]}, "02.09") == (
        1e-4,
        pytest.approx(-1000),
        0,
    )
    assert radiometry({"raster:bands": [{"nodata": 0}]}, "04.00") == (1e-4, -1000.0, 0)
    assert radiometry({}, "03.01") == (1e-4, 0.0, 0)
    # Recorded Earth Search L2A item: "earthsearch:boa_offset_applied": true and raster:bands offset -0.1.
    _, items = recorded_responses()
    flagged = next(i for i in items if i["properties"].get("earthsearch:boa_offset_applied") is True)
    scene = item_to_scene(flagged, "earth-search")
    assert scene is not None and scene.processing_level == "L2A"
    assert scene.bands["B04"].add_offset == pytest.approx(-1000.0)  # the numbers decide, not the flag


def test_window_fetch_caches_and_reuses_and_replaces_a_corrupt_copy(stac, tmp_path):
    scenes = parse_source(f"stac:{stac.url}", Settings()).search(AOI.geometry, *SUMMER)[:2]
    before = stac.bytes_served()
    fetched = fetch_windows(scenes, {"B04", "B11"}, AOI.geometry, tmp_path)
    first = stac.bytes_served() - before
    paths = [Path(s.bands[b].path) for s in fetched for b in ("B04", "B11")]
    assert all(p.is_file() and tmp_path in p.parents for p in paths) and first > 0
    assert fetched[0].bands["B02"].path.startswith("/vsicurl/")  # bands not asked for stay remote
    again = fetch_windows(scenes, {"B04", "B11"}, AOI.geometry, tmp_path)
    assert [s.bands["B04"].path for s in again] == [s.bands["B04"].path for s in fetched]
    paths[0].write_bytes(b"not a tiff")  # a corrupt cached file
    repaired = fetch_windows(scenes, {"B04"}, AOI.geometry, tmp_path)
    with rasterio.open(repaired[0].bands["B04"].path) as dataset:
        assert dataset.read(1).mean() > 1000
    assert list(paths[0].parent.glob("*.corrupt-*"))  # quarantined, not silently overwritten


@pytest.mark.parametrize("status", [429, 503])
def test_a_window_fetch_rides_out_rate_limits_and_server_errors(stac, tmp_path, status):
    [scene] = parse_source(f"stac:{stac.url}", Settings()).search(
        AOI.geometry, date(2015, 8, 20), date(2015, 8, 20)
    )
    stac.fail_next(status, 2)
    [fetched] = fetch_windows([scene], {"B04"}, AOI.geometry, tmp_path)
    with rasterio.open(fetched.bands["B04"].path) as dataset:
        assert dataset.read(1).mean() > 1000
    answers = [r for r in stac.requests() if r[1].endswith("/B04.tif") and "20150820" in r[1]]
    assert [r[3] for r in answers[:2]] == [0, 0] and answers[-1][3] > 0  # two refusals, then data


def test_a_source_that_is_down_is_reported_and_the_next_one_serves(stac, caplog):
    stac.set_down(True)
    try:
        with pytest.raises(SourceUnavailable, match=r"is unavailable \(HTTP 503\)"):
            parse_source(f"stac:{stac.url}", Settings()).search(AOI.geometry, *SUMMER)
        scenes = search_scenes((f"stac:{stac.url}", "sample"), AOI.geometry, *SUMMER, Settings())
        with pytest.raises(SourceUnavailable):  # every source down: a transient error, retried later
            search_scenes((f"stac:{stac.url}",), AOI.geometry, *SUMMER, Settings())
    finally:
        stac.set_down(False)
    assert {s.source for s in scenes} == {"sample"}
    assert any(f"stac:{stac.url}" in r.getMessage() for r in caplog.records)


def test_an_unreachable_catalogue_is_unavailable_not_an_internal_error():
    with pytest.raises(SourceUnavailable, match="cannot be reached"):
        parse_source("stac:http://127.0.0.1:9/v1", Settings()).search(AOI.geometry, *SUMMER)


@pytest.mark.parametrize(
    "answer",
    [
        b"<html><body>Welcome to nginx!</body></html>",
        b'{"hello": "world"}',
        b"[1, 2]",
        b'{"type": "Catalog"}',
    ],
    ids=["web page", "other json", "json list", "catalog without links"],
)
def test_a_url_that_is_not_a_stac_api_gets_a_sentence_not_a_parser_error(stac, answer):
    stac.answer_instead(answer)
    try:
        with pytest.raises(
            SourceError, match="did not answer as a STAC API; check that the URL is the catalogue"
        ):
            parse_source(f"stac:{stac.url}", Settings()).search(AOI.geometry, *SUMMER)
    finally:
        stac.answer_instead(None)


def test_a_catalogue_with_sas_signing_gets_tokens_and_unsigned_links_are_refused(stac, tmp_path):
    from core.sources.stac import StacSource

    signing = StacSource(stac.url, "signed", sign_url=stac.url.replace("/v1", "/api/sas/v1/token"))
    plain = StacSource(stac.url, "plain")
    stac.require_token(True)
    try:
        [signed] = signing.search(AOI.geometry, date(2015, 8, 30), date(2015, 8, 30))
        assert "?st=now&sig=test-sentinel-2-l1c" in signed.bands["B04"].path
        [fetched] = fetch_windows([signed], {"B04"}, AOI.geometry, tmp_path / "signed")
        assert Path(fetched.bands["B04"].path).is_file()
        # An hour later the token differs; the cached window is still the same data and is reused.
        resigned = dataclasses.replace(
            signed,
            bands={"B04": dataclasses.replace(signed.bands["B04"], path=signed.bands["B04"].path + "x")},
        )
        served = stac.bytes_served()
        [again] = fetch_windows([resigned], {"B04"}, AOI.geometry, tmp_path / "signed")
        assert again.bands["B04"].path == fetched.bands["B04"].path and stac.bytes_served() - served < 20_000
        [unsigned] = plain.search(AOI.geometry, date(2015, 8, 30), date(2015, 8, 30))
        with pytest.raises(SourceError, match="Fetching .* failed"):
            fetch_windows([unsigned], {"B04"}, AOI.geometry, tmp_path / "plain")
    finally:
        stac.require_token(False)
    # The catalogue now serves the file: the same process (a --no-fork worker) fetches it, though GDAL was
    # refused that very URL a moment ago.
    [now] = fetch_windows([unsigned], {"B04"}, AOI.geometry, tmp_path / "plain")
    assert Path(now.bands["B04"].path).is_file()


def test_no_items_for_the_dates_says_what_to_do(stac):
    with pytest.raises(NoScenesFound, match="widen the dates or raise the cloud limit"):
        parse_source(f"stac:{stac.url}", Settings()).search(AOI.geometry, date(2019, 1, 1), date(2019, 2, 1))


def test_a_job_on_the_stac_source_gives_the_same_map_as_on_the_sample(stac, tmp_path):
    from tests.worker.cli.test_cli import SAMPLE_AOI, SAMPLE_DATES, terraseg

    runs = {}
    for name, source in (("stac", f"stac:{stac.url}"), ("sample", "sample")):
        result = terraseg("run", "--task", "cloud", "--aoi", SAMPLE_AOI, *SAMPLE_DATES, "--source", source,
                          "--out", name, cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr
        with rasterio.open(tmp_path / name / "classes.tif") as cog:
            runs[name] = cog.read(1)
    np.testing.assert_array_equal(runs["stac"], runs["sample"])
    record = json.loads((tmp_path / "stac" / "run.json").read_text())
    assert {i["source"] for i in record["inputs"]} == {f"stac:{stac.url}"}
    assert all(i["processing_baseline"] == "05.11" for i in record["inputs"])
    cached = list((tmp_path / "cache" / "products").rglob("*.tif"))
    assert cached and not list((tmp_path / "cache" / "products").rglob("*.part"))
