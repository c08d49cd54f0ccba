"""New job: draw, upload or type the area; choose dates, task, model and sources; see the estimate; submit."""

from datetime import date

import streamlit as st

from core.composites import check_composite_scenes, choose_radar, season_months, season_start
from core.config import Settings
from core.diskspace import Folder, space_warning
from core.errors import AppError
from core.jobs import JobRequest, JobSpec, build_spec
from core.monthly_cube import CUBE_PREFIX, check_season, cube_path, open_cube
from core.preflight import (
    Estimate,
    estimate_composite_job,
    estimate_cube_job,
    estimate_job,
    find_radar_scenes,
    find_scenes,
    format_duration,
)
from core.presto_inputs import PRESTO_BUILDER
from core.sources import SOURCE_HELP
from models.catalogue import catalogue
from pages import ui
from pages.aoi_input import area_of_interest

SAMPLE_DATES = (date(2015, 7, 1), date(2015, 9, 30))
# Sentinel-2A's first image; Streamlit's own default range (ten years either side of the shown date) ended in 2025.
SENTINEL2_FIRST_DAY = date(2015, 6, 23)


@st.cache_data(ttl=600, show_spinner="Searching the sources...")
def preflight(spec: JobSpec, _settings: Settings) -> Estimate:
    """A real search and the estimate. Errors are raised, so Streamlit caches only successful answers."""
    aoi = spec.aoi.to_aoi()
    models = catalogue(_settings.cache_dir).job_models(spec.task, spec.model_id)
    if models.model.builder == PRESTO_BUILDER:  # a crop model reads 12 monthly composites
        if any(s.startswith(CUBE_PREFIX) for s in spec.sources):
            cube = open_cube(cube_path(spec.sources, spec.model_id))
            check_season(cube, spec.start, spec.end)
            return estimate_cube_job(aoi, cube, models.model)
        # composites of the season's L2A scenes (the cloud model on every date) and Sentinel-1, Presto once
        first_day = season_start(spec.start, spec.end)
        scenes = find_scenes(
            spec.sources,
            aoi.geometry,
            first_day,
            spec.end,
            spec.max_cloud_pct,
            _settings,
            models.trained_levels,
        )
        check_composite_scenes(scenes, spec.sources)
        radar, note = find_radar_scenes(spec.sources, aoi.geometry, first_day, spec.end, _settings)
        cloud = catalogue(_settings.cache_dir).job_models("cloud", None).model
        return estimate_composite_job(
            aoi, scenes, choose_radar(radar, season_months(spec.end)), note, models.model, cloud
        )
    scenes = find_scenes(
        spec.sources, aoi.geometry, spec.start, spec.end, spec.max_cloud_pct, _settings, models.trained_levels
    )
    return estimate_job(aoi, scenes, models.model, models.cloud_model)


account = ui.account()
st.title("New job")
settings = ui.settings()
models = catalogue(settings.cache_dir)
aoi = area_of_interest(settings)

# -- request ----------------------------------------------------------------------------------------------
left, right = st.columns(2)
with left:
    today = date.today()
    start = st.date_input("Start date", SAMPLE_DATES[0], SENTINEL2_FIRST_DAY, today, format="YYYY-MM-DD")
    end = st.date_input("End date", SAMPLE_DATES[1], SENTINEL2_FIRST_DAY, today, format="YYYY-MM-DD")
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
with right:
    tasks = models.runnable_tasks()
    task = st.selectbox("Task", tasks, index=tasks.index("cloud") if "cloud" in tasks else 0)
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
        f"Weights: {card.status}; licence {card.licence}.{ui.held_out_sentence(card)}"
    )
    shown: set[str] = set()  # errors said next to their field, not again below
    try:
        models.require_weights(card.id)
    except AppError as err:
        # The command line's sentence names server files; the page says what a user can do about it here.
        sentence = (
            f"Model {card.id} has no trained weights yet; import published weights or train it first."
            if card.status == "untrained"
            else f"Model {card.id} cannot run yet: its card does not say how to normalise its input."
        )
        shown.add(str(err))
        st.error(sentence)
        if account.is_admin:
            st.page_link(
                "pages/admin.py", label="Train a model on the Admin page", icon=":material/model_training:"
            )
        else:
            st.caption("An admin can train it on the Admin page (Train a model); ask yours.")
    if card.builder == PRESTO_BUILDER:
        st.caption(
            "This model reads 12 monthly composites, the season ending with the end date's month: made from the "
            "sources' Sentinel-2 L2A scenes (clouds masked) and Sentinel-1 GRD scenes where a source has them "
            "(a DHuS mirror or a folder; weather and elevation are not made from scenes yet and are masked), or "
            "a ready monthly cube of S2, S1, DEM and weather (an openEO netCDF) given as the source "
            "cube:FILE.nc, inside a folder the operator allows."
        )
    sources_text = st.text_input(
        "Sources, in priority order (comma-separated)",
        "sample",
        help="; ".join(f"{name}: {text}" for name, text in SOURCE_HELP.items()),
    )
    sources = tuple(s.strip() for s in sources_text.split(",") if s.strip())
    for name in sources:  # at once, before an area is drawn; the request's own check says the same
        try:
            ui.app_source(name, settings)
        except AppError as err:
            shown.add(str(err))
            st.error(str(err))

# -- pre-flight and submit --------------------------------------------------------------------------------
st.subheader("Pre-flight estimate")
spec: JobSpec | None = None
if aoi is None:
    st.caption("The estimate appears once the area, dates, model and sources are valid.")
else:
    request = JobRequest(
        aoi=aoi,
        start=start if isinstance(start, date) else "",
        end=end if isinstance(end, date) else "",
        task=task,
        model_id=card.id,
        sources=sources,
        max_cloud_pct=None if max_cloud_pct >= 100 else float(max_cloud_pct),
    )
    try:  # the one check of the whole request, as the CLI's; then a real search
        spec = build_spec(request, settings, models, lambda name: ui.app_source(name, settings))
        answer = preflight(spec, settings)
    except AppError as err:
        if str(err) not in shown:
            st.error(str(err))
        spec = None
    except OSError as err:  # e.g. a local folder that cannot be read
        st.error(f"The sources cannot be searched: {err.strerror or err}.")
        spec = None
    if spec is not None:
        cols = st.columns(4)
        cube = bool(answer.inputs_note)  # a crop model's monthly cube: composites, not scenes
        found = (
            f"{answer.scenes - answer.radar_scenes} + {answer.radar_scenes} S1"
            if answer.radar_scenes
            else answer.scenes
        )
        cols[0].metric("Monthly composites" if cube else "Scenes found", found)
        cols[1].metric("Months" if cube else "Dates", answer.dates)
        cols[2].metric("Download", f"{answer.download_mb:,.0f} MB")
        cols[3].metric("Expected run time", format_duration(answer.run_s))
        if answer.scene_dates:  # the date to map, from the dates found (as --date in the CLI)
            clearest = "the clearest date (chosen by the cloud model)"
            chosen = st.selectbox("Date to map", [clearest, *answer.scene_dates])
            if chosen != clearest:
                spec = JobSpec.model_validate(spec.model_dump() | {"selected_date": chosen})
        st.caption(answer.summary() + " Estimates only.")
        for caveat in answer.caveats:
            st.warning(caveat)
        if warning := answer.coverage_warning():
            st.warning(warning)
        cache = Folder(settings.cache_dir, "the workers' cache folder")  # queued jobs publish there too
        if warning := space_warning(answer.cache_mb + answer.output_mb, cache):
            st.warning(warning)

job_name = st.text_input("Job name (optional)", max_chars=80, placeholder="e.g. Ljubljana, July clouds")
if st.button("Submit", type="primary", disabled=spec is None) and spec is not None:
    try:
        st.session_state["submitted_job"] = ui.client().submit(spec, owner=account.name, name=job_name)
    except AppError as err:
        st.error(str(err))
if job_id := st.session_state.get("submitted_job"):
    st.success(f"Job {job_id} submitted.")
    st.page_link("pages/jobs.py", label="Follow it on the Jobs page", icon=":material/list:")
