"""Settings: the only place that reads environment variables (prefix TERRASEG_) or a `.env` file."""

import os
import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)


class Settings(BaseSettings):
    """Everything configurable, read once and passed down as an argument.

    Besides the environment and `.env`, each setting may come from a file named after its variable in lower
    case (`terraseg_redis_password`) in the folder TERRASEG_SECRETS_DIR names: docker compose's secrets, which
    stay out of the process environment that `docker inspect` and /proc show.
    """

    model_config = SettingsConfigDict(env_prefix="TERRASEG_", env_file=".env", extra="forbid", frozen=True)

    redis_url: str = "redis://127.0.0.1:6379/0"
    # Sent to Redis when `redis_url` carries no password of its own (a secret file, not the URL, holds it).
    redis_password: SecretStr | None = None
    secrets_dir: Path | None = None  # read before the other settings: see the class docstring
    cache_dir: Path = Path("cache")
    max_aoi_km2: float = Field(50_000.0, gt=0)
    # A job's grid larger than this many km along a side is mapped in square chunks of this size, by chunk jobs
    # any worker takes (worker/pipelines/chunked.py): a worker's memory follows the chunk, not the area.
    chunk_km: float = Field(25.0, gt=0)
    max_aoi_vertices: int = Field(10_000, gt=3)
    max_label_vertices: int = Field(50_000, gt=3)  # all training label features together
    # The web app's sign-in (core/accounts.py). Accounts are `[accounts.<name>]` tables (password_hash, role) in
    # .streamlit/secrets.toml or in `accounts_file`; `admin_password_hash` is the older form of one account,
    # "admin". Turning sign-in off makes everyone who reaches the app its one user and admin: a desktop only.
    app_sign_in: bool = True
    # Reverse proxies in front of the app that append the visitor's address to X-Forwarded-For (0: none, the app
    # is reached directly). Sign-in throttling counts per visitor address; a header from further out is not
    # trusted, since a visitor can write anything there.
    app_proxy_hops: int = Field(0, ge=0)
    # A signed-in session lasts this long after its last use (a reload, a new tab and a pasted link keep it), in a
    # cookie signed with `app_session_key` (a secret; unset: a key made on first use in <cache>/admin/session.key).
    # Several app processes behind one address share the cache folder, or are given the same key.
    app_session_hours: float = Field(8.0, gt=0)
    app_session_key: SecretStr | None = None
    accounts_file: Path | None = None
    admin_password_hash: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Tiles in model pixels; the overlap is blended with a cosine window so there are no seams.
    tile_overlap_px: int = Field(32, ge=0)
    batch_size: int = Field(4, gt=0)
    torch_threads: int = Field(0, ge=0)  # 0: let torch decide
    # torch.compile the PyTorch models whose cards allow it: faster passes after a compile of tens of seconds per
    # worker and input shape, so worth it on workers that map large areas.
    torch_compile: bool = False
    # GDAL's block cache defaults to 5 % of RAM; a fixed size keeps a worker's memory flat in scene size.
    gdal_cache_mb: int = Field(256, ge=16)
    # Jobs (see worker/): transient errors (network, Redis) are retried this many times with backoff;
    # a job whose worker died is re-queued until it has been started `job_max_attempts` times.
    job_retries: int = Field(3, ge=0)
    job_max_attempts: int = Field(3, ge=1)
    job_timeout_s: int = Field(6 * 3600, gt=0)
    # How often each worker looks for abandoned jobs (and for jobs Redis lost) in the job folders.
    recover_interval_s: float = Field(5.0, gt=0)
    # Run each job in a forked process (isolated: a crash or leak dies with it) or in the worker itself (warm:
    # a few hundred ms less per job). See worker/queue/service.py.
    worker_fork: bool = True
    # The web app accepts `local:DIR` sources only inside these folders (a JSON list); empty: none at all, since
    # a web user must not read the server's files unless the operator says which. The CLI is not limited.
    app_local_roots: tuple[Path, ...] = ()
    # The web app accepts `stac:URL` and `dhus:URL` sources only at or below these URLs (a JSON list); the presets
    # are always accepted. Empty: presets only, so a web user cannot make the server fetch internal addresses.
    app_source_urls: tuple[str, ...] = ()
    # A DHuS account and the one mirror it belongs to (more accounts: `[dhus.<name>]` tables in
    # .streamlit/secrets.toml). The password goes to no other host, and over plain HTTP only when allowed.
    # SecretStr: never shown by repr(), logs or `terraseg` output.
    dhus_user: str | None = None
    dhus_password: SecretStr | None = None
    dhus_url: str = "https://dhr1.cesnet.cz/"  # the cesnet preset
    dhus_allow_http: bool = False
    # Full-product downloads: parallel downloads per source (across the workers of one machine), HTTP tries
    # per file, and how long to wait for a product from the long-term archive, polling at growing intervals.
    download_slots: int = Field(2, ge=1)
    download_attempts: int = Field(6, ge=1)
    download_backoff_s: float = Field(1.0, ge=0)
    http_timeout_s: float = Field(60.0, gt=0)
    lta_poll_s: float = Field(60.0, gt=0)
    lta_timeout_s: float = Field(6 * 3600.0, gt=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        folder = os.environ.get("TERRASEG_SECRETS_DIR")
        files = (SecretsSettingsSource(settings_cls, secrets_dir=folder),) if folder else ()
        return init_settings, env_settings, dotenv_settings, *files

    @model_validator(mode="after")
    def _password_in_url(self) -> "Settings":
        parts = urlsplit(self.redis_url)
        if self.redis_password is not None and parts.password is None:
            secret = quote(self.redis_password.get_secret_value(), safe="")
            netloc = f"{parts.username or ''}:{secret}@{parts.netloc.rpartition('@')[2]}"
            object.__setattr__(self, "redis_url", parts._replace(netloc=netloc).geturl())  # frozen otherwise
        return self


SECRETS_FILES = (Path(".streamlit/secrets.toml"), Path("~/.streamlit/secrets.toml").expanduser())


@dataclass(frozen=True)
class MirrorAccount:
    """An account of one DHuS mirror: sent only to `url`'s scheme, host and port, under its path."""

    name: str
    url: str
    user: str
    password: str = field(repr=False)
    allow_http: bool = False  # plain HTTP only when the operator says so for this mirror

    def serves(self, url: str) -> bool:
        """Whether `url` belongs to this mirror (same scheme, host and port; path below the mirror's)."""
        return url_within(url, self.url)


def url_within(url: str, base: str) -> bool:
    """Whether `url` has `base`'s scheme, host and port and a path at or below `base`'s path."""
    mine, theirs = urlsplit(base), urlsplit(url)
    try:
        if (mine.scheme, mine.hostname, mine.port) != (theirs.scheme, theirs.hostname, theirs.port):
            return False
    except ValueError:  # a port that is not a number
        return False
    root, path = mine.path.rstrip("/"), theirs.path.rstrip("/")
    return path == root or path.startswith(root + "/")


def dhus_accounts(settings: Settings, secrets_files: tuple[Path, ...] = SECRETS_FILES) -> list[MirrorAccount]:
    """Every configured DHuS account: TERRASEG_DHUS_USER/PASSWORD for TERRASEG_DHUS_URL, then each
    `[dhus.<name>]` table (url, user, password, allow_http) of the first Streamlit secrets file that has any.
    A plain `[dhus]` table with user and password (the older form) is an account of its `url`, by default the
    cesnet preset, as the environment's is."""

    accounts = []
    if settings.dhus_user and settings.dhus_password is not None:
        accounts.append(
            MirrorAccount(
                "environment",
                settings.dhus_url,
                settings.dhus_user,
                settings.dhus_password.get_secret_value(),
                settings.dhus_allow_http,
            )
        )
    for path in secrets_files:
        try:
            tables = tomllib.loads(path.read_text()).get("dhus", {})
        except (OSError, tomllib.TOMLDecodeError):
            continue
        named = {name: t for name, t in tables.items() if isinstance(t, dict)}
        if tables.get("user") and tables.get("password"):
            named["dhus"] = {"url": Settings.model_fields["dhus_url"].default} | tables
        found = [
            MirrorAccount(
                name, str(t["url"]), str(t["user"]), str(t["password"]), bool(t.get("allow_http", False))
            )
            for name, t in named.items()
            if t.get("url") and t.get("user") and t.get("password")
        ]
        if found:
            accounts.extend(found)
            break
    return accounts


@dataclass(frozen=True)
class AccountEntry:
    """One configured web-app account: its name, its password's argon2 hash and its role."""

    name: str
    password_hash: str = field(repr=False)
    role: Literal["user", "admin"] = "user"


ACCOUNT_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,39}$")


def account_entries(
    settings: Settings, secrets_files: tuple[Path, ...] = SECRETS_FILES
) -> tuple[dict[str, AccountEntry], list[str]]:
    """The web app's accounts and a sentence for each table that was skipped (a bad name, no hash, an unknown
    role): `[accounts.<name>]` tables of TERRASEG_ACCOUNTS_FILE, then of the first Streamlit secrets file that
    has any; TERRASEG_ADMIN_PASSWORD_HASH (or `admin_password_hash` in a secrets file) is the account "admin"
    unless a table names it."""

    documents = []
    for path in ((settings.accounts_file,) if settings.accounts_file else ()) + secrets_files:
        try:
            documents.append((path, tomllib.loads(path.read_text())))
        except OSError:
            continue
        except tomllib.TOMLDecodeError as err:
            documents.append((path, {"accounts": {}, "__error__": str(err)}))
    found: dict[str, AccountEntry] = {}
    problems: list[str] = []
    legacy = settings.admin_password_hash
    for path, document in documents:
        if "__error__" in document:
            problems.append(
                f"{path.name} is not valid TOML ({document['__error__']}); its accounts are ignored."
            )
            continue
        legacy = legacy or (document.get("admin_password_hash") or None)
        tables = document.get("accounts")
        if not isinstance(tables, dict) or not tables or found:
            continue  # the accounts file first, else the first secrets file with accounts
        for name, table in tables.items():
            role = table.get("role", "user") if isinstance(table, dict) else None
            password_hash = table.get("password_hash") if isinstance(table, dict) else None
            if not ACCOUNT_NAME.match(str(name)):
                problems.append(
                    f"Account {str(name)[:40]!r} in {path.name}: a name is 1-40 lowercase letters, digits, "
                    "'.', '_' or '-'; it was skipped."
                )
            elif not isinstance(password_hash, str) or not password_hash.startswith("$argon2"):
                problems.append(
                    f"Account {name!r} in {path.name} has no argon2 password_hash (`terraseg account {name}` "
                    "makes one); it was skipped."
                )
            elif role not in ("user", "admin"):
                problems.append(
                    f"Account {name!r} in {path.name}: role must be 'user' or 'admin'; it was skipped."
                )
            else:
                found[name] = AccountEntry(name, password_hash, role)
    if isinstance(legacy, str) and legacy and "admin" not in found:
        found["admin"] = AccountEntry("admin", legacy, "admin")
    return found, problems


def dhus_credentials(
    settings: Settings, url: str, secrets_files: tuple[Path, ...] = SECRETS_FILES
) -> tuple[str, str] | None:
    """(user, password) of the account configured for the mirror at `url`, or None: a mirror without its own
    account is searched anonymously, so a password never reaches a host it was not given for. An account
    whose mirror is plain HTTP is used only with `allow_http`."""
    for account in dhus_accounts(settings, secrets_files):
        if account.serves(url) and (url.startswith("https://") or account.allow_http):
            return account.user, account.password
    return None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Read settings once per process (environment, then `.env`, then defaults)."""
    return Settings()
