import json
import zipfile
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import shapely
from pyproj import Transformer
from shapely.geometry import GeometryCollection, LineString, Point, Polygon, box, mapping

from core.errors import AOIError
from core.geometry.aoi import AOI, parse_aoi, parse_aoi_upload
from tests.conftest import TEST_DATA

FIELD = box(14.552, 45.867, 14.563, 45.874)  # about 0.66 km2 in Slovenia
WEST_HALF, EAST_HALF = box(14.552, 45.867, 14.557, 45.874), box(14.557, 45.867, 14.563, 45.874)
BOWTIE = Polygon([(14.552, 45.867), (14.563, 45.874), (14.563, 45.867), (14.552, 45.874)])
FIELD_AREA_KM2 = 0.664


def to_utm33(geometry):
    transformer = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True)
    return shapely.transform(geometry, transformer.transform, interleaved=False)


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


def zip_folder(folder: Path, archive: Path, skip_suffix: str | None = None) -> Path:
    with zipfile.ZipFile(archive, "w") as zipped:
        for part in folder.iterdir():
            if part.suffix != skip_suffix:
                zipped.write(part, part.name)
    return archive


def same_shape(a, b) -> bool:
    return a.symmetric_difference(b).area < 1e-4 * b.area


# --- inputs ---------------------------------------------------------------------------------------------


def test_bbox_text_with_commas_or_whitespace():
    aoi = parse_aoi("14.552, 45.867, 14.563, 45.874")
    assert isinstance(aoi, AOI) and aoi.label == "bbox" and aoi.geometry.equals(FIELD)
    assert aoi.area_km2 == pytest.approx(FIELD_AREA_KM2, abs=0.005)
    assert parse_aoi("14.552 45.867\t14.563  45.874").geometry.equals(FIELD)
    assert aoi.to_geojson()["type"] == "Polygon"
    assert shapely.geometry.shape(json.loads(json.dumps(aoi.to_geojson()))).equals(FIELD)


def test_geojson_text():
    aoi = parse_aoi(json.dumps(mapping(FIELD)))
    assert aoi.label == "GeoJSON text" and aoi.geometry.equals(FIELD)


def test_geojson_geometry_dict():
    aoi = parse_aoi(dict(mapping(FIELD)))
    assert aoi.label == "GeoJSON" and aoi.geometry.equals(FIELD)


def test_geojson_feature():
    feature = {"type": "Feature", "properties": {"name": "field"}, "geometry": mapping(FIELD)}
    assert parse_aoi(feature).geometry.equals(FIELD)
    assert parse_aoi(json.dumps(feature)).geometry.equals(FIELD)


def test_geojson_feature_collection_is_unioned():
    collection = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {}, "geometry": mapping(g)} for g in (WEST_HALF, EAST_HALF)
        ],
    }
    aoi = parse_aoi(collection)
    assert aoi.geometry.geom_type == "Polygon" and same_shape(aoi.geometry, FIELD)


def test_real_geojson_file_with_a_legacy_utm_crs_member_is_reprojected():
    aoi = parse_aoi(TEST_DATA / "s2_slovenia_eolearn" / "bbox.geojson")
    lon, lat = aoi.geometry.centroid.coords[0]
    assert lon == pytest.approx(14.56, abs=0.05) and lat == pytest.approx(45.87, abs=0.05)
    assert aoi.area_km2 == pytest.approx(1.0, abs=0.02)  # 999.5 m x 1009.7 m in UTM 33N
    assert aoi.label == "bbox.geojson"


def test_zipped_shapefile_in_utm_is_reprojected(tmp_path):
    folder = tmp_path / "shp"
    folder.mkdir()
    write_vector(folder / "field.shp", [to_utm33(FIELD)], crs="EPSG:32633", driver="ESRI Shapefile")
    aoi = parse_aoi(zip_folder(folder, tmp_path / "field.zip"))
    assert same_shape(aoi.geometry, FIELD) and aoi.label == "field.zip"
    assert aoi.area_km2 == pytest.approx(FIELD_AREA_KM2, abs=0.005)


def test_zipped_shapefile_without_prj_is_refused(tmp_path):
    folder = tmp_path / "shp"
    folder.mkdir()
    write_vector(folder / "field.shp", [FIELD], driver="ESRI Shapefile")
    with pytest.raises(AOIError, match=r"The shapefile in noprj\.zip has no \.prj file.*add the \.prj"):
        parse_aoi(zip_folder(folder, tmp_path / "noprj.zip", skip_suffix=".prj"))


def test_zip_without_a_shapefile_is_refused(tmp_path):
    archive = tmp_path / "empty.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("readme.txt", "no shapefile here")
    with pytest.raises(AOIError, match=r"empty\.zip holds no \.shp file"):
        parse_aoi(archive)


def test_geopackage_with_several_features_is_unioned(tmp_path):
    aoi = parse_aoi(write_vector(tmp_path / "parts.gpkg", [WEST_HALF, EAST_HALF]))
    assert aoi.geometry.geom_type == "Polygon" and same_shape(aoi.geometry, FIELD)
    assert aoi.label == "parts.gpkg"


def test_separate_features_give_a_multipolygon(tmp_path):
    far = box(14.60, 45.867, 14.611, 45.874)
    aoi = parse_aoi(str(write_vector(tmp_path / "two.gpkg", [FIELD, far])))
    assert aoi.geometry.geom_type == "MultiPolygon" and len(aoi.geometry.geoms) == 2
    assert aoi.area_km2 == pytest.approx(2 * FIELD_AREA_KM2, abs=0.01)


def test_kml(tmp_path):
    aoi = parse_aoi(write_vector(tmp_path / "field.kml", [FIELD], driver="KML"))
    assert same_shape(aoi.geometry, FIELD) and aoi.geometry.has_z is False


def test_shapely_geometry_is_taken_as_lon_lat():
    aoi = parse_aoi(FIELD)
    assert aoi.geometry.equals(FIELD) and aoi.label == "geometry"


# --- unreadable input -------------------------------------------------------------------------------------


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(AOIError, match=r"The AOI file .*nowhere\.geojson does not exist"):
        parse_aoi(tmp_path / "nowhere.geojson")
    with pytest.raises(AOIError, match=r"nowhere\.gpkg does not exist"):
        parse_aoi(str(tmp_path / "nowhere.gpkg"))


def test_garbage_files_name_the_file_and_the_expected_format(tmp_path):
    (tmp_path / "bad.geojson").write_text("{not json")
    with pytest.raises(
        AOIError, match=r"bad\.geojson is not valid GeoJSON .*line 1.*Feature or FeatureCollection"
    ):
        parse_aoi(tmp_path / "bad.geojson")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(AOIError, match=r"list\.json is not valid GeoJSON \(its top level is a list\)"):
        parse_aoi(tmp_path / "list.json")
    (tmp_path / "bad.gpkg").write_bytes(b"garbage")
    with pytest.raises(AOIError, match=r"bad\.gpkg cannot be read as a GeoPackage"):
        parse_aoi(tmp_path / "bad.gpkg")
    (tmp_path / "bad.kml").write_text("<not kml")
    with pytest.raises(AOIError, match=r"bad\.kml cannot be read as a KML file"):
        parse_aoi(tmp_path / "bad.kml")
    (tmp_path / "bad.zip").write_bytes(b"garbage")
    with pytest.raises(AOIError, match=r"bad\.zip is not a readable zip file"):
        parse_aoi(tmp_path / "bad.zip")
    (tmp_path / "aoi.csv").write_text("x,y")
    with pytest.raises(AOIError, match=r"aoi\.csv has the unsupported AOI format '\.csv'"):
        parse_aoi(tmp_path / "aoi.csv")


def test_invalid_geojson_text_and_members_are_refused():
    with pytest.raises(AOIError, match=r"not valid GeoJSON \(.*line 1, column 10\)"):
        parse_aoi('{"type": Polygon}')
    with pytest.raises(AOIError, match="Unknown geometry type"):
        parse_aoi({"type": "Triangle", "coordinates": []})
    with pytest.raises(AOIError, match="has no 'type' member"):
        parse_aoi({"coordinates": [14.5, 45.8]})
    with pytest.raises(AOIError, match=r"coordinate system TerraSeg does not understand \(EPSG:99999\)"):
        parse_aoi({**mapping(FIELD), "crs": {"type": "name", "properties": {"name": "EPSG:99999"}}})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("14.5,45.8,14.6", r"has 3 numbers; give four finite ones"),
        ("14.5,45.8,14.6,nan", r"has 4 numbers; give four finite ones"),
        ("14.6,45.9,14.6,45.8", r"has no area \(south 45\.9, north 45\.8"),
        ("", r"No area was given"),
    ],
)
def test_malformed_bbox_text_is_refused(text, message):
    with pytest.raises(AOIError, match=message):
        parse_aoi(text)


def test_unsupported_python_type_is_a_developer_error():
    with pytest.raises(TypeError, match="got list"):
        parse_aoi([14.5, 45.8, 14.6, 45.9])  # type: ignore[arg-type]


# --- validation -------------------------------------------------------------------------------------------


def test_empty_geometry_is_refused():
    with pytest.raises(AOIError, match="The area from geometry is empty"):
        parse_aoi(Polygon())
    with pytest.raises(AOIError, match="The area from GeoJSON is empty"):
        parse_aoi({"type": "Feature", "properties": {}, "geometry": None})


def test_feature_collection_without_features_is_refused():
    with pytest.raises(AOIError, match="FeatureCollection with no features"):
        parse_aoi({"type": "FeatureCollection", "features": []})


@pytest.mark.parametrize("geometry", [Point(14.55, 45.87), LineString([(14.55, 45.87), (14.56, 45.88)])])
def test_non_polygonal_geometry_is_refused_naming_its_type(geometry):
    with pytest.raises(AOIError, match=f"is not a polygon \\(found {geometry.geom_type}\\)"):
        parse_aoi(geometry)


def test_geometry_collection_is_reduced_to_its_polygons():
    assert parse_aoi(GeometryCollection([FIELD, Point(0, 0)])).geometry.equals(FIELD)
    with pytest.raises(AOIError, match=r"not a polygon \(found LineString, Point\)"):
        parse_aoi(GeometryCollection([Point(0, 0), LineString([(0, 0), (1, 1)])]))


def test_self_intersecting_polygon_is_refused_with_the_reason():
    with pytest.raises(AOIError, match=r"is invalid: Self-intersection\[14\.55.*\]\. Fix the polygon\.$"):
        parse_aoi(BOWTIE)


def test_fix_invalid_repairs_a_bowtie():
    fixed = parse_aoi(BOWTIE, fix_invalid=True)
    assert fixed.geometry.is_valid and fixed.geometry.geom_type == "MultiPolygon"
    assert fixed.area_km2 == pytest.approx(FIELD_AREA_KM2 / 2, rel=0.02)


def test_an_invalid_feature_among_several_is_reported_and_repaired(tmp_path):
    path = write_vector(tmp_path / "mixed.gpkg", [BOWTIE, box(14.60, 45.867, 14.611, 45.874)])
    with pytest.raises(AOIError, match=r"invalid \(1 of its 2 polygons\): Self-intersection"):
        parse_aoi(path)
    assert parse_aoi(path, fix_invalid=True).area_km2 == pytest.approx(1.5 * FIELD_AREA_KM2, rel=0.02)


def test_an_area_over_the_limit_gives_both_numbers():
    with pytest.raises(
        AOIError, match=r"^The area is 56,\d{3} km²; the limit is 50,000 km²\. Draw a smaller area"
    ):
        parse_aoi("10,40,13,42")  # about 56,000 km2: over the default limit
    with pytest.raises(AOIError, match=r"^The area is 3,\d{3} km²; the limit is 2,500 km²"):
        parse_aoi("14.0,45.0,14.8,45.5", max_area_km2=2500)
    assert parse_aoi("14.0,45.0,14.8,45.5").area_km2 == pytest.approx(3450, rel=0.05)
    with pytest.raises(AOIError, match=r"The area is 0\.66 km²; the limit is 0\.50 km²"):
        parse_aoi(FIELD, max_area_km2=0.5)


def test_too_many_vertices_are_refused_with_the_count():
    circle = Point(14.55, 45.87).buffer(0.01, quad_segs=4000)
    with pytest.raises(AOIError, match=r"has 16,001 vertices; the limit is 10,000\. Simplify"):
        parse_aoi(circle)
    assert parse_aoi(circle, max_vertices=20_000).area_km2 > 0


def test_crossing_the_antimeridian_is_refused():
    with pytest.raises(
        AOIError, match=r"west 179\.9 > east -179\.9, so it crosses the 180° meridian.*two parts"
    ):
        parse_aoi("179.9,-17.0,-179.9,-16.9")
    wrapped = Polygon([(179.9, -17), (-179.9, -17), (-179.9, -16.9), (179.9, -16.9)])
    with pytest.raises(
        AOIError, match=r"spans 359\.8° of longitude, so it crosses the 180° meridian.*two parts"
    ):
        parse_aoi(wrapped)


def test_coordinates_out_of_range_are_refused():
    with pytest.raises(AOIError, match="outside longitude -180..180 / latitude -90..90"):
        parse_aoi("14,95,15,96")
    with pytest.raises(AOIError, match=r"outside longitude .*bounds 465000\.0000, 5079000\.0000"):
        parse_aoi(box(465_000, 5_079_000, 466_000, 5_080_000))  # UTM metres passed as degrees


def test_a_geojson_nested_hundreds_of_levels_deep_is_bad_input_not_a_crash():
    text = '{"type":"Polygon","coordinates":[[[14.55,45.86],[14.56,45.86],[14.56,45.87],[14.55,45.86]]]}'
    for _ in range(1200):
        text = '{"type":"GeometryCollection","geometries":[' + text + "]}"
    with pytest.raises(AOIError, match="nested too deeply"):
        parse_aoi(text)
    with pytest.raises(AOIError, match="deep.geojson is nested too deeply"):
        parse_aoi_upload("deep.geojson", text.encode())


def test_the_vertex_limit_applies_to_the_parts_before_they_are_merged():
    # 200 identical triangles merge into 1 (4 coordinates), but merging them is what costs: refused before.
    triangle = [[14.55, 45.86], [14.56, 45.86], [14.555, 45.87], [14.55, 45.86]]
    features = [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [triangle]}}] * 200
    document = {"type": "FeatureCollection", "features": features}
    with pytest.raises(AOIError, match=r"has 800 vertices; the limit is 100\."):
        parse_aoi(document, max_vertices=100)
    assert parse_aoi(document, max_vertices=1000).area_km2 > 0
