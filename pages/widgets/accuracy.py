"""The Results page's "Accuracy and area": a stratified random sample of the map's pixels to download and label,
the labelled sample uploaded back, and accuracy with error-adjusted areas and their 95 % intervals (saved with
the job as accuracy.json and accuracy.csv). The same steps as `terraseg sample` and `terraseg accuracy`."""

import json
import tempfile
from pathlib import Path

import altair as alt
import streamlit as st

from core.errors import AppError
from core.learning import reference_sample as sampling
from core.learning.labels import store_upload

UPLOAD_TYPES = ("gpkg", "geojson", "zip", "csv")


@st.cache_data(max_entries=4, show_spinner="Drawing the sample...")
def sample_files(path: str, mtime_ns: int, target_se: float, min_per_class: int) -> tuple[str, bytes, str]:
    """The sample's rule and size per class (a sentence), its GeoPackage and its CSV (cached per map version and
    design; seed 0, so the same choice always gives the same sample)."""
    class_map = sampling.read_class_map(Path(path))
    plan = sampling.design(class_map, target_se=target_se, min_per_class=min_per_class)
    points = sampling.draw(class_map, plan, seed=0)
    with tempfile.TemporaryDirectory() as folder:
        gpkg = Path(folder) / "sample.gpkg"
        sampling.write_sample(points, gpkg)
        data = gpkg.read_bytes()
    sizes = ", ".join(f"{name} {count}" for name, count in plan.per_class.items())
    return f"{plan.total} points ({sizes}): {plan.rule}.", data, sampling.sample_csv(points)


def accuracy_section(classes_tif: Path, upload_dir: Path, prefix: str) -> None:
    """Sample, upload, estimate; then the saved estimates (table and chart) whenever the job is opened again."""
    left, right = st.columns(2)
    target_se = left.number_input(
        "Target standard error of overall accuracy", 0.005, 0.1, 0.01, 0.005, format="%.3f", key="accuracy-se"
    )
    min_per_class = int(right.number_input("At least this many points per class", 2, 500, 50, key="accuracy-min"))
    try:
        rule, gpkg, table = sample_files(str(classes_tif), classes_tif.stat().st_mtime_ns, target_se, min_per_class)
    except AppError as err:
        st.error(str(err))
        return
    st.caption(f"Sample: {rule} Label each point's `reference` column with the class you see there (on imagery "
               "of the map's date, or in the field), then upload the file.")  # fmt: skip
    first, second, _ = st.columns([1, 1, 2])
    first.download_button("Sample to label (GeoPackage)", gpkg, file_name=f"{prefix}_sample.gpkg",
                          mime="application/geopackage+sqlite3", key="sample-gpkg", on_click="ignore")  # fmt: skip
    second.download_button("Sample to label (CSV)", table, file_name=f"{prefix}_sample.csv", mime="text/csv",
                           key="sample-csv", on_click="ignore")  # fmt: skip
    upload_and_assess(classes_tif, upload_dir)
    saved = classes_tif.parent / sampling.ACCURACY_FILES[0]
    if saved.is_file():
        show_estimates(json.loads(saved.read_text()))


def upload_and_assess(classes_tif: Path, upload_dir: Path) -> None:
    """The labelled sample: its label field, then the estimates, saved beside the class map."""
    uploaded = st.file_uploader("Labelled sample (GeoPackage, GeoJSON, zipped Shapefile or CSV)",
                                type=list(UPLOAD_TYPES), key="accuracy-upload")  # fmt: skip
    if uploaded is None:
        return
    try:
        path = store_upload(uploaded.name, uploaded.getvalue(), upload_dir, tuple(f".{t}" for t in UPLOAD_TYPES))
        field = st.selectbox("Label field", sampling.reference_fields(path), key="accuracy-field")
        if not st.button("Estimate accuracy and areas", type="primary", key="accuracy-run"):
            return
        points = sampling.read_reference(path, str(field))
        assessment = sampling.assess(sampling.read_class_map(classes_tif), points)
    except AppError as err:
        st.error(str(err))
        return
    sampling.save_assessment(classes_tif.parent, assessment)
    st.success(f"Estimated from {assessment.used} labelled points; saved with the job." + "".join(
        f" {note}" for note in assessment.notes()
    ))  # fmt: skip


def with_interval(value: float | None, ci95: float | None) -> str:
    """'0.880 ± 0.070', or '-' where undefined (no point mapped as the class, or none seen as it)."""
    return f"{value:.3f} ± {ci95:.3f}" if value is not None and ci95 is not None else "-"


def show_estimates(result: dict) -> None:
    """The saved estimates: overall accuracy, the per-class table, and mapped vs estimated areas with their
    95 % intervals."""
    st.markdown(
        f"**Overall accuracy {result['overall_accuracy']:.3f} ± {result['overall_accuracy_ci95']:.3f}** "
        f"(95 % confidence interval), from {result['points_used']} labelled points."
    )
    rows = [
        {
            "class": c["name"],
            "points": c["n"],
            "user's accuracy": with_interval(c["users_accuracy"], c["users_accuracy_ci95"]),
            "producer's accuracy": with_interval(c["producers_accuracy"], c["producers_accuracy_ci95"]),
            "mapped (ha)": round(c["mapped_area_ha"], 2),
            "estimated (ha)": round(c["area_ha"], 2),
            "± 95 % (ha)": round(c["area_ci95_ha"], 2),
        }
        for c in result["classes"]
    ]
    st.dataframe(rows, hide_index=True, width="stretch")
    for note in result.get("notes", []):
        st.caption(note)
    st.caption("A '-' is an accuracy that cannot be estimated: no point was mapped as the class (user's), or none "
               "was seen as it (producer's).")  # fmt: skip
    bars = [
        {"class": c["name"], "area": kind, "ha": c[key], "low": c[key] - ci, "high": c[key] + ci}
        for c in result["classes"]
        for kind, key, ci in (("mapped", "mapped_area_ha", 0.0), ("estimated", "area_ha", c["area_ci95_ha"]))
    ]
    base = alt.Chart(alt.Data(values=bars)).encode(y=alt.Y("class:N", title=None), yOffset="area:N")
    chart = base.mark_bar().encode(x=alt.X("ha:Q", title="area (ha)"), color=alt.Color("area:N", title=None))
    whiskers = base.mark_rule().encode(x="low:Q", x2="high:Q")
    st.altair_chart(chart + whiskers, width="stretch")
