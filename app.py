"""TerraSeg's web app: `streamlit run app.py`. Navigation over pages/ and the worker/queue health sidebar."""

import streamlit as st

from pages import ui

st.set_page_config(page_title="TerraSeg", page_icon=":earth_africa:", layout="wide")

navigation = st.navigation(
    [
        st.Page("pages/new_job.py", title="New job", icon=":material/add_location_alt:", default=True),
        st.Page("pages/jobs.py", title="Jobs", icon=":material/list:"),
        st.Page("pages/results.py", title="Results", icon=":material/map:"),
        st.Page("pages/admin.py", title="Admin", icon=":material/admin_panel_settings:"),
    ]
)

with st.sidebar:
    st.subheader("Workers and queues")
    health = ui.health()
    if health.redis_ok:
        st.markdown(f"Redis: **reachable**  \nWorkers alive: **{health.workers}**")
    else:
        st.markdown("Redis: **unreachable**")
    st.markdown(f"Jobs queued: **{health.queued}**  \nJobs running: **{health.running}**")
    if health.message != "ok":
        st.caption(health.message)

ui.health_notice(health)
navigation.run()
