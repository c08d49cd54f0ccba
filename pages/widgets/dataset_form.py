"""The admin page's third training form: a run on a patch dataset in its published layout, in a folder the
operator allows. The checks and the run are worker.pipelines.training's."""

from pathlib import Path

import streamlit as st

from core.config import Settings
from core.errors import AppError
from core.learning.datasets import FORMATS
from core.sources import check_local_roots
from models.catalogue import SEED_BUILDERS, Catalogue, check_trainable
from pages.widgets.sign_in import account
from pages.widgets.training_check import MODE_LABELS, MODES, checked, start_button
from worker.pipelines.training import (
    DatasetPreflight,
    DatasetTrainRequest,
    preflight_dataset,
    queue_training,
)


def dataset_bases(cards: Catalogue) -> list[str]:
    """The models a patch dataset can train: Dynamic World bases and the seed architectures."""
    bases = []
    for card in cards.all():
        for mode in ("head", "full"):
            try:
                check_trainable(cards, card.id, mode, built=("head", "decoder", "full"))
            except AppError:
                continue
            bases.append(card.id)
            break
    return bases


def dataset_form(settings: Settings, cards: Catalogue, admin_dir: Path) -> None:
    """A run on a patch dataset in its published layout, in a folder the operator allows: base, format, folder,
    mode, new id, epochs; Check shows the patches, the split and the labels per class, Start queues the run."""
    bases = dataset_bases(cards)
    base = st.selectbox("Base model", bases, key="dataset-base")
    is_seed = cards.get(base).builder in SEED_BUILDERS
    st.caption(
        f"{base} is trained whole (from scratch, or from its imported weights)."
        if is_seed
        else f"{base} gets a new head on its features, then optionally a fine-tune."
    )
    left, right = st.columns(2)
    fmt = left.selectbox("Format", FORMATS, key="dataset-format", help="The release layout of the folder.")
    folder = right.text_input(
        "Dataset folder on the server", key="dataset-folder", help="Inside the folders the operator allows."
    )
    modes = ("full",) if is_seed else MODES
    mode = left.selectbox("Mode", modes, format_func=MODE_LABELS.get, key="dataset-mode")
    epochs = right.number_input(
        "Epochs (at most; early stopping)", 1, 2000, 30 if is_seed else 200, key="dataset-epochs"
    )
    new_id = left.text_input(
        "New model id", key="dataset-new-id", help="Lower-case letters, digits, '.', '-' or '_'."
    )
    if not folder.strip() or not new_id.strip():
        st.caption("Give the dataset folder and a name for the new model to check the request.")
        return
    try:
        check_local_roots(f"local:{folder.strip()}", settings.app_local_roots)  # before anything reads it
    except AppError as err:
        st.error(str(err))
        return
    request = DatasetTrainRequest(
        base_id=base,
        new_id=new_id.strip(),
        dataset=Path(folder.strip()).expanduser().resolve(),
        format=fmt,
        mode=str(mode),
        epochs=int(epochs),
        by=account().name,
    )

    def check() -> DatasetPreflight:
        with st.spinner("Reading the labels of every patch..."):
            return preflight_dataset(request, settings)

    preflight = checked(
        request,
        check,
        "dataset-check",
        "dataset-check-button",
        "Check the request to see the patches, the split and the labels per class before starting.",
    )
    if preflight is None:
        return
    st.caption(
        f"{preflight.patches:,} patches in {preflight.groups:,} groups; {preflight.val_patches:,} patches (whole "
        f"groups) are held out to score the new model{' and its base' if not is_seed else ''}."
    )
    st.dataframe(
        [
            {"class": name, f"training {preflight.unit}": t, f"validation {preflight.unit}": v}
            for name, (t, v) in preflight.counts.items()
            if t or v
        ],
        hide_index=True,
    )
    for warning in preflight.warnings:
        st.warning(warning)
    start_button(
        lambda: queue_training(request, settings),
        f"{request.new_id} from {request.base_id} on {fmt}",
        "dataset-check",
        "dataset-start",
        admin_dir,
    )
