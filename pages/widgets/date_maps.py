"""The Results page's maps of each date a job computed, with their class shares."""

from pathlib import Path

import pandas as pd
import streamlit as st

from core.jobs.report import Stats
from core.outputs.export import DATE_MAP_PREFIX
from core.outputs.overlay import read_classes
from pages.widgets.formatting import legend_html, percent
from pages.widgets.overlays import overlay_of, pictures


def cloud_fractions(stats: Stats) -> None:
    """A table: each date's valid share and class shares in the AOI (%)."""
    rows = [
        {"date": d.date, "valid (%)": percent(d.valid_fraction)}
        | {f"{name} (%)": percent(value) for name, value in d.fractions.items()}
        for d in stats.dates
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True)


def date_shares(stats: Stats) -> dict[str, dict[str, float | None]]:
    """Each date's shares (%): valid, then per class."""
    return {
        d.date: {"valid": percent(d.valid_fraction)}
        | {name: percent(value) for name, value in d.fractions.items()}
        for d in stats.dates
    }


def date_maps(outputs: dict[str, Path], fractions: dict[str, dict[str, float | None]]) -> None:
    """Every date the job computed: its map (of the model that judged the dates) and its class shares."""
    maps = {
        name.removeprefix(DATE_MAP_PREFIX).removesuffix(".tif"): path
        for name, path in sorted(outputs.items())
        if name.startswith(DATE_MAP_PREFIX)
    }
    if not maps:
        return
    day = st.selectbox("Date", list(maps), key="date-map")
    picture, facts = st.columns([3, 1])
    [sharp] = pictures(overlay_of(maps[day]).png)
    picture.image(sharp, caption=f"The map of {day}", width="stretch")
    with facts:
        st.html(legend_html(read_classes(maps[day])))
        for name, share in fractions.get(day, {}).items():
            st.caption(f"{name}: {'-' if share is None else f'{share:.1f} %'}")
        st.download_button(
            "This date's map (COG)",
            maps[day].read_bytes,
            file_name=maps[day].name,
            mime="image/tiff",
            key="download-date-map",
            on_click="ignore",
        )
