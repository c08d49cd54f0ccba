"""Every sentence a bad or hostile upload gets (AOI files, training labels) names the file as the user named it,
never a server path, a temporary folder or a GDAL hint about other drivers."""

import io
import re
import zipfile
from pathlib import Path

import pytest

from core.errors import AppError, plain_reason
from core.geometry.aoi import parse_aoi_upload
from core.learning.labels import label_fields, read_labels, store_upload

SERVER_PATH = re.compile(r"(^|[\s'\"(])/[\w.-]+/")


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


HOSTILE = {
    "fake.gpkg": b"this is not a GeoPackage at all\n" * 20,
    "fake.kml": b"<?xml version='1.0'?><!DOCTYPE k [<!ENTITY x SYSTEM 'file:///etc/passwd'>]><kml>&x;</kml>",
    "laughs.kml": b"<?xml version='1.0'?><!DOCTYPE l [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;"
    b"&a;&a;&a;&a;&a;'><!ENTITY c '&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;'>]><kml>&c;</kml>",
    "notzip.zip": b"PK\x03\x04 truncated",
    "bomb.zip": zipped({"a.shp": b"\0" * 20_000_000, "a.shx": b"\0" * 100, "a.dbf": b"\0", "a.prj": b"x"}),
    "broken.geojson": b'{"type": "Polygon", "coordinates": [[[1, 2], [3',
    "empty.gpkg": b"",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_aoi_upload_is_refused_without_a_server_path(name, tmp_path):
    with pytest.raises(AppError) as err:
        parse_aoi_upload(name, HOSTILE[name])
    sentence = str(err.value)
    assert name in sentence, sentence
    assert not SERVER_PATH.search(sentence) and "terraseg-aoi-" not in sentence, sentence
    assert "CSV:" not in sentence and "/vsizip" not in sentence, sentence


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_labels_are_refused_without_a_server_path(name, tmp_path):
    if Path(name).suffix == ".gpkg" and not HOSTILE[name]:
        return  # an empty file is refused by the page before it is stored
    stored = store_upload(name, HOSTILE[name], tmp_path / "uploads")
    for read in (lambda: label_fields(stored), lambda: read_labels(stored, "class", 10_000)):
        with pytest.raises(AppError) as err:
            read()
        sentence = str(err.value)
        assert str(tmp_path) not in sentence and not SERVER_PATH.search(sentence), sentence
        assert "CSV:" not in sentence and "/vsizip" not in sentence, sentence


def test_a_librarys_reason_keeps_its_words_and_loses_its_paths():
    gdal = RuntimeError(
        "'/tmp/terraseg-aoi-x1/fake.gpkg' not recognized as being in a supported file format. It could have "
        "been recognized by driver CSV, but unable to open it in read-only mode: 'CSV:path'"
    )
    assert plain_reason(gdal) == "not recognized as being in a supported file format"
    assert plain_reason(OSError("Failed to open /vsizip//srv/cache/a.zip/x.shp: no such file")) == (
        "Failed to open no such file"
    )
    assert plain_reason(ValueError("")) == "ValueError"
