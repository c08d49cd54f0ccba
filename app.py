"""TerraSeg's web app: `streamlit run app.py`. Sign-in, navigation over pages/ and the worker/queue sidebar.

`streamlit run app.py` finds `app` below (Streamlit's ASGI server with TerraSeg's own routes: the session cookie
and the map's files, pages/widgets/web_server.py) and serves it; each page run then executes this file as the
script "__main__", the part under `if __name__ == "__main__"`.
"""

import streamlit as st
from starlette.middleware import Middleware

from pages.widgets.health import health_notice, queue_health
from pages.widgets.services import health
from pages.widgets.sign_in import (
    account_sidebar,
    hand_over_session_cookie,
    open_page_asked_for,
    sign_in_only,
    signed_in,
)
from pages.widgets.web_server import ROUTES, SessionCookieMiddleware

SIDEBAR_REFRESH_S = 2.0  # as the Jobs page's list: the counts there and here agree


def main() -> None:
    st.set_page_config(page_title="TerraSeg", page_icon=":earth_africa:", layout="wide")
    pages = [
        st.Page("pages/new_job.py", title="New job", icon=":material/add_location_alt:", default=True),
        st.Page("pages/jobs.py", title="Jobs", icon=":material/list:"),
        st.Page("pages/results.py", title="Results", icon=":material/map:"),
    ]
    admin_page = st.Page("pages/admin.py", title="Admin", icon=":material/admin_panel_settings:")
    account = signed_in()
    if account is None:  # a visitor gets the sign-in form and nothing else (at every page's own path)
        sign_in_only([page.url_path for page in [*pages, admin_page] if page.url_path])
    if account.is_admin:  # other users never see the admin page, not even its name
        pages.append(admin_page)
    navigation = st.navigation(pages)
    open_page_asked_for(pages, navigation)  # a link followed before signing in opens its page after it
    hand_over_session_cookie(navigation)  # right after a sign-in: the cookie that keeps it across reloads

    # The counts redraw on their own only next to the Jobs page's list, which they must agree with. Elsewhere a
    # timer of its own would run during the page's own runs, and Streamlit then now and then drops what the page
    # had just drawn (the Results map, the admin page's upload form); there they are redrawn with each page run.
    live_queue_health = st.fragment(run_every=SIDEBAR_REFRESH_S)(queue_health)
    with st.sidebar:
        account_sidebar(account)
        st.subheader("Workers and queues")
        (live_queue_health if navigation.title == "Jobs" else queue_health)(account)

    health_notice(health())
    navigation.run()


if __name__ == "__main__":
    main()
else:  # imported by `streamlit run app.py` (or an ASGI server: `uvicorn app:app`)
    app = st.App("app.py", routes=ROUTES, middleware=[Middleware(SessionCookieMiddleware)])
