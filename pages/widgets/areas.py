"""The Results page's areas: per class (table and bar chart), of cropland, and per feature of the AOI."""

from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st
from shapely.geometry import shape

from core.jobs.report import Stats
from core.outputs.vectors import zonal_areas


def class_areas(stats: Stats) -> None:
    """The area of each class as a table and as bars in the model's class colours."""
    areas = pd.DataFrame([c.model_dump() for c in stats.classes])[
        ["value", "name", "area_ha", "percent", "pixels"]
    ]
    areas.columns = ["value", "class", "area (ha)", "share (%)", "pixels"]
    st.dataframe(areas, hide_index=True)
    st.altair_chart(
        alt.Chart(areas.assign(colour=[c.color for c in stats.classes]))
        .mark_bar()
        .encode(
            x=alt.X("class:N", sort=None, title=None),
            y=alt.Y("area (ha):Q"),
            color=alt.Color("colour:N", scale=None, legend=None),  # the model's class colours
            tooltip=["class", "area (ha)", "share (%)"],
        )
    )


def cropland_areas(stats: Stats) -> None:
    """A crop job's cropland and non-cropland areas, from its cropland model."""
    cropland = pd.DataFrame([c.model_dump() for c in stats.cropland or []])[
        ["name", "area_ha", "percent", "pixels"]
    ]
    cropland.columns = ["class", "area (ha)", "share (%)", "pixels"]
    st.dataframe(cropland, hide_index=True)
    st.caption(f"From {stats.cropland_model_id} on the same monthly composites (cropland.tif).")


def zone_areas(classes_path: Path, aoi: dict[str, object] | None) -> None:
    """Class areas per feature of the AOI, when it has several (an upload of many fields, say)."""
    geometry = shape(aoi) if aoi is not None else None
    parts = list(getattr(geometry, "geoms", []))
    if len(parts) < 2:
        return
    st.subheader("Area per class in each feature of the area")
    rows = zonal_areas(classes_path, [(f"feature {i}", part) for i, part in enumerate(parts, start=1)])
    table = pd.DataFrame(
        [
            {
                "feature": r.zone,
                "class": r.name,
                "area (ha)": r.area_ha,
                "share (%)": r.percent,
                "pixels": r.pixels,
            }
            for r in rows
        ]
    )
    st.dataframe(table, hide_index=True)
    st.download_button(
        "Areas per feature (CSV)",
        table.to_csv(index=False),
        file_name="zonal_stats.csv",
        mime="text/csv",
        key="download-zonal",
        on_click="ignore",
    )
