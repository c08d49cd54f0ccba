"""Web-app sessions that outlive a page load: a reload, a new tab or a pasted link keep a user signed in.

A successful sign-in (core.accounts.SignInGate) opens a session: a random token whose record the server keeps
under `<cache>/admin/sessions/` (the file named by the token's digest, so the folder holds no usable token). The
browser keeps the token in a cookie signed with the app's session key (itsdangerous, HMAC-SHA1 with a key
derivation per purpose), HttpOnly and SameSite=Lax, so a page's script cannot read it and another site cannot
send it with a form. A session ends `lifetime_s` after its last use (sliding: every use moves the end) or when its
user signs out: the record is deleted, so the cookie is worth nothing in every tab at its next click, whatever the
browser still holds. A removed account is out at its next click as well: the pages look the account up again.

The browser gets the cookie from the app's own HTTP route (pages/widgets/web_server.py), since Streamlit's page
runs speak over a WebSocket that cannot set one: the page hands the browser a one-time code (`handoff`, valid
`HANDOFF_S`), and the route trades it for the cookie (`redeem`).
"""

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from itsdangerous import BadSignature, TimestampSigner

from core.jobs.store import write_json_atomic

COOKIE_NAME = "terraseg_session"
HANDOFF_S = 60.0  # a sign-in's one-time code works this long (the page sends the browser to it at once)
SEEN_EVERY_S = 60.0  # a session's last use is written at most this often (each page run reads the record),
# or an eighth of the lifetime if that is shorter
KEY_FILE = "session.key"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:40]


@dataclass(frozen=True)
class SessionStore:
    """The server's side of the app's sessions, in `admin_dir` (the cache folder's admin folder)."""

    admin_dir: Path
    lifetime_s: float
    clock: Callable[[], float] = time.time  # seconds since the epoch

    @property
    def _folder(self) -> Path:
        return self.admin_dir / "sessions"

    def _record_path(self, kind: str, secret: str) -> Path:
        return self._folder / f"{kind}-{_digest(secret)}.json"

    def _read(self, path: Path) -> dict[str, object] | None:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def open(self, account_name: str) -> str:
        """A new session for `account_name`; its token (for the cookie)."""
        self.forget_expired()
        self._folder.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        now = self.clock()
        write_json_atomic(
            self._record_path("session", token), {"account": account_name, "opened_at": now, "seen_at": now}
        )
        return token

    def account_name(self, token: str) -> str | None:
        """Whose session `token` is; None once it ended (signed out, unused for `lifetime_s`) or never was.
        Each call is a use: it moves the session's end (written at most every SEEN_EVERY_S)."""
        path = self._record_path("session", token)
        record = self._read(path)
        if record is None or not isinstance(record.get("account"), str):
            return None
        now, seen_at = self.clock(), float(record.get("seen_at", 0.0))  # type: ignore[arg-type]
        if now - seen_at > self.lifetime_s:
            path.unlink(missing_ok=True)
            return None
        if now - seen_at > min(SEEN_EVERY_S, self.lifetime_s / 8):
            write_json_atomic(path, record | {"seen_at": now})
        return str(record["account"])

    def close(self, token: str) -> None:
        """End the session (sign-out): its cookie is refused from now on, in every tab."""
        self._record_path("session", token).unlink(missing_ok=True)

    def handoff(self, token: str) -> str:
        """A one-time code the browser trades for the session's cookie within HANDOFF_S."""
        code = secrets.token_urlsafe(24)
        self._folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            self._record_path("handoff", code), {"token": token, "expires_at": self.clock() + HANDOFF_S}
        )
        return code

    def redeem(self, code: str) -> str | None:
        """The session token a handoff code stands for, once (the code is gone after); None for an unknown,
        used or expired code, or a session that ended meanwhile."""
        path = self._record_path("handoff", code)
        record = self._read(path)
        path.unlink(missing_ok=True)
        if record is None or float(record.get("expires_at", 0.0)) < self.clock():  # type: ignore[arg-type]
            return None
        token = record.get("token")
        return token if isinstance(token, str) and self.account_name(token) is not None else None

    def forget_expired(self) -> None:
        """Delete the records of sessions and codes past their end (called at each sign-in)."""
        now = self.clock()
        for path in self._folder.glob("*.json") if self._folder.is_dir() else ():
            record = self._read(path) or {}
            ends = (
                float(record.get("expires_at", 0.0))  # type: ignore[arg-type]
                if path.name.startswith("handoff-")
                else float(record.get("seen_at", 0.0)) + self.lifetime_s  # type: ignore[arg-type]
            )
            if ends < now:
                path.unlink(missing_ok=True)


@dataclass(frozen=True)
class CookieSigner:
    """The cookie's value: a session token signed with the app's session key and the time it was signed."""

    key: bytes

    def _signer(self) -> TimestampSigner:
        return TimestampSigner(self.key, salt="terraseg-session-cookie")

    def sign(self, token: str) -> str:
        return self._signer().sign(token).decode()

    def token(self, cookie: str, max_age_s: float) -> str | None:
        """The token inside a cookie signed with this key less than `max_age_s` ago; None for anything else."""
        try:
            return self._signer().unsign(cookie, max_age=int(max_age_s)).decode()
        except (BadSignature, UnicodeDecodeError):
            return None


def session_key(admin_dir: Path, configured: str | None) -> bytes:
    """The key that signs session cookies: `configured` (the `app_session_key` setting, the same for every app
    process behind one address), else one made on first use and kept in `<admin_dir>/session.key` (owner-only),
    shared by the app processes on this cache folder. A new key signs every user out."""
    if configured:
        return configured.encode()
    path = admin_dir / KEY_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    admin_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32).encode()
    staging = path.with_name(f".{KEY_FILE}.{secrets.token_hex(4)}")
    staging.touch(mode=0o600)
    staging.write_bytes(key)
    try:
        path.hardlink_to(staging)  # the first app process to make one wins; the others read it
    except FileExistsError:
        key = path.read_bytes()
    finally:
        staging.unlink(missing_ok=True)
    return key
