"""The local source: a folder of Sentinel-1 GRD and Sentinel-2 SAFE products (zipped or not) and GeoTIFF/COG scenes."""

import logging
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from shapely.geometry.base import BaseGeometry

from core.errors import NoScenesFound, SourceError
from core.sources.geotiff import read_geotiff_scene
from core.sources.protocol import NoProducts
from core.sources.safe import read_s2_safe
from core.sources.sentinel1 import merge_polarisations, read_s1_safe
from core.types import Scene

log = logging.getLogger(__name__)

GEOTIFF_SUFFIXES = (".tif", ".tiff")
S1_PRODUCT_PREFIXES = (
    "S1A_",
    "S1B_",
    "S1C_",
    "S1D_",
)  # Sentinel-1 SAFE product names; the rest is Sentinel-2


def is_safe_entry(path: Path) -> bool:
    """A SAFE directory or a zip that holds one."""
    return (path.is_dir() and path.name.upper().endswith(".SAFE")) or path.suffix.lower() == ".zip"


@dataclass
class LocalSource(NoProducts):
    """Scenes found directly inside `directory` (not in sub-folders other than SAFE products)."""

    directory: Path
    name: str
    skipped: list[str] = field(default_factory=list)  # "file: reason" for entries that could not be used

    def scan(self) -> list[Scene]:
        """Read every scene's metadata; unusable files are skipped with a WARNING and listed in `skipped`."""
        if not self.directory.is_dir():
            raise SourceError(f"The source folder {self.directory} does not exist.")
        scenes, self.skipped = [], []
        for entry in sorted(self.directory.iterdir()):
            is_geotiff = entry.is_file() and entry.suffix.lower() in GEOTIFF_SUFFIXES
            if not (is_geotiff or is_safe_entry(entry)):
                continue
            try:
                if is_geotiff:
                    scenes.append(read_geotiff_scene(entry, self.name))
                elif entry.name.upper().startswith(S1_PRODUCT_PREFIXES):
                    scenes.append(read_s1_safe(entry, self.name))
                else:
                    scenes.append(read_s2_safe(entry, self.name))
            except SourceError as err:
                log.warning("Skipping %s: %s", entry, err)
                self.skipped.append(f"{entry.name}: {err}")
        scenes = merge_polarisations(scenes)
        if not scenes:
            detail = f" Skipped: {'; '.join(self.skipped)}" if self.skipped else ""
            raise SourceError(f"The source folder {self.directory} holds no usable scene.{detail}")
        return scenes

    def search(
        self,
        aoi: BaseGeometry,
        start: date,
        end: date,
        sensor: str = "S2",
        max_cloud_pct: float | None = None,
    ) -> list[Scene]:
        """Scenes of `sensor` whose footprint intersects the AOI (EPSG:4326) and whose date is in [start, end].

        `max_cloud_pct` is applied by the caller (`core.jobs.preflight.find_scenes`), as for every source.
        """
        scenes = [s for s in self.scan() if s.sensor == sensor]
        overlapping = [s for s in scenes if s.footprint.intersects(aoi)]
        found = sorted(
            (s for s in overlapping if start <= s.acquired.date() <= end), key=lambda s: s.acquired
        )
        if found:
            return found
        if not scenes:
            raise NoScenesFound(f"{self.name} holds no {sensor} scene.")
        if not overlapping:
            raise NoScenesFound(
                f"None of the {len(scenes)} {sensor} scenes in {self.name} overlaps the area of "
                "interest. Check the area, or add scenes that cover it."
            )
        dates = ", ".join(sorted({s.date_iso for s in overlapping}))
        raise NoScenesFound(
            f"No {sensor} scene of {self.name} over the area falls between {start} and {end}; "
            f"scenes over it exist for {dates}. Widen the date range."
        )
