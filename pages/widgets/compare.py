"""The Results page's comparison: this job's map against another date of it or another finished job over the same
grid: both maps, the change, and the transition matrix (from-class x to-class, ha)."""

import tempfile
from pathlib import Path

import pandas as pd
import rasterio
import streamlit as st

from core.errors import AppError
from core.jobs.report import read_stats
from core.jobs.store import JobStatus
from core.outputs.compare import Comparison, compare_class_maps, write_change_map
from core.outputs.export import DATE_MAP_PREFIX
from core.outputs.overlay import Overlay, read_classes, render_overlay
from pages.widgets.compare_map import compare_map
from pages.widgets.overlays import overlay_of, pictures

# The newest finished jobs looked at for a comparison (each is a file header read).
MAX_COMPARE_CANDIDATES = 30


def same_grid(first: Path, second: Path) -> bool:
    """Whether two class COGs lie on one grid (headers only, read once per pair of file versions: the page
    reruns at every slider move)."""
    return _same_grid(str(first), str(second), first.stat().st_mtime_ns, second.stat().st_mtime_ns)


@st.cache_data(max_entries=256, show_spinner=False)
def _same_grid(first: str, second: str, first_mtime_ns: int, second_mtime_ns: int) -> bool:
    with rasterio.open(first) as a, rasterio.open(second) as b:
        return (a.crs, a.transform, a.shape) == (b.crs, b.transform, b.shape)


@st.cache_data(max_entries=8, show_spinner="Comparing the two maps...")
def comparison(before: str, after: str, mtimes_ns: tuple[int, int]) -> tuple[Comparison, Overlay, bytes]:
    """The transition matrix, the change map as an overlay and as COG bytes (cached per pair of file versions)."""
    compared = compare_class_maps(Path(before), Path(after))
    with tempfile.TemporaryDirectory() as folder:
        change = Path(folder) / "change.tif"
        write_change_map(Path(before), Path(after), change)
        return compared, render_overlay(change), change.read_bytes()


def compare_candidates(
    job_id: str, outputs: dict[str, Path], published_date: str, others: list[JobStatus]
) -> dict[str, tuple[str, Path, str]]:
    """The maps this job's map can be compared with, by key: (label, class map, its date). This job's other
    dates, when they are maps of the same model, and the newest other finished jobs on the same grid."""
    here = outputs["classes.tif"]
    legend = [(c.value, c.name) for c in read_classes(here)]
    candidates: dict[str, tuple[str, Path, str]] = {}
    for name, path in outputs.items():
        day = name.removeprefix(DATE_MAP_PREFIX).removesuffix(".tif")
        same_legend = (
            name.startswith(DATE_MAP_PREFIX) and [(c.value, c.name) for c in read_classes(path)] == legend
        )
        if same_legend and day != published_date:
            candidates[name] = (f"this job, {day}", path, day)
    for status in others[:MAX_COMPARE_CANDIDATES]:
        paths = {Path(p).name: Path(p) for p in status.outputs}
        there = paths.get("classes.tif")
        if status.job_id != job_id and there is not None and there.exists() and same_grid(here, there):
            label = f"{status.name} ({status.job_id})" if status.name else status.job_id
            candidates[status.job_id] = (label, there, read_stats(there.parent / "stats.json").selected_date)
    return candidates


def compare_section(job_id: str, outputs: dict[str, Path], others: list[JobStatus]) -> None:
    """Compare this job's map with another finished job's over the same area: both maps, the change, and the
    transition matrix (from-class x to-class, ha)."""
    here = outputs["classes.tif"]
    published_date = read_stats(outputs["stats.json"]).selected_date
    candidates = compare_candidates(job_id, outputs, published_date, others)
    if not candidates:
        st.caption(
            "No other date of this job and no other finished job of yours covers this area. Run one over the same "
            "area (another date range, or a chosen date) to compare the two maps here."
        )
        return
    other = st.selectbox(
        "Compare with", [None, *candidates], format_func=lambda k: "-" if k is None else candidates[k][0]
    )
    if other is None:
        return
    there = candidates[other][1]
    dates = {here: published_date, there: candidates[other][2]}
    before, after = sorted((here, there), key=lambda p: dates[p])  # the earlier date first
    try:
        compared, change, change_cog = comparison(
            str(before), str(after), (before.stat().st_mtime_ns, after.stat().st_mtime_ns)
        )
    except AppError as err:
        st.error(str(err))
        return
    show_comparison(compared, change, change_cog, (before, dates[before]), (after, dates[after]))


def show_comparison(
    compared: Comparison,
    change: Overlay,
    change_cog: bytes,
    before: tuple[Path, str],
    after: tuple[Path, str],
) -> None:
    """The changed area, both maps and the swipe map, the transition matrix, and their downloads. `before` and
    `after`: each map's class COG and date."""
    cols = st.columns(3)
    cols[0].metric("Compared area", f"{compared.compared_pixels * compared.pixel_ha:,.2f} ha")
    cols[1].metric("Changed", f"{compared.changed_pixels * compared.pixel_ha:,.2f} ha")
    cols[2].metric("Changed share", f"{compared.changed_percent:.1f} %")
    if compared.unmatched_pixels:
        st.caption(
            f"{compared.unmatched_pixels * compared.pixel_ha:,.2f} ha have a class in one map only (no data in "
            "the other, e.g. a cloud masked on one date) and are not compared."
        )
    (before_path, before_date), (after_path, after_date) = before, after
    left, right = st.columns(2)
    before_png, after_png = pictures(overlay_of(before_path).png, overlay_of(after_path).png)
    left.image(before_png, caption=f"Before: {before_date}", width="stretch")
    right.image(after_png, caption=f"After: {after_date}", width="stretch")
    compare_map(overlay_of(before_path), overlay_of(after_path), change, before_date, after_date)
    st.markdown("**Transition matrix** (ha; rows: the class before, columns: the class after)")
    names_of = [c.name for c in compared.classes]
    matrix = pd.DataFrame(compared.matrix_ha, index=[f"from {n}" for n in names_of], columns=names_of)
    st.dataframe(matrix)
    first, second = st.columns(2)
    first.download_button(
        "Transition matrix (CSV)",
        matrix.to_csv(),
        file_name="transitions.csv",
        mime="text/csv",
        key="download-transitions",
        on_click="ignore",
    )
    second.download_button(
        "Change map (COG)",
        change_cog,
        file_name="change.tif",
        mime="image/tiff",
        key="download-change",
        on_click="ignore",
    )
