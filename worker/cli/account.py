"""`terraseg account` and `terraseg admin-password`: web-app accounts, their passwords only as argon2 hashes."""

import argparse
import getpass
import sys

from core.accounts import account_table, hash_password
from core.errors import AppError


def add_account_parsers(verbs: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    account = verbs.add_parser(
        "account",
        help="read a new web-app account's password on stdin and print its table for .streamlit/secrets.toml",
    )
    account.add_argument("name", help="the account's name (lowercase letters, digits, '.', '_', '-')")
    account.add_argument("--admin", action="store_true", help="an admin: sees every job and the admin page")
    verbs.add_parser(
        "admin-password",
        help="read a new password on stdin and print its hash for TERRASEG_ADMIN_PASSWORD_HASH (the account 'admin')",
    )


def read_new_password(prompt: str) -> str:
    """A new password: asked twice on a terminal, one line on a pipe."""
    if sys.stdin.isatty():
        password = getpass.getpass(prompt)
        if getpass.getpass("Again: ") != password:
            raise AppError("The two passwords differ; nothing was changed.")
        return password
    return sys.stdin.readline().rstrip("\n")


def command_admin_password() -> int:
    """Print only the argon2 hash of a new password for the account "admin" (the older form of an account)."""
    print(hash_password(read_new_password("New admin password: ")))
    print(
        "Set it as TERRASEG_ADMIN_PASSWORD_HASH (or admin_password_hash in .streamlit/secrets.toml); the app's "
        "account 'admin' signs in with it.",
        file=sys.stderr,
    )
    return 0


def command_account(name: str, admin: bool) -> int:
    """Print the `[accounts.NAME]` table of a new web-app account (its password only as an argon2 hash)."""
    print(account_table(name, read_new_password(f"Password for {name}: "), admin), end="")
    print(
        "Add it to .streamlit/secrets.toml (or TERRASEG_ACCOUNTS_FILE); the app reads it on the next page load.",
        file=sys.stderr,
    )
    return 0
