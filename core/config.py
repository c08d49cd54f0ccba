"""Settings: the only place that reads environment variables (prefix TERRASEG_) or a `.env` file."""

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything configurable, read once and passed down as an argument."""

    model_config = SettingsConfigDict(env_prefix="TERRASEG_", env_file=".env", extra="forbid", frozen=True)

    redis_url: str = "redis://127.0.0.1:6379/0"
    cache_dir: Path = Path("cache")
    max_aoi_km2: float = Field(2500.0, gt=0)
    max_aoi_vertices: int = Field(10_000, gt=3)
    max_label_vertices: int = Field(50_000, gt=3)  # all training label features together
    # The admin page's password, as an argon2 hash (`terraseg admin-password`); None: the admin page is off.
    admin_password_hash: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Tiles in model pixels; the overlap is blended with a cosine window so there are no seams.
    tile_overlap_px: int = Field(32, ge=0)
    batch_size: int = Field(4, gt=0)
    torch_threads: int = Field(0, ge=0)  # 0: let torch decide
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
    # a few hundred ms less per job). See worker/service.py.
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
    import tomllib

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


def admin_password_hash(settings: Settings, secrets_files: tuple[Path, ...] = SECRETS_FILES) -> str | None:
    """The admin password's hash: TERRASEG_ADMIN_PASSWORD_HASH, else `admin_password_hash` in the first
    Streamlit secrets file that has it; None when neither is set (the admin page then offers nothing)."""
    import tomllib

    if settings.admin_password_hash:
        return settings.admin_password_hash
    for path in secrets_files:
        try:
            value = tomllib.loads(path.read_text()).get("admin_password_hash")
        except (OSError, tomllib.TOMLDecodeError):
            continue
        if isinstance(value, str) and value:
            return value
    return None


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
