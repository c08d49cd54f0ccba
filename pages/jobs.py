"""Jobs: every job, newest first, with live progress; cancel, retry, delete, log, results."""

from collections.abc import Callable

import streamlit as st

from core.accounts import Account
from core.errors import AppError
from core.jobstore import JobStatus, UnknownJob
from core.preflight import format_duration
from pages import ui

REFRESH_S = 2.0
STATE_ICONS = {
    "queued": ":material/schedule:",
    "running": ":material/autorenew:",
    "finished": ":material/check_circle:",
    "failed": ":material/error:",
    "cancelled": ":material/block:",
}


def job_panel(status: JobStatus, workers: int, account: Account) -> None:
    """One job: what it is, where it stands, and what the user can do with it (`workers`: how many are alive)."""
    client = ui.client()
    job_id = status.job_id
    with st.container(border=True):
        try:
            spec = client.spec(job_id)
            what = f"{spec.task} · {spec.model_id} · {spec.start}..{spec.end} · {', '.join(spec.sources)}"
        except AppError:
            what = "request unreadable"
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
        if status.state in ("queued", "running") and actions[0].button("Cancel", key=f"cancel-{job_id}"):
            act(
                lambda: client.cancel(job_id, account),
                "Cancel requested; a running job stops within about 2 s.",
            )
        if status.state in ("failed", "cancelled") and actions[1].button("Retry", key=f"retry-{job_id}"):
            act(lambda: client.retry(job_id, account), "Queued again; finished work is reused.")
        if status.is_terminal and actions[2].button("Delete", key=f"delete-{job_id}"):
            act(lambda: client.delete(job_id, account), "Deleted.")
        if status.state == "finished":
            actions[3].page_link("pages/results.py", label="Open results", query_params={"job": job_id})
        if actions[4].toggle("Log", key=f"log-{job_id}"):
            try:
                st.code(client.logs(job_id, account) or "(empty)", language=None)
            except UnknownJob:
                st.caption("The job's folder is gone.")


def act(action: Callable[[], object], done: str) -> None:
    """Run a button's action; its refusal (e.g. cancelling a finished job) is shown, not raised."""
    try:
        action()
    except AppError as err:
        st.toast(str(err))
    else:
        st.toast(done)


@st.fragment(run_every=REFRESH_S)
def job_list() -> None:
    """Re-drawn every REFRESH_S seconds without re-running the page."""
    account = ui.account()
    statuses = ui.client().list_jobs(account)
    if not statuses:
        st.info("No jobs yet. Start one on the New job page.")
        return
    counts = {state: sum(s.state == state for s in statuses) for state in STATE_ICONS}
    st.caption(" · ".join(f"{n} {state}" for state, n in counts.items() if n))
    workers = ui.health().workers
    for status in statuses:
        job_panel(status, workers, account)


ui.account()  # a visitor stops here
st.title("Jobs")
job_list()
