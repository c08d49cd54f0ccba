"""Who uses the app: the sign-in form, the signed-in account (a visitor's page stops) and the sidebar's account
line with Sign out."""

import contextlib
import json
from collections.abc import Sequence
from typing import NoReturn
from urllib.parse import urlencode, urlsplit

import streamlit as st
from streamlit import runtime
from streamlit.errors import StreamlitAPIException
from streamlit.navigation.page import StreamlitPage
from streamlit.runtime.scriptrunner import get_script_run_ctx

from core.accounts import LOCAL, Account, SignInGate, SignInRefused, audit
from core.config import account_entries
from core.sessions import COOKIE_NAME
from pages.widgets.services import settings
from pages.widgets.web_server import SESSION_PATH, session_store, session_token

SESSION_TOKEN = "session-token"  # this tab's session (core.sessions), from its sign-in or the browser's cookie
COOKIE_HANDOFF = "session-cookie-code"  # a sign-in's one-time code, handed to the browser once
ASKED_FOR = "page-asked-for"  # (the page's URL path, its query) a visitor asked for, opened after sign-in


def remember_page_asked_for() -> None:
    """Keep the page a visitor's first URL named (its last path segment, and its query: a shared
    `/results?job=...`), for open_page_asked_for after the sign-in."""
    if ASKED_FOR not in st.session_state:
        path = urlsplit(st.context.url or "").path.rstrip("/").rpartition("/")[2]
        st.session_state[ASKED_FOR] = (path, {key: st.query_params[key] for key in st.query_params})


def signed_in() -> Account | None:
    """Who uses this browser session (None: a visitor). Sign-in turned off: `LOCAL`, the desktop's one user and
    admin. A session is this tab's sign-in or the browser's session cookie (core.sessions); either is looked up
    again on every run, so a session signed out in another tab, or an account removed from the configuration,
    is out at once."""
    current = settings()
    if not current.app_sign_in:
        return LOCAL
    entries, _ = account_entries(current)
    token = st.session_state.get(SESSION_TOKEN) or session_token(current, st.context.cookies.get(COOKIE_NAME))
    name = session_store(current).account_name(token) if token else None
    if name is not None and name in entries:
        st.session_state[SESSION_TOKEN] = token
        return Account(name, is_admin=entries[name].role == "admin")
    st.session_state.pop(SESSION_TOKEN, None)
    return None


def account() -> Account:
    """The signed-in account. For a visitor the page stops here, so nothing a page does below it runs without an
    account: a page file reached by its own URL before any visit ran app.py (Streamlit then serves pages/ files
    alone) goes to app.py's sign-in; a session signed out meanwhile is told so."""
    if (current := signed_in()) is None:
        remember_page_asked_for()  # the page file's own URL: app.py, switched to, runs at the root
        with contextlib.suppress(StreamlitAPIException):  # app.py is not a page once its navigation runs
            st.switch_page("app.py")
        st.info("You are signed out; reload the app to sign in.")
        st.stop()
    return current


def sign_in_only(page_paths: Sequence[str]) -> NoReturn:
    """For a visitor: the sign-in form as the app's only page (no other page is listed or reachable), then
    stop. The page the visitor asked for (a shared Results link, say) is remembered for after the sign-in.
    `page_paths`: the URL paths of the app's pages (app.py's list)."""
    remember_page_asked_for()
    # The form also answers at the app's own page paths: a shared link to /results?job=... then shows the form
    # (not Streamlit's "Page not found" over it) and, once signed in, that page with its query.
    paths = ("sign-in", *page_paths)
    st.navigation(
        [st.Page(sign_in_form, title="Sign in", url_path=path) for path in paths], position="hidden"
    ).run()
    st.stop()


def open_page_asked_for(pages: list[StreamlitPage], current: StreamlitPage) -> None:
    """Once signed in, go to the page the visitor asked for (with its query), if it is one of `pages` (a user's
    link to the admin page opens New job); once only."""
    path, query = st.session_state.pop(ASKED_FOR, ("", {}))
    wanted = next((page for page in pages if page.url_path == path and path), None)
    if wanted is not None and wanted.url_path != current.url_path:
        st.switch_page(wanted, query_params=query)


def sign_in_form() -> None:
    """The sign-in form; without any configured account, how to make one."""
    current = settings()
    entries, problems = account_entries(current)
    st.title("Sign in to TerraSeg")
    if not entries:
        st.info(
            "No account is set up, so nobody can sign in. On the server, run `terraseg account NAME` (add "
            "`--admin` for an admin), add the table it prints to `.streamlit/secrets.toml`, and reload this page. "
            "On a single-user desktop, sign-in can be turned off instead: `TERRASEG_APP_SIGN_IN=false`."
        )
        for problem in problems:
            st.caption(problem)
        return
    with st.form("sign-in"):
        typed_name = st.text_input("Account name")
        password = st.text_input("Password", type="password")
        if st.form_submit_button("Sign in"):
            try:
                gate = SignInGate(entries, current.cache_dir / "admin")
                account = gate.sign_in(typed_name, password, client_address(current.app_proxy_hops))
            except SignInRefused as err:
                st.error(str(err))
            else:
                store = session_store(current)
                token = store.open(account.name)
                st.session_state[SESSION_TOKEN] = token
                st.session_state[COOKIE_HANDOFF] = store.handoff(token)
                st.rerun()


def hand_over_session_cookie(current_page: StreamlitPage) -> None:
    """Right after a sign-in, send the browser to the app's session route, which trades the sign-in's one-time
    code for the session cookie and comes back to this page (with its query): from then on a reload, a new tab
    or a pasted link finds the user signed in. Once per sign-in, before the page draws (it reloads at once). In a
    script run without a browser connection (AppTest) there is nobody to hand a cookie to: the tab's own
    sign-in goes on working."""
    code = st.session_state.pop(COOKIE_HANDOFF, None)
    if not code or not isinstance(st.context.url, str):  # no browser connection (AppTest has no URL)
        return
    query = urlencode({key: st.query_params[key] for key in st.query_params})
    back_to = f"/{current_page.url_path}" + (f"?{query}" if query else "")
    target = f"{SESSION_PATH}?{urlencode({'code': code, 'next': back_to})}"
    st.html(f"<script>window.location.replace({json.dumps(target)});</script>", unsafe_allow_javascript=True)
    st.caption("Signing in...")
    st.stop()


def client_address(proxy_hops: int) -> str:
    """The visitor's address as the app sees it: behind `proxy_hops` reverse proxies, the address the farthest of
    them saw (X-Forwarded-For's entry that proxy appended; those before it are the visitor's to write)."""
    header = st.context.headers.get("X-Forwarded-For")
    forwarded = [a.strip() for a in header.split(",") if a.strip()] if isinstance(header, str) else []
    if proxy_hops and len(forwarded) >= proxy_hops:
        return forwarded[-proxy_hops]
    address = st.context.ip_address  # None in a script run without a browser (AppTest)
    return address if isinstance(address, str) else ""


def sign_out(current: Account) -> None:
    """End the session (in every tab: its cookie opens nothing any more; written to the audit log) and delete
    the files its download buttons served."""
    if token := st.session_state.pop(SESSION_TOKEN, None):
        session_store(settings()).close(token)
    audit(settings().cache_dir / "admin", current.name, "signed out")
    forget_downloads()


def forget_downloads() -> None:
    """Delete the files this session's download buttons serve, so a download link copied before signing out stops
    working now. Streamlit keeps a download nobody shows for one more script run of any session (a click right
    after a rerun still gets its file): without this, a link worked for a while without a signed-in session."""
    context = get_script_run_ctx()
    if context is None or not runtime.exists():
        return
    files = runtime.get_instance().media_file_mgr
    files.clear_session_refs(context.session_id)
    files.remove_orphaned_files()  # marks the downloads no session shows...
    files.remove_orphaned_files()  # ...and deletes them


def account_sidebar(current: Account) -> None:
    """Who is signed in, with a Sign out button; or, with sign-in turned off, that it is off."""
    if not settings().app_sign_in:
        st.warning(
            "Sign-in is off (`TERRASEG_APP_SIGN_IN=false`): whoever reaches this app sees every job and the "
            "admin page. Only for a desktop that nobody else can reach."
        )
        return
    st.markdown(f"Signed in as **{current.name}**" + (" (admin)" if current.is_admin else ""))
    if st.button("Sign out"):
        sign_out(current)
        st.rerun()
