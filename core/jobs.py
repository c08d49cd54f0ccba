"""The job spec: one validated request, and the hash that keys its cached work."""

import hashlib
import json
from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

import core
from core.errors import DateRangeError, SpecError

TASKS = ("cloud", "landcover", "crop")


class JobSpec(BaseModel):
    """What a user asked for. The AOI is GeoJSON in EPSG:4326 (already parsed and validated by core.aoi)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    aoi: dict[str, Any]
    start: date
    end: date
    task: str = Field(pattern="^(" + "|".join(TASKS) + ")$")
    model_id: str
    sources: tuple[str, ...] = ("sample",)
    selected_date: date | None = None  # None: the least cloudy date
    max_cloud_pct: float | None = Field(None, ge=0, le=100)

    @model_validator(mode="after")
    def _dates_in_order(self) -> "JobSpec":
        if self.end < self.start:
            raise DateRangeError(f"The end date {self.end} is before the start date {self.start}. Swap them.")
        if self.selected_date is not None and not self.start <= self.selected_date <= self.end:
            raise DateRangeError(f"The chosen date {self.selected_date} is outside {self.start}..{self.end}.")
        return self

    def spec_hash(self, model_version: str) -> str:
        """sha256 over AOI, dates, task, model and its version, sources and TerraSeg's version."""
        payload = self.model_dump(mode="json") | {
            "model_version": model_version,
            "code_version": core.__version__,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def parse_date(text: str, what: str) -> date:
    """'YYYY-MM-DD' -> date, or a DateRangeError naming the field."""
    try:
        return date.fromisoformat(text)
    except ValueError as err:
        raise DateRangeError(f"The {what} date {text!r} is not a date in the form YYYY-MM-DD.") from err


def make_spec(**fields: Any) -> JobSpec:
    """Build a JobSpec; pydantic's validation errors become one plain sentence (date order errors pass as is)."""
    try:
        return JobSpec(**fields)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SpecError(f"Invalid job request: {where}: {first['msg']}.") from None
