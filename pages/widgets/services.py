"""The app's settings and its cached clients: jobs, training runs and the health of Redis and the workers."""

from pathlib import Path

import streamlit as st

from core.config import Settings, get_settings
from worker.queue.client import Health, JobClient, TrainingClient


@st.cache_resource(show_spinner=False)
def _client(redis_url: str, cache_dir: str) -> JobClient:
    return JobClient(Settings(redis_url=redis_url, cache_dir=Path(cache_dir)))


@st.cache_resource(show_spinner=False)
def _training_client(redis_url: str, cache_dir: str) -> TrainingClient:
    return TrainingClient(Settings(redis_url=redis_url, cache_dir=Path(cache_dir)))


def training_client() -> TrainingClient:
    """The training-run client (the admin page's), shared like `client()`."""
    current = settings()
    return _training_client(current.redis_url, str(current.cache_dir))


def app_source(name: str, settings: Settings) -> None:
    """What the web app accepts as a source: the operator's limits first (nothing is read before), then syntax."""
    from core.sources import check_app_source, parse_source  # rasterio: kept off the sign-in screen

    check_app_source(name, settings)
    parse_source(name, settings)


def settings() -> Settings:
    """The app's settings (environment variables `TERRASEG_*`, then `.env`)."""
    return get_settings()


def client() -> JobClient:
    """One job client per Redis URL and cache folder, shared by every session of this app process."""
    current = settings()
    return _client(current.redis_url, str(current.cache_dir))


def health() -> Health:
    """Redis and workers as the sidebar and pages report them (cached for 2 s: every page asks)."""
    return _health(settings().redis_url, str(settings().cache_dir))


@st.cache_data(ttl=2, show_spinner=False)
def _health(redis_url: str, cache_dir: str) -> Health:
    return _client(redis_url, cache_dir).health()
