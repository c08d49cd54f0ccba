"""Where imagery comes from. A source is named `sample` (the embedded demo) or `local:DIR`."""

import logging
from datetime import date
from pathlib import Path

from shapely.geometry.base import BaseGeometry

from core.errors import AppError, NoScenesFound, SourceError
from core.sources.local import LocalSource
from core.types import Scene

log = logging.getLogger(__name__)

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample"
SOURCE_HELP = {
    "sample": "the embedded offline demo: 5 Sentinel-2 L1C dates over 1 km2 in Slovenia (2015-07-11..09-09)",
    "local:DIR": "a folder of Sentinel-2 SAFE products (zipped or not) and GeoTIFF/COG scenes (see README)",
}


def parse_source(name: str) -> LocalSource:
    """A source name from the CLI or a job spec -> a source object."""
    if name == "sample":
        return LocalSource(SAMPLE_DIR, "sample")
    if name.startswith("local:") and len(name) > len("local:"):
        return LocalSource(Path(name.removeprefix("local:")).expanduser(), name)
    raise SourceError(f"Unknown source {name!r}. Use 'sample' or 'local:DIR' (run 'terraseg sources').")


def search_scenes(
    source_names: tuple[str, ...] | list[str], aoi: BaseGeometry, start: date, end: date, sensor: str = "S2"
) -> list[Scene]:
    """Search the sources in priority order; the first one with matching scenes serves the job.

    A source that fails (missing folder, no scenes) is logged and the next one is tried; if all fail, the
    error says what each one answered.
    """
    answers = []
    for name in source_names:
        try:
            scenes = parse_source(name).search(aoi, start, end, sensor)
        except AppError as err:
            log.warning("Source %s: %s", name, err)
            answers.append(str(err))
            continue
        log.info("Source %s: %d scenes", name, len(scenes))
        return scenes
    if len(answers) == 1:
        raise NoScenesFound(answers[0])
    raise NoScenesFound("No source has matching scenes: " + " | ".join(answers))
