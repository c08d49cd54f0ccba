"""read_s2_safe against SAFE products built from the real L1C metadata and crops in tests/data."""

import logging
import re
import shutil
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from shapely.geometry import Point, Polygon

from core.errors import SourceError
from core.sources.safe import read_s2_safe
from core.types import S2_BANDS
from tests.safe_factory import PRODUCTS, build_s2_safe, real_dn_path, real_mtd_path, real_toa_path

NOMINAL_RESOLUTION_M = dict(zip(S2_BANDS, (60, 10, 10, 10, 20, 20, 20, 10, 20, 60, 60, 20, 20), strict=True))


def read_band(path: str, band_index: int = 1) -> np.ndarray:
    """(H, W) DN of one band file (any GDAL path)."""
    with rasterio.open(path) as src:
        return src.read(band_index)


def mtd_footprint(which: str) -> Polygon:
    """The real MTD's EXT_POS_LIST ('lat lon ...') as a lon/lat polygon, parsed apart from the reader."""
    text = re.search(r"<EXT_POS_LIST>(.*?)</EXT_POS_LIST>", real_mtd_path(which).read_text())
    assert text is not None
    values = [float(v) for v in text[1].split()]
    return Polygon(zip(values[1::2], values[0::2], strict=True))


def edit_mtd(safe: Path, pattern: str, replacement: str = "") -> None:
    """Rewrite the product's MTD in place (regex over the whole text); fail if nothing matched."""
    mtd = next(safe.glob("MTD_MSIL*.xml"))
    text, count = re.subn(pattern, replacement, mtd.read_text(), flags=re.DOTALL)
    assert count, f"{pattern!r} not in {mtd}"
    mtd.write_text(text)


def test_l1c_n0400_reads_baseline_offset_date_cloud_and_13_bands(tmp_path):
    safe = build_s2_safe(tmp_path, "N0400")
    scene = read_s2_safe(safe)

    assert scene.id == PRODUCTS["N0400"]
    assert (scene.sensor, scene.source, scene.processing_level) == ("S2", "local", "L1C")
    assert scene.processing_baseline == "04.00"
    assert scene.acquired == datetime(2022, 6, 15, 10, 15, 59, 25_000, tzinfo=UTC)
    assert scene.date_iso == "2022-06-15"
    assert scene.cloud_cover_pct == pytest.approx(1.26680402520231)
    assert scene.path == str(safe)
    assert list(scene.bands) == list(S2_BANDS)
    for name, asset in scene.bands.items():
        assert asset.path.endswith(f"_{name}.jp2") and Path(asset.path).is_file()
        assert (asset.band_index, asset.add_offset, asset.nodata) == (1, -1000.0, 0.0)
        assert asset.scale == pytest.approx(1e-4)
        assert asset.resolution_m == NOMINAL_RESOLUTION_M[name]


def test_l1c_n0209_has_no_offset(tmp_path, caplog):
    scene = read_s2_safe(build_s2_safe(tmp_path, "N0209"))

    assert scene.processing_baseline == "02.09"
    assert scene.date_iso == "2020-04-06"
    assert scene.cloud_cover_pct == pytest.approx(0.0079)
    assert len(scene.bands) == 13
    assert {a.add_offset for a in scene.bands.values()} == {0.0}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_n0400_without_offsets_in_the_mtd_gets_minus_1000_and_a_warning(tmp_path, caplog):
    safe = build_s2_safe(tmp_path, "N0400")
    edit_mtd(safe, r"<Radiometric_Offset_List>.*?</Radiometric_Offset_List>")

    with caplog.at_level(logging.WARNING, logger="core.sources.safe"):
        scene = read_s2_safe(safe)

    assert {a.add_offset for a in scene.bands.values()} == {-1000.0}
    assert any("no radiometric offset" in r.getMessage() for r in caplog.records)


def test_offsets_written_in_the_mtd_win_over_the_default(tmp_path):
    safe = build_s2_safe(tmp_path, "N0400")
    edit_mtd(safe, r'(band_id="3">)-1000<', r"\g<1>-999<")

    scene = read_s2_safe(safe)

    assert scene.bands["B04"].add_offset == -999.0
    assert scene.bands["B03"].add_offset == -1000.0


@pytest.mark.parametrize("level", ["L1C", "L2A"])
def test_zipped_product_gives_the_same_scene_and_readable_vsizip_paths(tmp_path, level):
    folder = read_s2_safe(build_s2_safe(tmp_path / "dir", "N0400", level))
    archive = build_s2_safe(tmp_path / "zip", "N0400", level, zipped=True)
    zipped = read_s2_safe(archive)

    assert archive.name.endswith(".SAFE.zip") and archive.is_file()
    assert list((tmp_path / "zip").iterdir()) == [archive]
    assert zipped.path == str(archive)
    for field in ("id", "sensor", "acquired", "processing_level", "processing_baseline", "cloud_cover_pct"):
        assert getattr(zipped, field) == getattr(folder, field), field
    assert zipped.footprint.equals_exact(folder.footprint, 1e-12)
    assert list(zipped.bands) == list(folder.bands)
    for name, asset in zipped.bands.items():
        twin = folder.bands[name]
        assert asset.path.startswith(f"/vsizip/{archive}/{zipped.id}.SAFE/GRANULE/")
        assert (asset.scale, asset.add_offset, asset.nodata, asset.resolution_m) == (
            twin.scale,
            twin.add_offset,
            twin.nodata,
            twin.resolution_m,
        )
        np.testing.assert_array_equal(read_band(asset.path), read_band(twin.path))


@pytest.mark.parametrize(("which", "offset"), [("N0400", -1000.0), ("N0209", 0.0)])
def test_l2a_takes_the_finest_resolution_and_skips_by_products(tmp_path, which, offset):
    scene = read_s2_safe(build_s2_safe(tmp_path, which, "L2A"))

    assert scene.processing_level == "L2A"
    assert scene.id == PRODUCTS[which].replace("MSIL1C", "MSIL2A")
    assert list(scene.bands) == [b for b in S2_BANDS if b != "B10"]  # L2A has no cirrus band
    expected = {"B02": 10, "B08": 10, "B01": 20, "B05": 20, "B8A": 20, "B12": 20, "B09": 60}
    for name, resolution_m in expected.items():
        asset = scene.bands[name]
        assert f"/IMG_DATA/R{resolution_m}m/" in asset.path and asset.path.endswith(
            f"_{name}_{resolution_m}m.jp2"
        )
        assert asset.resolution_m == resolution_m
    assert not [a.path for a in scene.bands.values() if re.search(r"_(TCI|SCL|AOT|WVP)_", a.path)]
    assert {a.add_offset for a in scene.bands.values()} == {offset}
    assert [a.scale for a in scene.bands.values()] == pytest.approx([1e-4] * len(scene.bands))


@pytest.mark.parametrize("which", ["N0400", "N0209"])
def test_factory_jp2s_are_lossless_copies_of_the_real_crop(tmp_path, which):
    scene = read_s2_safe(build_s2_safe(tmp_path, which))
    with rasterio.open(real_dn_path(which)) as src:
        dn, crs, transform = src.read(), src.crs, src.transform

    for index, asset in enumerate(scene.bands.values()):
        with rasterio.open(asset.path) as band:
            assert (band.driver, band.count, band.crs, band.transform) == ("JP2OpenJPEG", 1, crs, transform)
            np.testing.assert_array_equal(band.read(1), dn[index])


@pytest.mark.parametrize("zipped", [False, True])
@pytest.mark.parametrize("which", ["N0400", "N0209"])
def test_radiometry_reproduces_the_real_toa_reflectance(tmp_path, which, zipped):
    scene = read_s2_safe(build_s2_safe(tmp_path, which, zipped=zipped))
    with rasterio.open(real_toa_path(which)) as src:
        toa = src.read()  # (13, H, W) float32, range: [0, 1]

    assert toa.shape[0] == len(scene.bands)
    for index, asset in enumerate(scene.bands.values()):
        reflectance = (read_band(asset.path, asset.band_index) + asset.add_offset) * asset.scale
        np.testing.assert_allclose(reflectance, toa[index], rtol=0, atol=1e-6, err_msg=S2_BANDS[index])


@pytest.mark.parametrize("which", ["N0400", "N0209"])
def test_footprint_is_the_crop_inside_the_mtd_footprint(tmp_path, which):
    scene = read_s2_safe(build_s2_safe(tmp_path, which))
    to_lonlat = Transformer.from_crs("EPSG:32632", "EPSG:4326", always_xy=True)
    with rasterio.open(real_dn_path(which)) as src:
        left, bottom, right, top = src.bounds
    crop = Polygon(
        [to_lonlat.transform(x, y) for x, y in ((left, bottom), (right, bottom), (right, top), (left, top))]
    )
    tile = mtd_footprint(which)

    assert scene.footprint.within(tile)
    assert scene.footprint.buffer(1e-7).covers(crop)  # 1e-7 degrees ~ 1 cm: edges are curved in lon/lat
    assert scene.footprint.area == pytest.approx(crop.area, rel=1e-3)
    assert scene.footprint.area < 1e-4 * tile.area  # clipped to the crop, not the whole tile
    assert scene.footprint.contains(Point(to_lonlat.transform((left + right) / 2, (bottom + top) / 2)))


def test_footprint_falls_back_to_the_raster_bounds_without_an_mtd_footprint(tmp_path):
    safe = build_s2_safe(tmp_path, "N0400")
    with_footprint = read_s2_safe(safe).footprint
    edit_mtd(safe, r"<Product_Footprint>.*</Product_Footprint>")

    footprint = read_s2_safe(safe).footprint

    assert footprint.area == pytest.approx(with_footprint.area, rel=1e-9)
    assert footprint.symmetric_difference(with_footprint).area < 1e-9 * footprint.area


def test_folder_without_mtd_raises_source_error(tmp_path):
    safe = build_s2_safe(tmp_path, "N0400")
    (safe / "MTD_MSIL1C.xml").unlink()

    with pytest.raises(SourceError, match="MTD_MSIL1C.xml") as err:
        read_s2_safe(safe)
    assert str(safe) in str(err.value)


def test_malformed_mtd_raises_source_error(tmp_path):
    safe = build_s2_safe(tmp_path, "N0209")
    mtd = safe / "MTD_MSIL1C.xml"
    mtd.write_bytes(mtd.read_bytes()[:5000])

    with pytest.raises(SourceError, match="not valid XML") as err:
        read_s2_safe(safe)
    assert str(safe) in str(err.value)


def test_mtd_without_start_time_raises_source_error(tmp_path):
    safe = build_s2_safe(tmp_path, "N0209")
    edit_mtd(safe, r"<PRODUCT_START_TIME>.*?</PRODUCT_START_TIME>")

    with pytest.raises(SourceError, match="PRODUCT_START_TIME") as err:
        read_s2_safe(safe)
    assert str(safe) in str(err.value)


def test_mtd_of_the_wrong_level_raises_source_error(tmp_path):
    safe = build_s2_safe(tmp_path, "N0209")
    (safe / "MTD_MSIL1C.xml").rename(safe / "MTD_MSIL2A.xml")

    with pytest.raises(SourceError, match="describes a L1C product"):
        read_s2_safe(safe)


@pytest.mark.parametrize("zipped", [False, True])
def test_missing_band_file_raises_source_error_naming_it(tmp_path, zipped):
    safe = build_s2_safe(tmp_path, "N0400")
    victim = next(safe.rglob("*_B8A.jp2"))
    victim.unlink()
    product = safe
    if zipped:
        product = tmp_path / f"{safe.name}.zip"
        with zipfile.ZipFile(product, "w") as zf:
            for file in sorted(safe.rglob("*")):
                zf.write(file, file.relative_to(tmp_path).as_posix())
        shutil.rmtree(safe)

    with pytest.raises(SourceError, match=r"missing 1 of its 13 band files: B8A") as err:
        read_s2_safe(product)
    assert str(product) in str(err.value)
    assert victim.name in str(err.value)


def corrupt_mtd_member(archive: Path) -> None:
    """Overwrite bytes in the middle of the compressed MTD member, so that reading it fails."""
    with zipfile.ZipFile(archive) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("MTD_MSIL1C.xml"))
    data = bytearray(archive.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + 100 : start + 164] = bytes(range(64))
    archive.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "corrupt member"])
def test_damaged_zip_raises_source_error(tmp_path, damage):
    archive = build_s2_safe(tmp_path, "N0400", zipped=True)
    if damage == "truncated":
        archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    elif damage == "garbage":
        archive.write_bytes(b"<html>Service unavailable</html>")
    else:
        corrupt_mtd_member(archive)

    with pytest.raises(SourceError, match="truncated or corrupt") as err:
        read_s2_safe(archive)
    assert str(archive) in str(err.value)


def test_zip_without_a_safe_product_raises_source_error(tmp_path):
    archive = tmp_path / "notes.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("readme.txt", "not a product")

    with pytest.raises(SourceError, match="holds no Sentinel-2 SAFE product") as err:
        read_s2_safe(archive)
    assert str(archive) in str(err.value)


def test_missing_path_raises_source_error(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        read_s2_safe(tmp_path / "S2B_MSIL1C_nothing.SAFE.zip")
