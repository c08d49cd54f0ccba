"""Small helpers the pages share: the cached job client, the health notice, legends, time formatting."""

import contextlib
import html
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import streamlit as st
from streamlit.errors import StreamlitAPIException

from core.accounts import LOCAL, Account, SignInGate, SignInRefused, audit
from core.config import Settings, account_entries, get_settings
from core.types import ClassInfo, ModelCard
from worker.client import Health, JobClient, TrainingClient

JOBS_PAGE_SIZE = 20  # jobs per page of the Jobs page (here: page files run when imported)


@st.cache_resource(show_spinner=False)
def _client(redis_url: str, cache_dir: str) -> JobClient:
    return JobClient(Settings(redis_url=redis_url, cache_dir=Path(cache_dir)))


@st.cache_resource(show_spinner=False)
def _training_client(redis_url: str, cache_dir: str) -> TrainingClient:
    return TrainingClient(Settings(redis_url=redis_url, cache_dir=Path(cache_dir)))


def training_client() -> TrainingClient:
    """The training-run client (the admin page's), shared like `client()`."""
    current = settings()
    return _training_client(current.redis_url, str(current.cache_dir))


def app_source(name: str, settings: Settings) -> None:
    """What the web app accepts as a source: the operator's limits first (nothing is read before), then syntax."""
    from core.sources import check_app_source, parse_source

    check_app_source(name, settings)
    parse_source(name, settings)


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
        with contextlib.suppress(StreamlitAPIException):  # app.py is not a page once its navigation runs
            st.switch_page("app.py")
        st.info("You are signed out; reload the app to sign in.")
        st.stop()
    return current


def sign_in_only() -> NoReturn:
    """For a visitor: the sign-in form as the app's only page (no other page is listed or reachable), then
    stop."""
    st.navigation([st.Page(sign_in_form, title="Sign in", url_path="sign-in")], position="hidden").run()
    st.stop()


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
                account = SignInGate(entries, current.cache_dir / "admin").sign_in(typed_name, password)
            except SignInRefused as err:
                st.error(str(err))
            else:
                st.session_state["account"] = account.name
                st.rerun()


def sign_out() -> None:
    """Forget this session's account (written to the audit log)."""
    if name := st.session_state.pop("account", None):
        audit(settings().cache_dir / "admin", str(name), "signed out")


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


def settings() -> Settings:
    """The app's settings (environment variables `TERRASEG_*`, then `.env`)."""
    return get_settings()


def client() -> JobClient:
    """One job client per Redis URL and cache folder, shared by every session of this app process."""
    current = settings()
    return _client(current.redis_url, str(current.cache_dir))


def health() -> Health:
    """Redis and workers as the sidebar and pages report them (cached for 2 s: every page asks)."""
    return _health(settings().redis_url, str(settings().cache_dir))


@st.cache_data(ttl=2, show_spinner=False)
def _health(redis_url: str, cache_dir: str) -> Health:
    return _client(redis_url, cache_dir).health()


def progress_text(stage: str, message: str) -> str:
    """The line above a progress bar: the stage and the message, without saying the stage twice (messages often
    start with it: "Planning: 0.93 km2 ...")."""
    if stage and message.startswith(stage):
        return message
    return " · ".join(t for t in (stage, message) if t)


def health_notice(current: Health) -> None:
    """Say plainly when jobs cannot run right now (Redis down, no worker); say nothing when all is well."""
    if not current.redis_ok:
        st.warning(
            f"{current.message} Jobs can still be submitted and are kept on disk; they start when Redis "
            "is back and a worker runs. Finished results stay available."
        )
    elif current.workers == 0:
        st.warning(f"{current.message} Submitted jobs wait in the queue until one starts.")


def legend_html(classes: tuple[ClassInfo, ...]) -> str:
    """A legend (colour swatch and name per class) as HTML for st.html."""
    rows = "".join(
        f'<div style="display:flex;align-items:center;gap:6px;margin:2px 0">'
        f'<span style="width:14px;height:14px;background:{html.escape(c.color)};border:1px solid #333;'
        f'display:inline-block"></span>{c.value} &middot; {html.escape(c.name)}</div>'
        for c in classes
    )
    return f'<div class="terraseg-legend"><strong>Legend</strong>{rows}</div>'


def elapsed_s(started_at: str | None, ended_at: str | None) -> float | None:
    """Seconds between two ISO times (to now while running); None before the start."""
    if not started_at:
        return None
    end = datetime.fromisoformat(ended_at) if ended_at else datetime.now(UTC)
    return max(0.0, (end - datetime.fromisoformat(started_at)).total_seconds())


def local_time(stamp: str | None, zone_name: str | None = None, now: datetime | None = None) -> str:
    """An ISO time as the user's clock shows it: 'today 14:46', 'yesterday 09:05', else '2026-11-29 18:02'.
    `zone_name` defaults to the browser's time zone (UTC when the browser does not say)."""
    if not stamp:
        return "-"
    if zone_name is None:
        zone_name = st.context.timezone or "UTC"
    try:
        zone: tzinfo = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        zone = UTC
    when = datetime.fromisoformat(stamp).astimezone(zone)
    today = (now or datetime.now(UTC)).astimezone(zone).date()
    day = {today: "today", today - timedelta(days=1): "yesterday"}.get(when.date(), when.date().isoformat())
    return f"{day} {when:%H:%M}"


def held_out_sentence(card: ModelCard) -> str:
    """' Held-out scores: OA 0.77, macro F1 0.74 (a RandomForest on the raw bands: 0.77, 0.67).' for a model whose
    card records scores on held-out samples; '' otherwise."""
    held_out = card.metrics.get("held_out")
    if not isinstance(held_out, dict) or "overall_accuracy" not in held_out:
        return ""
    sentence = f" Held-out scores: OA {held_out['overall_accuracy']:.2f}, macro F1 {held_out['macro_f1']:.2f}"
    anchor = card.metrics.get("random_forest_anchor")
    if isinstance(anchor, dict) and "overall_accuracy" in anchor:
        sentence += (
            f" (a RandomForest on the raw bands: {anchor['overall_accuracy']:.2f}, {anchor['macro_f1']:.2f})"
        )
    return sentence + "."
