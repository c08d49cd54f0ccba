"""A local STAC API on 127.0.0.1 built from recorded real Earth Search responses, serving real COGs made from the
embedded sample scenes, with HTTP Range support. pystac-client and GDAL's /vsicurl talk to it unmodified.

What is real: the landing page, the collection ids, every item's properties and asset metadata (eo:bands,
raster:bands with the baseline-04.00 offset of -0.1, processing baseline 05.11, gsd) come from
`tests/data/stac_cassettes/earth_search_v1_s2_filter.yaml`. What is adapted so that the items cover the
sample: item ids, datetimes, geometry and projection (those of the 5 sample dates) and asset hrefs (pointing
here; the upstream L1C assets are JPEG 2000, ours are COGs, so their media type says so). The COGs hold the
sample's DN + 1000, as a product of baseline 04.00 or later would, so reading them back through raster:bands
must give the sample's reflectance.
"""

import copy
import json
import re
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import rasterio
import rasterio.shutil
import yaml
from rasterio.warp import transform_geom
from shapely.geometry import box, mapping, shape

from core.sources import SAMPLE_DIR
from core.types import S2_BANDS
from tests.conftest import TEST_DATA

CASSETTE = TEST_DATA / "stac_cassettes" / "earth_search_v1_s2_filter.yaml"
UPSTREAM = "https://earth-search.aws.element84.com/v1"
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


def recorded_responses() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The recorded landing page and every recorded search item."""
    interactions = yaml.safe_load(CASSETTE.read_text())["interactions"]
    landing = json.loads(interactions[0]["response"]["body"]["string"])
    items = [f for i in interactions[1:] for f in json.loads(i["response"]["body"]["string"])["features"]]
    return landing, items


def build_catalogue(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Path]]:
    """(landing page, items, {url path: file}) for the 5 sample dates, with `{BASE}` where the server URL goes."""
    landing, recorded = recorded_responses()
    template = next(f for f in recorded if f["collection"] == "sentinel-2-l1c")
    files: dict[str, Path] = {}
    items = []
    for scene_path in sorted(SAMPLE_DIR.glob("*.tif")):
        with rasterio.open(scene_path) as src:
            dn = src.read()
            profile, crs, bounds = src.profile, src.crs, src.bounds
            acquired = src.tags()["ACQUISITION_DATETIME"]
            names = list(src.descriptions)
        stamp = datetime.fromisoformat(acquired.replace("Z", "+00:00")).astimezone(UTC)
        item = copy.deepcopy(template)
        item_id = f"S2A_33TVM_{stamp:%Y%m%d}_0_L1C"
        item["id"] = item_id
        item["geometry"] = transform_geom(crs, "EPSG:4326", mapping(box(*bounds)))
        item["bbox"] = list(shape(item["geometry"]).bounds)
        item["properties"]["datetime"] = stamp.isoformat().replace("+00:00", "Z")
        item["properties"]["proj:epsg"] = crs.to_epsg()
        item["links"] = [{"rel": "self", "href": f"{{BASE}}/collections/sentinel-2-l1c/items/{item_id}"}]
        for asset in item["assets"].values():
            bands = asset.get("eo:bands") or []
            if len(bands) != 1 or bands[0]["name"] not in S2_BANDS:
                asset["href"] = "{BASE}/missing"  # metadata files and TCI: not served
                continue
            band = bands[0]["name"]
            cog = folder / item_id / f"{band}.tif"
            cog.parent.mkdir(parents=True, exist_ok=True)
            write_cog(cog, dn[names.index(band)] + 1000, profile)
            files[f"/v1/data/{item_id}/{band}.tif"] = cog
            asset["href"] = f"{{BASE}}/data/{item_id}/{band}.tif"
            asset["type"] = COG_TYPE
            asset["proj:shape"] = [int(profile["height"]), int(profile["width"])]
            asset["proj:transform"] = list(profile["transform"])[:6]
        items.append(item)
    return landing, items, files


def write_cog(path: Path, band: np.ndarray, profile: dict[str, Any]) -> None:
    plain = path.with_suffix(".plain.tif")
    with rasterio.open(
        plain, "w", driver="GTiff", count=1, dtype="uint16", width=band.shape[1], height=band.shape[0],
        crs=profile["crs"], transform=profile["transform"], nodata=0,
    ) as dst:  # fmt: skip
        dst.write(band.astype(np.uint16), 1)
    rasterio.shutil.copy(plain, path, driver="COG", BLOCKSIZE=64, COMPRESS="DEFLATE")
    plain.unlink()


class StacServer:
    """The HTTP server; it runs in its own process (see StacServerProcess), because GDAL holds the GIL while
    it fetches over HTTP, so a server thread in the test's process would never answer.

    Each request is appended to `<folder>/requests.jsonl` as [method, path, Range header, bytes sent]; while
    `<folder>/down` exists every request gets 503, as an overloaded catalogue answers.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.landing, self.items, self.files = build_catalogue(folder)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._log_lock = threading.Lock()

    def log(self, method: str, path: str, ranged: str | None, sent: int) -> None:
        with self._log_lock, (self.folder / "requests.jsonl").open("a") as handle:
            handle.write(json.dumps([method, path, ranged, sent]) + "\n")

    def _rewrite(self, document: Any) -> Any:
        return json.loads(json.dumps(document).replace(UPSTREAM, self.url).replace("{BASE}", self.url))

    def search(self, body: dict[str, Any]) -> dict[str, Any]:
        """The recorded STAC search semantics this project uses: collections, intersects/bbox, datetime, limit."""
        found = []
        area = (
            shape(body["intersects"])
            if body.get("intersects")
            else box(*body["bbox"])
            if body.get("bbox")
            else None
        )
        start, end = (
            (body.get("datetime") or "../..").split("/")
            if "/" in (body.get("datetime") or "")
            else ("..", "..")
        )
        for item in self.items:
            if body.get("collections") and item["collection"] not in body["collections"]:
                continue
            if area is not None and not shape(item["geometry"]).intersects(area):
                continue
            when = item["properties"]["datetime"]
            if (start != ".." and when < start) or (end != ".." and when > end):
                continue
            found.append(item)
        limit = int(body.get("limit", 10))
        return {
            "type": "FeatureCollection",
            "features": found[:limit],
            "links": [{"rel": "root", "href": f"{self.url}"}],
            "numberMatched": len(found),
            "numberReturned": min(len(found), limit),
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _json(self, document: Any, status: int = 200) -> None:
                body = json.dumps(server._rewrite(document)).encode()
                server.log(self.command, urlparse(self.path).path, None, len(body))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _route(self, method: str) -> None:
                parsed = urlparse(self.path)
                if (server.folder / "down").exists():
                    server.log(method, parsed.path, self.headers.get("Range"), 0)
                    self.send_error(503, "Service Unavailable")
                    return
                answer = server.folder / "answer_instead"  # a URL that is not a STAC API (a web page, other JSON)
                if answer.exists() and not parsed.path.startswith("/v1/data/"):
                    body = answer.read_bytes()
                    server.log(method, parsed.path, None, len(body))
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html" if body.startswith(b"<") else "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if m := re.fullmatch(r"/api/sas/v1/token/([^/]+)", parsed.path):  # Planetary Computer's SAS
                    self._json(
                        {"msft:expiry": "2099-01-01T00:00:00Z", "token": f"st=now&sig=test-{m.group(1)}"}
                    )
                elif parsed.path.startswith("/v1/data/"):
                    if (server.folder / "require_token").exists() and "sig=test-" not in parsed.query:
                        server.log(method, parsed.path, None, 0)
                        self.send_error(403, "Server failed to authenticate the request")
                        return
                    self._file(parsed.path, method)
                elif parsed.path in ("/v1", "/v1/"):
                    self._json(server.landing)
                elif parsed.path == "/v1/collections":
                    ids = sorted({i["collection"] for i in server.items} | {"sentinel-2-l2a"})
                    self._json({"collections": [collection(c) for c in ids], "links": []})
                elif m := re.fullmatch(r"/v1/collections/([^/]+)", parsed.path):
                    self._json(collection(m.group(1)))
                elif parsed.path == "/v1/search":
                    if method == "POST":
                        body = json.loads(
                            self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}"
                        )
                    else:
                        query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
                        body = {
                            k: v for k, v in query.items() if k not in ("collections", "bbox", "intersects")
                        }
                        if "collections" in query:
                            body["collections"] = query["collections"].split(",")
                        if "bbox" in query:
                            body["bbox"] = [float(v) for v in query["bbox"].split(",")]
                        if "intersects" in query:
                            body["intersects"] = json.loads(query["intersects"])
                    self._json(server.search(body))
                else:
                    server.log(method, parsed.path, None, 0)
                    self.send_error(404)

            def _file(self, path: str, method: str) -> None:
                if path not in server.files:
                    server.log(method, path, None, 0)
                    self.send_error(404)
                    return
                failing = server.folder / "fail_next"  # "STATUS COUNT": the next COUNT file requests fail so
                if failing.exists():
                    status, count = (int(v) for v in failing.read_text().split())
                    if count > 0:
                        failing.write_text(f"{status} {count - 1}")
                        server.log(method, path, self.headers.get("Range"), 0)
                        self.send_response(status)
                        self.send_header("Retry-After", "1")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                slow = server.folder / "slow"
                if slow.exists():  # a slow mirror: seconds to wait before each file response
                    time.sleep(float(slow.read_text() or 0.5))
                size = server.files[path].stat().st_size
                start, end = 0, size - 1
                ranged = self.headers.get("Range")
                if ranged and (m := re.fullmatch(r"bytes=(\d+)-(\d*)", ranged.strip())):
                    start = int(m.group(1))
                    end = min(int(m.group(2)) if m.group(2) else end, size - 1)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                else:
                    self.send_response(200)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "image/tiff")
                self.send_header("Content-Length", str(end - start + 1))
                self.end_headers()
                sent = end - start + 1 if method == "GET" else 0
                server.log(method, path, ranged, sent)
                rate = server.folder / "rate_mb_s"  # a link of limited bandwidth, as a remote mirror is
                seconds_per_mb = 1 / float(rate.read_text()) if rate.exists() else 0.0
                if method == "GET":  # only the asked range is read: the files may be whole Sentinel-2 tiles
                    with server.files[path].open("rb") as handle:
                        handle.seek(start)
                        remaining = end - start + 1
                        while remaining > 0:
                            chunk = handle.read(min(remaining, 1 << 20))
                            if not chunk:
                                break
                            self.wfile.write(chunk)
                            remaining -= len(chunk)
                            if seconds_per_mb:
                                time.sleep(seconds_per_mb * len(chunk) / 1e6)

            def do_GET(self) -> None:  # noqa: N802
                self._route("GET")

            def do_HEAD(self) -> None:  # noqa: N802
                self._route("HEAD")

            def do_POST(self) -> None:  # noqa: N802
                self._route("POST")

        def collection(collection_id: str) -> dict[str, Any]:
            return {
                "type": "Collection", "id": collection_id, "stac_version": "1.0.0", "description": collection_id,
                "license": "proprietary", "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                                                     "temporal": {"interval": [[None, None]]}},
                "links": [{"rel": "self", "href": f"{server.url}/collections/{collection_id}"}],
            }  # fmt: skip

        return Handler


class StacServerProcess:
    """The test-side handle: starts `python -m tests.core.sources.stac_server FOLDER` and reads its log."""

    def __init__(self, folder: Path, extra_files: tuple[Path, ...] = ()) -> None:
        import subprocess
        import sys

        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        root = Path(__file__).resolve().parents[3]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.core.sources.stac_server", str(folder), *map(str, extra_files)],
            cwd=root,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.stop()
            raise RuntimeError("the STAC test server did not start")

    def requests(self) -> list[tuple[str, str, str | None, int]]:
        log = self.folder / "requests.jsonl"
        return [tuple(json.loads(line)) for line in log.read_text().splitlines()] if log.exists() else []  # type: ignore[misc]

    def bytes_served(self, prefix: str = "/v1/data/") -> int:
        return sum(sent for _, path, _, sent in self.requests() if path.startswith(prefix))

    def fail_next(self, status: int, count: int) -> None:
        """The next `count` file requests get `status` (with Retry-After: 1)."""
        self._flag("fail_next", f"{status} {count}")

    def _flag(self, name: str, content: str | None) -> None:
        """Create the control file `name` (None: remove it); the server process reads it on each request."""
        flag = self.folder / name
        if content is None:
            flag.unlink(missing_ok=True)
        else:
            flag.write_text(content)

    def require_token(self, required: bool) -> None:
        """Data requests without the SAS token get 403, as Planetary Computer's blob storage answers."""
        self._flag("require_token", "" if required else None)

    def set_slow(self, seconds: float | None) -> None:
        self._flag("slow", None if seconds is None else str(seconds))

    def set_rate(self, mb_s: float | None) -> None:
        """Serve file bodies at about `mb_s` MB/s (None: as fast as the machine allows)."""
        self._flag("rate_mb_s", None if mb_s is None else str(mb_s))

    def answer_instead(self, body: bytes | None) -> None:
        """Answer every catalogue request with `body` and 200, as a web page or another API at that URL would."""
        flag = self.folder / "answer_instead"
        if body is None:
            flag.unlink(missing_ok=True)
        else:
            flag.write_bytes(body)

    def set_down(self, down: bool) -> None:
        self._flag("down", "" if down else None)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


if __name__ == "__main__":
    import sys

    server = StacServer(Path(sys.argv[1]))
    for extra in sys.argv[2:]:  # more files to serve (benchmarks): /v1/data/extra/<name>
        server.files[f"/v1/data/extra/{Path(extra).name}"] = Path(extra)
    print(server.url, flush=True)
    server.httpd.serve_forever()
