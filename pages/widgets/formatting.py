"""Text and HTML the pages show: progress lines, elapsed and local times, percentages, held-out scores and
class legends."""

import html
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import streamlit as st

from core.types import ClassInfo, ModelCard


def progress_text(stage: str, message: str) -> str:
    """The line above a progress bar: the stage and the message, without saying the stage twice (messages often
    start with it: "Planning: 0.93 km2 ...")."""
    if stage and message.startswith(stage):
        return message
    return " · ".join(t for t in (stage, message) if t)


def legend_html(classes: tuple[ClassInfo, ...]) -> str:
    """A legend (colour swatch and name per class) as HTML for st.html."""
    rows = "".join(
        f'<div style="display:flex;align-items:center;gap:6px;margin:2px 0">'
        f'<span style="width:14px;height:14px;background:{html.escape(c.color)};border:1px solid #333;'
        f'display:inline-block"></span>{c.value} &middot; {html.escape(c.name)}</div>'
        for c in classes
    )
    return f'<div class="terraseg-legend"><strong>Legend</strong>{rows}</div>'


def elapsed_s(started_at: str | None, ended_at: str | None) -> float | None:
    """Seconds between two ISO times (to now while running); None before the start."""
    if not started_at:
        return None
    end = datetime.fromisoformat(ended_at) if ended_at else datetime.now(UTC)
    return max(0.0, (end - datetime.fromisoformat(started_at)).total_seconds())


def local_time(stamp: str | None, zone_name: str | None = None, now: datetime | None = None) -> str:
    """An ISO time as the user's clock shows it: 'today 14:46', 'yesterday 09:05', else '2026-11-29 18:02'.
    `zone_name` defaults to the browser's time zone (UTC when the browser does not say)."""
    if not stamp:
        return "-"
    if zone_name is None:
        zone_name = st.context.timezone or "UTC"
    try:
        zone: tzinfo = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        zone = UTC
    when = datetime.fromisoformat(stamp).astimezone(zone)
    today = (now or datetime.now(UTC)).astimezone(zone).date()
    day = {today: "today", today - timedelta(days=1): "yesterday"}.get(when.date(), when.date().isoformat())
    return f"{day} {when:%H:%M}"


def percent(fraction: float | None) -> float | None:
    """A 0-1 fraction as a percentage; None (a date without valid pixels in the AOI) stays empty."""
    return None if fraction is None else round(100 * fraction, 1)


def held_out_sentence(card: ModelCard) -> str:
    """' Held-out scores: OA 0.77, macro F1 0.74 (a RandomForest on the raw bands: 0.77, 0.67).' for a model whose
    card records scores on held-out samples; '' otherwise."""
    held_out = card.metrics.get("held_out")
    if not isinstance(held_out, dict) or "overall_accuracy" not in held_out:
        return ""
    sentence = f" Held-out scores: OA {held_out['overall_accuracy']:.2f}, macro F1 {held_out['macro_f1']:.2f}"
    anchor = card.metrics.get("random_forest_anchor")
    if isinstance(anchor, dict) and "overall_accuracy" in anchor:
        sentence += (
            f" (a RandomForest on the raw bands: {anchor['overall_accuracy']:.2f}, {anchor['macro_f1']:.2f})"
        )
    return sentence + "."
