"""The admin page's training part: a form that checks a training request (labels per class, the imagery's
estimate) and queues it on the `training` queue, and the list of training runs with live progress, a loss and
validation chart per epoch, and cancel / retry. The checks and the run are worker.training's."""

from dataclasses import replace
from datetime import date
from pathlib import Path

import streamlit as st

from core.accounts import audit
from core.config import Settings
from core.errors import AppError
from core.jobstore import JobStatus
from core.labels import UPLOAD_SUFFIXES, label_fields, read_labels, store_upload
from core.preflight import format_duration
from core.presto_inputs import PRESTO_BUILDER
from models.catalogue import Catalogue, check_trainable
from pages import ui

SAMPLE_DATES = (date(2015, 7, 1), date(2015, 9, 30))
MODES = ("head", "decoder", "full")
MODE_LABELS = {
    "head": "head: a new classifier on frozen features",
    "decoder": "decoder: then the decoder fine-tuned",
    "full": "full: then the whole network fine-tuned",
}
SAMPLE_SUFFIXES = (".parquet", ".geoparquet")
REFRESH_S = 2.0


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


@st.cache_data(max_entries=8, show_spinner="Reading the labels...")
def labels_extent(path: str, label_field: str, max_vertices: int) -> str:
    """'west,south,east,north' around the labels (a few pixels wider), or why they cannot be read."""
    try:
        labels = read_labels(Path(path), label_field, max_vertices)
    except AppError as err:
        return f"error: {err}"
    west = min(g.bounds[0] for g in labels.geometries) - 0.0005
    south = min(g.bounds[1] for g in labels.geometries) - 0.0005
    east = max(g.bounds[2] for g in labels.geometries) + 0.0005
    north = max(g.bounds[3] for g in labels.geometries) + 0.0005
    return f"{west:.4f},{south:.4f},{east:.4f},{north:.4f}"


def training_form(settings: Settings, cards: Catalogue, admin_dir: Path) -> None:
    """Base, labels, class field, area, dates, sources, new id, epochs; Check shows the pre-flight, Start queues."""
    from worker.training import TrainRequest, parse_class_pairs, preflight_training, queue_training

    bases = trainable_bases(cards)
    if not bases:
        st.info("No installed model can get a new head yet (head training reads Dynamic World's features).")
        return
    base = st.selectbox(
        "Base model", bases, help="The new model keeps its network and gets a new classifier."
    )
    upload = st.file_uploader(
        "Labels: polygons or points with a class field (GeoJSON, GeoPackage, zipped Shapefile or KML; any CRS)",
        type=[s.lstrip(".") for s in UPLOAD_SUFFIXES],
    )
    if upload is None:
        st.caption("Upload labels to choose their class field and see how much of each class there is.")
        return
    try:
        labels_path = store_upload(upload.name, upload.getvalue(), admin_dir / "uploads")
        fields = label_fields(labels_path)
    except AppError as err:
        st.error(str(err))
        return
    if not fields:
        st.error(f"{upload.name} has no attribute field to take the class from.")
        return
    label_field = st.selectbox("Class field", fields)
    extent = labels_extent(str(labels_path), label_field, settings.max_label_vertices)
    if extent.startswith("error: "):
        st.error(extent.removeprefix("error: "))
        return
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
            by=ui.account().name,
        )
    except AppError as err:
        st.error(str(err))
        return

    def app_source(name: str) -> None:
        ui.app_source(name, settings)

    checked = st.session_state.get("training-check")
    if st.button("Check"):
        try:
            checked = (request, preflight_training(request, settings, app_source))
        except AppError as err:
            checked = None
            st.error(str(err))
        st.session_state["training-check"] = checked
    if checked is None or checked[0] != request:
        st.caption("Check the request to see the samples per class and the estimate before starting.")
        return
    preflight = checked[1]
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
    if st.button("Start training", type="primary"):
        try:
            run_id = queue_training(replace(request), settings, app_source)
        except AppError as err:
            st.error(str(err))
            return
        audit(
            admin_dir,
            ui.account().name,
            f"started training run {run_id}: {request.new_id} from {request.base_id}",
        )
        st.session_state["training-check"] = None
        st.success(f"Training run {run_id} is queued; follow it below.")


def samples_form(settings: Settings, cards: Catalogue, admin_dir: Path) -> None:
    """A crop head from WorldCereal sample tables: base, tables, legend, rare-class threshold, new id, epochs;
    Check shows the samples per class of the new head, Start queues the run."""
    from models.presto_heads import worldcereal_legends
    from worker.training import SamplesTrainRequest, check_samples_request, queue_training

    presto = [c for c in cards.all() if c.builder == PRESTO_BUILDER and c.status != "untrained"]
    bases = [
        c.id for c in sorted(presto, key=lambda c: not c.default_for_task)
    ]  # the crop task's default first
    if not bases:
        st.info("No Presto crop model is installed.")
        return
    base = st.selectbox("Base crop model", bases, help="The new head reads this model's Presto encoder.")
    uploads = st.file_uploader(
        "WorldCereal sample tables (extraction (geo)parquet: point time series, monthly or 10-day steps)",
        type=[s.lstrip(".") for s in SAMPLE_SUFFIXES],
        accept_multiple_files=True,
    )
    if not uploads:
        st.caption("Upload one or more sample tables to see how many samples each class would get.")
        return
    try:
        tables = tuple(
            store_upload(u.name, u.getvalue(), admin_dir / "uploads", SAMPLE_SUFFIXES) for u in uploads
        )
    except AppError as err:
        st.error(str(err))
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
        by=ui.account().name,
    )
    checked = st.session_state.get("samples-check")
    if st.button("Check", key="samples-check-button"):
        try:
            checked = (request, check_samples_request(request, settings).counts())
        except AppError as err:
            checked = None
            st.error(str(err))
        st.session_state["samples-check"] = checked
    if checked is None or checked[0] != request:
        st.caption("Check the request to see the samples per class before starting.")
        return
    counts = checked[1]
    st.dataframe([{"class": name, "samples": n} for name, n in counts.items()], hide_index=True)
    st.caption(
        f"{sum(counts.values()):,} labelled samples in {len(counts)} classes; about a quarter, in whole 0.1-degree "
        "cells, is held out to score the new head (and the base, when its classes cover the legend)."
    )
    for name, n in counts.items():
        if n < 40:  # a quarter held out leaves fewer than 30 to learn from
            st.warning(f"'{name}' has only {n} samples; its scores will be shaky.")
    if st.button("Start training", type="primary", key="samples-start"):
        try:
            run_id = queue_training(request, settings)
        except AppError as err:
            st.error(str(err))
            return
        audit(
            admin_dir,
            ui.account().name,
            f"started training run {run_id}: {request.new_id} from {request.base_id}",
        )
        st.session_state["samples-check"] = None
        st.success(f"Training run {run_id} is queued; follow it below.")


def run_panel(status: JobStatus) -> None:
    """One training run: what, where it stands, its epochs so far, and cancel / retry / log."""
    runs = ui.training_client()
    run_id = status.job_id
    with st.container(border=True):
        try:
            spec = runs.training_spec(run_id)
            what = f"{spec.new_id} from {spec.base_id} · {spec.data.describe()} · {spec.by}"
            # Crop heads from samples keep no validation set while fitting (the shipped heads' recipe): their
            # per-epoch score is on the training samples, their held-out score comes at the end.
            # A seed architecture on a dataset watches its task's score (cloud F2, mAP of tags, macro F1).
            score_name = {"samples": "training macro F1", "dataset": "validation score"}.get(
                spec.data.kind, "validation macro F1"
            )
        except AppError:
            what, score_name = "request unreadable", "macro F1"
        st.markdown(f"**{run_id}** · {status.state} · {what}")
        if status.state == "failed" and status.error:
            st.error(status.error)
        elif status.state in ("queued", "running"):
            text = ui.progress_text(status.stage, status.message)
            st.progress(min(max(status.fraction, 0.0), 1.0), text=text or status.state)
        elif status.message:
            st.caption(status.message)
        epochs = runs.epochs(run_id)
        if epochs:
            st.caption(f"Training loss and {score_name} per epoch")
            st.line_chart(
                {
                    "epoch": [row["epoch"] for row in epochs],
                    "loss": [row["loss"] for row in epochs],
                    score_name: [row["val_macro_f1"] for row in epochs],
                },
                x="epoch",
                height=180,
            )
        result = runs.result(run_id) if status.state == "finished" else None
        if result is not None:
            unit = str(result.get("unit", "pixels"))
            rows = [{"model": f"{result['model_id']}@{result['version']}", **scores(result["metrics"], unit)}]
            if result.get("parent_metrics"):
                rows.append({"model": f"its base, same {unit}", **scores(result["parent_metrics"], unit)})
            st.dataframe(rows, hide_index=True)
        actions = st.columns(3)
        try:
            if status.state in ("queued", "running") and actions[0].button("Cancel", key=f"cancel-{run_id}"):
                runs.cancel(run_id)
                audit(
                    ui.settings().cache_dir / "admin", ui.account().name, f"cancelled training run {run_id}"
                )
                st.toast("Cancel requested; a running training stops within about 2 s.")
            if status.state in ("failed", "cancelled") and actions[1].button("Retry", key=f"retry-{run_id}"):
                runs.retry(run_id)
                audit(ui.settings().cache_dir / "admin", ui.account().name, f"retried training run {run_id}")
                st.toast("Queued again.")
        except AppError as err:
            st.toast(str(err))
        if actions[2].toggle("Log", key=f"log-{run_id}"):
            st.code(runs.logs(run_id) or "(empty)", language=None)


def scores(metrics: dict[str, float], unit: str) -> dict[str, float]:
    """The held-out scores a run shows, rounded, and how many `unit` they were computed on."""
    names = {
        "overall_accuracy": "OA",
        "balanced_accuracy": "balanced",
        "macro_f1": "macro F1",
        "miou": "mIoU",
    }
    if "mean_average_precision" in metrics:  # a tagging model (multi-label)
        names = {"mean_average_precision": "mAP", "micro_f1": "micro F1", "macro_f1": "macro F1"}
    return {label: round(float(metrics[key]), 3) for key, label in names.items()} | {
        unit: int(metrics["samples"])
    }


def training_runs() -> None:
    """The training runs, newest first. While one is queued or running, the list redraws itself every REFRESH_S
    seconds; with none, it waits for the page's next run (or its Refresh button). A page timer that fires
    while an admin uploads labels can drop the upload (streamlit#9079: seen in Chromium as an upload that
    never reached the form), so the timer runs only while there is something to follow."""
    timed = any(not s.is_terminal for s in ui.training_client().list_jobs())
    st.fragment(run_list, run_every=REFRESH_S if timed else None)(timed)


def run_list(timed: bool) -> None:
    """The runs' panels; `timed`: whether this fragment redraws itself. When that no longer matches the runs (a
    retried run is queued, the last one ended), the whole page runs again, which sets the timer right."""
    statuses = ui.training_client().list_jobs()
    finished = {s.job_id for s in statuses if s.state == "finished"}
    seen = st.session_state.get("finished-runs")
    st.session_state["finished-runs"] = finished
    if seen is not None and finished - seen:
        st.rerun()  # a run has installed a version: redraw the whole page, so the models' list shows it
    if not statuses:
        st.caption("No training run yet.")
    for status in statuses:
        run_panel(status)
    if not timed:
        st.button(
            "Refresh", key="refresh-runs", help="Show runs started elsewhere (e.g. by `terraseg train --queue`)."
        )
    if timed != any(not s.is_terminal for s in ui.training_client().list_jobs()):
        st.rerun()


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
    from core.datasets import FORMATS
    from core.sources import check_local_roots
    from models.catalogue import SEED_BUILDERS
    from worker.training import DatasetTrainRequest, preflight_dataset, queue_training

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
        by=ui.account().name,
    )
    checked = st.session_state.get("dataset-check")
    if st.button("Check", key="dataset-check-button"):
        try:
            with st.spinner("Reading the labels of every patch..."):
                checked = (request, preflight_dataset(request, settings))
        except AppError as err:
            checked = None
            st.error(str(err))
        st.session_state["dataset-check"] = checked
    if checked is None or checked[0] != request:
        st.caption(
            "Check the request to see the patches, the split and the labels per class before starting."
        )
        return
    preflight = checked[1]
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
    if st.button("Start training", type="primary", key="dataset-start"):
        try:
            run_id = queue_training(request, settings)
        except AppError as err:
            st.error(str(err))
            return
        audit(
            admin_dir,
            ui.account().name,
            f"started training run {run_id}: {request.new_id} from {request.base_id} on {fmt}",
        )
        st.session_state["dataset-check"] = None
        st.success(f"Training run {run_id} is queued; follow it below.")
