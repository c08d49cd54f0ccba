"""Accuracy and area from a reference sample, as an analyst runs it: `terraseg sample` on a class map, then
`terraseg accuracy` on the labelled points. The published worked examples are built as real class rasters and
real point files and run through the CLI:

- Olofsson et al. (2014), Remote Sensing of Environment 148: 42-57, section 5: the error matrix of table 8 (four
  change classes, 30 m pixels) and its sample-size example (eq. 13);
- Olofsson et al. (2013), Remote Sensing of Environment 129: 122-131, examples 1 and 2;
- Stehman (2014), International Journal of Remote Sensing 35: 4923-4939, the numerical example (strata that are
  not the map's classes).
The examples' sample labels are as the R package mapaccuracy (MIT) transcribes them in its documentation."""

import json
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin, xy

from core.learning import area_estimates as estimates
from core.learning.reference_sample import ClassMap, design, draw, read_class_map
from tests.worker.cli.test_cli import terraseg

CRS = "EPSG:32633"
OLOFSSON_2014 = ["Deforestation", "Forest gain", "Stable forest", "Stable non-forest"]


def write_class_map(folder: Path, rows_per_class: list[int], width: int, names: list[str], pixel_m: float) -> Path:
    """classes.tif with each class a band of whole rows (class i: `rows_per_class[i]` rows), named as a job names
    them (the CLASS_NAMES tag), and a no-data row at the bottom."""
    folder.mkdir(parents=True, exist_ok=True)
    values = np.concatenate([np.full((rows, width), i, np.uint8) for i, rows in enumerate(rows_per_class)])
    values = np.vstack([values, np.full((1, width), 255, np.uint8)])
    path = folder / "classes.tif"
    profile = {
        "driver": "GTiff", "width": width, "height": values.shape[0], "count": 1, "dtype": "uint8", "crs": CRS,
        "transform": from_origin(500_000, 5_100_000, pixel_m, pixel_m), "nodata": 255, "compress": "deflate",
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as out:
        out.write(values, 1)
        out.update_tags(CLASS_NAMES=json.dumps({str(i): n for i, n in enumerate(names)}))
    return path


def pixel_centres(path: Path, wanted_classes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """One distinct pixel centre (lon, lat) of class c for each c in `wanted_classes`, spread over its rows."""
    with rasterio.open(path) as raster:
        values, transform = raster.read(1), raster.transform
    used: dict[int, int] = {}
    rows, cols = [], []
    cells_of = {value: np.flatnonzero(values == value) for value in set(wanted_classes)}
    for value in wanted_classes:
        cells = cells_of[value]
        k = used.get(value, 0)
        used[value] = k + 1
        cell = cells[(k * 7919) % len(cells)]  # a prime stride: distinct cells spread over the class
        row, col = np.unravel_index(cell, values.shape)
        rows.append(row)
        cols.append(col)
    x, y = xy(transform, rows, cols, offset="center")
    return Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform(np.asarray(x), np.asarray(y))


def write_points(path: Path, lons: np.ndarray, lats: np.ndarray, columns: dict[str, list[str]]) -> Path:
    import geopandas

    frame = geopandas.GeoDataFrame(columns, geometry=geopandas.points_from_xy(lons, lats), crs="EPSG:4326")
    pyogrio.write_dataframe(frame, path)
    return path


def olofsson_2014_sample() -> tuple[list[int], list[int]]:
    """Table 8's 640 sample units: map and reference class (0-3) of each."""
    reference = [0] * 69 + [1] * 56 + [2] * 175 + [3] * 340
    mapped = (
        [0] * 66 + [2] + [3] * 2 + [1] * 55 + [3] + [0] * 5 + [1] * 8 + [2] * 153 + [3] * 9 + [0] * 4 + [1] * 12
        + [2] * 11 + [3] * 313
    )  # fmt: skip
    return mapped, reference


@pytest.fixture(scope="module")
def olofsson_2014(tmp_path_factory) -> Path:
    """The example's map: 10,000,000 pixels of 30 m (900,000 ha), 200,000 / 150,000 / 3,200,000 / 6,450,000 of
    each class, as 4,000 rows of 2,500 pixels; and its labelled sample as a GeoPackage."""
    folder = tmp_path_factory.mktemp("olofsson2014")
    path = write_class_map(folder / "map", [80, 60, 1280, 2580], 2500, OLOFSSON_2014, 30.0)
    mapped, reference = olofsson_2014_sample()
    lons, lats = pixel_centres(path, mapped)
    write_points(folder / "labelled.gpkg", lons, lats, {"truth": [OLOFSSON_2014[r] for r in reference]})
    return folder


def test_olofsson_2014_table_8_areas_and_accuracies_to_the_printed_digits(olofsson_2014, tmp_path):
    done = terraseg(
        "accuracy", str(olofsson_2014 / "map"), "--reference", str(olofsson_2014 / "labelled.gpkg"),
        "--label-field", "truth", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["error_matrix"]["counts"] == [[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]]
    assert (round(result["overall_accuracy"], 2), round(result["overall_accuracy_ci95"], 2)) == (0.95, 0.02)
    classes = {c["name"]: c for c in result["classes"]}
    # p. 54: the error-adjusted areas (ha) with their 95 % confidence intervals, and the mapped areas.
    printed_areas = {
        "Deforestation": (21_158, 6_158, 18_000),
        "Forest gain": (11_686, 3_756, 13_500),
        "Stable forest": (285_770, 15_510, 288_000),
        "Stable non-forest": (581_386, 16_282, 580_500),
    }
    for name, (area, ci, mapped) in printed_areas.items():
        got = classes[name]
        assert (round(got["area_ha"]), round(got["area_ci95_ha"]), round(got["mapped_area_ha"])) == (area, ci, mapped)
    # p. 54: user's accuracies, and the producer's accuracy of deforestation and of stable forest.
    printed_users = {"Deforestation": (0.88, 0.07), "Forest gain": (0.73, 0.10), "Stable forest": (0.93, 0.04),
                     "Stable non-forest": (0.96, 0.02)}  # fmt: skip
    for name, (value, ci) in printed_users.items():
        assert (round(classes[name]["users_accuracy"], 2), round(classes[name]["users_accuracy_ci95"], 2)) == (
            value,
            ci,
        )
    for name, (value, ci) in {"Deforestation": (0.75, 0.21), "Stable forest": (0.93, 0.03)}.items():
        got = classes[name]
        assert (round(got["producers_accuracy"], 2), round(got["producers_accuracy_ci95"], 2)) == (value, ci)
    assert [c["n"] for c in result["classes"]] == [75, 75, 165, 325]
    # Saved beside the map, for the Results page and the analyst's report.
    saved = olofsson_2014 / "map"
    assert json.loads((saved / "accuracy.json").read_text())["classes"] == result["classes"]
    assert (saved / "accuracy.csv").read_text().splitlines()[0].startswith("name,n,mapped_area_ha,area_ha")


def test_olofsson_2014_sample_size_of_eq_13_and_its_allocation(olofsson_2014, tmp_path):
    """Section 5.1: U = 0.7, 0.6, 0.9, 0.95 and a standard error of 0.01 for overall accuracy give n = 641."""
    expected = ["Deforestation=0.7", "Forest gain=0.6", "Stable forest=0.9", "Stable non-forest=0.95"]
    out = tmp_path / "sample.gpkg"
    done = terraseg(
        "sample", str(olofsson_2014 / "map"), "--out", str(out), "--target-se", "0.01", "--min-per-class", "75",
        "--seed", "4", *[word for pair in expected for word in ("--expected-accuracy", pair)], cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "n = 641 for a standard error of 0.01" in done.stdout
    counts = {line.split(":")[0].strip(): int(line.split(":")[1]) for line in done.stdout.splitlines()[1:6]}
    # 75 each for the rare classes; the remaining 491 by area between the stable ones (32 % and 64.5 %).
    assert counts == {"Deforestation": 75, "Forest gain": 75, "Stable forest": 163, "Stable non-forest": 328,
                      "in all": 641}  # fmt: skip
    frame = pyogrio.read_dataframe(out)
    assert list(frame.columns) == ["sample_id", "map_class", "map_value", "lon", "lat", "reference", "geometry"]
    assert len(frame) == 641 and frame["sample_id"].tolist() == list(range(1, 642))
    assert (out.with_suffix(".csv")).read_text().splitlines()[0] == "sample_id,map_class,map_value,lon,lat,reference"


def olofsson_2013_examples() -> list[tuple[list[int], list[int], list[float]]]:
    """Examples 1 (strata in pixels) and 2 (strata as proportions) of Olofsson et al. (2013): map and reference
    class (0-2) of each sample unit, and the strata sizes."""
    first_reference = [0] * 102 + [1] * 280 + [2] * 118
    first_mapped = [0] * 97 + [1] * 3 + [2] * 2 + [1] * 279 + [2] + [0] * 3 + [1] * 18 + [2] * 97
    second_reference = [0] * 129 + [1] * 403 + [2] * 611
    second_mapped = [0] * 127 + [1] * 2 + [0] * 66 + [1] * 322 + [2] * 15 + [0] * 54 + [1] * 17 + [2] * 540
    return [
        (first_mapped, first_reference, [22_353, 1_122_543, 610_228]),
        (second_mapped, second_reference, [0.007, 0.295, 0.698]),
    ]


@pytest.mark.parametrize("example", [0, 1], ids=["example 1", "example 2"])
def test_olofsson_2013_examples_agree_with_the_stratified_estimator_written_as_matrices(example):
    """The estimators against the 2013 paper's formulas written out once more as matrix algebra (eqs. 2-7):
    overall, user's and producer's accuracies, area proportions and every standard error."""
    mapped, reference, sizes = olofsson_2013_examples()[example]
    names = ["a", "b", "c"]
    report = estimates.stratified_by_map_classes(
        names, [names[i] for i in mapped], [names[i] for i in reference], dict(zip(names, sizes, strict=True)), 1.0
    )
    counts = np.zeros((3, 3))
    np.add.at(counts, (mapped, reference), 1)
    n_i = counts.sum(axis=1)
    w = np.array(sizes) / sum(sizes)
    p = w[:, None] * counts / n_i[:, None]
    users, producers = np.diag(p) / p.sum(axis=1), np.diag(p) / p.sum(axis=0)
    assert report.overall_accuracy.value == pytest.approx(np.trace(p))
    assert report.overall_accuracy.se == pytest.approx(np.sqrt(np.sum(w**2 * users * (1 - users) / (n_i - 1))))
    area_se = np.sqrt(np.sum((w[:, None] * p - p**2) / (n_i[:, None] - 1), axis=0))
    big_n = np.array(sizes, dtype=float)
    column_n = (big_n[:, None] * counts / n_i[:, None]).sum(axis=0)
    for j, got in enumerate(report.classes):
        share = counts[:, j] / n_i
        others = sum(big_n[i] ** 2 * share[i] * (1 - share[i]) / (n_i[i] - 1) for i in range(3) if i != j)
        pa_var = (big_n[j] ** 2 * (1 - producers[j]) ** 2 * users[j] * (1 - users[j]) / (n_i[j] - 1)
                  + producers[j] ** 2 * others) / column_n[j] ** 2  # fmt: skip
        assert got.users_accuracy.value == pytest.approx(users[j])
        assert got.producers_accuracy.value == pytest.approx(producers[j])
        assert got.producers_accuracy.se == pytest.approx(np.sqrt(pa_var))
        assert got.area_proportion.value == pytest.approx(p.sum(axis=0)[j])
        assert got.area_proportion.se == pytest.approx(area_se[j])


STEHMAN_STRATA = ["A"] * 10 + ["B"] * 10 + ["C"] * 10 + ["D"] * 10
STEHMAN_MAP = ["A"] * 7 + ["B"] * 3 + ["A"] + ["B"] * 11 + ["C"] * 6 + ["B", "B"] + ["D"] * 10
STEHMAN_REFERENCE = (
    ["A"] * 5 + ["C", "B", "A", "B", "C", "A"] + ["B"] * 5 + ["A", "A", "B", "B"] + ["C"] * 5 + ["D", "D", "B", "B"]
    + ["A"] + ["D"] * 7 + ["C", "C", "B"]
)  # fmt: skip


def test_stehman_2014_numerical_example_with_strata_that_are_not_the_map_classes(tmp_path):
    """Pp. 4932-4936: 40 points in 4 strata of 40,000, 30,000, 20,000 and 10,000 pixels, a map whose classes
    differ from the strata at some points."""
    path = write_class_map(tmp_path / "map", [25, 25, 25, 25], 100, ["A", "B", "C", "D"], 10.0)
    lons, lats = pixel_centres(path, ["ABCD".index(m) for m in STEHMAN_MAP])
    points = write_points(
        tmp_path / "labelled.gpkg", lons, lats, {"truth": STEHMAN_REFERENCE, "stratum": STEHMAN_STRATA}
    )
    done = terraseg(
        "accuracy", str(tmp_path / "map"), "--reference", str(points), "--label-field", "truth",
        "--stratum-field", "stratum", "--strata-pixels", "A=40000,B=30000,C=20000,D=10000", "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    classes = {c["name"]: c for c in result["classes"]}
    total_ha = 100_000 * 0.01  # the strata's pixels, at this map's 10 m
    assert round(classes["A"]["area_ha"] / total_ha, 2) == 0.35 and round(classes["C"]["area_ha"] / total_ha, 2) == 0.20
    assert round(result["overall_accuracy"], 2) == 0.63
    assert round(classes["B"]["users_accuracy"], 3) == 0.574 and round(classes["B"]["producers_accuracy"], 3) == 0.794
    assert round(result["error_matrix"]["proportions"][1][2], 2) == 0.08  # cell (2, 3): mapped B, reference C
    se = {key: value / estimates.Z95 for key, value in (
        ("A", classes["A"]["area_ci95_ha"] / total_ha), ("C", classes["C"]["area_ci95_ha"] / total_ha),
        ("OA", result["overall_accuracy_ci95"]), ("UA_B", classes["B"]["users_accuracy_ci95"]),
    )}  # fmt: skip
    assert {key: round(value, 3) for key, value in se.items()} == {"A": 0.082, "C": 0.064, "OA": 0.085, "UA_B": 0.125}


def small_map(tmp_path: Path) -> tuple[Path, ClassMap]:
    path = write_class_map(tmp_path / "map", [30, 60, 10], 50, ["water", "forest", "urban"], 10.0)
    return path, read_class_map(path)


def test_a_sample_drawn_twice_with_one_seed_is_identical_and_each_point_lies_on_its_stratum(tmp_path):
    path, class_map = small_map(tmp_path)
    plan = design(class_map, target_se=0.02, min_per_class=20)
    assert plan.per_class["urban"] >= 20 and plan.total == sum(plan.per_class.values())
    first, again, other = draw(class_map, plan, 7), draw(class_map, plan, 7), draw(class_map, plan, 8)
    assert first == again and first != other
    to_map = Transformer.from_crs("EPSG:4326", CRS, always_xy=True)
    with rasterio.open(path) as raster:
        for point in first:
            row, col = raster.index(*to_map.transform(point.lon, point.lat))
            assert class_map.values[row, col] == point.map_value
            assert class_map.name_of(point.map_value) == point.map_class
    assert len({(p.lon, p.lat) for p in first}) == len(first)  # no pixel twice
    equal = design(class_map, per_class=5)
    assert equal.per_class == {"water": 5, "forest": 5, "urban": 5} and equal.total == 15


def test_allocation_keeps_the_minimums_and_the_total():
    assert estimates.allocate(100, [1000, 8000, 1000], 20) == [20, 60, 20]
    assert sum(estimates.allocate(641, [200_000, 150_000, 3_200_000, 6_450_000], 75)) == 641
    assert estimates.allocate(30, [1000, 1000, 1000], 20) == [20, 20, 20]  # the minimums exceed the total
    assert estimates.allocate(100, [5, 5000], 20) == [5, 95]  # a class with fewer pixels than the minimum
    assert estimates.allocate(100, [3000, 5000, 2000], 20) == [30, 50, 20]  # all above it: by area alone


def test_bad_reference_files_get_one_sentence_each_exit_2_and_nothing_written(tmp_path):
    path, class_map = small_map(tmp_path)
    plan = design(class_map, per_class=3)
    points = draw(class_map, plan, 1)
    lons, lats = np.array([p.lon for p in points]), np.array([p.lat for p in points])
    truth = [p.map_class for p in points]

    def accuracy(reference: Path, field: str = "truth"):  # noqa: ANN202
        return terraseg("accuracy", str(tmp_path / "map"), "--reference", str(reference), "--label-field", field,
                        cwd=tmp_path)  # fmt: skip

    cases = {
        "unknown labels": (write_points(tmp_path / "u.gpkg", lons, lats, {"truth": ["lake", "forest", "town"] * 3}),
                           "truth", "These labels are not among the map's classes: lake, town."),
        "too few": (write_points(tmp_path / "f.gpkg", lons[:7], lats[:7], {"truth": truth[:7]}), "truth",
                    "The map class 'urban' has 1 sample point(s): at least 2 are needed"),
        "no field": (write_points(tmp_path / "n.gpkg", lons, lats, {"label": truth}), "truth",
                     "n.gpkg has no field 'truth'; its fields are: label."),
    }  # fmt: skip
    (tmp_path / "empty.csv").write_text("lon,lat,truth\n")
    cases["empty"] = (tmp_path / "empty.csv", "truth", "empty.csv holds no points.")
    (tmp_path / "nocoords.csv").write_text("x,y,truth\n1,2,water\n")
    cases["no coordinates"] = (tmp_path / "nocoords.csv", "truth", "nocoords.csv has no 'lon' and 'lat' columns")
    for name, (reference, field, sentence) in cases.items():
        done = accuracy(reference, field)
        assert done.returncode == 2 and sentence in done.stderr, (name, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
        assert not (tmp_path / "map" / "accuracy.json").exists(), name
    # Points outside the map or on its no-data row are counted, said, and left out; the rest are used.
    with rasterio.open(path) as raster:
        bottom = raster.xy(raster.height - 1, 5)
    no_data_lon, no_data_lat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform(*bottom)
    extra_lons = np.append(lons, [no_data_lon, 20.0])
    extra_lats = np.append(lats, [no_data_lat, 40.0])
    csv_path = tmp_path / "labelled.csv"
    labels = [*truth, "water", "water"]
    rows = [f"{lon},{lat},{label}\n" for lon, lat, label in zip(extra_lons, extra_lats, labels, strict=True)]
    csv_path.write_text("lon,lat,truth\n" + "".join(rows))
    done = accuracy(csv_path)
    assert done.returncode == 0, done.stderr
    assert "1 point(s) lie outside the map and were left out." in done.stdout
    assert "1 point(s) lie on no-data pixels and were left out." in done.stdout
    assert "Overall accuracy: 1.000 +- 0.000 (95 % CI), 9 points" in done.stdout


def test_a_class_nobody_mapped_or_saw_has_no_accuracy_rather_than_zero():
    report = estimates.stratified_by_map_classes(
        ["clear", "cloud", "shadow"], ["clear"] * 3 + ["shadow"] * 2, ["clear"] * 3 + ["shadow", "clear"],
        {"clear": 900, "cloud": 0, "shadow": 100}, 0.01,
    )  # fmt: skip
    cloud = report.classes[1]
    assert cloud.users_accuracy is None and cloud.producers_accuracy is None and cloud.area_ha.value == 0
    row = estimates.report_json(report)["classes"][1]  # type: ignore[index]
    assert row["users_accuracy"] is None and row["producers_accuracy_ci95"] is None
