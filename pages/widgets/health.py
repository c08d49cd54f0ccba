"""Whether jobs can run: the notice above every page and the sidebar's Redis, workers and queue counts."""

import streamlit as st

from core.accounts import Account
from pages.widgets.services import client, health
from worker.queue.client import Health


def health_notice(current: Health) -> None:
    """Say plainly when jobs cannot run right now (Redis down, no worker); say nothing when all is well."""
    if not current.redis_ok:
        st.warning(
            f"{current.message} Jobs can still be submitted and are kept on disk; they start when Redis "
            "is back and a worker runs. Finished results stay available."
        )
    elif current.workers == 0:
        st.warning(f"{current.message} Submitted jobs wait in the queue until one starts.")


def queue_health(current: Account) -> None:
    """Redis, workers and this account's jobs (an admin's: everyone's), counted from the same list the Jobs
    page shows."""
    now = health()
    if now.redis_ok:
        st.markdown(f"Redis: **reachable**  \nWorkers alive: **{now.workers}**")
    else:
        st.markdown("Redis: **unreachable**")
    states = [s.state for s in client().list_jobs(current)]
    whose = "All jobs" if current.is_admin else "Your jobs"
    st.markdown(
        f"{whose} queued: **{states.count('queued')}**  \n{whose} running: **{states.count('running')}**"
    )
    if now.message != "ok":
        st.caption(now.message)
