"""The Jobs page's list: the filters (state, task, text in the name or id) and the jobs that match them, a page of
JOBS_PAGE_SIZE at a time, redrawn every REFRESH_S seconds."""

from dataclasses import dataclass

import streamlit as st

from core.jobs.store import STATES, JobStatus
from pages.widgets.job_panel import STATE_ICONS, job_panel
from pages.widgets.services import client, health
from pages.widgets.sign_in import account

REFRESH_S = 2.0
JOBS_PAGE_SIZE = 20  # jobs per page of the Jobs page


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


def job_filter_ui(tasks: list[str]) -> JobFilter:
    """The three filters side by side: states, tasks (of `tasks`) and text in the name or id."""
    state_column, task_column, text_column = st.columns(3)
    return JobFilter(
        tuple(state_column.multiselect("State", STATES, placeholder="All states")),
        tuple(task_column.multiselect("Task", tasks, placeholder="All tasks")),
        text_column.text_input("Name or id contains"),
    )


@st.fragment(run_every=REFRESH_S)
def job_list(wanted: JobFilter) -> None:
    """Re-drawn every REFRESH_S seconds without re-running the page."""
    current = account()
    statuses = client().list_jobs(current)
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
    pages = (len(shown) + JOBS_PAGE_SIZE - 1) // JOBS_PAGE_SIZE
    page = 1
    if pages > 1:
        page = int(
            st.number_input(f"Page (of {pages}, {JOBS_PAGE_SIZE} jobs each)", 1, pages, 1, key="jobs-page")
        )
    workers = health().workers
    for status in shown[(page - 1) * JOBS_PAGE_SIZE : page * JOBS_PAGE_SIZE]:
        job_panel(status, workers, current)
