"""What every source offers (`Source`), and the part shared by sources whose scenes need no product download."""

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Protocol

from shapely.geometry.base import BaseGeometry

from core.errors import SourceError
from core.sources.transfer import BytesProgress, StatusFn
from core.types import Scene


class Source(Protocol):
    """What every source offers: a search, and (for sources of whole products) a verified download."""

    name: str

    @property
    def download_slots(self) -> int:
        """Products downloaded at once from this source."""
        ...

    def search(
        self,
        aoi: BaseGeometry,
        start: date,
        end: date,
        sensor: str = "S2",
        max_cloud_pct: float | None = None,
    ) -> list[Scene]:
        """Scenes over `aoi` (EPSG:4326) between `start` and `end` (inclusive), oldest first."""
        ...

    def fetch(
        self,
        scene: Scene,
        cache_dir: Path,
        progress: BytesProgress | None = None,
        status: StatusFn | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Scene:
        """The scene's product in `cache_dir`, read as a local Scene (SourceError where there is none)."""
        ...


class NoProducts:
    """For sources read in place (a folder) or window by window (STAC COGs, see core.sources.download): no products."""

    name: str
    download_slots = 1

    def fetch(
        self,
        scene: Scene,
        cache_dir: Path,
        progress: BytesProgress | None = None,
        status: StatusFn | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Scene:
        """There is no whole product to download for this source's scenes."""
        raise SourceError(f"{self.name} has no products to download; its scenes are read where they are.")
