"""The New job page's request fields: the dates and cloud limit, the task and its model (with what the model is
and whether it can run), and the sources."""

from datetime import date, timedelta

import streamlit as st

from core.accounts import Account
from core.config import Settings
from core.errors import AppError, DateRangeError
from core.jobs.request import check_dates
from core.mapping.presto_inputs import PRESTO_BUILDER
from core.sources import SAMPLE_CUBE_SOURCE, SOURCE_HELP, check_app_source, cube_file, is_cube_source
from core.sources.monthly_cube import open_cube
from core.types import ModelCard
from models.catalogue import Catalogue
from pages.widgets.footprints import scene_footprints
from pages.widgets.formatting import held_out_sentence
from pages.widgets.services import app_source, settings

SAMPLE_DATES = (date(2015, 7, 1), date(2015, 9, 30))
# The fields' keys: the New job map reads their last values to outline the scenes they choose.
START_KEY, END_KEY, SOURCES_KEY, TASK_KEY = "start_date", "end_date", "sources_text", "task"
# The embedded crop sample's season (core/sample/crop): a crop job chosen on the sample gets it, and back.
CROP_SAMPLE_DATES = (date(2020, 11, 1), date(2021, 10, 31))


def sample_for_task() -> None:
    """When the task changes while an embedded sample is the source, the sample that task reads, with its dates:
    the monthly cube for crop models, the L1C scenes for the others (so every task can be tried as it ships)."""
    crop = st.session_state.get(TASK_KEY) == "crop"
    sources = str(st.session_state.get(SOURCES_KEY, "sample")).strip()
    if crop and sources == "sample":
        st.session_state[SOURCES_KEY] = SAMPLE_CUBE_SOURCE
        st.session_state[START_KEY], st.session_state[END_KEY] = CROP_SAMPLE_DATES
    elif not crop and sources == SAMPLE_CUBE_SOURCE:
        st.session_state[SOURCES_KEY] = "sample"
        st.session_state[START_KEY], st.session_state[END_KEY] = SAMPLE_DATES


def last_full_month(today: date) -> tuple[date, date]:
    """The first and last day of the month before `today`'s."""
    last = today.replace(day=1) - timedelta(days=1)
    return last.replace(day=1), last


def dates_for_source() -> None:
    """When the sources change, dates still at a default follow them: an embedded sample's own dates for the
    sample, the last full month for any other source. Dates the user chose stay."""
    sources = str(st.session_state.get(SOURCES_KEY, "")).strip()
    chosen = (st.session_state.get(START_KEY), st.session_state.get(END_KEY))
    recent = last_full_month(date.today())
    if chosen not in (SAMPLE_DATES, CROP_SAMPLE_DATES, recent):
        return
    wanted = (
        {"sample": SAMPLE_DATES, SAMPLE_CUBE_SOURCE: CROP_SAMPLE_DATES}.get(sources)
        or cube_season(sources)
        or scenes_span(sources)
    )
    st.session_state[START_KEY], st.session_state[END_KEY] = wanted or recent


def scenes_span(sources: str) -> tuple[date, date] | None:
    """The first and last date of the scenes in the sources on this machine (`local:` folders), if any."""
    names = tuple(s.strip() for s in sources.split(",") if s.strip())
    dates = sorted(f.date_iso for f in scene_footprints(names, settings()))
    return (date.fromisoformat(dates[0]), date.fromisoformat(dates[-1])) if dates else None


def cube_season(source: str) -> tuple[date, date] | None:
    """A ready cube's 12 months (first day of the first, last day of the last), if `source` is a cube this app
    may read; None otherwise."""
    if not is_cube_source(source):
        return None
    try:
        check_app_source(source, settings())
        months = open_cube(cube_file(source)).months
    except AppError:
        return None
    after = months[-1].replace(day=28) + timedelta(days=4)
    return months[0], after - timedelta(days=after.day)
# Sentinel-2A's first image; Streamlit's own default range (ten years either side of the shown date) ended in 2025.
SENTINEL2_FIRST_DAY = date(2015, 6, 23)


def dates_ui() -> tuple[object, object, int, set[str]]:
    """The start and end dates, the maximum scene cloud cover (%), and the dates' error said beside them (not to
    be said again below)."""
    today = date.today()
    start = st.date_input(
        "Start date", SAMPLE_DATES[0], SENTINEL2_FIRST_DAY, today, format="YYYY-MM-DD", key=START_KEY
    )
    end = st.date_input(
        "End date", SAMPLE_DATES[1], SENTINEL2_FIRST_DAY, today, format="YYYY-MM-DD", key=END_KEY
    )
    shown: set[str] = set()
    try:
        check_dates(start if isinstance(start, date) else "", end if isinstance(end, date) else "", today)
    except DateRangeError as err:
        st.error(str(err))
        shown.add(str(err))
    # The date field hands a typed date to the app when it loses focus (Streamlit's widget): Submit does that
    # first, so the date shown is the one submitted; the check below follows once the field is left.
    st.caption("The scene check below follows a typed date once you press Tab or Enter, or click elsewhere.")
    max_cloud_pct = st.slider(
        "Maximum scene cloud cover (%)",
        0,
        100,
        100,
        help="Scenes whose metadata says more cloud are skipped; 100 keeps every scene.",
    )
    return start, end, max_cloud_pct, shown


def model_ui(models: Catalogue, account: Account) -> tuple[str, ModelCard, set[str]]:
    """The task, its model and what the model is; and the errors said here (not to be said again below)."""
    tasks = models.runnable_tasks()
    task = st.selectbox(
        "Task", tasks, index=tasks.index("cloud") if "cloud" in tasks else 0, key=TASK_KEY, on_change=sample_for_task
    )
    model_ids = [c.id for c in models.all() if c.task == task and c.output == "map"]
    model_id = st.selectbox(
        "Model",
        model_ids,
        index=next((i for i, m in enumerate(model_ids) if models.get(m).default_for_task), 0),
        format_func=lambda m: m + ("" if models.get(m).status != "untrained" else " (no trained weights)"),
    )
    card = models.get(model_id)
    st.caption(
        f"{card.description}  \nClasses: {', '.join(c.name for c in card.classes)}.  \n"
        f"Weights: {card.status}; licence {card.licence}.{held_out_sentence(card)}"
    )
    shown = missing_weights(models, card, account)
    if card.builder == PRESTO_BUILDER:
        st.caption(
            "This model reads 12 monthly composites, the season ending with the end date's month: made from the "
            "sources' Sentinel-2 L2A scenes (clouds masked) and Sentinel-1 GRD scenes where a source has them "
            "(a DHuS mirror or a folder; weather and elevation are not made from scenes yet and are masked), or "
            "a ready monthly cube of S2, S1, DEM and weather (an openEO netCDF) given as the source "
            "cube:FILE.nc, inside a folder the operator allows."
        )
    return task, card, shown


def missing_weights(models: Catalogue, card: ModelCard, account: Account) -> set[str]:
    """Say so when the model cannot run yet, and what a user can do about it; the error said (or none)."""
    try:
        models.require_weights(card.id)
    except AppError as err:
        # The command line's sentence names server files; the page says what a user can do about it here.
        sentence = (
            f"Model {card.id} has no trained weights yet; import published weights or train it first."
            if card.status == "untrained"
            else f"Model {card.id} cannot run yet: its card does not say how to normalise its input."
        )
        st.error(sentence)
        if account.is_admin:
            st.page_link(
                "pages/admin.py", label="Train a model on the Admin page", icon=":material/model_training:"
            )
        else:
            st.caption("An admin can train it on the Admin page (Train a model); ask yours.")
        return {str(err)}
    return set()


def sources_ui(settings: Settings) -> tuple[tuple[str, ...], set[str]]:
    """The sources in priority order, each checked at once (before an area is drawn; the request's own check says
    the same); and the errors said here."""
    sources_text = st.text_input(
        "Sources, in priority order (comma-separated)",
        "sample",
        help="; ".join(f"{name}: {text}" for name, text in SOURCE_HELP.items()),
        key=SOURCES_KEY,
        on_change=dates_for_source,
    )
    sources = tuple(s.strip() for s in sources_text.split(",") if s.strip())
    shown: set[str] = set()
    for name in sources:
        try:
            app_source(name, settings)
        except AppError as err:
            shown.add(str(err))
            st.error(str(err))
    return sources, shown
