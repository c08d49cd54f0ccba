"""Whole-file downloads into the cache that resume, verify, dedupe and never leave a corrupt file in place.

`download_file` is the one way a full product (a SAFE zip from a DHuS mirror, say) reaches the cache:

- **resumable**: bytes go to `<name>.part` next to the target; after a dropped connection (or a crash, or a
  cancel) the next attempt asks for `Range: bytes=<have>-` and appends, so nothing is fetched twice;
- **verified**: the size and, where the server gives one, the MD5 are checked before the rename; a mismatch
  discards the partial file and downloads again (up to `attempts` times), so a bad file is never published;
- **atomic**: the finished file is renamed into place; a cached file that fails the check is moved aside
  (`.corrupt-<time>`, quarantined) and fetched again;
- **deduplicated**: an exclusive lock file (`<name>.lock`, flock) lets one process download while others wait
  and then reuse the result; it works across the workers of one machine sharing a cache;
- **bounded**: at most `slots` downloads per source run at once (lock files `<locks>/<source>/slot-N.lock`);
- **polite**: 429 and 503 wait for Retry-After (capped), other 5xx and dropped connections back off
  exponentially; 401/403 raise at once, naming the source;
- **cancellable**: `should_stop` is checked between chunks; the partial file stays for a later resume.
"""

import contextlib
import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from core.errors import JobCancelled, SourceError, SourceUnavailable
from core.jobs.store import file_lock

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20  # for reading files
# What arrives is written (and hashed) a chunk at a time: a dropped connection loses at most this much, and a
# cancel is noticed within one chunk (64 KB: about 1 ms at 50 MB/s).
NETWORK_CHUNK_BYTES = 1 << 16
MAX_RETRY_AFTER_S = 120.0
BytesProgress = Callable[[int, int | None], None]  # (bytes done, bytes expected or None)
StatusFn = Callable[[str], None]  # a one-line message while no bytes move (waiting for the archive)


@dataclass(frozen=True)
class Expected:
    """What the server says the file is: size in bytes and MD5 hex digest, either may be unknown."""

    size: int | None = None
    md5: str | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: `attempts` HTTP tries in all, waits from `backoff_s` doubling, each read `timeout_s`."""

    attempts: int = 6
    backoff_s: float = 1.0
    timeout_s: float = 60.0


def cache_name(text: str, max_length: int = 60) -> str:
    """A source name such as 'dhus:https://host/x/' as a folder name: '-', '_', '.' and alphanumerics kept."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:max_length]


def file_md5(path: Path, already: "hashlib._Hash | None" = None) -> str:
    """MD5 hex digest of a file (IO: reads it in 1 MB chunks)."""
    digest = already or hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


class BackgroundMd5:
    """MD5 of a stream computed on a second thread while the first receives (hashlib releases the GIL on large
    buffers), so verifying costs little download time; `prefix` is a file whose bytes come first (a resume)."""

    def __init__(self, prefix: Path | None = None) -> None:
        self._digest = hashlib.md5(usedforsecurity=False)
        if prefix is not None:
            file_md5(prefix, self._digest)
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        self._thread = threading.Thread(target=self._run, name="md5", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            self._digest.update(chunk)

    def update(self, chunk: bytes) -> None:
        self._chunks.put(chunk)

    def hexdigest(self) -> str:
        """Wait for the queued bytes and return the digest (the hasher is finished after this)."""
        self._chunks.put(None)
        self._thread.join()
        return self._digest.hexdigest()


def is_complete(path: Path, expected: Expected) -> bool:
    """Whether `path` exists with the expected size and MD5 (the checks the server lets us make)."""
    if not path.is_file():
        return False
    if expected.size is not None and path.stat().st_size != expected.size:
        return False
    return expected.md5 is None or file_md5(path) == expected.md5.lower()


def quarantine(path: Path, why: str) -> Path:
    """Move a bad cached file aside (kept for inspection) so that it is fetched again."""
    moved = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    os.replace(path, moved)
    log.warning("%s %s; moved to %s and fetching it again", path, why, moved.name)
    return moved


@contextlib.contextmanager
def lock_unless_stopped(
    path: Path, should_stop: Callable[[], bool] | None = None, poll_s: float = 0.2
) -> Iterator[None]:
    """Hold the job store's flock on `path`, waiting as long as it takes but noticing a cancel while waiting."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        with file_lock(path, wait_s=poll_s) as held:
            if held:
                yield
                return
        if should_stop is not None and should_stop():
            raise JobCancelled("The job was cancelled.")


@contextlib.contextmanager
def download_slot(
    lock_dir: Path, slots: int, should_stop: Callable[[], bool] | None = None, poll_s: float = 0.2
) -> Iterator[int]:
    """Take one of `slots` lock files in `lock_dir` (waiting for a free one); yields the slot number."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    while True:
        for number in range(slots):
            with file_lock(lock_dir / f"slot-{number}.lock") as held:
                if held:
                    yield number
                    return
        if should_stop is not None and should_stop():
            raise JobCancelled("The job was cancelled.")
        time.sleep(poll_s)


def retry_after_s(response: requests.Response, default_s: float) -> float:
    """Seconds a 429/503 answer asks us to wait (Retry-After in seconds), capped; `default_s` without one."""
    try:
        return min(float(response.headers.get("Retry-After", default_s)), MAX_RETRY_AFTER_S)
    except ValueError:  # an HTTP date: rare on these servers; back off as usual
        return default_s


def download_file(
    session: requests.Session,
    url: str,
    dest: Path,
    expected: Expected,
    source: str,
    progress: BytesProgress | None = None,
    should_stop: Callable[[], bool] | None = None,
    policy: RetryPolicy = RetryPolicy(),
) -> Path:
    """Download `url` to `dest` (see the module docstring); returns `dest`. Waits if another process has it.

    Raises SourceError (401/403/404, or still corrupt after every attempt), SourceUnavailable (server down or
    unreachable after every attempt: worth retrying the job later) or JobCancelled.
    """
    with lock_unless_stopped(dest.with_name(f"{dest.name}.lock"), should_stop):
        if dest.exists():
            if is_complete(dest, expected):
                log.info("%s is in the cache", dest.name)
                if progress is not None:
                    progress(dest.stat().st_size, expected.size)
                return dest
            quarantine(dest, "does not match its size or checksum")
        partial = dest.with_name(f"{dest.name}.part")
        last_error = "no answer"
        for attempt in range(1, policy.attempts + 1):
            wait_s = policy.backoff_s * 2 ** (attempt - 1)
            try:
                outcome = _fetch_into(session, url, partial, expected, source, progress, should_stop, policy)
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as err:
                last_error = f"connection lost ({type(err).__name__})"
                log.warning(
                    "%s: %s after %d bytes; resuming (try %d)", source, last_error, _size(partial), attempt
                )
                outcome = None
            if isinstance(outcome, requests.Response):  # the server asked us to wait or failed
                last_error = f"HTTP {outcome.status_code}"
                if outcome.status_code in (429, 503):
                    wait_s = retry_after_s(outcome, wait_s)
                log.warning("%s answered %s for %s; waiting %.1f s (try %d)", source, last_error, dest.name, wait_s,
                            attempt)  # fmt: skip
            elif isinstance(outcome, tuple):  # ("done", MD5 of the whole partial file)
                if expected.md5 is None or outcome[1] == expected.md5.lower():
                    os.replace(partial, dest)
                    return dest
                last_error = "checksum mismatch"
                log.warning(
                    "%s: %s failed its MD5 check; downloading it again (try %d)", source, dest.name, attempt
                )
                partial.unlink()
                wait_s = 0.0
            elif outcome == "oversize":
                last_error = "more bytes than announced"
                partial.unlink()
            if attempt < policy.attempts:
                sleep_unless_stopped(wait_s, should_stop)
        if last_error == "checksum mismatch":
            raise SourceError(
                f"{source}: {dest.name} arrived corrupt {policy.attempts} times (MD5 mismatch); it was not used. "
                "Try again later or use another source."
            )
        raise SourceUnavailable(
            f"{source}: downloading {dest.name} failed {policy.attempts} times ({last_error})."
        )


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def sleep_unless_stopped(seconds: float, should_stop: Callable[[], bool] | None) -> None:
    """Wait `seconds`, checking `should_stop` every 0.2 s; JobCancelled when it says stop."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if should_stop is not None and should_stop():
            raise JobCancelled("The job was cancelled.")
        time.sleep(min(left, 0.2))


def _fetch_into(
    session: requests.Session,
    url: str,
    partial: Path,
    expected: Expected,
    source: str,
    progress: BytesProgress | None,
    should_stop: Callable[[], bool] | None,
    policy: RetryPolicy,
) -> tuple[str, str] | str | requests.Response:
    """One HTTP try, appending to `partial`: ("done", its MD5), "oversize", or the response that failed.

    The MD5 is computed as the bytes arrive (after hashing what a resumed file already holds), so a verified
    download reads the file once.
    """
    have = _size(partial)
    if expected.size is not None and have >= expected.size:
        return ("done", file_md5(partial)) if have == expected.size else "oversize"
    headers = {"Range": f"bytes={have}-"} if have else {}
    with session.get(url, headers=headers, stream=True, timeout=policy.timeout_s) as response:
        if response.status_code in (401, 403):
            raise SourceError(
                f"{source} rejected the credentials (HTTP {response.status_code}). Check the user name and "
                "password (see README, 'Sources')."
            )
        if response.status_code == 404:
            raise SourceError(f"{source} has no file at {url} (HTTP 404); the product may have been removed.")
        if response.status_code == 429 or response.status_code >= 500:
            return response
        if response.status_code not in (200, 206):
            raise SourceError(f"{source} answered HTTP {response.status_code} to a download of {url}.")
        if response.status_code == 200 and have:  # the server ignored Range: start over
            have = 0
        if should_stop is not None and should_stop():  # before creating a file it would leave empty
            raise JobCancelled("The job was cancelled.")
        hasher = BackgroundMd5(partial if have else None) if expected.md5 is not None else None
        try:
            with partial.open("ab" if have else "wb") as out:
                for chunk in response.iter_content(NETWORK_CHUNK_BYTES):
                    if should_stop is not None and should_stop():
                        raise JobCancelled("The job was cancelled.")
                    out.write(chunk)
                    if hasher is not None:
                        hasher.update(chunk)
                    have += len(chunk)
                    if progress is not None:
                        progress(have, expected.size)
                    if expected.size is not None and have > expected.size:
                        return "oversize"
        finally:
            digest = hasher.hexdigest() if hasher is not None else ""  # also ends the hashing thread
    if expected.size is not None and have < expected.size:
        raise requests.exceptions.ChunkedEncodingError(f"ended at {have} of {expected.size} bytes")
    return "done", digest
