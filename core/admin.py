"""The admin sign-in and the admin audit log.

The admin password is stored only as an argon2id hash (argon2-cffi), given to the app in
`TERRASEG_ADMIN_PASSWORD_HASH` or as `admin_password_hash` in `.streamlit/secrets.toml`; `terraseg
admin-password` makes one. After `MAX_FAILURES` failed sign-ins in a row, sign-in is refused for `LOCKOUT_S`
seconds, for every browser session and app process that shares the cache folder (the count lives in
`<cache>/admin/sign-in.json`). Every admin action is one JSON line appended to `<cache>/admin/audit.log`.
"""

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core.errors import AppError
from core.jobstore import file_lock, utc_now, write_json_atomic

MAX_FAILURES = 5
LOCKOUT_S = 300
MIN_PASSWORD_CHARS = 12


class SignInRefused(AppError):
    """A wrong password, or sign-in locked after too many of them."""


def hash_password(password: str) -> str:
    """The argon2id hash to configure (never the password itself)."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise AppError(f"Choose an admin password of at least {MIN_PASSWORD_CHARS} characters.")
    return PasswordHasher().hash(password)


@dataclass(frozen=True)
class AdminGate:
    """Sign-in against `password_hash`, with the shared failure count under `admin_dir`."""

    password_hash: str
    admin_dir: Path

    @property
    def _state_path(self) -> Path:
        return self.admin_dir / "sign-in.json"

    def _read(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self._state_path.read_text()))
        except (OSError, ValueError):
            return {"failures": 0, "locked_until": 0.0}

    def locked_for_s(self) -> float:
        """Seconds until sign-in is allowed again (0: allowed now)."""
        return max(0.0, float(self._read().get("locked_until", 0.0)) - time.time())

    def sign_in(self, password: str, who: str) -> None:
        """Accept the password or raise SignInRefused; both are written to the audit log."""
        self.admin_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.admin_dir / ".sign-in.lock", wait_s=10):
            if (wait_s := self.locked_for_s()) > 0:
                audit(self.admin_dir, who, "sign-in refused: locked")
                raise SignInRefused(f"Too many failed sign-ins; try again in {wait_s / 60:.0f} min.")
            try:
                PasswordHasher().verify(self.password_hash, password)
            except (VerificationError, InvalidHashError):
                state = self._read()
                failures = int(state.get("failures", 0)) + 1
                locked_until = time.time() + LOCKOUT_S if failures >= MAX_FAILURES else 0.0
                write_json_atomic(
                    self._state_path,
                    {"failures": 0 if locked_until else failures, "locked_until": locked_until},
                )
                audit(self.admin_dir, who, f"failed sign-in ({failures} in a row)")
                if locked_until:
                    raise SignInRefused(
                        f"Wrong password. Sign-in is locked for {LOCKOUT_S // 60} min after {MAX_FAILURES} "
                        "failures."
                    ) from None
                raise SignInRefused("Wrong password.") from None
            write_json_atomic(self._state_path, {"failures": 0, "locked_until": 0.0})
            audit(self.admin_dir, who, "signed in")


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
