"""Settings: the only place that reads environment variables (prefix TERRASEG_) or a `.env` file."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything configurable, read once and passed down as an argument."""

    model_config = SettingsConfigDict(env_prefix="TERRASEG_", env_file=".env", extra="forbid", frozen=True)

    redis_url: str = "redis://127.0.0.1:6379/0"
    cache_dir: Path = Path("cache")
    max_aoi_km2: float = Field(2500.0, gt=0)
    max_aoi_vertices: int = Field(10_000, gt=3)
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
    # The web app accepts `local:DIR` sources only inside these folders (a JSON list); empty: any folder, which
    # suits a single-user install but not a shared server, where users must not read each other's files.
    app_local_roots: tuple[Path, ...] = ()
    # DHuS mirrors (cesnet, dhus:URL): the account; also read from `[dhus]` in .streamlit/secrets.toml.
    # SecretStr: never shown by repr(), logs or `terraseg` output.
    dhus_user: str | None = None
    dhus_password: SecretStr | None = None
    # Full-product downloads: parallel downloads per source (across the workers of one machine), HTTP tries
    # per file, and how long to wait for a product from the long-term archive, polling at growing intervals.
    download_slots: int = Field(2, ge=1)
    download_attempts: int = Field(6, ge=1)
    download_backoff_s: float = Field(1.0, ge=0)
    http_timeout_s: float = Field(60.0, gt=0)
    lta_poll_s: float = Field(60.0, gt=0)
    lta_timeout_s: float = Field(6 * 3600.0, gt=0)


SECRETS_FILES = (Path(".streamlit/secrets.toml"), Path("~/.streamlit/secrets.toml").expanduser())


def dhus_credentials(
    settings: Settings, secrets_files: tuple[Path, ...] = SECRETS_FILES
) -> tuple[str, str] | None:
    """(user, password) for DHuS mirrors: TERRASEG_DHUS_USER/PASSWORD, else `[dhus] user/password` in the first
    Streamlit secrets file that has them; None when neither is set (searches are then anonymous)."""
    if settings.dhus_user and settings.dhus_password is not None:
        return settings.dhus_user, settings.dhus_password.get_secret_value()
    import tomllib

    for path in secrets_files:
        try:
            section = tomllib.loads(path.read_text()).get("dhus", {})
        except (OSError, tomllib.TOMLDecodeError):
            continue
        if section.get("user") and section.get("password"):
            return str(section["user"]), str(section["password"])
    return None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Read settings once per process (environment, then `.env`, then defaults)."""
    return Settings()
