"""A crop job on scenes with Sentinel-1: Sentinel-2 L2A from a local folder and Sentinel-1 GRD from a DHuS mirror
(the local test server, which serves a real GRD product's metadata with synthetic measurements), as an analyst
lists them: `--source local:DIR --source dhus:URL`. The GRD is downloaded, calibrated onto the job's grid and
composited into its month; Presto sees S1 and S2."""

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from shapely.geometry import box, mapping, shape

from core.geometry.grid import project_geometry
from tests.conftest import write_scene
from tests.core.sources.dhus_server import PASSWORD, USER, DhusServerProcess
from tests.safe_factory import s1_aoi_geojson
from tests.services import TANZANIA
from tests.worker.cli.test_cli import terraseg

UTM_36S = "EPSG:32736"  # the zone of the GRD product's test area (33.7 E, 18.2 S)


@pytest.fixture(scope="module")
def dhus(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    server = DhusServerProcess(tmp_path_factory.mktemp("dhus") / "server")
    yield server
    server.stop()


def write_l2a_under_the_grd(folder: Path) -> tuple[float, float]:
    """The real Tanzania L2A series' June to September 2018 dates, placed where the GRD product has data and
    dated two years later (2020), in the local-source format; returns the centre (x, y) in UTM 36S."""
    series = np.load(TANZANIA)
    centre = shape(s1_aoi_geojson()).centroid
    x, y = Transformer.from_crs("EPSG:4326", UTM_36S, always_xy=True).transform(centre.x, centre.y)
    height, width = series["data"].shape[2:]
    origin = (round(x - width * 10), round(y + height * 10))  # 20 m pixels, centred on the GRD's data
    bands = tuple(b if len(b) == 3 else f"B0{b[1:]}" for b in (str(b) for b in series["bands"]))
    folder.mkdir(parents=True)
    for index, stamp in enumerate(series["dates"]):
        if not "20180601" <= str(stamp) <= "20180930":
            continue
        day = f"2020-{stamp[4:6]}-{stamp[6:]}"
        write_scene(
            folder / f"T36KWD_{day}.tif", series["data"][index], bands=bands, crs=UTM_36S, origin=origin,
            resolution_m=20.0, acquired=f"{day}T07:30:00Z", level="L2A", scale=1e-3, nodata=0,
        )  # fmt: skip
    return x, y


def test_a_crop_job_composites_sentinel1_from_a_dhus_mirror_with_sentinel2_from_a_folder(dhus, tmp_path):
    x, y = write_l2a_under_the_grd(tmp_path / "s2")
    square = box(x - 300, y - 300, x + 300, y + 300)
    (tmp_path / "aoi.geojson").write_text(json.dumps(mapping(project_geometry(square, UTM_36S, "EPSG:4326"))))
    env = {
        "TERRASEG_DHUS_URL": dhus.url,
        "TERRASEG_DHUS_USER": USER,
        "TERRASEG_DHUS_PASSWORD": PASSWORD,
        "TERRASEG_DHUS_ALLOW_HTTP": "true",
    }
    common = ("run", "--task", "crop", "--aoi", "aoi.geojson", "--start", "2020-02-01", "--end", "2021-01-31")
    done = terraseg(
        *common, "--source", f"local:{tmp_path / 's2'}", "--source", f"dhus:{dhus.url}", "--out", "both",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Sentinel-1" in done.stderr and PASSWORD not in done.stderr
    record = json.loads((tmp_path / "both" / "run.json").read_text())
    assert record["settings"]["sentinel1"] is True
    radar = [i for i in record["inputs"] if i["processing_level"] == "GRD"]
    assert [(i["date"], i["source"]) for i in radar] == [("2021-01-19", f"dhus:{dhus.url}")]
    assert len([i for i in record["inputs"] if i["processing_level"] == "L2A"]) == 6
    stats = json.loads((tmp_path / "both" / "stats.json").read_text())
    assert any(
        "Monthly composites of the job's Sentinel-2 and Sentinel-1 scenes" in w for w in stats["warnings"]
    )
    assert any("11 of the season's 12 months have no Sentinel-1" in w for w in stats["warnings"])
    assert stats["valid_pixels"] == stats["aoi_pixels"] > 3000

    # The same job without the mirror: Sentinel-2 alone, said so; the radar month changed Presto's answers.
    alone = terraseg(*common, "--source", f"local:{tmp_path / 's2'}", "--out", "s2", cwd=tmp_path, env=env)
    assert alone.returncode == 0, alone.stderr
    stats_alone = json.loads((tmp_path / "s2" / "stats.json").read_text())
    assert any("Sentinel-2 scenes alone: no source gave Sentinel-1" in w for w in stats_alone["warnings"])
    assert json.loads((tmp_path / "s2" / "run.json").read_text())["settings"]["sentinel1"] is False
    with (
        rasterio.open(tmp_path / "both" / "confidence.tif") as a,
        rasterio.open(tmp_path / "s2" / "confidence.tif") as b,
    ):
        changed = a.read(1).astype(int) != b.read(1).astype(int)
    assert changed.mean() > 0.5  # every pixel's embedding saw the January backscatter
