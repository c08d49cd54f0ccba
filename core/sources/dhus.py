"""DHuS mirrors (the Copernicus Data Hub software: CESNET's collaborative ground segment, any `dhus:URL`).

Search and product metadata go through sentinelsat (OpenSearch by footprint, dates, platform, product type and
cloud cover; OData for the MD5, size and `Online` flag; the long-term-archive trigger). The product itself is
fetched by `core.sources.transfer.download_file` over the same authenticated session, because a job needs what
sentinelsat's own downloader does not give: cancelling between chunks, progress in bytes for the job, a lock
shared with other workers and a bound on parallel downloads per source.

A scene found here has no pixels yet: its bands point at `PRODUCT_PREFIX` placeholders until `fetch` has
downloaded the SAFE zip into `<cache>/products/<source>/` and read it as the local source would (Sentinel-2
through `core.sources.safe`, Sentinel-1 GRD through `core.sources.sentinel1`).

Offline (archived) products: `fetch` triggers their retrieval, reports "waiting for the archive" and polls the
`Online` flag at growing intervals (from `lta_poll_s`, doubling, at most 10 minutes apart) until it is true, or
gives up after `lta_timeout_s` with a message that says so.
"""

import dataclasses
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import requests
import shapely.wkt
from shapely.geometry.base import BaseGeometry

from core.config import MirrorAccount, Settings, dhus_credentials
from core.errors import NoScenesFound, SourceError, SourceUnavailable
from core.sources.safe import read_s2_safe
from core.sources.sentinel1 import read_s1_safe
from core.sources.transfer import (
    BytesProgress,
    Expected,
    RetryPolicy,
    StatusFn,
    cache_name,
    download_file,
    download_slot,
    sleep_unless_stopped,
)
from core.types import S1_BANDS, S2_BANDS, BandAsset, Scene

log = logging.getLogger(__name__)

PRESETS = {"cesnet": "https://dhr1.cesnet.cz/"}
PRODUCT_PREFIX = "product:"  # the band path of a scene whose product is not downloaded yet
MAX_LTA_POLL_S = 600.0
LEVELS = {"S2MSI1C": "L1C", "S2MSI2A": "L2A", "S2MSI2AP": "L2A", "GRD": "GRD"}
L2A_BANDS = tuple(b for b in S2_BANDS if b != "B10")  # L2A products drop the cirrus band


def needs_fetch(scene: Scene) -> bool:
    """Whether the scene's product must be downloaded before its bands can be read."""
    return any(asset.path.startswith(PRODUCT_PREFIX) for asset in scene.bands.values())


def entry_to_scene(uuid: str, properties: dict[str, Any], source: str) -> Scene | None:
    """One parsed OpenSearch entry (sentinelsat's dict) -> a Scene with placeholder bands; None if unusable."""
    level = LEVELS.get(str(properties.get("producttype", "")).upper())
    platform = str(properties.get("platformname", ""))
    if level is None or "footprint" not in properties:
        return None
    if platform == "Sentinel-1":
        polarisations = str(properties.get("polarisationmode", "")).upper().split()
        band_names = tuple(b for b in S1_BANDS if b in polarisations)
        sensor = "S1"
    else:
        band_names = S2_BANDS if level == "L1C" else L2A_BANDS
        sensor = "S2"
    if not band_names:
        return None
    acquired = properties["beginposition"]
    if isinstance(acquired, str):
        acquired = datetime.fromisoformat(acquired.replace("Z", "+00:00"))
    cloud = properties.get("cloudcoverpercentage")
    placeholder = BandAsset(path=f"{PRODUCT_PREFIX}{uuid}")
    return Scene(
        id=str(properties.get("identifier") or properties["title"]),
        source=source,
        sensor=sensor,
        acquired=acquired.astimezone(UTC),
        footprint=shapely.wkt.loads(str(properties["footprint"])),
        processing_level=level,
        bands=dict.fromkeys(band_names, placeholder),
        processing_baseline=properties.get("processingbaseline"),
        cloud_cover_pct=float(cloud) if cloud is not None else None,
        path=str(properties.get("link_alternative", uuid)),
        extra={
            "uuid": uuid,
            "filename": str(properties.get("filename", "")),
            "download_bytes": str(size_bytes(str(properties.get("size", ""))) or 0),
        },
    )


def size_bytes(text: str) -> int | None:
    """OpenSearch's "size" ('110.44 MB', '1.02 GB', '506 MB') -> bytes; None when unreadable."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?B)\s*", text or "")
    if match is None:
        return None
    return int(float(match[1]) * 1024 ** "BKMGT".index(match[2][0]))


class DhusSource:
    """A DHuS API at `url` (ending in '/'; the OpenSearch endpoint is `<url>search`, OData `<url>odata/v1`)."""

    def __init__(self, url: str, name: str, settings: Settings) -> None:
        self.url = url if url.endswith("/") else f"{url}/"
        self.name = name
        self.settings = settings

    @property
    def download_slots(self) -> int:
        """Products downloaded at once from this mirror (across the workers of one machine)."""
        return self.settings.download_slots

    def _api(self) -> Any:
        from sentinelsat import SentinelAPI  # sentinelsat: DHuS jobs only

        user, password = dhus_credentials(self.settings, self.url) or (None, None)
        return SentinelAPI(
            user, password, self.url, show_progressbars=False, timeout=self.settings.http_timeout_s
        )

    def _translate(self, err: Exception) -> Exception:
        """sentinelsat's and requests' errors -> SourceError (the user can act) or SourceUnavailable (retry)."""
        from sentinelsat.exceptions import (  # sentinelsat: DHuS jobs only
            InvalidKeyError,
            ServerError,
            UnauthorizedError,
        )

        status = getattr(getattr(err, "response", None), "status_code", None)
        if isinstance(err, UnauthorizedError) or status in (401, 403):
            if dhus_credentials(self.settings, self.url) is None:
                return SourceError(
                    f"{self.name} refuses anonymous access (HTTP {status or 401}) and no account is configured "
                    "for it; the operator can add one for this mirror's URL (see the README's DHuS section)."
                )
            return SourceError(
                f"{self.name} rejected the credentials (HTTP {status or 401}) configured for it; the operator "
                "should check the account set for this mirror."
            )
        if isinstance(err, InvalidKeyError):
            return SourceError(f"{self.name} no longer has this product ({err}).")
        if isinstance(err, ServerError | OSError) or (status or 0) >= 500 or status == 429:
            detail = f"HTTP {status}" if status else type(err).__name__
            return SourceUnavailable(f"{self.name} is unavailable ({detail}).")
        return SourceError(f"{self.name} answered with an error: {str(err)[:200]}")

    def search(
        self,
        aoi: BaseGeometry,
        start: date,
        end: date,
        sensor: str = "S2",
        max_cloud_pct: float | None = None,
    ) -> list[Scene]:
        """Sentinel-2 L1C/L2A or Sentinel-1 GRD products over `aoi` between `start` and `end`, oldest first."""
        from sentinelsat.exceptions import SentinelAPIError  # sentinelsat: DHuS jobs only

        keywords: dict[str, Any] = (
            {"platformname": "Sentinel-1", "producttype": "GRD"}
            if sensor == "S1"
            else {"platformname": "Sentinel-2"}
        )
        if sensor == "S2" and max_cloud_pct is not None:
            keywords["cloudcoverpercentage"] = (0, max_cloud_pct)
        try:
            found = self._api().query(
                area=aoi.wkt, date=(start.strftime("%Y%m%d"), f"{end:%Y-%m-%d}T23:59:59.999Z"), **keywords
            )
        except (SentinelAPIError, requests.RequestException) as err:
            raise self._translate(err) from err
        scenes = [s for s in (entry_to_scene(u, p, self.name) for u, p in found.items()) if s is not None]
        if not scenes:
            raise NoScenesFound(
                f"{self.name} has no {sensor} scenes for this AOI and dates; widen the dates or raise the cloud limit."
            )
        log.info("%s: %d products, %d usable %s scenes", self.name, len(found), len(scenes), sensor)
        return sorted(scenes, key=lambda s: s.acquired)

    def product_path(self, scene: Scene, cache_dir: Path) -> Path:
        """Where the product's zip is cached: `<cache>/products/<source>/<name>.zip`."""
        slug = cache_name(self.name)
        stem = (scene.extra.get("filename") or scene.id).removesuffix(".SAFE").removesuffix(".zip")
        return cache_dir / "products" / slug / f"{stem}.zip"

    def fetch(
        self,
        scene: Scene,
        cache_dir: Path,
        progress: BytesProgress | None = None,
        status: StatusFn | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Scene:
        """Download the scene's product (waiting for the archive if needed), verify it, and read it as a Scene."""
        from sentinelsat.exceptions import SentinelAPIError  # sentinelsat: DHuS jobs only

        uuid = scene.extra["uuid"]
        dest = self.product_path(scene, cache_dir)
        api = self._api()
        try:
            info = api.get_product_odata(uuid)
            expected = Expected(size=int(info["size"]), md5=info.get("md5"))
            if not info.get("Online", True) and not dest.exists():
                self._wait_for_archive(api, uuid, scene.id, status, should_stop)
            slots_dir = cache_dir / "locks" / dest.parent.name
            with download_slot(slots_dir, self.settings.download_slots, should_stop):
                policy = RetryPolicy(
                    self.settings.download_attempts,
                    self.settings.download_backoff_s,
                    self.settings.http_timeout_s,
                )
                if not MirrorAccount(self.name, self.url, "", "").serves(info["url"]):
                    # The session carries this mirror's password: never send it to a host the answer names.
                    raise SourceError(
                        f"{self.name} links its product {scene.id} to another host; it was not downloaded."
                    )
                download_file(
                    api.session, info["url"], dest, expected, self.name, progress, should_stop, policy
                )
        except (SentinelAPIError, requests.RequestException) as err:
            raise self._translate(err) from err
        return self._read(dest, scene)

    def _wait_for_archive(
        self, api: Any, uuid: str, name: str, status: StatusFn | None, should_stop: Callable[[], bool] | None
    ) -> None:
        """Trigger retrieval from the long-term archive and poll until online; SourceError after the time limit."""
        from sentinelsat.exceptions import LTAError  # sentinelsat: DHuS jobs only

        started, interval_s, polls = time.monotonic(), self.settings.lta_poll_s, 0
        try:
            api.trigger_offline_retrieval(uuid)
        except LTAError as err:  # quota or overload: the product stays offline; keep polling, it may come
            log.warning("%s did not accept the archive request for %s (%s)", self.name, name, err)
        log.info("%s: %s is in the long-term archive; retrieval requested", self.name, name)
        deadline = started + self.settings.lta_timeout_s
        while True:
            if status is not None:
                waited_s = time.monotonic() - started
                status(
                    f"waiting for the archive: {name} (offline at {self.name}; polled {polls}x, {waited_s:.0f} s)"
                )
            if time.monotonic() >= deadline:
                raise SourceError(
                    f"{self.name} did not bring {name} back from its long-term archive within "
                    f"{self.settings.lta_timeout_s / 60:.0f} min; run the job again later (the request stays "
                    "queued at the mirror) or choose another source."
                )
            sleep_unless_stopped(min(interval_s, deadline - time.monotonic()), should_stop)
            polls += 1
            if api.is_online(uuid):
                log.info("%s: %s is online after %d polls", self.name, name, polls)
                return
            interval_s = min(interval_s * 2, MAX_LTA_POLL_S)

    def _read(self, path: Path, scene: Scene) -> Scene:
        fetched = read_s1_safe(path, self.name) if scene.sensor == "S1" else read_s2_safe(path, self.name)
        return dataclasses.replace(fetched, extra={**scene.extra, **fetched.extra, "product": str(path)})
