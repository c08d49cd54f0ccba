"""Web-app sessions (core/sessions.py): opened at sign-in, found again from the cookie's token, slid on use,
ended by sign-out or disuse; the one-time code that hands the cookie to the browser; the cookie's signature."""

import stat
from pathlib import Path

from core.sessions import CookieSigner, SessionStore, session_key


def test_a_session_is_found_until_its_user_signs_out(tmp_path: Path):
    store = SessionStore(tmp_path, lifetime_s=3600)
    token = store.open("analyst")
    other = store.open("analyst")  # a second browser
    assert store.account_name(token) == "analyst" and store.account_name(other) == "analyst"
    store.close(token)
    assert store.account_name(token) is None  # every tab holding this cookie is out at its next click
    assert store.account_name(other) == "analyst"  # another browser's session is its own
    assert store.account_name("a-token-nobody-was-given") is None
    # The folder holds no token a reader of the cache could use: files are named by digests.
    assert not any(token in p.name or other in p.name for p in (tmp_path / "sessions").iterdir())


class Clock:
    """The time as the test sets it (seconds since the epoch)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_ends_after_its_lifetime_without_use_and_each_use_moves_the_end(tmp_path: Path):
    clock = Clock()
    store = SessionStore(tmp_path, lifetime_s=8 * 3600, clock=clock)
    used, unused = store.open("analyst"), store.open("other")
    for _ in range(6):  # 9 h in all, used every 1.5 h: past the lifetime, yet alive
        clock.now += 1.5 * 3600
        assert store.account_name(used) == "analyst"
    assert store.account_name(unused) is None  # 9 h without a use
    clock.now += 8 * 3600 + 1
    assert store.account_name(used) is None
    store.open("admin")  # a sign-in clears the records of ended sessions
    assert len(list((tmp_path / "sessions").glob("session-*.json"))) == 1


def test_a_handoff_code_expires_after_a_minute(tmp_path: Path):
    clock = Clock()
    store = SessionStore(tmp_path, lifetime_s=3600, clock=clock)
    code = store.handoff(store.open("analyst"))
    clock.now += 61
    assert store.redeem(code) is None


def test_a_handoff_code_works_once_and_only_for_a_live_session(tmp_path: Path):
    store = SessionStore(tmp_path, lifetime_s=3600)
    token = store.open("analyst")
    code = store.handoff(token)
    assert store.redeem(code) == token
    assert store.redeem(code) is None  # used
    assert store.redeem("a-code-nobody-was-given") is None
    late = store.handoff(token)
    store.close(token)  # signed out before the browser came for its cookie
    assert store.redeem(late) is None


def test_a_cookie_opens_only_with_its_own_key_and_unchanged(tmp_path: Path):
    signer = CookieSigner(b"k" * 32)
    cookie = signer.sign("the-token")
    assert signer.token(cookie, max_age_s=60) == "the-token"
    assert signer.token(cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB"), max_age_s=60) is None
    assert signer.token("the-token", max_age_s=60) is None  # an unsigned token
    assert CookieSigner(b"x" * 32).token(cookie, max_age_s=60) is None  # another key (or a changed one)


def test_the_session_key_is_made_once_owner_only_unless_configured(tmp_path: Path):
    first = session_key(tmp_path, None)
    assert session_key(tmp_path, None) == first and len(first) >= 32
    assert stat.S_IMODE((tmp_path / "session.key").stat().st_mode) == 0o600
    assert session_key(tmp_path, "configured key") == b"configured key"
