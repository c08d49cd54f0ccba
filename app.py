"""TerraSeg's web app: `streamlit run app.py`. Sign-in, navigation over pages/ and the worker/queue sidebar."""

import streamlit as st

from core.accounts import Account
from pages import ui

SIDEBAR_REFRESH_S = 2.0  # as the Jobs page's list: the counts there and here agree

st.set_page_config(page_title="TerraSeg", page_icon=":earth_africa:", layout="wide")
account = ui.signed_in()
if account is None:
    ui.sign_in_only()  # a visitor gets the sign-in form and nothing else

pages = [
    st.Page("pages/new_job.py", title="New job", icon=":material/add_location_alt:", default=True),
    st.Page("pages/jobs.py", title="Jobs", icon=":material/list:"),
    st.Page("pages/results.py", title="Results", icon=":material/map:"),
]
if account.is_admin:  # other users never see the admin page, not even its name
    pages.append(st.Page("pages/admin.py", title="Admin", icon=":material/admin_panel_settings:"))
navigation = st.navigation(pages)


def queue_health(current: Account) -> None:
    """Redis, workers and this account's jobs (an admin's: everyone's), counted from the same list the Jobs
    page shows."""
    health = ui.health()
    if health.redis_ok:
        st.markdown(f"Redis: **reachable**  \nWorkers alive: **{health.workers}**")
    else:
        st.markdown("Redis: **unreachable**")
    states = [s.state for s in ui.client().list_jobs(current)]
    whose = "All jobs" if current.is_admin else "Your jobs"
    st.markdown(
        f"{whose} queued: **{states.count('queued')}**  \n{whose} running: **{states.count('running')}**"
    )
    if health.message != "ok":
        st.caption(health.message)


# The counts redraw on their own only next to the Jobs page's list, which they must agree with. Elsewhere a timer
# of its own would run during the page's own runs, and Streamlit then now and then drops what the page had just
# drawn (the Results map, the admin page's upload form); there they are redrawn with each run of the page.
live_queue_health = st.fragment(run_every=SIDEBAR_REFRESH_S)(queue_health)
with st.sidebar:
    ui.account_sidebar(account)
    st.subheader("Workers and queues")
    (live_queue_health if navigation.title == "Jobs" else queue_health)(account)

ui.health_notice(ui.health())
navigation.run()
