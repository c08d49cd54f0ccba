"""Sign-in throttling (core.accounts.SignInGate): growing waits per visitor address and name instead of a lock, so
nobody elsewhere can keep an account's owner out, and a known and an unknown name are counted and timed alike."""

import contextlib
import time

import pytest

from core.accounts import (
    CLIENT_FREE_FAILURES,
    FREE_FAILURES,
    SignInGate,
    SignInRefused,
    hash_password,
    read_audit,
    wait_after,
)
from core.config import AccountEntry

PASSWORD = "correct horse battery"
ATTACKER, OWNER = "203.0.113.9", "198.51.100.7"


@pytest.fixture(scope="module")
def accounts() -> dict[str, AccountEntry]:
    return {"admin": AccountEntry("admin", hash_password(PASSWORD), "admin")}


def refused(gate: SignInGate, name: str, password: str, client: str) -> str:
    with pytest.raises(SignInRefused) as err:
        gate.sign_in(name, password, client)
    return str(err.value)


def test_waits_grow_from_one_second_to_five_minutes():
    assert [wait_after(n, 3) for n in range(3)] == [0.0, 0.0, 0.0]
    assert [wait_after(n, 3) for n in (3, 4, 5, 11, 12, 40)] == [1.0, 2.0, 4.0, 256.0, 300.0, 300.0]


def test_failures_from_one_address_never_keep_the_owner_out_elsewhere(accounts, tmp_path):
    gate = SignInGate(accounts, tmp_path)
    for _ in range(FREE_FAILURES + 2):
        with contextlib.suppress(SignInRefused):
            gate.sign_in("admin", "guess", ATTACKER)
    assert gate.wait_s("admin", ATTACKER) > 0
    assert "Too many failed sign-ins from here" in refused(gate, "admin", PASSWORD, ATTACKER)
    assert gate.wait_s("admin", OWNER) == 0
    assert gate.sign_in("admin", PASSWORD, OWNER).name == "admin"  # the right password, at once
    actions = [e["action"] for e in read_audit(tmp_path)]
    assert any(a.startswith("sign-in refused: throttled") for a in actions)


def test_a_user_who_waits_gets_in_with_the_right_password(accounts, tmp_path):
    gate = SignInGate(accounts, tmp_path)
    sentences = [refused(gate, "admin", "typo", OWNER) for _ in range(FREE_FAILURES)]
    assert sentences[:-1] == ["Wrong name or password."] * (FREE_FAILURES - 1)
    assert sentences[-1] == "Wrong name or password. Wait 1 s before the next try."
    assert 0 < gate.wait_s("admin", OWNER) <= 1
    time.sleep(gate.wait_s("admin", OWNER) + 0.05)
    assert gate.sign_in("admin", PASSWORD, OWNER).is_admin
    assert gate.wait_s("admin", OWNER) == 0  # a success clears the name's count


def test_known_and_unknown_names_are_counted_and_answered_alike(accounts, tmp_path):
    gate = SignInGate(accounts, tmp_path)
    for _ in range(FREE_FAILURES):
        refused(gate, "nobody", "guess", ATTACKER)
    # Each unknown name has a count of its own (no shared count that answers at once for any unknown name) ...
    assert refused(gate, "someone-else", "guess", ATTACKER) == "Wrong name or password."
    assert refused(gate, "admin", "guess", ATTACKER) == "Wrong name or password."
    # ... and a throttled unknown name reads like a throttled real one.
    unknown = refused(gate, "nobody", "guess", ATTACKER)
    for _ in range(FREE_FAILURES):
        with contextlib.suppress(SignInRefused):
            gate.sign_in("admin", "guess", ATTACKER)
    known = refused(gate, "admin", "guess", ATTACKER)
    assert unknown.startswith("Too many failed sign-ins from here") and known.startswith(unknown[:40])


def test_one_address_spraying_many_names_waits_too(accounts, tmp_path):
    gate = SignInGate(accounts, tmp_path)
    for index in range(CLIENT_FREE_FAILURES):
        assert refused(gate, f"name{index}", "guess", ATTACKER).startswith("Wrong name or password.")
    assert gate.wait_s("a-new-name", ATTACKER) > 0
    assert refused(gate, "a-new-name", "guess", ATTACKER).startswith("Too many failed sign-ins from here")
    assert gate.sign_in("admin", PASSWORD, OWNER).name == "admin"
