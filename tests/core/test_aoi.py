import json
import zipfile
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import shapely
from shapely.geometry import LineString, Point, Polygon, box

from core.aoi import parse_aoi
from core.errors import AOIError
from core.grid import project_geometry
from tests.conftest import SHARED_DATA

FIELD = box(14.552, 45.867, 14.563, 45.874)  # about 0.66 km2 in Slovenia


def write_vector(path: Path, geometries: list, crs: str = "EPSG:4326", driver: str = "GPKG") -> Path:
    pyogrio.raw.write(
        str(path),
        geometry=np.array([shapely.to_wkb(g) for g in geometries], dtype=object),
        field_data=[],
        fields=[],
        crs=crs,
        geometry_type="Polygon",
        driver=driver,
    )
    return path


def test_bbox_text_in_degrees():
    aoi = parse_aoi("14.552, 45.867, 14.563, 45.874")
    assert aoi.label == "bbox" and aoi.geometry.equals(FIELD)
    assert aoi.area_km2 == pytest.approx(0.664, abs=0.005)
    assert parse_aoi("14.552 45.867 14.563 45.874").geometry.equals(FIELD)


@pytest.mark.parametrize(
    "document",
    [
        shapely.geometry.mapping(FIELD),
        {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(FIELD)},
        {
            "type": "FeatureCollection",
            "features": [{"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(FIELD)}],
        },
    ],
)
def test_geojson_geometry_feature_and_collection_as_dict_and_text(document):
    assert parse_aoi(document).geometry.equals(FIELD)
    assert parse_aoi(json.dumps(document)).geometry.equals(FIELD)


def test_a_real_geojson_file_in_utm_is_reprojected_to_lon_lat():
    aoi = parse_aoi(SHARED_DATA / "s2_slovenia_eolearn" / "bbox.geojson")
    lon, lat = aoi.geometry.centroid.coords[0]
    assert lon == pytest.approx(14.558, abs=0.01) and lat == pytest.approx(45.870, abs=0.01)
    assert aoi.area_km2 == pytest.approx(1.0, abs=0.02)


def test_zipped_shapefile_in_utm_is_reprojected(tmp_path):
    folder = tmp_path / "shp"
    folder.mkdir()
    write_vector(
        folder / "field.shp",
        [project_geometry(FIELD, "EPSG:4326", "EPSG:32633")],
        crs="EPSG:32633",
        driver="ESRI Shapefile",
    )
    archive = tmp_path / "field.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for part in folder.iterdir():
            zipped.write(part, part.name)
    aoi = parse_aoi(archive)
    assert aoi.geometry.symmetric_difference(FIELD).area < 1e-4 * FIELD.area
    assert aoi.label == "field.zip"


def test_zipped_shapefile_without_prj_is_refused(tmp_path):
    folder = tmp_path / "shp"
    folder.mkdir()
    write_vector(folder / "field.shp", [FIELD], driver="ESRI Shapefile")
    archive = tmp_path / "noprj.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for part in folder.iterdir():
            if part.suffix != ".prj":
                zipped.write(part, part.name)
    with pytest.raises(AOIError, match=r"no \.prj file"):
        parse_aoi(archive)
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zipped:
        zipped.writestr("readme.txt", "no shapefile here")
    with pytest.raises(AOIError, match=r"no \.shp"):
        parse_aoi(empty)


def test_geopackage_and_kml_with_several_features_are_unioned(tmp_path):
    west, east = box(14.552, 45.867, 14.557, 45.874), box(14.557, 45.867, 14.563, 45.874)
    gpkg = parse_aoi(write_vector(tmp_path / "parts.gpkg", [west, east]))
    assert gpkg.geometry.symmetric_difference(FIELD).area < 1e-9
    kml = parse_aoi(write_vector(tmp_path / "field.kml", [FIELD], driver="KML"))
    assert kml.geometry.symmetric_difference(FIELD).area < 1e-9


def test_a_shapely_geometry_is_taken_as_lon_lat():
    assert parse_aoi(FIELD).geometry.equals(FIELD)


def test_missing_and_garbage_files_name_the_file(tmp_path):
    with pytest.raises(AOIError, match="nowhere.geojson does not exist"):
        parse_aoi(tmp_path / "nowhere.geojson")
    (tmp_path / "bad.geojson").write_text("{not json")
    with pytest.raises(AOIError, match="bad.geojson is not valid GeoJSON"):
        parse_aoi(tmp_path / "bad.geojson")
    (tmp_path / "bad.gpkg").write_bytes(b"garbage")
    with pytest.raises(AOIError, match="bad.gpkg cannot be read"):
        parse_aoi(tmp_path / "bad.gpkg")
    (tmp_path / "aoi.csv").write_text("x,y")
    with pytest.raises(AOIError, match="unsupported AOI format"):
        parse_aoi(tmp_path / "aoi.csv")


def test_empty_geometry_is_refused():
    with pytest.raises(AOIError, match="empty"):
        parse_aoi({"type": "FeatureCollection", "features": []})


@pytest.mark.parametrize("geometry", [Point(14.55, 45.87), LineString([(14.55, 45.87), (14.56, 45.88)])])
def test_non_polygonal_geometry_is_refused_naming_its_type(geometry):
    with pytest.raises(AOIError, match=f"not a polygon \\(found {geometry.geom_type}\\)"):
        parse_aoi(geometry)


def test_a_geometry_collection_keeps_its_polygons():
    collection = shapely.GeometryCollection([FIELD, Point(0, 0)])
    assert parse_aoi(collection).geometry.equals(FIELD)


BOWTIE = Polygon([(14.552, 45.867), (14.563, 45.874), (14.563, 45.867), (14.552, 45.874)])


def test_a_self_intersecting_polygon_is_refused_and_fix_invalid_repairs_it():
    with pytest.raises(AOIError, match=r"invalid: Self-intersection\[.*--fix-aoi"):
        parse_aoi(BOWTIE)
    fixed = parse_aoi(BOWTIE, fix_invalid=True)
    assert fixed.geometry.is_valid and fixed.geometry.geom_type == "MultiPolygon"
    assert fixed.area_km2 == pytest.approx(FIELD_AREA_KM2 / 2, rel=0.02)


FIELD_AREA_KM2 = parse_aoi(FIELD).area_km2


def test_an_area_over_the_limit_gives_both_numbers():
    with pytest.raises(AOIError, match=r"The area is 3,\d{3} km²; the limit is 2,500 km²"):
        parse_aoi("14.0,45.0,14.8,45.5")  # about 3,450 km2
    assert parse_aoi("14.0,45.0,14.8,45.5", max_area_km2=5000).area_km2 == pytest.approx(3450, rel=0.05)


def test_too_many_vertices_are_refused_with_the_count():
    circle = Point(14.55, 45.87).buffer(0.01, quad_segs=4000)
    with pytest.raises(AOIError, match=r"has 16,001 vertices; the limit is 10,000\. Simplify"):
        parse_aoi(circle)


def test_crossing_the_antimeridian_is_refused():
    with pytest.raises(AOIError, match="crosses the antimeridian"):
        parse_aoi("179.9,-17.0,-179.9,-16.9")
    with pytest.raises(AOIError, match="crosses the antimeridian"):
        parse_aoi(Polygon([(179.9, -17), (-179.9, -17), (-179.9, -16.9), (179.9, -16.9)]))


def test_coordinates_out_of_range_are_refused():
    with pytest.raises(AOIError, match="outside longitude"):
        parse_aoi("14,95,15,96")
    with pytest.raises(AOIError, match="outside longitude"):
        parse_aoi(box(465_000, 5_079_000, 466_000, 5_080_000))  # UTM metres passed as degrees
