"""A local DHuS API on 127.0.0.1 speaking the OpenSearch and OData dialects recorded in
tests/data/dhus_cassettes, serving SAFE zips made from the embedded sample scenes. sentinelsat talks to it
unmodified.

What is real: the shape of every answer (OpenSearch JSON feed and entry fields, OData product JSON with its MD5
`Checksum` and `Online` flag, `Online/$value` as 'true'/'false', 202 Accepted for an archive retrieval, the
401 page and its `WWW-Authenticate` header, the 404 'Invalid key' XML, `Accept-Ranges`, `Content-Range` and
`Content-Disposition` on `$value`), taken from the cassettes. What is adapted: the products are the 5 sample
dates as L1C SAFE zips (see `tests.safe_factory.build_sample_safe`) and one Sentinel-1 GRD zip (the real
product's metadata with synthetic measurements), with their own uuids, names, footprints and MD5s. The query
parser understands what sentinelsat sends: beginPosition ranges, platformname, producttype, cloudcoverpercentage
ranges and `footprint:"Intersects(WKT)"`.

Faults are switched on by control files in the server's folder, read on each request (see DhusServerProcess).
"""

import copy
import hashlib
import json
import re
import threading
import time
import uuid as uuidlib
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import shapely.wkt
import yaml
from shapely.geometry import box

from core.sources import SAMPLE_DIR
from core.sources.safe import read_s2_safe
from core.sources.sentinel1 import read_s1_safe
from tests.conftest import TEST_DATA
from tests.safe_factory import S1_WINDOW, build_s1_grd, build_sample_safe, s1_target_db

CASSETTES = TEST_DATA / "dhus_cassettes"
UPSTREAM = "https://apihub.copernicus.eu/apihub"
USER, PASSWORD = "terraseg", "sentinel-test"


def recorded(cassette: str, uri_part: str, status: int | None = None) -> dict[str, Any]:
    """The first recorded response in `cassette` whose request URI contains `uri_part`."""
    for interaction in yaml.safe_load((CASSETTES / cassette).read_text())["interactions"]:
        response = interaction["response"]
        if uri_part in interaction["request"]["uri"] and status in (None, response["status"]["code"]):
            return response
    raise KeyError(f"{cassette} has no response for {uri_part}")


def templates() -> dict[str, Any]:
    """The recorded documents the server adapts: a search feed and entry, a product, the 401 and 404 bodies."""
    feed = json.loads(recorded("test_s2_cloudcover.yaml", "search?")["body"]["string"])["feed"]
    product = json.loads(recorded("test_download_single.yaml", "?$format=json")["body"]["string"])["d"]
    unauthorized = recorded("test_SentinelAPI_wrong_credentials.yaml", "search?", 401)
    missing = recorded("test_is_online.yaml", "Online", 404)
    s1_feed = json.loads(recorded("test_footprints_s1.yaml", "search?")["body"]["string"])["feed"]
    return {
        "feed": feed,
        "entry": feed["entry"][0],
        "s1_entry": s1_feed["entry"][0],
        "product": product,
        "401": (unauthorized["body"]["string"], unauthorized["headers"]["www-authenticate"][0]),
        "404": missing["body"]["string"],
    }


def build_products(folder: Path) -> list[dict[str, Any]]:
    """One record per product: the 5 sample dates (Sentinel-2 L1C) and one Sentinel-1 GRD (the real product's
    metadata with synthetic measurements, see `tests.safe_factory.build_s1_grd`): uuid, names, file, size, MD5,
    platform, product type, date, footprint, cloud cover."""
    products = []
    for index, scene_tif in enumerate(sorted(SAMPLE_DIR.glob("*.tif"))):
        archive = build_sample_safe(scene_tif, folder / "products")
        scene = read_s2_safe(archive)
        data = archive.read_bytes()
        products.append({
            "uuid": str(uuidlib.UUID(int=index + 1, version=4)),
            "name": scene.id,
            "file": archive,
            "size": len(data),
            "md5": hashlib.md5(data, usedforsecurity=False).hexdigest(),
            "acquired": scene.acquired,
            "platform": "Sentinel-2",
            "producttype": "S2MSI1C",
            "footprint": box(*scene.footprint.bounds),
            "cloud": scene.cloud_cover_pct or 0.0,
        })  # fmt: skip
    archive = build_s1_grd(folder / "products", S1_WINDOW, s1_target_db)
    grd = read_s1_safe(archive)
    data = archive.read_bytes()
    products.append({
        "uuid": str(uuidlib.UUID(int=100, version=4)),
        "name": grd.id,
        "file": archive,
        "size": len(data),
        "md5": hashlib.md5(data, usedforsecurity=False).hexdigest(),
        "platform": "Sentinel-1",
        "producttype": "GRD",
        "acquired": grd.acquired,
        "footprint": grd.footprint,
        "cloud": None,
    })  # fmt: skip
    return products


def parse_query(q: str) -> dict[str, Any]:
    """The parts of a DHuS Solr query sentinelsat writes, as plain values (unknown terms are ignored)."""
    parsed: dict[str, Any] = {}
    if m := re.search(r'beginPosition:\[\s*"?([^"\s]+)"?\s+TO\s+"?([^"\]]+)"?\s*\]', q, re.I):
        parsed["begin"] = (m[1], m[2])
    for key in ("platformname", "producttype"):
        if m := re.search(rf'{key}:"([^"]+)"', q, re.I):
            parsed[key] = m[1]
    if m := re.search(r'cloudcoverpercentage:\[\s*"?([\d.*]+)"?\s+TO\s+"?([\d.*]+)"?\s*\]', q, re.I):
        parsed["cloud"] = (float(m[1]) if m[1] != "*" else 0.0, float(m[2]) if m[2] != "*" else 100.0)
    if m := re.search(r'footprint:"Intersects\((.+)\)"', q, re.I):
        parsed["footprint"] = shapely.wkt.loads(m[1])
    return parsed


def solr_date(text: str) -> datetime:
    """'20150701', '2015-09-30T23:59:59.999Z' or 'NOW' -> an aware datetime."""
    if text == "NOW":
        return datetime.now(UTC)
    if re.fullmatch(r"\d{8}", text):
        return datetime.strptime(text, "%Y%m%d").replace(tzinfo=UTC)
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def gml_box(footprint: Any) -> str:
    """A footprint's bounds as DHuS writes GML coordinates: 'lat,lon lat,lon ...', closed."""
    west, south, east, north = footprint.bounds
    return f"{south},{west} {north},{west} {north},{east} {south},{east} {south},{west}"


def odata_date(when: datetime) -> str:
    return f"/Date({int(when.timestamp() * 1000)})/"


class DhusServer:
    """The HTTP server; it runs in its own process (see DhusServerProcess) so that downloads in the test's
    process never compete with it for the GIL. Every request is appended to `<folder>/requests.jsonl` as
    [method, path and query, Range header, status, body bytes sent]."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.templates = templates()
        self.products = build_products(folder)
        self.by_uuid = {p["uuid"]: p for p in self.products}
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/dhus/"
        self._lock = threading.Lock()
        self.active_downloads = 0

    def log(
        self, method: str, path: str, ranged: str | None, status: int, sent: int, auth: str | None = None
    ) -> None:
        """One line per request: [method, path, Range, status, bytes sent, Authorization header as received]."""
        with self._lock, (self.folder / "requests.jsonl").open("a") as handle:
            handle.write(json.dumps([method, path, ranged, status, sent, auth]) + "\n")

    def count_download(self, step: int) -> None:
        """Track product bodies being sent at once; the most so far is kept in `<folder>/peak_downloads`."""
        with self._lock:
            self.active_downloads += step
            (self.folder / "active_downloads").write_text(str(self.active_downloads))
            peak = self.folder / "peak_downloads"
            if not peak.exists() or int(peak.read_text()) < self.active_downloads:
                peak.write_text(str(self.active_downloads))

    def control(self, name: str) -> str | None:
        """The content of control file `name`, or None when it does not exist."""
        path = self.folder / name
        return path.read_text() if path.exists() else None

    def take(self, name: str) -> str | None:
        """Consume one use of a counted control file 'VALUE COUNT' (or 'COUNT'); None when none is left."""
        with self._lock:
            text = self.control(name)
            if text is None:
                return None
            *value, count = text.split()
            if int(count) <= 0:
                return None
            (self.folder / name).write_text(" ".join([*value, str(int(count) - 1)]))
            return " ".join(value) or "1"

    def is_online(self, product: dict[str, Any]) -> bool:
        """Offline products ('offline' file: uuid POLLS lines) come online after POLLS polls of Online/$value."""
        return product["uuid"] not in self.offline_polls_left()

    def offline_polls_left(self) -> dict[str, int]:
        text = self.control("offline") or ""
        return {
            u: int(n) for u, n in (line.split() for line in text.splitlines() if line.strip()) if int(n) > 0
        }

    def poll_online(self, product: dict[str, Any]) -> bool:
        with self._lock:
            left = self.offline_polls_left()
            if product["uuid"] not in left:
                return True
            if (self.folder / "triggered").exists() and product["uuid"] in (self.control("triggered") or ""):
                left[product["uuid"]] -= 1  # retrieval runs only once it has been requested
                (self.folder / "offline").write_text("".join(f"{u} {n}\n" for u, n in left.items()))
            return False

    def search(self, query: dict[str, Any], rows: int, start: int) -> dict[str, Any]:
        found = []
        for product in self.products:
            if query.get("platformname", product["platform"]) != product["platform"]:
                continue
            if query.get("producttype", product["producttype"]) != product["producttype"]:
                continue
            if "footprint" in query and not product["footprint"].intersects(query["footprint"]):
                continue
            if "begin" in query:
                low, high = (solr_date(v) for v in query["begin"])
                if not low <= product["acquired"] <= high:
                    continue
            cloud = product["cloud"]
            if "cloud" in query and (cloud is None or not query["cloud"][0] <= cloud <= query["cloud"][1]):
                continue
            found.append(product)
        feed = copy.deepcopy(self.templates["feed"])
        feed["opensearch:totalResults"] = str(len(found))
        feed["opensearch:startIndex"] = str(start)
        feed["opensearch:itemsPerPage"] = str(rows)
        feed["subtitle"] = f"Displaying {len(found)} results. Request done in 0.01 seconds."
        page = [self.entry(p) for p in found[start : start + rows]]
        if page:
            feed["entry"] = page if len(page) > 1 else page[0]  # DHuS sends a lone entry as an object
        else:
            feed.pop("entry", None)
        return {"feed": feed}

    def entry(self, product: dict[str, Any]) -> dict[str, Any]:
        if product["platform"] == "Sentinel-1":
            return self.s1_entry(product)
        entry = copy.deepcopy(self.templates["entry"])
        old_uuid = entry["id"]
        when = product["acquired"].isoformat().replace("+00:00", ".000Z")
        entry["title"] = product["name"]
        entry["id"] = product["uuid"]
        entry["summary"] = (
            f"Date: {when}, Instrument: MSI, Satellite: Sentinel-2, Size: {product['size'] / 2**20:.2f} MB"
        )
        for item in entry["date"]:
            if item["name"] in ("datatakesensingstart", "beginposition", "endposition"):
                item["content"] = when
        entry["double"]["content"] = f"{product['cloud']:.4f}"
        strings = {item["name"]: item for item in entry["str"]}
        strings["footprint"]["content"] = product["footprint"].wkt
        strings["gmlfootprint"]["content"] = re.sub(
            r"(?<=<gml:coordinates>)[^<]+", gml_box(product["footprint"]), strings["gmlfootprint"]["content"]
        )
        strings["tileid"]["content"] = "33TVM"
        strings["processingbaseline"]["content"] = "02.09"
        strings["filename"]["content"] = f"{product['name']}.SAFE"
        strings["identifier"]["content"] = product["name"]
        strings["uuid"]["content"] = product["uuid"]
        strings["size"]["content"] = f"{product['size'] / 2**20:.2f} MB"
        return json.loads(json.dumps(entry).replace(old_uuid, product["uuid"]))

    def s1_entry(self, product: dict[str, Any]) -> dict[str, Any]:
        """The recorded Sentinel-1 GRD entry (a stripmap HH/HV product) made this IW VV/VH product."""
        entry = copy.deepcopy(self.templates["s1_entry"])
        old_uuid = entry["id"]
        when = product["acquired"].isoformat().replace("+00:00", "Z")
        entry["title"], entry["id"] = product["name"], product["uuid"]
        entry["summary"] = (
            f"Date: {when}, Instrument: SAR-C SAR, Mode: VV VH, Satellite: Sentinel-1, Size: 2 MB"
        )
        for item in entry["date"]:
            if item["name"] in ("beginposition", "endposition"):
                item["content"] = when
        strings = {item["name"]: item for item in entry["str"]}
        for name, value in (
            ("sensoroperationalmode", "IW"), ("swathidentifier", "IW"), ("polarisationmode", "VV VH"),
            ("filename", f"{product['name']}.SAFE"), ("identifier", product["name"]), ("uuid", product["uuid"]),
            ("footprint", product["footprint"].wkt), ("size", f"{product['size'] / 2**20:.2f} MB"),
            ("status", "ONLINE"),
        ):  # fmt: skip
            strings[name]["content"] = value
        strings["gmlfootprint"]["content"] = re.sub(
            r"(?<=<gml:coordinates>)[^<]+", gml_box(product["footprint"]), strings["gmlfootprint"]["content"]
        )
        return json.loads(json.dumps(entry).replace(old_uuid, product["uuid"]))

    def odata(self, product: dict[str, Any]) -> dict[str, Any]:
        document = copy.deepcopy(self.templates["product"])
        old_uuid = document["Id"]
        document["Id"], document["Name"] = product["uuid"], product["name"]
        document["ContentLength"] = str(product["size"])
        document["Online"] = self.is_online(product)
        document["ContentDate"]["Start"] = document["ContentDate"]["End"] = odata_date(product["acquired"])
        document["Checksum"]["Value"] = product["md5"]
        document["ContentGeometry"] = re.sub(
            r"(?<=<gml:coordinates>)[^<]+", gml_box(product["footprint"]), document["ContentGeometry"]
        )
        return {"d": json.loads(json.dumps(document).replace(old_uuid, product["uuid"]))}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _send(
                self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                # Logged before the body goes out: a client that has its answer finds the request logged.
                server.log(
                    self.command,
                    self.path,
                    self.headers.get("Range"),
                    status,
                    len(body),
                    self.headers.get("Authorization"),
                )
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(self, document: Any) -> None:
                text = (
                    json.dumps(document)
                    .replace(UPSTREAM + "/", server.url)
                    .replace(UPSTREAM, server.url[:-1])
                )
                self._send(200, text.encode(), "application/json")

            def _authorised(self) -> bool:
                import base64

                expected = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                if self.headers.get("Authorization") == f"Basic {expected}":
                    return True
                body, realm = server.templates["401"]
                self._send(401, body.encode(), "text/html;charset=utf-8", {"WWW-Authenticate": realm})
                return False

            def _route(self) -> None:
                parsed = urlparse(self.path)
                if server.control("down") is not None:
                    self._send(503, b"Service Unavailable", "text/plain")
                    return
                if not self._authorised():
                    return
                if parsed.path == "/dhus/search":
                    query = parse_qs(parsed.query)
                    document = server.search(
                        parse_query(query.get("q", [""])[0]),
                        int(query.get("rows", ["100"])[0]),
                        int(query.get("start", ["0"])[0]),
                    )
                    self._json(document)
                    return
                m = re.fullmatch(r"/dhus/odata/v1/Products\('([^']+)'\)(/.*)?", parsed.path)
                product = server.by_uuid.get(m[1]) if m else None
                if m is None or product is None:
                    key = m[1] if m else parsed.path
                    body = server.templates["404"].replace("98ca202b-2155-4181-be88-xxxxxxxxxxxx", key)
                    self._send(404, body.encode(), "application/xml")
                    return
                rest = m[2] or ""
                if rest == "":
                    self._json(server.odata(product))
                elif rest == "/Online/$value":
                    online = server.poll_online(product)
                    self._send(200, b"true" if online else b"false", "text/plain;charset=utf-8")
                elif rest == "/$value":
                    self._value(product)
                else:
                    self._send(404, b"", "text/plain")

            def _value(self, product: dict[str, Any]) -> None:
                if not server.is_online(product):  # an archived product: the request triggers its retrieval
                    with server._lock, (server.folder / "triggered").open("a") as handle:
                        handle.write(product["uuid"] + "\n")
                    self._send(202, b"", "text/plain")
                    return
                if failing := server.take("fail_next"):  # "STATUS COUNT"
                    self._send(int(failing), b"", "text/plain", {"Retry-After": "1"})
                    return
                data = product["file"].read_bytes()
                size = len(data)
                start, end = 0, size - 1
                ranged = self.headers.get("Range")
                status = 200
                if ranged and (r := re.fullmatch(r"bytes=(\d+)-(\d*)", ranged.strip())):
                    start, end, status = int(r[1]), min(int(r[2]) if r[2] else end, size - 1), 206
                body = data[start : end + 1]
                self.send_response(status)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.send_header("Content-Disposition", f'inline;filename="{product["name"]}.zip"')
                self.send_header("ETag", product["md5"])
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command == "HEAD":
                    server.log("HEAD", self.path, ranged, status, 0, self.headers.get("Authorization"))
                    return
                if cut := server.take("drop_after"):  # "BYTES COUNT": send BYTES of the body, then hang up
                    self.wfile.write(body[: int(cut)])
                    self.wfile.flush()
                    self.close_connection = True
                    server.log("GET", self.path, ranged, status, int(cut), self.headers.get("Authorization"))
                    return
                if server.take("corrupt_next"):  # "COUNT": flip bytes in the middle of the body
                    middle = len(body) // 2
                    body = (
                        body[:middle]
                        + bytes(b ^ 0xFF for b in body[middle : middle + 64])
                        + body[middle + 64 :]
                    )
                slow = server.control("slow")
                # Counted from the request until just before the last chunk goes out: inside the client's own
                # span of that download, so the peak never over-counts the client's parallel downloads.
                server.count_download(+1)
                counted = True
                try:
                    for offset in range(0, len(body), 1 << 16):
                        if slow:
                            time.sleep(float(slow))
                        if offset + (1 << 16) >= len(body):
                            server.count_download(-1)
                            counted = False
                        self.wfile.write(body[offset : offset + (1 << 16)])
                finally:
                    if counted:
                        server.count_download(-1)
                server.log("GET", self.path, ranged, status, len(body), self.headers.get("Authorization"))

            def do_GET(self) -> None:  # noqa: N802
                self._route()

            def do_HEAD(self) -> None:  # noqa: N802
                self._route()

        return Handler


class DhusServerProcess:
    """The test-side handle: starts `python -m tests.core.sources.dhus_server FOLDER`, reads its log, sets faults."""

    def __init__(self, folder: Path) -> None:
        import subprocess
        import sys

        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        root = Path(__file__).resolve().parents[3]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.core.sources.dhus_server", str(folder)],
            cwd=root,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.stop()
            raise RuntimeError("the DHuS test server did not start")
        self.products = json.loads((folder / "products.json").read_text())

    def requests(self) -> list[list[Any]]:
        """The logged requests (see DhusServer.log)."""
        log = self.folder / "requests.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def downloads(self) -> list[list[Any]]:
        """The logged `$value` GET requests: [method, path, Range, status, bytes]."""
        return [
            r for r in self.requests() if r[0] == "GET" and r[1].endswith("/$value") and "Online" not in r[1]
        ]

    def flag(self, name: str, content: str | None) -> None:
        """Write control file `name` (None: remove it). Files: down; fail_next 'STATUS COUNT'; drop_after
        'BYTES COUNT'; corrupt_next 'COUNT'; slow 'SECONDS per 64 KB'; offline 'UUID POLLS' lines."""
        path = self.folder / name
        if content is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(content)

    def clear_log(self) -> None:
        """Forget the requests so far, once the server has finished sending (a cancelled download's body may
        still be on its way into a closed connection's buffer)."""
        active = self.folder / "active_downloads"
        deadline = time.monotonic() + 10
        while active.exists() and active.read_text() != "0" and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.05)  # its log line follows the last chunk
        (self.folder / "requests.jsonl").unlink(missing_ok=True)
        (self.folder / "peak_downloads").unlink(missing_ok=True)

    def peak_downloads(self) -> int:
        """The most product downloads the server has sent at the same time since `clear_log`."""
        peak = self.folder / "peak_downloads"
        return int(peak.read_text()) if peak.exists() else 0

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


if __name__ == "__main__":
    import sys

    server = DhusServer(Path(sys.argv[1]))
    (server.folder / "products.json").write_text(
        json.dumps([{k: str(v) if k in ("file", "acquired", "footprint") else v for k, v in p.items()}
                    for p in server.products])
    )  # fmt: skip
    print(server.url, flush=True)
    server.httpd.serve_forever()
