"""The web app's sign-in (one for everyone: users and admins), who may touch which job, and the audit log.

Accounts are configured by the operator (`core.config.account_entries`): a name, an argon2id hash of the
password (argon2-cffi; `terraseg account NAME` makes one) and a role, "user" or "admin". A user sees, cancels,
retries and deletes only the jobs they submitted; an admin sees every job and reaches the admin page. After
`FREE_FAILURES` failed sign-ins in a row for one name from one client (its address), that client waits before
its next try for that name: 1 s, then 2, 4 ... up to `MAX_WAIT_S`; after `CLIENT_FREE_FAILURES` failures from one
client, whatever the names, its every try waits the same way. Nobody is locked out: a visitor elsewhere cannot make
an account's owner wait, and a known and an unknown name are counted and timed alike. The counts are shared by
every browser session and app process on the cache folder (`<cache>/admin/sign-in.json`, keys as digests).
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

from core.config import ACCOUNT_NAME, AccountEntry
from core.errors import AppError
from core.jobs.store import file_lock, utc_now, write_json_atomic

FREE_FAILURES = 3  # failed sign-ins for one name from one client before its tries wait
CLIENT_FREE_FAILURES = 20  # failures from one client, whatever the names, before its every try waits
MAX_WAIT_S = 300
FORGET_S = 3600  # a failure this old no longer counts
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


def wait_after(failures: int, free: int) -> float:
    """Seconds to wait after `failures` in a row: none for the first `free`, then 1, 2, 4 ... up to MAX_WAIT_S."""
    return 0.0 if failures < free else float(min(2 ** (failures - free), MAX_WAIT_S))


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
    def _keys(name: str, client: str) -> tuple[str, str]:
        """The counts a try touches: its (client, name) pair's and its client's. Typed names and addresses are
        kept as digests (bounded, safe keys), every name its own whether an account has it or not."""
        pair = hashlib.sha256(f"{client}\0{name}".encode()).hexdigest()[:16]
        return f"pair:{pair}", f"client:{hashlib.sha256(client.encode()).hexdigest()[:16]}"

    @staticmethod
    def _entry(state: dict[str, Any], key: str, now: float) -> tuple[int, float]:
        """(failures in a row, when the last one was) of `key`; forgotten after FORGET_S."""
        entry = state.get(key)
        if not isinstance(entry, dict) or now - float(entry.get("last_failed_at", 0.0)) > FORGET_S:
            return 0, 0.0
        return int(entry.get("failures", 0)), float(entry.get("last_failed_at", 0.0))

    def wait_s(self, name: str, client: str = "") -> float:
        """Seconds before `client` may try `name` again (0: now)."""
        state, now = self._read(), time.time()
        pair, whole = self._keys(name.strip().lower(), client)
        waits = [0.0]
        for key, free in ((pair, FREE_FAILURES), (whole, CLIENT_FREE_FAILURES)):
            failures, last = self._entry(state, key, now)
            waits.append(last + wait_after(failures, free) - now)
        return max(waits)

    def sign_in(self, name: str, password: str, client: str = "") -> Account:
        """The account, or SignInRefused with one sentence; every attempt is written to the audit log.
        `client`: the visitor's address as the app sees it ('' when unknown: all such visitors share counts)."""
        name = name.strip().lower()
        known = self.accounts.get(name)
        who = name if known else "unknown name"
        self.admin_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.admin_dir / ".sign-in.lock", wait_s=10):
            if (wait_s := self.wait_s(name, client)) > 0:
                audit(self.admin_dir, who, f"sign-in refused: throttled ({wait_s:.0f} s to wait)")
                raise SignInRefused(f"Too many failed sign-ins from here; try again in {max(wait_s, 1):.0f} s.")
            try:
                PasswordHasher().verify(known.password_hash if known else _unknown_name_hash(), password)
                if known is None:
                    raise VerificationError
            except (VerificationError, InvalidHashError):
                raise SignInRefused(self._record_failure(name, client, who)) from None
            state = self._read()
            state.pop(self._keys(name, client)[0], None)  # the client's own count stays: spraying is not undone
            write_json_atomic(self._state_path, state)
            audit(self.admin_dir, name, "signed in")
        return Account(name, is_admin=known.role == "admin")

    def _record_failure(self, name: str, client: str, who: str) -> str:
        """Count a failed try for its pair and its client; the sentence to show."""
        state, now = self._read(), time.time()
        # Forgotten failures are dropped, so names typed by anyone do not grow the file for ever.
        state = {k: v for k, v in state.items() if self._entry(state, k, now)[0] > 0}
        pair, whole = self._keys(name, client)
        failures = 0
        for key in (pair, whole):
            count = self._entry(state, key, now)[0] + 1
            state[key] = {"failures": count, "last_failed_at": now}
            failures = failures or count  # the pair's: what the user's own tries add up to
        write_json_atomic(self._state_path, state)
        audit(self.admin_dir, who, f"failed sign-in ({failures} in a row)")
        wait_s = self.wait_s(name, client)
        if wait_s > 0:
            return f"Wrong name or password. Wait {max(wait_s, 1):.0f} s before the next try."
        return "Wrong name or password."


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
