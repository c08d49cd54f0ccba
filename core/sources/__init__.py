"""Where imagery comes from: the embedded `sample`, `local:DIR`, STAC and DHuS presets, `stac:URL`, `dhus:URL`."""

import logging
from datetime import date
from pathlib import Path

from shapely.geometry.base import BaseGeometry

from core.config import Settings, url_within
from core.errors import AppError, NoScenesFound, SourceError, SourceUnavailable
from core.sources.dhus import PRESETS as DHUS_PRESETS
from core.sources.dhus import DhusSource
from core.sources.local import LocalSource
from core.sources.protocol import Source
from core.sources.stac import PRESETS, StacSource
from core.types import Scene

log = logging.getLogger(__name__)

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample"
# The embedded crop sample: a ready monthly cube (core/sample/crop), usable with no operator setting.
SAMPLE_CUBE_SOURCE = "sample-crop"
SAMPLE_CUBE_FILE = SAMPLE_DIR / "crop" / "monthly_cube.nc"
CUBE_PREFIX = "cube:"
SOURCE_HELP = {
    "sample": "the embedded offline demo: 5 Sentinel-2 L1C dates over 1 km2 in Slovenia (2015-07-11..09-09)",
    SAMPLE_CUBE_SOURCE: "the embedded crop sample: a monthly cube over 1 km2 in Belgium (2020-11..2021-10)",
    "local:DIR": "a folder of Sentinel-1/2 SAFE products (zipped or not) and GeoTIFF/COG scenes (see README)",
    "earth-search": "Element 84's Earth Search STAC (Sentinel-2 L2A and L1C COGs on AWS; no account)",
    "cdse": "Copernicus Data Space Ecosystem STAC",
    "planetary-computer": "Microsoft Planetary Computer STAC (Sentinel-2 L2A)",
    "stac:URL": "any STAC API whose items carry eo:bands (and raster:bands) metadata",
    "cesnet": "CESNET's DHuS mirror (Sentinel-1 GRD, Sentinel-2 L1C/L2A SAFE products; account needed)",
    "dhus:URL": "any Copernicus DHuS API (OpenSearch + OData), e.g. dhus:https://dhr1.cesnet.cz/",
    "cube:FILE.nc": "a ready monthly cube (openEO netCDF, 12 months of S2 L2A, S1, DEM, weather) for crop models",
}


class CubeSource:
    """A ready monthly cube (`cube:FILE.nc`): read whole by a crop job (worker.pipelines.crop_job), never searched
    for scenes."""

    download_slots = 1

    def __init__(self, path: Path, name: str) -> None:
        if path.suffix.lower() not in (".nc", ".nc4", ".netcdf"):
            raise SourceError(f"A cube source is a netCDF file (.nc); {path.name} is not.")
        self.path, self.name = path, name

    def search(self, *args: object, **kwargs: object) -> list[Scene]:
        raise SourceError(
            f"{self.name} is a monthly cube: only Presto crop models read it (terraseg run --task crop). Other "
            "models need scenes: use sample, local:DIR or a catalogue."
        )

    def fetch(self, scene: Scene, *args: object, **kwargs: object) -> Scene:
        raise SourceError(f"{self.name} holds no scenes.")


def is_remote_source(name: str) -> bool:
    """Whether a source's scenes come over the network (catalogues, mirrors), not from this machine's disk."""
    return not (name in ("sample", SAMPLE_CUBE_SOURCE) or name.startswith(("local:", CUBE_PREFIX)))


def is_cube_source(name: str) -> bool:
    """Whether a source is a ready monthly cube (`cube:FILE.nc` or the embedded `sample-crop`)."""
    return name == SAMPLE_CUBE_SOURCE or name.startswith(CUBE_PREFIX)


def cube_file(name: str) -> Path:
    """The netCDF file of a cube source (see is_cube_source)."""
    return SAMPLE_CUBE_FILE if name == SAMPLE_CUBE_SOURCE else Path(name.removeprefix(CUBE_PREFIX)).expanduser()


def parse_source(name: str, settings: Settings) -> Source:
    """A source name from the CLI or a job spec -> a source object."""
    if name == "sample":
        return LocalSource(SAMPLE_DIR, "sample")
    if name.startswith("local:") and len(name) > len("local:"):
        return LocalSource(Path(name.removeprefix("local:")).expanduser(), name)
    if name == SAMPLE_CUBE_SOURCE or (name.startswith(CUBE_PREFIX) and len(name) > len(CUBE_PREFIX)):
        return CubeSource(cube_file(name), name)
    if name in PRESETS:
        preset = PRESETS[name]
        return StacSource(preset.url, name, preset.collections, sign_url=preset.sign_url)
    if name.startswith(("stac:http://", "stac:https://")):
        return StacSource(name.removeprefix("stac:"), name)
    if name in DHUS_PRESETS:
        return DhusSource(DHUS_PRESETS[name], name, settings)
    if name.startswith(("dhus:http://", "dhus:https://")):
        return DhusSource(name.removeprefix("dhus:"), name, settings)
    raise SourceError(
        f"Unknown source {name!r}. Use 'sample', '{SAMPLE_CUBE_SOURCE}', 'local:DIR', a STAC preset "
        f"({', '.join(PRESETS)}), "
        f"a DHuS preset ({', '.join(DHUS_PRESETS)}), 'stac:https://...', 'dhus:https://...' or 'cube:FILE.nc' "
        "(run 'terraseg sources')."
    )


def check_local_roots(name: str, roots: tuple[Path, ...] | list[Path]) -> None:
    """Refuse a `local:DIR` or `cube:FILE` source outside `roots` (no roots: none at all); other sources pass.

    For the web app, before anything else reads the folder: the message is the same whether the folder exists
    or not, and names only what the user typed, so a user learns nothing about the server's files.
    """
    if not name.startswith(("local:", "cube:")):
        return
    typed = name.partition(":")[2]
    if not roots:
        raise SourceError(
            "This server accepts no local folders as sources; the operator can allow some with "
            "TERRASEG_APP_LOCAL_ROOTS."
        )
    folder = Path(typed).expanduser().resolve()  # symlinks resolved: a link inside a root may not lead out
    if not any(folder.is_relative_to(Path(root).expanduser().resolve()) for root in roots):
        allowed = ", ".join(str(r) for r in roots)
        raise SourceError(f"On this server, local folders must be inside {allowed}; {typed} is not.")


def check_app_source(name: str, settings: Settings) -> None:
    """What the web app may use: the presets, `local:` folders inside the operator's roots, and `stac:`/`dhus:`
    URLs at or below the operator's list (TERRASEG_APP_SOURCE_URLS). Checked before anything is fetched or
    read, so a web user cannot make the server reach internal addresses or folders. The CLI is not limited."""
    check_local_roots(name, settings.app_local_roots)
    kind, _, url = name.partition(":")
    if kind in ("stac", "dhus") and not any(url_within(url, allowed) for allowed in settings.app_source_urls):
        presets = ", ".join(["sample", SAMPLE_CUBE_SOURCE, *PRESETS, *DHUS_PRESETS])
        raise SourceError(
            f"On this server, sources are the presets ({presets}) and the catalogues the operator lists; {url} "
            "is not one of them."
        )


def search_scenes(
    source_names: tuple[str, ...] | list[str],
    aoi: BaseGeometry,
    start: date,
    end: date,
    settings: Settings,
    sensor: str = "S2",
    max_cloud_pct: float | None = None,
    levels: tuple[str, ...] = (),
) -> list[Scene]:
    """Search the sources in priority order; the first one with matching scenes serves the job.

    With `levels` (the processing levels the job's models were trained on), a source whose scenes have none of
    them is passed over for a later source that has some; when none has, the first source with scenes serves.
    A source that fails (missing folder, no scenes) is logged and the next one is tried; if all fail, the
    error says what each one answered.
    """
    answers: list[str] = []
    failed: list[str] = []  # the sources that failed, in `answers`' order
    unavailable = 0
    fallback: list[Scene] | None = None

    def served(scenes: list[Scene]) -> list[Scene]:
        # A source passed over is worth a warning only when another one serves; when none does, the error
        # raised says what each answered (a warning too would print the same sentence twice).
        for name, answer in zip(failed, answers, strict=True):
            log.warning("Source %s: %s", name, answer)
        return scenes

    for name in source_names:
        try:
            scenes = parse_source(name, settings).search(aoi, start, end, sensor, max_cloud_pct)
        except (AppError, SourceUnavailable) as err:
            answers.append(str(err))
            failed.append(name)
            unavailable += isinstance(err, SourceUnavailable)
            continue
        if not levels or any(s.processing_level in levels for s in scenes):
            log.info("Source %s: %d scenes", name, len(scenes))
            return served(scenes)
        log.info("Source %s: %d scenes, none of level %s; trying the next sources", name, len(scenes), levels)
        fallback = fallback or scenes
    if fallback is not None:
        return served(fallback)
    if unavailable == len(answers):  # nothing answered "no scenes": worth trying again later
        raise SourceUnavailable(" | ".join(answers))
    if len(answers) == 1:
        raise NoScenesFound(answers[0])
    raise NoScenesFound("No source has matching scenes: " + " | ".join(answers))
