"""The New job page's pre-flight estimate: the request checked once as the CLI checks it, a real search of the
sources, and what the job would take (scenes, dates, download, run time), with the date to map."""

import streamlit as st

from core.config import Settings
from core.errors import AppError
from core.jobs.diskspace import Folder, space_warning
from core.jobs.preflight import (
    Estimate,
    estimate_composite_job,
    estimate_cube_job,
    estimate_job,
    find_radar_scenes,
    find_scenes,
    format_duration,
)
from core.jobs.request import JobRequest, JobSpec, build_spec
from core.mapping.composites import check_composite_scenes, choose_radar, season_months, season_start
from core.mapping.presto_inputs import PRESTO_BUILDER
from core.sources.monthly_cube import ready_cube
from models.catalogue import Catalogue, catalogue
from pages.widgets.services import app_source


@st.cache_data(ttl=600, show_spinner="Searching the sources...")
def preflight(spec: JobSpec, _settings: Settings) -> Estimate:
    """A real search and the estimate. Errors are raised, so Streamlit caches only successful answers."""
    aoi = spec.aoi.to_aoi()
    models = catalogue(_settings.cache_dir).job_models(spec.task, spec.model_id)
    if models.model.builder == PRESTO_BUILDER:  # a crop model reads 12 monthly composites
        cube = ready_cube(spec.sources, spec.model_id, spec.start, spec.end)  # the worker's own decision
        if cube is not None:
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


def preflight_ui(
    request: JobRequest, settings: Settings, models: Catalogue, shown: set[str]
) -> JobSpec | None:
    """The request's one check (as the CLI's), then a real search and the estimate; the spec to submit, or None
    with the reason said (unless it is among the errors `shown` already)."""
    try:
        spec = build_spec(request, settings, models, lambda name: app_source(name, settings))
        answer = preflight(spec, settings)
    except AppError as err:
        if str(err) not in shown:
            st.error(str(err))
        return None
    except OSError as err:  # e.g. a local folder that cannot be read
        st.error(f"The sources cannot be searched: {err.strerror or err}.")
        return None
    return estimate_panel(spec, answer, settings)


def estimate_panel(spec: JobSpec, answer: Estimate, settings: Settings) -> JobSpec:
    """What the job would take, the date to map (the spec with it), and the estimate's caveats."""
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
    return spec
