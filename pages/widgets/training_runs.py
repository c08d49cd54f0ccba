"""The admin page's training runs, newest first: each with live progress, a loss and score chart per epoch, its
scores next to its base's, and cancel / retry / log."""

import streamlit as st

from core.accounts import audit
from core.errors import AppError
from core.jobs.store import JobStatus
from pages.widgets.formatting import progress_text
from pages.widgets.services import settings, training_client
from pages.widgets.sign_in import account

REFRESH_S = 2.0


def training_runs() -> None:
    """The training runs, newest first. While one is queued or running, the list redraws itself every REFRESH_S
    seconds; with none, it waits for the page's next run (or its Refresh button). A page timer that fires
    while an admin uploads labels can drop the upload (streamlit#9079: seen in Chromium as an upload that
    never reached the form), so the timer runs only while there is something to follow."""
    timed = any(not s.is_terminal for s in training_client().list_jobs())
    st.fragment(run_list, run_every=REFRESH_S if timed else None)(timed)


def run_list(timed: bool) -> None:
    """The runs' panels; `timed`: whether this fragment redraws itself. When that no longer matches the runs (a
    retried run is queued, the last one ended), the whole page runs again, which sets the timer right."""
    statuses = training_client().list_jobs()
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
            "Refresh",
            key="refresh-runs",
            help="Show runs started elsewhere (e.g. by `terraseg train --queue`).",
        )
    if timed != any(not s.is_terminal for s in training_client().list_jobs()):
        st.rerun()


def run_panel(status: JobStatus) -> None:
    """One training run: what, where it stands, its epochs so far, and cancel / retry / log."""
    run_id = status.job_id
    with st.container(border=True):
        what, score_name = run_summary(run_id)
        st.markdown(f"**{run_id}** · {status.state} · {what}")
        if status.state == "failed" and status.error:
            st.error(status.error)
        elif status.state in ("queued", "running"):
            text = progress_text(status.stage, status.message)
            st.progress(min(max(status.fraction, 0.0), 1.0), text=text or status.state)
        elif status.message:
            st.caption(status.message)
        epoch_chart(run_id, score_name)
        if status.state == "finished":
            run_scores(run_id)
        run_actions(status)


def run_summary(run_id: str) -> tuple[str, str]:
    """What a run trains ("NEW from BASE · data · by"), and the name of the score it follows per epoch."""
    try:
        spec = training_client().training_spec(run_id)
        what = f"{spec.new_id} from {spec.base_id} · {spec.data.describe()} · {spec.by}"
        # Crop heads from samples keep no validation set while fitting (the shipped heads' recipe): their
        # per-epoch score is on the training samples, their held-out score comes at the end.
        # A seed architecture on a dataset watches its task's score (cloud F2, mAP of tags, macro F1).
        score_name = {"samples": "training macro F1", "dataset": "validation score"}.get(
            spec.data.kind, "validation macro F1"
        )
    except AppError:
        return "request unreadable", "macro F1"
    return what, score_name


def epoch_chart(run_id: str, score_name: str) -> None:
    """The training loss and the followed score per epoch so far (nothing before the first epoch)."""
    epochs = training_client().epochs(run_id)
    if not epochs:
        return
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


def run_scores(run_id: str) -> None:
    """A finished run's held-out scores, and its base's on the same samples when they were scored."""
    result = training_client().result(run_id)
    if result is None:
        return
    unit = str(result.get("unit", "pixels"))
    rows = [{"model": f"{result['model_id']}@{result['version']}", **scores(result["metrics"], unit)}]
    if result.get("parent_metrics"):
        rows.append({"model": f"its base, same {unit}", **scores(result["parent_metrics"], unit)})
    st.dataframe(rows, hide_index=True)


def run_actions(status: JobStatus) -> None:
    """Cancel (queued or running), Retry (failed or cancelled), each audited, and the Log toggle."""
    runs = training_client()
    run_id = status.job_id
    actions = st.columns(3)
    try:
        if status.state in ("queued", "running") and actions[0].button("Cancel", key=f"cancel-{run_id}"):
            runs.cancel(run_id)
            audit(settings().cache_dir / "admin", account().name, f"cancelled training run {run_id}")
            st.toast("Cancel requested; a running training stops within about 2 s.")
        if status.state in ("failed", "cancelled") and actions[1].button("Retry", key=f"retry-{run_id}"):
            runs.retry(run_id)
            audit(settings().cache_dir / "admin", account().name, f"retried training run {run_id}")
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
