"""STAC API catalogues (Earth Search, Copernicus Data Space, Planetary Computer, any STAC API) as a source.

Search goes through pystac-client; each Sentinel-2 item becomes a Scene whose bands point at the COG assets
over HTTP (`/vsicurl/`), so readers fetch only the windows they need with range requests. `fetch_windows`
copies the AOI window of every needed band into the cache as a local GeoTIFF before the job reads it.

Bands are matched by the asset's `eo:bands` name (B01..B12, B8A) or common name, never by provider asset keys
alone, so a STAC API that is not a preset works when its items carry standard metadata.

Radiometric offset rule (processing baseline 04.00 and later add 1000 to every DN): when an asset's
`raster:bands` gives `scale`/`offset`, those are used (reflectance = DN x scale + offset); when it gives none,
the baseline decides: from 04.00 on, DN - 1000 before the 1e-4 scale. A provider's "offset applied" flag (e.g.
`earthsearch:boa_offset_applied`) is not trusted on its own: it describes the provider's processing, not the
numbers in the file, and items exist where it disagrees with their `raster:bands`.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import requests
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry

from core.errors import NoScenesFound, SourceError, SourceUnavailable
from core.sources.protocol import NoProducts
from core.types import S2_BANDS, BandAsset, Scene

log = logging.getLogger(__name__)

COMMON_NAMES = {
    "coastal": "B01",
    "blue": "B02",
    "green": "B03",
    "red": "B04",
    "rededge": None,  # ambiguous (B05..B07): only the name decides
    "nir": "B08",
    "nir08": "B8A",
    "nir09": "B09",
    "cirrus": "B10",
    "swir16": "B11",
    "swir22": "B12",
}
BASELINE_OFFSET_DN = -1000.0
DN_SCALE = 1e-4


@dataclass(frozen=True)
class StacPreset:
    url: str
    collections: dict[str, str]  # processing level -> collection id
    sign_url: str | None = None  # SAS token service: GET <sign_url>/<collection> -> {"token": "..."}


PRESETS = {
    "earth-search": StacPreset(
        "https://earth-search.aws.element84.com/v1", {"L2A": "sentinel-2-l2a", "L1C": "sentinel-2-l1c"}
    ),
    "cdse": StacPreset(
        "https://stac.dataspace.copernicus.eu/v1", {"L2A": "sentinel-2-l2a", "L1C": "sentinel-2-l1c"}
    ),
    "planetary-computer": StacPreset(
        "https://planetarycomputer.microsoft.com/api/stac/v1", {"L2A": "sentinel-2-l2a"}
    ),
}
# For a STAC API given by URL: the usual Sentinel-2 collection ids, whichever the API has.
DEFAULT_COLLECTIONS = {"L2A": "sentinel-2-l2a", "L1C": "sentinel-2-l1c"}


def band_of(asset: dict[str, Any]) -> str | None:
    """The Sentinel-2 band an asset holds, from its `eo:bands` name or common name (None: not a band)."""
    bands = asset.get("eo:bands") or []
    if len(bands) != 1:
        return None
    name = str(bands[0].get("name", "")).upper()
    if len(name) == 2 and name.startswith("B"):  # "B2" -> "B02"
        name = f"B0{name[1]}"
    if name in S2_BANDS:
        return name
    return COMMON_NAMES.get(str(bands[0].get("common_name", "")).lower())


def processing_level(collection: str, properties: dict[str, Any]) -> str | None:
    text = f"{collection} {properties.get('s2:product_type', '')}".upper()
    return "L2A" if "L2A" in text else "L1C" if "L1C" in text else None


def radiometry(asset: dict[str, Any], baseline: str | None) -> tuple[float, float, float | None]:
    """(scale, add_offset in DN, nodata) so that reflectance = (DN + add_offset) x scale; see the module rule."""
    raster = (asset.get("raster:bands") or [{}])[0]
    nodata = raster.get("nodata", 0)
    if "scale" in raster or "offset" in raster:
        scale = float(raster.get("scale", DN_SCALE))
        return scale, float(raster.get("offset", 0.0)) / scale, nodata
    offset = BASELINE_OFFSET_DN if baseline is not None and float(baseline) >= 4.0 else 0.0
    return DN_SCALE, offset, nodata


def item_to_scene(item: dict[str, Any], source: str) -> Scene | None:
    """A STAC item (as a dict) -> a Scene with its COG bands over HTTP; None when it is no Sentinel-2 item."""
    properties = item.get("properties", {})
    level = processing_level(str(item.get("collection", "")), properties)
    if level is None:
        return None
    baseline = properties.get("s2:processing_baseline")
    bands: dict[str, BandAsset] = {}
    for asset in item.get("assets", {}).values():
        band = band_of(asset)
        media = str(asset.get("type", ""))
        if band is None or band in bands or "tiff" not in media.lower():
            continue
        scale, add_offset, nodata = radiometry(asset, baseline)
        href = str(asset["href"])
        bands[band] = BandAsset(
            path=f"/vsicurl/{href}" if href.startswith("http") else href,
            scale=scale,
            add_offset=add_offset,
            nodata=nodata,
            resolution_m=asset.get("gsd"),
        )
    if not bands:
        return None
    acquired = datetime.fromisoformat(str(properties["datetime"]).replace("Z", "+00:00")).astimezone(UTC)
    cloud = properties.get("eo:cloud_cover")
    return Scene(
        id=str(item["id"]),
        source=source,
        sensor="S2",
        acquired=acquired,
        footprint=shape(item["geometry"]),
        processing_level=level,
        bands=bands,
        processing_baseline=str(baseline) if baseline is not None else None,
        cloud_cover_pct=float(cloud) if cloud is not None else None,
        path=str(
            next((link["href"] for link in item.get("links", []) if link.get("rel") == "self"), item["id"])
        ),
        extra={"collection": str(item.get("collection", ""))},
    )


class StacSource(NoProducts):
    """A STAC API: search by AOI, dates and collection; Sentinel-2 items become Scenes."""

    def __init__(
        self,
        url: str,
        name: str,
        collections: dict[str, str] | None = None,
        max_items: int = 500,
        sign_url: str | None = None,
    ):
        self.url, self.name = url.rstrip("/"), name
        self.collections = collections or DEFAULT_COLLECTIONS
        self.max_items = max_items
        self.sign_url = sign_url.rstrip("/") if sign_url else None

    def sign(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append the catalogue's SAS token (one per collection, asked once per search) to every asset href.

        Planetary Computer serves its blobs only with a token from its SAS service; the token is short-lived
        (about an hour), which is why a job fetches its windows right after the search.
        """
        if self.sign_url is None:
            return items

        tokens: dict[str, str] = {}
        for item in items:
            collection = str(item.get("collection", ""))
            if collection not in tokens:
                try:
                    answer = requests.get(f"{self.sign_url}/{collection}", timeout=30)
                    answer.raise_for_status()
                    tokens[collection] = str(answer.json()["token"])
                except (requests.RequestException, KeyError, ValueError) as err:
                    raise SourceUnavailable(
                        f"{self.name}: no access token for {collection} ({err})."
                    ) from err
            for asset in item.get("assets", {}).values():
                href = str(asset.get("href", ""))
                if href.startswith("http"):
                    asset["href"] = f"{href}{'&' if '?' in href else '?'}{tokens[collection]}"
        return items

    def search(
        self,
        aoi: BaseGeometry,
        start: date,
        end: date,
        sensor: str = "S2",
        max_cloud_pct: float | None = None,
    ) -> list[Scene]:
        """Sentinel-2 scenes over `aoi` between `start` and `end` (inclusive), oldest first.

        `max_cloud_pct` goes to the API as an `eo:cloud_cover` query where it conforms to the query extension;
        the caller filters again either way (`core.jobs.preflight.find_scenes`).
        """
        if sensor != "S2":
            raise SourceError(f"{self.name}: only Sentinel-2 is searched in STAC catalogues so far.")
        import pystac_client  # pystac_client: STAC searches only
        from pystac.errors import STACError, STACTypeError  # pystac_client: STAC searches only
        from pystac_client.conformance import ConformanceClasses  # pystac_client: STAC searches only
        from pystac_client.errors import ClientTypeError  # pystac_client: STAC searches only
        from pystac_client.exceptions import APIError  # pystac_client: STAC searches only

        try:
            client = pystac_client.Client.open(self.url, timeout=30)
            available = {c.id for c in client.get_collections()}
            wanted = [c for c in self.collections.values() if c in available]
            if not wanted:
                raise SourceError(
                    f"{self.name} has none of the collections {', '.join(self.collections.values())}."
                )
            query = None
            if max_cloud_pct is not None and client.conforms_to(ConformanceClasses.QUERY):
                query = {"eo:cloud_cover": {"lte": max_cloud_pct}}
            search = client.search(
                collections=wanted,
                intersects=mapping(aoi),
                datetime=f"{start.isoformat()}T00:00:00Z/{end.isoformat()}T23:59:59Z",
                max_items=self.max_items,
                query=query,
            )
            items = list(search.items_as_dicts())
        except APIError as err:
            status = getattr(err, "status_code", None)
            if status is None:  # pystac-client wraps connection failures (after its own retries) this way
                raise SourceUnavailable(f"{self.name} cannot be reached (no connection).") from err
            if status >= 500 or status == 429:  # down or overloaded: try again later
                raise SourceUnavailable(f"{self.name} is unavailable (HTTP {status}).") from err
            raise SourceError(f"{self.name} answered with an error: {str(err)[:200]}") from err
        except OSError as err:  # requests' connection errors and timeouts are OSErrors
            raise SourceUnavailable(f"{self.name} cannot be reached ({type(err).__name__}).") from err
        except (ValueError, TypeError, AttributeError, KeyError, STACError, STACTypeError, ClientTypeError) as err:
            # Not JSON (a web page), or JSON that is not a STAC API: the URL is wrong, and retrying will not help.
            log.info("%s: not a STAC API answer: %r", self.name, err)
            raise SourceError(
                f"{self.name} did not answer as a STAC API; check that the URL is the catalogue's root."
            ) from err
        scenes = [s for s in (item_to_scene(item, self.name) for item in self.sign(items)) if s is not None]
        if not scenes:
            raise NoScenesFound(
                f"{self.name} has no Sentinel-2 scenes for this AOI and dates; widen the dates or raise the cloud "
                "limit."
            )
        log.info("%s: %d items, %d Sentinel-2 scenes", self.name, len(items), len(scenes))
        return sorted(scenes, key=lambda s: s.acquired)
