"""Real components for job and page tests: a redis-server on a free port and `terraseg worker` processes.

Loaded as a pytest plugin by tests/conftest.py, so every test folder gets these fixtures.
"""

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform_bounds

from core.config import Settings
from core.jobs.request import JobRequest, JobSpec, build_spec
from core.sources import SAMPLE_DIR
from models.catalogue import catalogue
from tests.conftest import TEST_DATA, write_scene
from worker.queue.client import JobClient

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_AOI = json.loads((SAMPLE_DIR / "aoi.geojson").read_text())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A throw-away redis-server (no persistence, so a restart comes back empty)."""

    def __init__(self, workdir: Path, password: str | None = None) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        secret = f":{self.password}@" if self.password else ""
        return f"redis://{secret}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                *(["--requirepass", self.password] if self.password else []),
            ],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if not any((Path(p) / "redis-server").exists() for p in os.environ.get("PATH", "").split(os.pathsep)):
        pytest.fail("redis-server is not installed; `make test` installs it (apt package redis-server)")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def settings(tmp_path: Path, redis_server: RedisServer) -> Settings:
    return Settings(redis_url=redis_server.url, cache_dir=tmp_path / "cache", recover_interval_s=1.0)


def job_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TERRASEG_REDIS_URL": settings.redis_url,
        "TERRASEG_CACHE_DIR": str(settings.cache_dir),
        "TERRASEG_RECOVER_INTERVAL_S": str(settings.recover_interval_s),
        "TERRASEG_CHUNK_KM": str(settings.chunk_km),
    }


class WorkerZygote:
    """`python -m tests.worker_zygote`: one warm interpreter per test process that forks `terraseg worker`s."""

    _running: "WorkerZygote | None" = None

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.worker_zygote"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    @classmethod
    def running(cls) -> "WorkerZygote":
        if cls._running is None or cls._running.process.poll() is not None:
            cls._running = cls()
        return cls._running

    def fork(self, args: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> int:
        """Start a worker; its pid."""
        assert self.process.stdin is not None and self.process.stdout is not None
        request = {"args": args, "env": env, "cwd": str(cwd), "log": str(log_path)}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer.strip():
            raise RuntimeError("the worker zygote (python -m tests.worker_zygote) did not start a worker")
        return int(answer)


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class WorkerProcess:
    """A `terraseg worker` process in its own session, so a test can SIGKILL it like a dying machine would.
    Forked by the zygote (tests/worker_zygote.py): the same `worker.cli.main`, without paying torch's import
    for every worker a test starts."""

    def __init__(self, settings: Settings, log_path: Path, *args: str) -> None:
        self.log_path = log_path
        self.pid = WorkerZygote.running().fork(list(args), job_env(settings), settings.cache_dir.parent, log_path)

    def _signal(self, signum: int) -> None:
        try:
            os.killpg(self.pid, signum)  # the worker with its work horse and scheduler
        except ProcessLookupError:  # not yet in a session of its own (signalled right after its start)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def wait(self, timeout_s: float) -> bool:
        """Whether the worker ended within `timeout_s` (the zygote reaps it at once)."""
        deadline = time.monotonic() + timeout_s
        while process_exists(self.pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def kill(self) -> None:
        """SIGKILL, no chance to clean up (its work horse dies with it: PR_SET_PDEATHSIG)."""
        self._signal(signal.SIGKILL)
        self.wait(10)

    def stop(self) -> None:
        """SIGTERM, and SIGKILL after 3 s: a worker still in a job at a test's end would finish it first."""
        if process_exists(self.pid):
            self._signal(signal.SIGTERM)
            if not self.wait(3):
                self.kill()


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def start(*args: str) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"worker-{len(workers)}.log", *args)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def client(settings: Settings) -> JobClient:
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    return JobClient(settings)


def wait_for(
    client: JobClient, job_id: str, states: tuple[str, ...], timeout_s: float = 120, min_fraction: float = 0.0
) -> None:
    """Poll until the job is in one of `states` (and has reached `min_fraction`), else fail with its log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.status(job_id)
        if status.state in states and status.fraction >= min_fraction:
            return
        if status.is_terminal and status.state not in states:
            break
        time.sleep(0.1)
    status = client.status(job_id)
    pytest.fail(
        f"job {job_id} is {status.state} ({status.message}), not {states}; log:\n{client.logs(job_id)}"
    )


@pytest.fixture
def tmpfs() -> Iterator[Callable[[Path, str], Path]]:
    """Mount small tmpfs filesystems (`tmpfs(path, "64k")`) to fill a disk for real; unmounted afterwards.

    Mounting needs root (CI runs as root); elsewhere the test is skipped with that reason.
    """
    mounted: list[Path] = []

    def mount(path: Path, size: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("disk-full tests mount a small tmpfs, which needs root (CI runs as root)")
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); disk-full tests need one")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "--lazy", str(path)], check=False)


def resize_tmpfs(path: Path, size: str) -> None:
    """Give a mounted tmpfs more (or less) room, as an operator freeing space would."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def sample_spec(**changes: object) -> JobSpec:
    """The demo request: the embedded sample, all 5 dates, the default cloud model."""
    fields: dict[str, object] = {
        "aoi": SAMPLE_AOI,
        "start": "2015-07-01",
        "end": "2015-09-30",
        "task": "cloud",
        "model_id": "cloud-csmask",
    } | changes
    return request_spec(**fields)


def request_spec(**fields: Any) -> JobSpec:
    """A spec built the way the CLI and the page build theirs (core.jobs.request.build_spec), with default limits."""
    return build_spec(JobRequest(**fields), Settings(), catalogue(), lambda name: None)


@pytest.fixture(scope="session")
def large_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """A local source with 4 dates of 1,300 x 1,300 px (about 170 km2) built from the real sample's pixels.

    Big enough that inference takes tens of tiles per date (so a kill or a cancel lands mid-inference),
    small enough to run in seconds. Returns the folder and an AOI (GeoJSON) inside it.
    """
    folder = tmp_path_factory.mktemp("large_source")
    size = 1300
    for index, name in enumerate(sorted(SAMPLE_DIR.glob("*.tif"))[:4]):
        with rasterio.open(name) as src:
            pixels = src.read()
            crs, bounds = src.crs, src.bounds
            acquired = src.tags()["ACQUISITION_DATETIME"]
        reps = (1, size // pixels.shape[1] + 1, size // pixels.shape[2] + 1)
        data = np.tile(pixels, reps)[:, :size, :size]
        write_scene(folder / f"large_{index}.tif", data, origin=(bounds.left, bounds.top), acquired=acquired)
    west, south, east, north = transform_bounds(
        crs,
        "EPSG:4326",
        bounds.left + 200,
        bounds.top - size * 10 + 200,
        bounds.left + size * 10 - 200,
        bounds.top - 200,
    )
    aoi = {
        "type": "Polygon",
        "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]],
    }
    return folder, aoi


def large_spec(large_source: tuple[Path, dict[str, object]], **changes: object) -> JobSpec:
    folder, aoi = large_source
    fields: dict[str, object] = {
        "aoi": aoi,
        "start": "2015-07-01",
        "end": "2015-08-31",
        "task": "cloud",
        "model_id": "cloud-csmask",
        "sources": (f"local:{folder}",),
    } | changes
    return request_spec(**fields)


def write_two_zone_source(
    folder: Path, width_km: float, height_km: float, dates: tuple[str, ...] = ("2015-07-11", "2015-08-20")
) -> dict[str, object]:
    """A local source across the UTM zone border at 18 E, 46 N: each date a mosaic of a scene in UTM 33N (west of
    the border) and one in UTM 34N (east of it, the west one mirrored, so the two halves differ), tiled from the
    embedded sample's real pixels of that date. Returns an AOI (GeoJSON) of `width_km` x `height_km` across the
    border, its centroid just west of it (so the job's grid is in UTM 33N); the scenes reach 300 m past it."""
    from pyproj import Transformer

    border_lon, lat = 18.0, 46.0
    width_px, height_px = round(width_km * 60 + 30), round(height_km * 100 + 60)  # 0.6 of the width a side
    samples = {p.name[7:15]: p for p in sorted(SAMPLE_DIR.glob("*.tif"))}
    for day in dates:
        with rasterio.open(samples[day.replace("-", "")]) as src:
            pixels, acquired = src.read(), src.tags()["ACQUISITION_DATETIME"]
        reps = (1, height_px // pixels.shape[1] + 1, width_px // pixels.shape[2] + 1)
        data = np.tile(pixels, reps)[:, :height_px, :width_px]
        for zone in ("33", "34"):
            crs = f"EPSG:326{zone}"
            x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(border_lon, lat)
            left = round(x / 10) * 10 - (width_px * 10 - 300 if zone == "33" else 300)
            top = round(y / 10) * 10 + height_px * 5
            scene = data if zone == "33" else data[:, :, ::-1].copy()
            write_scene(folder / f"{zone}_{day}.tif", scene, crs=crs, origin=(left, top), acquired=acquired)
    half_lon = width_km / 2 / (111.32 * math.cos(math.radians(lat)))
    half_lat = height_km / 2 / 111.2
    west, east = border_lon - half_lon * 1.06, border_lon + half_lon * 0.94
    south, north = lat - half_lat, lat + half_lat
    return {
        "type": "Polygon",
        "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]],
    }


TANZANIA = TEST_DATA / "s2_tanzania_timeseries_rsgislib" / "timeseries_T37MEM_stack.npz"


@pytest.fixture(scope="session")
def tanzania_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """The real series as 21 scene GeoTIFFs in TerraSeg's local-source format (`write_tanzania_source`)."""
    folder = tmp_path_factory.mktemp("tanzania")
    return folder, write_tanzania_source(folder)


def write_tanzania_source(folder: Path) -> object:
    """Write the real Tanzania series into `folder` as 21 scene GeoTIFFs (L2A, reflectance x 1000); returns the
    series (its arrays, dates, transform and CRS).

    Masked pixels are 0 in every band (the file's `nodata` of 1 is a real low reflectance, never a whole pixel).
    """
    series = np.load(TANZANIA)
    transform = series["transform"]
    bands = tuple(b if len(b) == 3 else f"B0{b[1:]}" for b in (str(b) for b in series["bands"]))
    for index, stamp in enumerate(series["dates"]):
        acquired = f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:]}T07:30:00Z"
        write_scene(
            folder / f"T37MEM_{stamp}.tif",
            series["data"][index],
            bands=bands,
            crs=str(series["crs_wkt"]),
            origin=(float(transform[2]), float(transform[5])),
            resolution_m=20.0,
            acquired=acquired,
            level="L2A",
            scale=1e-3,
            nodata=0,
        )
    return series
