"""The `terraseg` command end to end, as a user runs it: real files in, real COGs out, exit codes."""

import contextlib
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from core.config import get_settings
from core.sources import SAMPLE_DIR
from models import dynamic_world
from models.catalogue import catalogue
from tests.conftest import TEST_DATA, write_scene
from tests.golden import golden, raster_digests
from worker.cli import main

ROOT = Path(__file__).resolve().parents[3]
SAMPLE_AOI = str(SAMPLE_DIR / "aoi.geojson")
SAMPLE_DATES = ["--start", "2015-07-01", "--end", "2015-09-30"]


def terraseg(
    *args: str, cwd: Path, env: dict[str, str] | None = None, own_process: bool = False
) -> subprocess.CompletedProcess[str]:
    """`terraseg ARGS` run in `cwd`, with `env` over this process's environment and the cache in `cwd/cache`.

    By default the CLI's own `main` runs in this process, as the console script calls it, its stdout, stderr and
    log lines captured: a second Python process per call re-imported torch and reloaded the models, which cost
    the suite minutes. `own_process` runs `python -m worker ARGS` instead, where the process itself is what a test
    is about (the console script's module, its imports)."""
    variables = {"TERRASEG_CACHE_DIR": str(cwd / "cache"), **(env or {})}
    if own_process:
        return subprocess.run(
            [sys.executable, "-m", "worker", *args],
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(ROOT), **variables},
            capture_output=True,
            text=True,
            timeout=300,
        )
    return run_in_process(list(args), cwd, variables)


def run_in_process(args: list[str], cwd: Path, variables: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """worker.cli.main(args) in `cwd` with `variables` set, as `terraseg` would run them; the environment, the
    working folder, the settings cache and the root logger are restored afterwards."""
    saved_environment, saved_cwd = dict(os.environ), Path.cwd()
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)  # where the console script's logging.basicConfig sends log lines
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    saved_level = root.level
    os.environ.update(variables)
    os.chdir(cwd)
    get_settings.cache_clear()
    root.addHandler(handler)
    root.setLevel(logging.INFO if {"-v", "--verbose"} & set(args) else logging.WARNING)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(args)
            except SystemExit as exit_:  # argparse's usage errors
                code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_level)
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_environment)
        get_settings.cache_clear()
    return subprocess.CompletedProcess(["terraseg", *args], code, out.getvalue(), err.getvalue())


def run_cloud(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`terraseg run --task cloud ARGS...`, with the sample's AOI and dates unless ARGS give their own."""
    defaults = [] if "--aoi" in args else ["--aoi", SAMPLE_AOI]
    defaults += [] if "--start" in args else SAMPLE_DATES
    return terraseg("run", "--task", "cloud", *defaults, *args, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The demo job on the embedded sample with the default (csmask) model, run once for several tests, in a
    process of its own as `make demo` runs it."""
    cwd = tmp_path_factory.mktemp("demo")
    result = terraseg(
        "run", "--task", "cloud", "--aoi", SAMPLE_AOI, *SAMPLE_DATES, "--source", "sample", "--out", "out",
        cwd=cwd, own_process=True,
    )  # fmt: skip
    return result, cwd / "out"


def test_the_demo_job_gives_the_golden_pixels(sample_run):
    """The demo's rasters are pixel-identical to those TerraSeg made before its code was reshaped."""
    assert raster_digests(sample_run[1]) == golden("demo_cloud")


def test_the_demo_job_writes_all_outputs_and_prints_them(sample_run):
    result, out = sample_run
    assert result.returncode == 0, result.stderr
    printed = [Path(line) for line in result.stdout.split()]
    assert [p.name for p in printed] == [
        "classes.tif",
        "confidence.tif",
        "scene.tif",
        "preview.png",
        "stats.json",
        "stats.csv",
        *[f"date-{d}.tif" for d in ("2015-07-11", "2015-07-31", "2015-08-20", "2015-08-30", "2015-09-09")],
        "run.json",
    ]
    assert all(p.is_file() and p.parent == out for p in printed)
    assert "[100.0%] Done" in result.stderr
    assert not [p for p in out.parent.iterdir() if ".staging-" in p.name]  # nothing left behind


def test_the_true_colour_image_is_an_rgb_cog_of_the_selected_date(sample_run):
    _, out = sample_run
    with rasterio.open(out / "scene.tif") as scene, rasterio.open(out / "classes.tif") as classes:
        assert scene.count == 3 and scene.dtypes == ("uint8",) * 3 and scene.nodata == 0
        assert (scene.crs, scene.transform, scene.shape) == (classes.crs, classes.transform, classes.shape)
        assert scene.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        rgb = scene.read()
    # The sample is real land in summer: data everywhere, and not a flat or saturated image.
    assert (rgb > 0).all()
    assert 20 < rgb.mean() < 235 and rgb.std() > 5


def test_the_class_map_is_a_real_cog_with_colours_names_and_nodata(sample_run):
    _, out = sample_run
    with rasterio.open(out / "classes.tif") as dataset:
        assert dataset.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert dataset.dtypes[0] == "uint8" and dataset.nodata == 255
        assert dataset.crs.to_epsg() == 32633 and dataset.res == (10.0, 10.0)
        assert dataset.transform.c % 10 == 0 and dataset.transform.f % 10 == 0
        assert dataset.profile["tiled"]
        assert json.loads(dataset.tags()["CLASS_NAMES"]) == {"0": "clear", "1": "cloud", "2": "cloud shadow"}
        assert dataset.colormap(1)[1][:3] == (0x00, 0xC8, 0xFF)  # cloud: cyan, seen on both basemaps
        classes = dataset.read(1)
    assert set(np.unique(classes)) <= {0, 1, 2, 255}
    inside = classes != 255
    assert 0.8 < inside.mean() < 1.0  # the AOI is the sample's footprint less 20 m; corners are outside
    with rasterio.open(out / "confidence.tif") as dataset:
        assert dataset.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        confidence = dataset.read(1)
    assert (confidence[inside] >= 85).all() and (confidence[~inside] == 0).all()  # 3 classes: max prob >= 1/3


def test_stats_hold_areas_per_class_and_cloud_fractions_per_date(sample_run):
    _, out = sample_run
    stats = json.loads((out / "stats.json").read_text())
    assert [d["date"] for d in stats["dates"]] == [
        "2015-07-11",
        "2015-07-31",
        "2015-08-20",
        "2015-08-30",
        "2015-09-09",
    ]
    assert sum(c["percent"] for c in stats["classes"]) == pytest.approx(100, abs=1e-3)
    total_ha = sum(c["area_ha"] for c in stats["classes"])
    assert total_ha == pytest.approx(stats["valid_pixels"] * 100 / 10_000)
    assert 80 < total_ha < 110  # about 1 km2
    by_date = {d["date"]: d for d in stats["dates"]}
    # 2015-08-20 is almost fully clouded in the reference (s2cloudless mean probability 0.97).
    assert by_date["2015-08-20"]["fractions"]["cloud"] > 0.8
    chosen = by_date[stats["selected_date"]]
    assert chosen["fractions"]["clear"] == max(d["fractions"]["clear"] for d in stats["dates"])
    with rasterio.open(out / "classes.tif") as dataset:
        classes = dataset.read(1)
    for entry in stats["classes"]:
        assert entry["pixels"] == int((classes == entry["value"]).sum())


def test_run_record_names_inputs_model_weights_and_timings(sample_run):
    _, out = sample_run
    record = json.loads((out / "run.json").read_text())
    assert len(record["inputs"]) == 5 and record["inputs"][0]["processing_level"] == "L1C"
    assert record["inputs"][0]["radiometry"]["B02"]["scale"] == pytest.approx(1e-4)
    assert record["model"]["id"] == "cloud-csmask" and record["model"]["weights_file"] == "model_6b_l1c.onnx"
    assert len(record["model"]["weights_sha256"]) == 64
    assert set(record["timings_s"]) >= {"plan", "search", "load_model", "predict", "export"}
    assert record["grid"]["crs"] == "EPSG:32633" and len(record["spec_hash"]) == 64
    # A file a user downloads names inputs by their files and sources, never by the server's folders.
    assert record["inputs"][0]["path"] == "S2_L1C_20150711T100008_slovenia.tif"
    assert not re.search(r'"/[\w.-]+/', (out / "run.json").read_text())


def test_the_preview_is_a_png_with_the_map_and_a_legend(sample_run):
    _, out = sample_run
    with Image.open(out / "preview.png") as image:
        assert image.format == "PNG" and image.width >= 240
        pixels = np.asarray(image.convert("RGB"))
    legend_colours = {(0x3A, 0x7D, 0x44), (0xD9, 0xD9, 0xD9), (0x4B, 0x3F, 0x8F)}
    present = {tuple(int(v) for v in p) for p in pixels.reshape(-1, 3)}
    assert legend_colours <= present


def test_s2cloudless_per_date_cloud_fractions_match_the_reference(tmp_path):
    result = run_cloud(
        "--model", "cloud-s2cloudless", "--aoi", SAMPLE_AOI, *SAMPLE_DATES, "--out", "out", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    reference = np.load(TEST_DATA / "s2_slovenia_eolearn" / "CLP_S2C.npy")[..., 0]
    timestamps = json.loads((TEST_DATA / "s2_slovenia_eolearn" / "timestamps.json").read_text())
    for entry in stats["dates"]:
        index = next(i for i, t in enumerate(timestamps) if t.startswith(entry["date"]))
        expected = float((reference[index] > 0.4).mean())
        # The map is resampled onto the snapped 10 m grid and clipped to the AOI, so allow a few percent.
        assert entry["fractions"]["cloud"] == pytest.approx(expected, abs=0.05), entry["date"]


def test_a_named_date_is_published_instead_of_the_least_cloudy(tmp_path):
    result = run_cloud("--date", "2015-08-20", "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["selected_date"] == "2015-08-20"
    cloud = next(c for c in stats["classes"] if c["name"] == "cloud")
    assert cloud["percent"] > 80


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.startswith("terraseg:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--aoi", SAMPLE_AOI, "--start", "2015-09-30", "--end", "2015-07-01"], "before the start date"),
        (["--aoi", SAMPLE_AOI, "--start", "2015-13-01", "--end", "2015-09-30"], "not a date"),
        (["--aoi", "14.6,45.8,14.5,45.9", *SAMPLE_DATES], "look swapped; did you mean 14.5,45.8,14.6,45.9"),
        (["--aoi", "170,45.8,-170,45.9", *SAMPLE_DATES], "antimeridian"),
        (["--aoi", "10.0,50.0,10.01,50.01", *SAMPLE_DATES], "None of the 5 S2 scenes in sample overlaps"),
        (["--aoi", SAMPLE_AOI, "--start", "2016-01-01", "--end", "2016-03-01"], "Widen the date range"),
        (["--aoi", SAMPLE_AOI, "--start", "9999-01-01", "--end", "9999-12-31"], "after today"),
        (["--aoi", SAMPLE_AOI, *SAMPLE_DATES, "--source", "ftp://example"], "Unknown source"),
        (["--aoi", SAMPLE_AOI, *SAMPLE_DATES, "--date", "2015-08-21"], "no scene on 2015-08-21"),
        (["--aoi", SAMPLE_AOI, *SAMPLE_DATES, "--model", "cloud-nonexistent"], "Unknown model"),
        (["--aoi", "missing.geojson", *SAMPLE_DATES], "missing.geojson"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, args, expected):
    import re

    result = run_cloud(*args, "--out", "out", cwd=tmp_path)
    line = _one_line_error(result)
    assert re.search(expected, line), line
    assert result.stderr.count(line.removeprefix("terraseg: ")) == 1, result.stderr  # said once, not logged too
    assert not (tmp_path / "out").exists()


def test_an_aoi_over_the_configured_limit_is_refused(tmp_path):
    line = _one_line_error(run_cloud("--out", "o", cwd=tmp_path, env={"TERRASEG_MAX_AOI_KM2": "0.5"}))
    assert "km²" in line and "limit" in line


def test_a_self_intersecting_aoi_is_refused_then_repaired_with_fix_aoi(tmp_path):
    bowtie = {
        "type": "Polygon",
        "coordinates": [
            [[14.552, 45.867], [14.563, 45.874], [14.563, 45.867], [14.552, 45.874], [14.552, 45.867]]
        ],
    }
    (tmp_path / "bowtie.geojson").write_text(json.dumps(bowtie))
    line = _one_line_error(run_cloud("--aoi", "bowtie.geojson", *SAMPLE_DATES, "--out", "o", cwd=tmp_path))
    assert "Self-intersection" in line and "--fix-aoi" in line
    fixed = run_cloud("--aoi", "bowtie.geojson", *SAMPLE_DATES, "--fix-aoi", "--out", "o", cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(tmp_path):
    (tmp_path / "a_file").write_text("")
    line = _one_line_error(run_cloud("--out", "a_file/out", cwd=tmp_path))
    assert "Cannot write outputs" in line
    line = _one_line_error(run_cloud("--out", "a_file", cwd=tmp_path))
    assert "not a folder" in line


def test_a_corrupt_file_beside_good_scenes_is_skipped_with_a_warning(tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir()
    for scene in SAMPLE_DIR.glob("S2_L1C_2015083*.tif"):
        (folder / scene.name).write_bytes(scene.read_bytes())
    truncated = next(SAMPLE_DIR.glob("S2_L1C_20150909*.tif")).read_bytes()
    (folder / "S2_truncated.tif").write_bytes(truncated[: len(truncated) // 3])
    result = run_cloud("--source", f"local:{folder}", "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "S2_truncated.tif" in result.stderr and "WARNING" in result.stderr
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert [d["date"] for d in stats["dates"]] == ["2015-08-30"]


def test_a_killed_run_publishes_nothing(tmp_path):
    # A scene big enough that the run is still predicting when it is killed.
    data = np.random.default_rng(0).integers(500, 4000, (13, 1200, 1200)).astype(np.uint16)
    folder = tmp_path / "big"
    folder.mkdir()
    write_scene(folder / "big.tif", data, origin=(465_000.0, 5_090_000.0))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TERRASEG_CACHE_DIR": str(tmp_path / "cache")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker",
            "run",
            "--task",
            "cloud",
            "--aoi",
            "14.55,45.87,14.60,45.95",
            "--start",
            "2015-08-01",
            "--end",
            "2015-08-31",
            "--source",
            f"local:{folder}",
            "--out",
            "out",
        ],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:  # wait until it is predicting
        if "Predicting" in line:
            break
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    time.sleep(0.2)
    assert not (tmp_path / "out").exists()


def test_models_and_sources_are_listed(tmp_path):
    models = terraseg("models", cwd=tmp_path)
    assert models.returncode == 0
    assert "cloud-csmask" in models.stdout and "(default)" in models.stdout and "pretrained" in models.stdout
    assert "cloud-s2cloudless" in models.stdout
    sources = terraseg("sources", cwd=tmp_path)
    assert sources.returncode == 0 and "sample" in sources.stdout and "local:DIR" in sources.stdout


def test_a_bad_setting_names_the_variable(tmp_path):
    line = _one_line_error(terraseg("models", cwd=tmp_path, env={"TERRASEG_MAX_AOI_KM2": "-3"}))
    assert "TERRASEG_MAX_AOI_KM2" in line and "greater than 0" in line


def test_the_landcover_job_maps_the_real_sample_with_dynamic_world(tmp_path):
    """`terraseg run --task landcover` end to end: the clearest date, Dynamic World's 9 classes, and a map
    that agrees with the sample's real land-use reference where that says forest."""
    result = terraseg(
        "run", "--task", "landcover", "--aoi", SAMPLE_AOI, *SAMPLE_DATES, "--source", "sample", "--out", "lc",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = tmp_path / "lc"
    assert raster_digests(out) == golden("sample_landcover")  # pixel-identical to the code before its reshaping
    stats = json.loads((out / "stats.json").read_text())
    run = json.loads((out / "run.json").read_text())
    assert stats["model_id"] == "landcover-dynamic-world" and stats["cloud_model_id"] == "cloud-csmask"
    assert stats["selected_date"] == "2015-07-11"  # the clearest date, as the cloud job finds too
    assert [c["name"] for c in stats["classes"]][:3] == ["water", "trees", "grass"]
    assert len(stats["dates"]) == 5 and "cloud" in stats["dates"][0]["fractions"]  # per-date cloud fractions
    assert (
        run["model"]["weights_sha256"]
        == catalogue().get("landcover-dynamic-world").weights_sha256[dynamic_world.WEIGHTS_FILE.name]
    )
    assert run["cloud_model"]["id"] == "cloud-csmask"
    with rasterio.open(out / "classes.tif") as cog:
        classes, transform = cog.read(1), cog.transform
        assert cog.colormap(1)[1][:3] == (0x39, 0x7D, 0x49)  # trees in the official colour
    # The sample's real land-use reference (eo-learn LULC, 2 = forest), looked up at each output pixel centre.
    reference = np.load(TEST_DATA / "s2_slovenia_eolearn" / "LULC.npy")[..., 0]
    with rasterio.open(sorted(SAMPLE_DIR.glob("*.tif"))[0]) as scene:
        scene_transform = scene.transform
    rows, cols = np.mgrid[0 : classes.shape[0], 0 : classes.shape[1]]
    xs, ys = rasterio.transform.xy(transform, rows.ravel(), cols.ravel())
    scene_rows, scene_cols = rasterio.transform.rowcol(scene_transform, xs, ys)
    looked_up = reference[
        np.clip(np.asarray(scene_rows), 0, reference.shape[0] - 1),
        np.clip(np.asarray(scene_cols), 0, reference.shape[1] - 1),
    ].reshape(classes.shape)
    forest = (looked_up == 2) & (classes != 255)
    assert forest.sum() > 5000
    assert (classes[forest] == 1).mean() > 0.95  # measured: 99.99 %


def test_a_rectangle_reaching_past_the_imagery_gets_the_classes_of_the_pixels_inside(tmp_path):
    """The issue's rectangle, 11 % of it past the sample: before the fix csmask called the clear 2015-07-11
    99.3 % cloud shadow and land cover came back empty. Now it maps like the sample's own AOI."""
    rectangle = "14.551048,45.865748,14.564781,45.87531"
    cloud = run_cloud(f"--aoi={rectangle}", "--source", "sample", "--out", "cloud", cwd=tmp_path)
    assert cloud.returncode == 0, cloud.stderr
    stats = json.loads((tmp_path / "cloud" / "stats.json").read_text())
    by_date = {d["date"]: d for d in stats["dates"]}
    assert 0.85 < by_date["2015-07-11"]["valid_fraction"] < 0.92  # the part of the rectangle with data
    assert by_date["2015-07-11"]["fractions"]["clear"] > 0.99
    assert by_date["2015-08-20"]["fractions"]["cloud"] > 0.95
    assert stats["selected_date"] == "2015-07-11" and stats["warnings"] == []
    landcover = terraseg(
        "run", "--task", "landcover", f"--aoi={rectangle}", *SAMPLE_DATES, "--source", "sample", "--out", "lc",
        cwd=tmp_path,
    )  # fmt: skip
    assert landcover.returncode == 0, landcover.stderr
    stats = json.loads((tmp_path / "lc" / "stats.json").read_text())
    shares = {c["name"]: c["percent"] for c in stats["classes"]}
    assert stats["valid_pixels"] > 0.85 * stats["aoi_pixels"] and shares["trees"] > 88, shares


def test_a_job_whose_scenes_cover_little_of_the_area_finishes_and_says_so(tmp_path):
    """A 5 km x 5 km box around the 1 km2 sample: the map is mostly no data, and every output says so."""
    result = run_cloud(
        "--aoi=14.527,45.848,14.591,45.893", "--source", "sample", "--out", "out", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    [warning] = stats["warnings"]
    assert "cover only" in warning and "% of the area of interest" in warning
    assert f"terraseg: warning: {warning}" in result.stderr


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "--aoi", "-4.10,52.37,-3.97,52.45"], ["run", "--aoi=-4.10,52.37,-3.97,52.45"]),
        (["run", "--max-cloud-pct", "-5", "--aoi", "x"], ["run", "--max-cloud-pct=-5", "--aoi", "x"]),
        (
            ["run", "--aoi", "--start", "2020-01-01"],
            ["run", "--aoi", "--start", "2020-01-01"],
        ),  # a missing value
        (["-v", "run", "--fix-aoi", "--aoi", "-1,0,1,2"], ["-v", "run", "--fix-aoi", "--aoi=-1,0,1,2"]),
    ],
)
def test_option_values_that_begin_with_a_minus_sign_are_taken_as_values(argv, expected):
    from worker.cli import attach_dash_values, build_parser

    assert attach_dash_values(argv, build_parser()) == expected


def test_a_bounding_box_west_of_greenwich_is_accepted_as_typed(tmp_path):
    result = run_cloud("--aoi", "-4.10,52.37,-3.97,52.45", "--source", "sample", "--out", "out", cwd=tmp_path)
    assert result.returncode == 2 and "expected one argument" not in result.stderr
    assert "scene" in _one_line_error(result).lower()  # the search ran: the sample has nothing in Wales
    missing = run_cloud("--aoi", "--source", "sample", "--out", "out", cwd=tmp_path)
    assert missing.returncode == 2 and "argument --aoi: expected one argument" in missing.stderr
