"""A map's reference sample, from the class raster to the analyst's table: draw a stratified random sample of
pixels to label (`terraseg sample`), read the labelled points back and estimate accuracy and areas from them
(`terraseg accuracy`, the Results page). The estimators are core.learning.area_estimates'.

The strata are the map's classes inside the AOI (its valid pixels); each point's map class is read from the
raster itself, never trusted from the file.
"""

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas
import numpy as np
import pyogrio
import rasterio
from pyproj import Transformer
from rasterio.transform import rowcol, xy

from core.errors import plain_reason
from core.learning import area_estimates as estimates
from core.learning.area_estimates import AccuracyReport, SampleError

SAMPLE_COLUMNS = ("sample_id", "map_class", "map_value", "lon", "lat", "reference")
ACCURACY_FILES = ("accuracy.json", "accuracy.csv")  # saved beside the class map
REFERENCE_SUFFIXES = (".gpkg", ".geojson", ".json", ".zip", ".csv")


@dataclass(frozen=True)
class ClassMap:
    """A class raster: its values, grid and legend (value -> name, from the raster's CLASS_NAMES tag)."""

    values: np.ndarray
    transform: rasterio.Affine
    crs: rasterio.crs.CRS
    nodata: int | None
    legend: dict[int, str]

    @property
    def pixel_area_ha(self) -> float:
        return abs(self.transform.a * self.transform.e - self.transform.b * self.transform.d) / 10_000

    def valid(self) -> np.ndarray:
        return self.values != self.nodata if self.nodata is not None else np.ones(self.values.shape, bool)

    def pixel_counts(self) -> dict[str, int]:
        """Mapped pixels per class name (the strata sizes), in the legend's order; classes without pixels kept."""
        values, counts = np.unique(self.values[self.valid()], return_counts=True)
        found = dict(zip(values.tolist(), counts.tolist(), strict=True))
        return {name: int(found.get(value, 0)) for value, name in self.legend.items()}

    def name_of(self, value: int) -> str:
        return self.legend.get(value, f"class {value}")


def read_class_map(path: Path) -> ClassMap:
    """classes.tif (or any single-band class raster): its pixels and legend; a SampleError when unusable."""
    try:
        with rasterio.open(path) as raster:
            values = raster.read(1)
            names = json.loads(raster.tags().get("CLASS_NAMES", "{}"))
            transform, crs, nodata = raster.transform, raster.crs, raster.nodata
    except (rasterio.errors.RasterioError, OSError, ValueError) as err:
        raise SampleError(f"{path.name} cannot be read as a class raster ({plain_reason(err)}).") from err
    if crs is None or not crs.is_projected:
        raise SampleError(f"{path.name} is not in a projected CRS: its pixels' areas cannot be measured.")
    legend = {int(value): str(name) for value, name in names.items()}
    nodata_value = int(nodata) if nodata is not None else None
    for value in np.unique(values).tolist():
        if value != nodata_value and value not in legend:
            legend[value] = f"class {value}"
    return ClassMap(values, transform, crs, nodata_value, dict(sorted(legend.items())))


@dataclass(frozen=True)
class SampleDesign:
    """How many points each class gets, and why (the rule and its inputs, for the command's report)."""

    per_class: dict[str, int]
    total: int
    rule: str


def design(
    class_map: ClassMap,
    per_class: int | None = None,
    target_se: float = 0.01,
    expected: Mapping[str, float] | None = None,
    min_per_class: int = 50,
) -> SampleDesign:
    """Equal allocation (`per_class`), or Olofsson et al. (2014) eq. 13's total for `target_se` with the expected
    user's accuracies (0.8 where not given), at least `min_per_class` per class and the rest by area."""
    counts = {name: n for name, n in class_map.pixel_counts().items() if n > 0}
    if not counts:
        raise SampleError("The map has no valid pixel to sample.")
    unknown = sorted(set(expected or {}) - set(class_map.legend.values()))
    if unknown:
        raise SampleError(
            f"No class {', '.join(unknown)} in this map; its classes are {', '.join(class_map.legend.values())}."
        )
    if per_class is not None:
        if per_class < 1:
            raise SampleError("--per-class must be at least 1.")
        allocation = {name: min(per_class, n) for name, n in counts.items()}
        return SampleDesign(allocation, sum(allocation.values()), f"{per_class} per class (equal allocation)")
    total_pixels = sum(counts.values())
    weights = [n / total_pixels for n in counts.values()]
    accuracies = [(expected or {}).get(name, estimates.DEFAULT_USERS_ACCURACY) for name in counts]
    for name, accuracy in zip(counts, accuracies, strict=True):
        if not 0 < accuracy < 1:
            raise SampleError(f"The expected user's accuracy of '{name}' must be between 0 and 1 (got {accuracy}).")
    n = estimates.sample_size(weights, accuracies, target_se)
    allocation = dict(zip(counts, estimates.allocate(n, list(counts.values()), min_per_class), strict=True))
    return SampleDesign(
        allocation,
        sum(allocation.values()),
        f"n = {n} for a standard error of {target_se} in overall accuracy (Olofsson et al. 2014, eq. 13), at "
        f"least {min_per_class} per class, the rest in proportion to area",
    )


@dataclass(frozen=True)
class SamplePoint:
    sample_id: int
    map_class: str
    map_value: int
    lon: float
    lat: float


def draw(class_map: ClassMap, plan: SampleDesign, seed: int) -> list[SamplePoint]:
    """A stratified random sample of pixel centres: `plan.per_class[c]` distinct pixels of each class c, drawn
    with `seed` (the same seed, map and plan give the same points)."""
    rng = np.random.default_rng(seed)
    valid = class_map.valid()
    to_lonlat = Transformer.from_crs(class_map.crs, "EPSG:4326", always_xy=True)
    points: list[SamplePoint] = []
    for value, name in class_map.legend.items():
        wanted = plan.per_class.get(name, 0)
        if not wanted:
            continue
        cells = np.flatnonzero((class_map.values == value) & valid)
        chosen = np.sort(rng.choice(cells, size=wanted, replace=False))
        rows, cols = np.unravel_index(chosen, class_map.values.shape)
        xs, ys = xy(class_map.transform, rows, cols, offset="center")
        lons, lats = to_lonlat.transform(np.asarray(xs), np.asarray(ys))
        for lon, lat in zip(np.atleast_1d(lons), np.atleast_1d(lats), strict=True):
            points.append(SamplePoint(len(points) + 1, name, value, float(lon), float(lat)))
    return points


def sample_csv(points: Sequence[SamplePoint]) -> str:
    """The sample as CSV (the columns of SAMPLE_COLUMNS; `reference` empty, for the analyst to fill)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(SAMPLE_COLUMNS)
    for p in points:
        writer.writerow([p.sample_id, p.map_class, p.map_value, f"{p.lon:.8f}", f"{p.lat:.8f}", ""])
    return out.getvalue()


def write_sample(points: Sequence[SamplePoint], path: Path) -> Path:
    """The sample as a GeoPackage of points (EPSG:4326) at `path`, and its CSV copy beside it; the CSV's path."""
    frame = geopandas.GeoDataFrame(
        {
            "sample_id": [p.sample_id for p in points],
            "map_class": [p.map_class for p in points],
            "map_value": [p.map_value for p in points],
            "lon": [p.lon for p in points],
            "lat": [p.lat for p in points],
            "reference": [""] * len(points),
        },
        geometry=geopandas.points_from_xy([p.lon for p in points], [p.lat for p in points]),
        crs="EPSG:4326",
    )
    pyogrio.write_dataframe(frame, path, driver="GPKG", layer="sample")
    csv_path = path.with_suffix(".csv")
    csv_path.write_text(sample_csv(points))
    return csv_path


@dataclass(frozen=True)
class ReferencePoints:
    """Labelled points: lon/lat, the label as written, and a stratum where the file names one."""

    lons: np.ndarray
    lats: np.ndarray
    labels: list[str]
    strata: list[str] | None


def read_reference(path: Path, label_field: str, stratum_field: str | None = None) -> ReferencePoints:
    """Labelled points from a GeoPackage, GeoJSON, zipped Shapefile or a CSV with `lon`/`lat` columns; a
    SampleError naming the problem (empty file, no such field, no coordinates)."""
    suffix = path.suffix.lower()
    if suffix not in REFERENCE_SUFFIXES:
        raise SampleError(f"{path.name}: give the labelled points as .gpkg, .geojson, .zip (Shapefile) or .csv.")
    if suffix == ".csv":
        return read_reference_csv(path, label_field, stratum_field)
    try:
        frame = pyogrio.read_dataframe(f"/vsizip/{path}" if suffix == ".zip" else path)
    except Exception as err:  # noqa: BLE001 - pyogrio's errors come in many types; one sentence for all
        raise SampleError(f"{path.name} cannot be read as labelled points ({plain_reason(err)}).") from err
    if frame.empty:
        raise SampleError(f"{path.name} holds no points.")
    for field in (label_field, stratum_field):
        if field is not None and field not in frame.columns:
            fields = ", ".join(c for c in frame.columns if c != "geometry")
            raise SampleError(f"{path.name} has no field '{field}'; its fields are: {fields}.")
    if frame.crs is not None and not frame.crs.equals("EPSG:4326"):
        frame = frame.to_crs("EPSG:4326")
    if not all(frame.geometry.geom_type == "Point"):
        raise SampleError(f"{path.name} holds other shapes than points; a reference sample is points.")
    return ReferencePoints(
        frame.geometry.x.to_numpy(),
        frame.geometry.y.to_numpy(),
        [label_text(v) for v in frame[label_field]],
        [label_text(v) for v in frame[stratum_field]] if stratum_field else None,
    )


def reference_fields(path: Path) -> list[str]:
    """The fields of a labelled points file (to choose the label field from), `reference` first when present."""
    try:
        if path.suffix.lower() == ".csv":
            fields = next(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))), [])
        else:
            fields = [str(f) for f in pyogrio.read_info(f"/vsizip/{path}" if path.suffix == ".zip" else path)["fields"]]
    except Exception as err:  # noqa: BLE001 - pyogrio's errors come in many types; one sentence for all
        raise SampleError(f"{path.name} cannot be read as labelled points ({plain_reason(err)}).") from err
    return sorted(fields, key=lambda field: field != "reference")


def label_text(value: object) -> str:
    """A label as text: 3.0 -> '3', None/NaN -> ''."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def read_reference_csv(path: Path, label_field: str, stratum_field: str | None) -> ReferencePoints:
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise SampleError(f"{path.name} cannot be read as CSV ({plain_reason(err)}).") from err
    if not rows:
        raise SampleError(f"{path.name} holds no points.")
    columns = list(rows[0])
    if not {"lon", "lat"} <= set(columns):
        raise SampleError(f"{path.name} has no 'lon' and 'lat' columns (WGS84 degrees); its columns are: "
                          f"{', '.join(columns)}.")  # fmt: skip
    for field in (label_field, stratum_field):
        if field is not None and field not in columns:
            raise SampleError(f"{path.name} has no field '{field}'; its fields are: {', '.join(columns)}.")
    try:
        lons = np.array([float(row["lon"]) for row in rows])
        lats = np.array([float(row["lat"]) for row in rows])
    except ValueError as err:
        raise SampleError(f"{path.name} has a 'lon' or 'lat' that is not a number ({err}).") from None
    return ReferencePoints(
        lons,
        lats,
        [label_text(row[label_field]) for row in rows],
        [label_text(row[stratum_field]) for row in rows] if stratum_field else None,
    )


@dataclass(frozen=True)
class Assessment:
    """The estimates, and the points left out (outside the map, or on no-data) or unlabelled."""

    report: AccuracyReport
    used: int
    outside: int
    no_data: int
    unlabelled: int

    def notes(self) -> list[str]:
        notes = []
        if self.outside:
            notes.append(f"{self.outside} point(s) lie outside the map and were left out.")
        if self.no_data:
            notes.append(f"{self.no_data} point(s) lie on no-data pixels and were left out.")
        if self.unlabelled:
            notes.append(f"{self.unlabelled} point(s) have no label and were left out.")
        return notes


def assess(
    class_map: ClassMap, points: ReferencePoints, strata_pixels: Mapping[str, int] | None = None
) -> Assessment:
    """Each point's map class from the raster, its reference class from its label (a class name or value), then
    Olofsson's estimators (strata = the map's classes) or, with `strata_pixels` (the sample's strata and their
    sizes; the points carry their stratum), Stehman's."""
    to_map = Transformer.from_crs("EPSG:4326", class_map.crs, always_xy=True)
    xs, ys = to_map.transform(points.lons, points.lats)
    rows, cols = rowcol(class_map.transform, np.atleast_1d(xs), np.atleast_1d(ys))
    rows, cols = np.asarray(rows), np.asarray(cols)
    height, width = class_map.values.shape
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    by_value = {str(value): name for value, name in class_map.legend.items()}
    names = list(class_map.legend.values())
    mapped, reference, strata = [], [], []
    outside = no_data = unlabelled = 0
    unknown: set[str] = set()
    for index in range(len(points.labels)):
        if not inside[index]:
            outside += 1
            continue
        value = int(class_map.values[rows[index], cols[index]])
        if value == class_map.nodata:
            no_data += 1
            continue
        label = points.labels[index]
        if not label:
            unlabelled += 1
            continue
        name = label if label in names else by_value.get(label)
        if name is None:
            unknown.add(label)
            continue
        mapped.append(class_map.name_of(value))
        reference.append(name)
        if points.strata is not None:
            strata.append(points.strata[index])
    if unknown:
        raise SampleError(
            f"These labels are not among the map's classes: {', '.join(sorted(unknown))}. Its classes are "
            f"{', '.join(f'{n} ({v})' for v, n in class_map.legend.items())}."
        )
    if not mapped:
        raise SampleError("No labelled point lies on the map's valid pixels: nothing to estimate from.")
    if strata_pixels is None:
        report = estimates.stratified_by_map_classes(
            names, mapped, reference, class_map.pixel_counts(), class_map.pixel_area_ha
        )
    else:
        report = estimates.stratified_by_other_strata(
            names, strata, mapped, reference, strata_pixels, class_map.pixel_counts(), class_map.pixel_area_ha
        )
    return Assessment(report, len(mapped), outside, no_data, unlabelled)


def report_text(assessment: Assessment) -> str:
    """The table a person reads: the error matrix in counts, overall accuracy, and per class n, user's and
    producer's accuracies and mapped vs estimated area, each with its 95 % interval."""
    report = assessment.report
    width = max(12, *(len(n) for n in report.names))
    lines = ["Error matrix (sample counts; rows: map, columns: reference)"]
    lines.append(" " * width + "".join(f"{n[:10]:>11}" for n in report.names))
    for name, row in zip(report.names, report.counts, strict=True):
        lines.append(f"{name:<{width}}" + "".join(f"{c:>11}" for c in row))
    oa = report.overall_accuracy
    lines.append(f"Overall accuracy: {oa.value:.3f} +- {oa.ci95:.3f} (95 % CI), {assessment.used} points")
    lines.append(
        f"{'class':<{width}} {'n':>5} {'users acc':>15} {'producers acc':>15} {'mapped ha':>12} {'estimated ha':>22}"
    )
    for c in report.classes:
        lines.append(
            f"{c.name:<{width}} {c.n:>5} {with_interval(c.users_accuracy):>15}"
            f" {with_interval(c.producers_accuracy):>15} {c.mapped_area_ha:>12,.1f}"
            f" {c.area_ha.value:>12,.1f} +-{c.area_ha.ci95:,.1f}"
        )
    return "\n".join([*lines, *assessment.notes()])


def with_interval(estimate: estimates.Estimate | None) -> str:
    """'0.880 +-0.070', or '-' where the estimate is undefined (a class nobody mapped, or nobody saw)."""
    return f"{estimate.value:.3f} +-{estimate.ci95:.3f}" if estimate is not None else "-"


def rows_csv(rows: list[dict[str, object]]) -> str:
    """One CSV row per dict (accuracy.csv: per class, the --json fields)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def save_assessment(folder: Path, assessment: Assessment) -> dict[str, object]:
    """Write accuracy.json and accuracy.csv into `folder` (beside the class map); the JSON's content."""
    result = estimates.report_json(assessment.report) | {
        "notes": assessment.notes(),
        "points_used": assessment.used,
    }
    classes = result["classes"]
    assert isinstance(classes, list)
    (folder / ACCURACY_FILES[0]).write_text(json.dumps(result, indent=2))
    (folder / ACCURACY_FILES[1]).write_text(rows_csv(classes))
    return result
