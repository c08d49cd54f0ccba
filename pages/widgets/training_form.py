"""The admin page's first training form: a new head (then optionally a fine-tune) from uploaded labels over
the imagery of an area and dates. The checks and the run are worker.pipelines.training's."""

from dataclasses import replace
from datetime import date
from pathlib import Path

import streamlit as st

from core.config import Settings
from core.errors import AppError
from core.jobs.preflight import format_duration
from models.catalogue import Catalogue, check_trainable
from pages.widgets.services import app_source
from pages.widgets.sign_in import account
from pages.widgets.training_check import MODE_LABELS, MODES, checked, start_button
from pages.widgets.training_labels import labels_ui
from worker.pipelines.training import TrainRequest, parse_class_pairs, preflight_training, queue_training

SAMPLE_DATES = (date(2015, 7, 1), date(2015, 9, 30))


def trainable_bases(cards: Catalogue) -> list[str]:
    """The models a head can be trained on here."""
    bases = []
    for card in cards.all():
        try:
            check_trainable(cards, card.id, "head")
        except AppError:
            continue
        bases.append(card.id)
    return bases


def training_form(settings: Settings, cards: Catalogue, admin_dir: Path) -> None:
    """Base, labels, class field, area, dates, sources, new id, epochs; Check shows the pre-flight, Start queues."""
    bases = trainable_bases(cards)
    if not bases:
        st.info("No installed model can get a new head yet (head training reads Dynamic World's features).")
        return
    base = st.selectbox(
        "Base model", bases, help="The new model keeps its network and gets a new classifier."
    )
    labels = labels_ui(settings, admin_dir)
    if labels is None:
        return
    labels_path, label_field, extent = labels
    area = st.text_input(
        "Area of the imagery (west,south,east,north in degrees)",
        extent,
        help="By default the labels' extent. Labels outside it are not used.",
    )
    left, right = st.columns(2)
    start = left.date_input("Start date", SAMPLE_DATES[0], format="YYYY-MM-DD", key="train-start")
    end = right.date_input("End date", SAMPLE_DATES[1], format="YYYY-MM-DD", key="train-end")
    sources_text = st.text_input(
        "Sources, in priority order (comma-separated)", "sample", key="train-sources"
    )
    new_id = left.text_input("New model id", help="Lower-case letters, digits, '.', '-' or '_'.")
    epochs = right.number_input("Epochs (at most; early stopping)", 1, 2000, 200)
    mode = left.selectbox(
        "Mode",
        MODES,
        format_func=MODE_LABELS.get,
        help="Head: seconds to minutes on a CPU. Decoder and full fine-tune the network on the area's tiles "
        "after the head (minutes on a CPU per epoch for a large area; meant for a GPU worker).",
    )
    parent_classes = st.text_input(
        "How the base's classes match yours (optional, to score the base too)",
        placeholder="forest=trees,grassland=grass",
    )
    if not new_id.strip():
        st.caption("Name the new model to check the request.")
        return
    try:
        request = TrainRequest(
            base_id=base,
            new_id=new_id.strip(),
            labels=labels_path,
            label_field=label_field,
            aoi=area,
            start=start.isoformat() if isinstance(start, date) else "",
            end=end.isoformat() if isinstance(end, date) else "",
            sources=tuple(s.strip() for s in sources_text.split(",") if s.strip()),
            epochs=int(epochs),
            mode=str(mode),
            parent_classes=parse_class_pairs(parent_classes, "The class matches"),
            by=account().name,
        )
    except AppError as err:
        st.error(str(err))
        return

    def allowed_source(name: str) -> None:
        app_source(name, settings)

    preflight = checked(
        request,
        lambda: preflight_training(request, settings, allowed_source),
        "training-check",
        None,
        "Check the request to see the samples per class and the estimate before starting.",
    )
    if preflight is None:
        return
    st.dataframe(
        [
            {
                "class": c.name,
                "features": c.features,
                "area (ha)": round(c.area_ha, 2),
                "≈ pixels": c.approx_pixels,
            }
            for c in preflight.classes
        ],
        hide_index=True,
    )
    estimate = preflight.estimate
    st.caption(
        f"{estimate.dates} date(s), {estimate.pixels:,} pixels; imagery and features about "
        f"{format_duration(estimate.run_s)}, then the fitting ({request.epochs} epochs at most)."
    )
    for warning in preflight.warnings:
        st.warning(warning)
    start_button(
        lambda: queue_training(replace(request), settings, allowed_source),
        f"{request.new_id} from {request.base_id}",
        "training-check",
        None,
        admin_dir,
    )
