"""Jobs: your jobs (an admin's: everyone's), newest first, with live progress, filters by state, task and name,
and pages of PAGE_SIZE; cancel, retry, delete (after a confirmation), log, results."""

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from core.accounts import Account
from core.errors import AppError
from core.jobstore import STATES, JobStatus, UnknownJob
from core.preflight import format_duration
from models.catalogue import catalogue
from pages import ui

REFRESH_S = 2.0
PAGE_SIZE = ui.JOBS_PAGE_SIZE
THUMBNAIL_PX = 96
STATE_ICONS = {
    "queued": ":material/schedule:",
    "running": ":material/autorenew:",
    "finished": ":material/check_circle:",
    "failed": ":material/error:",
    "cancelled": ":material/block:",
}


@dataclass(frozen=True)
class JobFilter:
    """What the user asked to see: states and tasks (empty: all) and text in the job's name or id."""

    states: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    text: str = ""

    def keeps(self, status: JobStatus) -> bool:
        text = self.text.strip().lower()
        return (
            (not self.states or status.state in self.states)
            and (not self.tasks or status.task in self.tasks)
            and (not text or text in status.name.lower() or text in status.job_id)
        )


@st.cache_data(max_entries=500, show_spinner=False)
def thumbnail(path: str, mtime_ns: int) -> bytes:
    """A small PNG of a job's preview (cached by file and time: the list redraws every REFRESH_S)."""
    from PIL import Image

    with Image.open(path) as image:
        image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
        out = io.BytesIO()
        image.save(out, format="PNG")
    return out.getvalue()


def job_panel(status: JobStatus, workers: int, account: Account) -> None:
    """One job: what it is, where it stands, and what the user can do with it (`workers`: how many are alive)."""
    client = ui.client()
    job_id = status.job_id
    with st.container(border=True):
        preview = Path(client.store.outputs_dir(job_id)) / "preview.png"
        text_column, picture_column = st.columns([8, 1]) if preview.is_file() else (st.container(), None)
        if picture_column is not None:
            picture_column.image(thumbnail(str(preview), preview.stat().st_mtime_ns))
        with text_column:
            what = status.summary or request_summary(job_id)
            title = f"{status.name} · {job_id}" if status.name else job_id
            if account.is_admin:  # an admin sees everyone's jobs: say whose
                what += f" · by {status.owner or 'the command line'}"
            st.markdown(f"{STATE_ICONS.get(status.state, '')} **{title}** · {status.state} · {what}")
            if status.state == "failed" and status.error:
                st.error(status.error)  # the one sentence first; the log on demand
            elif status.state in ("queued", "running"):
                text = ui.progress_text(status.stage, status.message)
                if status.state == "queued" and workers == 0:
                    text = f"{text}; waiting for a worker" if text else "waiting for a worker"
                st.progress(min(max(status.fraction, 0.0), 1.0), text=text or status.state)
            elif status.message:
                st.caption(status.message)
            # Elapsed from submission, across attempts: what the user has waited.
            elapsed = ui.elapsed_s(status.submitted_at, status.ended_at)
            facts = [
                f"submitted {ui.local_time(status.submitted_at)}",
                f"elapsed {format_duration(elapsed)}"
                + (f", attempt {status.attempts}" if status.attempts > 1 else ""),
            ]
            if status.state == "running":
                facts.append(f"ETA {format_duration(status.eta_s)}")
            st.caption(" · ".join(facts))
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
            act(lambda: client.cancel(job_id, account), "Cancel requested; a running job stops within about 2 s.")
        if status.state in ("failed", "cancelled") and actions[2].button("Retry", key=f"retry-{job_id}"):
            act(lambda: client.retry(job_id, account), "Queued again; finished work is reused.")
        if status.is_terminal and actions[3].button("Delete", key=f"delete-{job_id}"):
            st.session_state["confirm_delete"] = job_id
        show_log = actions[4].toggle("Log", key=f"log-{job_id}")
        if st.session_state.get("confirm_delete") == job_id:
            confirm_delete(job_id, account)
        if show_log:
            try:
                st.code(client.logs(job_id, account) or "(empty)", language=None)
            except UnknownJob:
                st.caption("The job's folder is gone.")


def confirm_delete(job_id: str, account: Account) -> None:
    """Ask before deleting; once deleted, redraw the list at once so the card is gone."""
    st.warning(f"Delete job {job_id} with its outputs and log? This cannot be undone.")
    yes, no = st.columns(2)
    if yes.button("Yes, delete it", key=f"delete-yes-{job_id}", type="primary"):
        st.session_state.pop("confirm_delete", None)
        if act(lambda: ui.client().delete(job_id, account), "Deleted."):
            st.rerun()
    if no.button("Keep it", key=f"delete-no-{job_id}"):
        st.session_state.pop("confirm_delete", None)
        st.rerun()


def request_summary(job_id: str) -> str:
    """The line saying what a job computes, from its request (jobs submitted before statuses carried it)."""
    try:
        spec = ui.client().spec(job_id)
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


@st.fragment(run_every=REFRESH_S)
def job_list(wanted: JobFilter) -> None:
    """Re-drawn every REFRESH_S seconds without re-running the page."""
    account = ui.account()
    statuses = ui.client().list_jobs(account)
    if not statuses:
        st.info("No jobs yet. Start one on the New job page.")
        return
    counts = {state: sum(s.state == state for s in statuses) for state in STATE_ICONS}
    shown = [s for s in statuses if wanted.keeps(s)]
    st.caption(
        " · ".join(f"{n} {state}" for state, n in counts.items() if n)
        + (f" · {len(shown)} match the filters" if wanted != JobFilter() else "")
    )
    if not shown:
        st.info("No job matches the filters.")
        return
    pages = (len(shown) + PAGE_SIZE - 1) // PAGE_SIZE
    page = 1
    if pages > 1:
        page = int(
            st.number_input(f"Page (of {pages}, {PAGE_SIZE} jobs each)", 1, pages, 1, key="jobs-page")
        )
    workers = ui.health().workers
    for status in shown[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]:
        job_panel(status, workers, account)


ui.account()  # a visitor stops here
st.title("Jobs")
state_column, task_column, text_column = st.columns(3)
job_filter = JobFilter(
    tuple(state_column.multiselect("State", STATES, placeholder="All states")),
    tuple(
        task_column.multiselect(
            "Task", catalogue(ui.settings().cache_dir).runnable_tasks(), placeholder="All tasks"
        )
    ),
    text_column.text_input("Name or id contains"),
)
job_list(job_filter)
