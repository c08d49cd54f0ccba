"""Who uses the app: the sign-in form, the signed-in account (a visitor's page stops) and the sidebar's account
line with Sign out."""

import contextlib
from collections.abc import Sequence
from typing import NoReturn
from urllib.parse import urlsplit

import streamlit as st
from streamlit import runtime
from streamlit.errors import StreamlitAPIException
from streamlit.navigation.page import StreamlitPage
from streamlit.runtime.scriptrunner import get_script_run_ctx

from core.accounts import LOCAL, Account, SignInGate, SignInRefused, audit
from core.config import account_entries
from pages.widgets.services import settings

ASKED_FOR = "page-asked-for"  # (the page's URL path, its query) a visitor asked for, opened after sign-in


def remember_page_asked_for() -> None:
    """Keep the page a visitor's first URL named (its last path segment, and its query: a shared
    `/results?job=...`), for open_page_asked_for after the sign-in."""
    if ASKED_FOR not in st.session_state:
        path = urlsplit(st.context.url or "").path.rstrip("/").rpartition("/")[2]
        st.session_state[ASKED_FOR] = (path, {key: st.query_params[key] for key in st.query_params})


def signed_in() -> Account | None:
    """Who uses this browser session (None: a visitor). Sign-in turned off: `LOCAL`, the desktop's one user and
    admin. The account is looked up again on every run, so one removed from the configuration is out at once."""
    current = settings()
    if not current.app_sign_in:
        return LOCAL
    entries, _ = account_entries(current)
    name = st.session_state.get("account")
    if isinstance(name, str) and name in entries:
        return Account(name, is_admin=entries[name].role == "admin")
    st.session_state.pop("account", None)
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
    st.navigation([st.Page(sign_in_form, title="Sign in", url_path=path) for path in paths], position="hidden").run()
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
                st.session_state["account"] = account.name
                st.rerun()


def client_address(proxy_hops: int) -> str:
    """The visitor's address as the app sees it: behind `proxy_hops` reverse proxies, the address the farthest of
    them saw (X-Forwarded-For's entry that proxy appended; those before it are the visitor's to write)."""
    header = st.context.headers.get("X-Forwarded-For")
    forwarded = [a.strip() for a in header.split(",") if a.strip()] if isinstance(header, str) else []
    if proxy_hops and len(forwarded) >= proxy_hops:
        return forwarded[-proxy_hops]
    address = st.context.ip_address  # None in a script run without a browser (AppTest)
    return address if isinstance(address, str) else ""


def sign_out() -> None:
    """Forget this session's account (written to the audit log) and the files its download buttons served."""
    if name := st.session_state.pop("account", None):
        audit(settings().cache_dir / "admin", str(name), "signed out")
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
        sign_out()
        st.rerun()
