"""One job on the Jobs page: what it is, where it stands, and its actions (results, cancel, retry, delete after a
confirmation, log)."""

import io
from collections.abc import Callable
from pathlib import Path

import streamlit as st
from PIL import Image

from core.accounts import Account
from core.errors import AppError
from core.jobs.preflight import format_duration
from core.jobs.store import JobStatus, UnknownJob
from pages.widgets.formatting import elapsed_s, local_time, progress_text
from pages.widgets.services import client

THUMBNAIL_PX = 96
STATE_ICONS = {
    "queued": ":material/schedule:",
    "running": ":material/autorenew:",
    "finished": ":material/check_circle:",
    "failed": ":material/error:",
    "cancelled": ":material/block:",
}


@st.cache_data(max_entries=500, show_spinner=False)
def thumbnail(path: str, mtime_ns: int) -> bytes:
    """A small PNG of a job's preview (cached by file and time: the list redraws every REFRESH_S)."""
    with Image.open(path) as image:
        image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
        out = io.BytesIO()
        image.save(out, format="PNG")
    return out.getvalue()


def job_panel(status: JobStatus, workers: int, account: Account) -> None:
    """One job: what it is, where it stands, and what the user can do with it (`workers`: how many are alive)."""
    with st.container(border=True):
        preview = Path(client().store.outputs_dir(status.job_id)) / "preview.png"
        text_column, picture_column = st.columns([8, 1]) if preview.is_file() else (st.container(), None)
        if picture_column is not None:
            picture_column.image(thumbnail(str(preview), preview.stat().st_mtime_ns))
        with text_column:
            job_state(status, workers, account)
        job_actions(status, account)


def job_state(status: JobStatus, workers: int, account: Account) -> None:
    """The job's title line, its error, progress or last message, and when it was submitted and how long it took."""
    job_id = status.job_id
    what = status.summary or request_summary(job_id)
    title = f"{status.name} · {job_id}" if status.name else job_id
    if account.is_admin:  # an admin sees everyone's jobs: say whose
        what += f" · by {status.owner or 'the command line'}"
    st.markdown(f"{STATE_ICONS.get(status.state, '')} **{title}** · {status.state} · {what}")
    if status.state == "failed" and status.error:
        st.error(status.error)  # the one sentence first; the log on demand
    elif status.state in ("queued", "running"):
        text = progress_text(status.stage, status.message)
        if status.state == "queued" and workers == 0:
            text = f"{text}; waiting for a worker" if text else "waiting for a worker"
        st.progress(min(max(status.fraction, 0.0), 1.0), text=text or status.state)
    elif status.message:
        st.caption(status.message)
    # Elapsed from submission, across attempts: what the user has waited.
    elapsed = elapsed_s(status.submitted_at, status.ended_at)
    facts = [
        f"submitted {local_time(status.submitted_at)}",
        f"elapsed {format_duration(elapsed)}"
        + (f", attempt {status.attempts}" if status.attempts > 1 else ""),
    ]
    if status.state == "running":
        facts.append(f"ETA {format_duration(status.eta_s)}")
    st.caption(" · ".join(facts))


def job_actions(status: JobStatus, account: Account) -> None:
    """The job's buttons: Open results, Cancel, Retry, Delete (then its confirmation) and the Log toggle."""
    jobs = client()
    job_id = status.job_id
    actions = st.columns(5)
    if status.state == "finished":
        # A link, not a button that switches pages from the server: the browser then stops this page's refresh
        # timers before it asks for the Results page. After a switch made by the server, a timer's tick still
        # on its way reran the Jobs list over the Results page, which then lost its map or all its content
        # (Chromium, 2 loaded cores: most switches with a 0.1 s timer; none of 10 with the link).
        actions[0].page_link(
            "pages/results.py", label="Open results", icon=":material/map:", query_params={"job": job_id}
        )
    if status.state in ("queued", "running") and actions[1].button("Cancel", key=f"cancel-{job_id}"):
        act(lambda: jobs.cancel(job_id, account), "Cancel requested; a running job stops within about 2 s.")
    if status.state in ("failed", "cancelled") and actions[2].button("Retry", key=f"retry-{job_id}"):
        act(lambda: jobs.retry(job_id, account), "Queued again; finished work is reused.")
    if status.is_terminal and actions[3].button("Delete", key=f"delete-{job_id}"):
        st.session_state["confirm_delete"] = job_id
    show_log = actions[4].toggle("Log", key=f"log-{job_id}")
    if st.session_state.get("confirm_delete") == job_id:
        confirm_delete(job_id, account)
    if show_log:
        try:
            st.code(jobs.logs(job_id, account) or "(empty)", language=None)
        except UnknownJob:
            st.caption("The job's folder is gone.")


def confirm_delete(job_id: str, account: Account) -> None:
    """Ask before deleting; once deleted, redraw the list at once so the card is gone."""
    st.warning(f"Delete job {job_id} with its outputs and log? This cannot be undone.")
    yes, no = st.columns(2)
    if yes.button("Yes, delete it", key=f"delete-yes-{job_id}", type="primary"):
        st.session_state.pop("confirm_delete", None)
        if act(lambda: client().delete(job_id, account), "Deleted."):
            st.rerun()
    if no.button("Keep it", key=f"delete-no-{job_id}"):
        st.session_state.pop("confirm_delete", None)
        st.rerun()


def request_summary(job_id: str) -> str:
    """The line saying what a job computes, from its request (jobs submitted before statuses carried it)."""
    try:
        spec = client().spec(job_id)
    except AppError:
        return "request unreadable"
    return f"{spec.task} · {spec.model_id} · {spec.start}..{spec.end} · {', '.join(spec.sources)}"


def act(action: Callable[[], object], done: str) -> bool:
    """Run a button's action; its refusal (e.g. cancelling a finished job) is shown, not raised."""
    try:
        action()
    except AppError as err:
        st.toast(str(err))
        return False
    st.toast(done)
    return True
