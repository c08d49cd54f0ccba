"""The web app's sign-in (one for everyone: users and admins), who may touch which job, and the audit log.

Accounts are configured by the operator (`core.config.account_entries`): a name, an argon2id hash of the
password (argon2-cffi; `terraseg account NAME` makes one) and a role, "user" or "admin". A user sees, cancels,
retries and deletes only the jobs they submitted; an admin sees every job and reaches the admin page. After
`MAX_FAILURES` failed sign-ins in a row for one name, that name is refused for `LOCKOUT_S` seconds, for every
browser session and app process that shares the cache folder (the counts live in `<cache>/admin/sign-in.json`).
Sign-in and admin actions are JSON lines appended to `<cache>/admin/audit.log`.

With sign-in turned off (`TERRASEG_APP_SIGN_IN=false`, for a single-user desktop) everyone who reaches the app
is `LOCAL`, its one user and admin; the app says so on every page.
"""

import functools
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core.config import AccountEntry
from core.errors import AppError
from core.jobstore import file_lock, utc_now, write_json_atomic

MAX_FAILURES = 5
LOCKOUT_S = 300
MIN_PASSWORD_CHARS = 12


class SignInRefused(AppError):
    """A wrong name or password, or sign-in locked after too many of them."""


class NotYourJob(AppError):
    """A signed-in user acted on a job that another user submitted."""


@dataclass(frozen=True)
class Account:
    """Who is using the app: their account name and whether they are an admin."""

    name: str
    is_admin: bool = False

    def may_touch(self, owner: str | None) -> bool:
        """Whether this account may see and change a job submitted by `owner` (None: from the command line,
        which only admins see in the app)."""
        return self.is_admin or (owner is not None and owner == self.name)


# Sign-in turned off: the single user of a desktop install, who is its admin too.
LOCAL = Account("local", is_admin=True)


def hash_password(password: str) -> str:
    """The argon2id hash to configure (never the password itself)."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise AppError(f"Choose a password of at least {MIN_PASSWORD_CHARS} characters.")
    return PasswordHasher().hash(password)


def account_table(name: str, password: str, admin: bool) -> str:
    """The TOML table to add to `.streamlit/secrets.toml` (or the accounts file) for a new account."""
    from core.config import ACCOUNT_NAME

    if not ACCOUNT_NAME.match(name):
        raise AppError(
            "An account name is 1-40 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit."
        )
    return f'[accounts.{name}]\npassword_hash = "{hash_password(password)}"\nrole = "{"admin" if admin else "user"}"\n'


@functools.cache
def _unknown_name_hash() -> str:
    # A name nobody has is checked against this hash, so a wrong name takes as long as a wrong password (the
    # time does not tell which names exist).
    return PasswordHasher().hash("no account has this password: " + os.urandom(8).hex())


@dataclass(frozen=True)
class SignInGate:
    """Sign-in against the configured `accounts`, with the shared failure counts under `admin_dir`."""

    accounts: dict[str, AccountEntry]
    admin_dir: Path

    @property
    def _state_path(self) -> Path:
        return self.admin_dir / "sign-in.json"

    def _read(self) -> dict[str, Any]:
        try:
            state = json.loads(self._state_path.read_text())
            return state if isinstance(state, dict) else {}
        except (OSError, ValueError):
            return {}

    @staticmethod
    def _key(name: str) -> str:
        # Names typed by anyone: counted under a digest (a bounded, safe key); unknown names share one count.
        return hashlib.sha256(name.encode()).hexdigest()[:16]

    def locked_for_s(self, name: str) -> float:
        """Seconds until `name` may sign in again (0: allowed now)."""
        entry = self._read().get(self._key(name), {})
        return (
            max(0.0, float(entry.get("locked_until", 0.0)) - time.time()) if isinstance(entry, dict) else 0.0
        )

    def sign_in(self, name: str, password: str) -> Account:
        """The account, or SignInRefused with one sentence; every attempt is written to the audit log."""
        name = name.strip().lower()
        known = self.accounts.get(name)
        key = self._key(name if known else "")
        self.admin_dir.mkdir(parents=True, exist_ok=True)
        who = name if known else "unknown name"
        with file_lock(self.admin_dir / ".sign-in.lock", wait_s=10):
            if (wait_s := self.locked_for_s(name if known else "")) > 0:
                audit(self.admin_dir, who, "sign-in refused: locked")
                raise SignInRefused(f"Too many failed sign-ins; try again in {max(wait_s / 60, 1):.0f} min.")
            try:
                PasswordHasher().verify(known.password_hash if known else _unknown_name_hash(), password)
                if known is None:
                    raise VerificationError
            except (VerificationError, InvalidHashError):
                state = self._read()
                found = state.get(key)
                entry = found if isinstance(found, dict) else {}
                failures = int(entry.get("failures", 0)) + 1
                locked_until = time.time() + LOCKOUT_S if failures >= MAX_FAILURES else 0.0
                state[key] = {"failures": 0 if locked_until else failures, "locked_until": locked_until}
                write_json_atomic(self._state_path, state)
                audit(self.admin_dir, who, f"failed sign-in ({failures} in a row)")
                if locked_until:
                    raise SignInRefused(
                        f"Wrong name or password. Sign-in is locked for {LOCKOUT_S // 60} min after "
                        f"{MAX_FAILURES} failures."
                    ) from None
                raise SignInRefused("Wrong name or password.") from None
            state = self._read()
            state.pop(key, None)
            write_json_atomic(self._state_path, state)
            audit(self.admin_dir, name, "signed in")
        return Account(name, is_admin=known.role == "admin")


def audit(admin_dir: Path, who: str, action: str) -> None:
    """Append one line (when, who, what) to the audit log; lines are never rewritten."""
    admin_dir.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"at": utc_now(), "who": who, "action": action})
    with open(admin_dir / "audit.log", "a") as out:
        out.write(line + "\n")
        out.flush()
        os.fsync(out.fileno())


def read_audit(admin_dir: Path, last: int = 50) -> list[dict[str, str]]:
    """The newest `last` audit entries, newest first."""
    try:
        lines = (admin_dir / "audit.log").read_text().splitlines()
    except OSError:
        return []
    entries = []
    for line in reversed(lines[-last:]):
        try:
            entries.append(dict(json.loads(line)))
        except ValueError:
            continue
    return entries
