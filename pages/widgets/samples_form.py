"""The admin page's second training form: a crop head from WorldCereal sample tables. The checks and the run are
worker.pipelines.training's."""

from pathlib import Path

import streamlit as st

from core.config import Settings
from core.errors import AppError
from core.learning.labels import store_upload
from core.mapping.presto_inputs import PRESTO_BUILDER
from models.catalogue import Catalogue
from pages.widgets.sign_in import account
from pages.widgets.training_check import checked, start_button
from worker.pipelines.training import SamplesTrainRequest, check_samples_request, queue_training

SAMPLE_SUFFIXES = (".parquet", ".geoparquet")


def crop_bases(cards: Catalogue) -> list[str]:
    """The installed Presto crop models, the crop task's default first."""
    presto = [c for c in cards.all() if c.builder == PRESTO_BUILDER and c.status != "untrained"]
    return [c.id for c in sorted(presto, key=lambda c: not c.default_for_task)]


def sample_tables(admin_dir: Path) -> tuple[Path, ...] | None:
    """The uploaded sample tables (stored); None, with why, until there are some."""
    uploads = st.file_uploader(
        "WorldCereal sample tables (extraction (geo)parquet: point time series, monthly or 10-day steps)",
        type=[s.lstrip(".") for s in SAMPLE_SUFFIXES],
        accept_multiple_files=True,
    )
    if not uploads:
        st.caption("Upload one or more sample tables to see how many samples each class would get.")
        return None
    try:
        return tuple(
            store_upload(u.name, u.getvalue(), admin_dir / "uploads", SAMPLE_SUFFIXES) for u in uploads
        )
    except AppError as err:
        st.error(str(err))
        return None


def samples_form(settings: Settings, cards: Catalogue, admin_dir: Path) -> None:
    """A crop head from WorldCereal sample tables: base, tables, legend, rare-class threshold, new id, epochs;
    Check shows the samples per class of the new head, Start queues the run."""
    from models.presto_heads import worldcereal_legends  # torch: loaded when Admin draws this, not at start

    bases = crop_bases(cards)
    if not bases:
        st.info("No Presto crop model is installed.")
        return
    base = st.selectbox("Base crop model", bases, help="The new head reads this model's Presto encoder.")
    tables = sample_tables(admin_dir)
    if tables is None:
        return
    legends = sorted(worldcereal_legends())
    base_legend = cards.get(base).label_mapping
    left, right = st.columns(2)
    legend = left.selectbox(
        "Legend",
        legends,
        index=legends.index(base_legend) if base_legend in legends else 0,
        key="samples-legend",
    )
    min_samples = right.number_input("Classes with fewer samples join 'other'", 1, 10_000, 10)
    new_id = left.text_input(
        "New model id", key="samples-new-id", help="Lower-case letters, digits, '.', '-' or '_'."
    )
    epochs = right.number_input("Epochs", 1, 2000, 100, key="samples-epochs")
    if not new_id.strip():
        st.caption("Name the new model to check the request.")
        return
    request = SamplesTrainRequest(
        base_id=base,
        new_id=new_id.strip(),
        samples=tables,
        legend=legend,
        min_samples=int(min_samples),
        epochs=int(epochs),
        by=account().name,
    )
    counts = checked(
        request,
        lambda: check_samples_request(request, settings).counts(),
        "samples-check",
        "samples-check-button",
        "Check the request to see the samples per class before starting.",
    )
    if counts is None:
        return
    st.dataframe([{"class": name, "samples": n} for name, n in counts.items()], hide_index=True)
    st.caption(
        f"{sum(counts.values()):,} labelled samples in {len(counts)} classes; about a quarter, in whole 0.1-degree "
        "cells, is held out to score the new head (and the base, when its classes cover the legend)."
    )
    for name, n in counts.items():
        if n < 40:  # a quarter held out leaves fewer than 30 to learn from
            st.warning(f"'{name}' has only {n} samples; its scores will be shaky.")
    start_button(
        lambda: queue_training(request, settings),
        f"{request.new_id} from {request.base_id}",
        "samples-check",
        "samples-start",
        admin_dir,
    )
