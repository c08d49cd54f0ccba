"""The job directories under `cache/jobs/<job_id>/`: the truth about every job, whatever Redis remembers.

A job directory holds:
- `spec.json`: the request (a JobSpec; a training run's TrainingSpec), written once at submission;
- `job.json`: submission facts (spec hash, queue, when, where to copy the outputs), written once;
- `status.json`: the current state, replaced atomically on every change;
- `log.txt`: an append-only log of stages, warnings and, for internal errors, the traceback;
- `outputs/`: the published outputs (complete or absent: see export.publish);
- `cancel`: present when a user asked to cancel;
- `.lock`: flock'd by the one process running the job, so a second run of it cannot start, and a dead
  run (the kernel drops its lock) is told from a live one.

This module knows nothing of RQ or Redis.
"""

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypedDict, TypeVar, Unpack

from pydantic import BaseModel, ConfigDict, ValidationError

from core.errors import AppError, SpecError
from core.jobs.diskspace import NO_SPACE_ERRNOS
from core.jobs.request import JobSpec

STATES = ("queued", "running", "finished", "failed", "cancelled")
TERMINAL_STATES = ("finished", "failed", "cancelled")
JOB_ID_PATTERN = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")
Request = TypeVar("Request", bound=BaseModel)
log = logging.getLogger(__name__)
# A folder this young without a status may be a submission still writing it; older, it was left half-made.
DAMAGED_AFTER_S = 60.0


class UnknownJob(AppError):
    """No job with that id exists on disk."""


def utc_now() -> str:
    """Now, ISO-8601 UTC to the second (what status files and the log use)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_job_id() -> str:
    """Sortable by submission time and unique: `YYYYMMDD-HHMMSS-xxxxxx`."""
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


@dataclass
class JobStatus:
    """A job's state as callers see it (pages, CLI); plain values only."""

    job_id: str
    state: str  # one of STATES
    stage: str = ""
    fraction: float = 0.0  # of the whole job, 0-1
    message: str = ""
    eta_s: float | None = None
    submitted_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    error: str | None = None  # the one sentence a user reads when the job failed
    outputs: list[str] = field(default_factory=list)
    attempts: int = 0  # how many times a worker started it
    worker: str | None = None
    spec_hash: str | None = None
    # The identical finished job whose outputs this one reuses ("": one of another owner, not named to this one).
    reused_from: str | None = None
    owner: str | None = None  # the web app account that submitted it (None: the command line)
    name: str = ""  # what its owner called it
    task: str = ""  # its request's task, and a line saying what it computes (for lists: no request to read)
    summary: str = ""
    # The queue its current or next run is on: "download" until a download worker has fetched its scenes, then
    # "inference" ("": the client's own queue, as for every job written before there were two).
    queue: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JobStatus":
        """Build from a status file's dict, ignoring keys this version does not know."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        """The dict written to `status.json` and printed by `terraseg status --json`."""
        return asdict(self)

    @property
    def is_terminal(self) -> bool:
        """Finished, failed or cancelled: nothing will change it unless a user retries."""
        return self.state in TERMINAL_STATES


class JobInfo(BaseModel):
    """Submission facts (`job.json`), written once: what the folder's request alone does not say."""

    model_config = ConfigDict(frozen=True, extra="ignore")  # a newer TerraSeg's extra facts are skipped

    kind: Literal["job", "training", "chunk"] = "job"
    spec_hash: str | None = None
    queue: str = ""  # the queue its first run goes to
    submitted_at: str | None = None
    copy_to: str | None = None  # the CLI's --out, where a copy of the outputs lands
    owner: str | None = None  # the web app account (None: the command line)
    name: str = ""
    task: str = ""
    summary: str = ""
    reused_from: str | None = None  # the identical finished job whose outputs were reused


class StatusChanges(TypedDict, total=False):
    """The fields of a JobStatus that a status update may change (type-checked at every call)."""

    state: str
    stage: str
    fraction: float
    message: str
    eta_s: float | None
    started_at: str | None
    ended_at: str | None
    error: str | None
    outputs: list[str]
    attempts: int
    worker: str | None
    reused_from: str | None
    queue: str


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to a temporary file beside `path`, fsync, rename: readers see the old or the new file.

    On a full disk the temporary file cannot be written: an existing file is then overwritten in place (its
    blocks are already allocated), so that a job can still be recorded as failed instead of staying "running".
    """
    text = json.dumps(data, indent=1)
    try:
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        if err.errno not in NO_SPACE_ERRNOS or not path.exists():
            raise
        overwrite_in_place(path, text)
        return
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.errno not in NO_SPACE_ERRNOS or not path.exists():
            raise
        overwrite_in_place(path, text)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def overwrite_in_place(path: Path, text: str) -> None:
    """Replace a small file's content without allocating a new file (not atomic: only for a full disk)."""
    with open(path, "r+") as out:
        out.write(text)
        out.truncate()
        out.flush()
        os.fsync(out.fileno())


@dataclass(frozen=True)
class DamagedFolder:
    """A job folder without a readable status (left by a submission that failed half-way, or damaged by hand):
    every scan skips it; admins see it listed (the Admin page, `terraseg health`) and may remove it."""

    job_id: str
    reason: str  # a sentence with no server path
    modified_at: str  # ISO UTC time of the folder's last change


class JobStore:
    """Reads and writes job directories under `root` (normally `<cache_dir>/jobs`)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def job_dir(self, job_id: str) -> Path:
        """The directory of `job_id`; refuses ids that are not ours (they could name paths elsewhere)."""
        if not JOB_ID_PATTERN.match(job_id):
            raise UnknownJob(f"{job_id!r} is not a TerraSeg job id (they look like 20261123-101500-a1b2c3).")
        return self.root / job_id

    def exists(self, job_id: str) -> bool:
        """Whether the job has a directory with a status file."""
        return (self.job_dir(job_id) / "status.json").exists()

    def create(self, job_id: str, spec: BaseModel, info: JobInfo) -> JobStatus:
        """Write spec.json, job.json and a first 'queued' status.json for a new job."""
        job_dir = self.job_dir(job_id)
        job_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(job_dir / "spec.json", spec.model_dump(mode="json"))
        write_json_atomic(job_dir / "job.json", info.model_dump(mode="json", exclude_defaults=True))
        status = JobStatus(
            job_id=job_id,
            state="queued",
            message="waiting for a worker",
            submitted_at=utc_now(),
            spec_hash=info.spec_hash,
            owner=info.owner,
            name=info.name,
            task=info.task,
            summary=info.summary,
            queue=info.queue,
        )
        self.write_status(status)
        self.append_log(job_id, "submitted")
        return status

    def read_spec(self, job_id: str) -> JobSpec:
        """The job's request, or a SpecError saying plainly that its file is damaged."""
        return self.read_request(job_id, JobSpec)

    def read_request(self, job_id: str, kind: type[Request]) -> Request:
        """The job's request as a `kind` (whose `schema_version` field's default is the version this TerraSeg
        writes), or a SpecError saying plainly that its file is damaged or was made by an older TerraSeg."""
        path = self.job_dir(job_id) / "spec.json"
        try:
            document = json.loads(path.read_text())
            if (
                isinstance(document, dict)
                and document.get("schema_version") != kind.model_fields["schema_version"].default
            ):
                raise SpecError(
                    f"Job {job_id}'s request was made by an older TerraSeg; submit it again."
                ) from None
            return kind.model_validate(document)
        except FileNotFoundError:
            raise SpecError(f"Job {job_id} has no request file ({path.name}); it cannot run.") from None
        except (ValueError, ValidationError) as err:
            reason = err.errors()[0]["msg"] if isinstance(err, ValidationError) else "not valid JSON"
            raise SpecError(
                f"Job {job_id}'s request file {path.name} is damaged ({reason}); submit the job again."
            ) from None

    def read_info(self, job_id: str) -> JobInfo:
        """Submission facts from job.json (all defaults when missing or damaged: nothing in it is essential)."""
        try:
            return JobInfo.model_validate_json((self.job_dir(job_id) / "job.json").read_text())
        except (OSError, ValueError):  # pydantic's ValidationError is a ValueError
            return JobInfo()

    def read_status(self, job_id: str) -> JobStatus:
        """The status on disk; a damaged status file reads as a failed job that says so."""
        path = self.job_dir(job_id) / "status.json"
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or data.get("state") not in STATES:
                raise ValueError("no valid state")
            return JobStatus.from_dict(data | {"job_id": job_id})
        except FileNotFoundError:
            raise UnknownJob(f"There is no job {job_id}.") from None
        except (ValueError, TypeError):
            return JobStatus(job_id=job_id, state="failed", error=f"Job {job_id}'s status file is damaged.")

    def write_status(self, status: JobStatus) -> None:
        """Replace status.json atomically."""
        write_json_atomic(self.job_dir(status.job_id) / "status.json", status.to_dict())

    def update_status(self, job_id: str, **changes: Unpack[StatusChanges]) -> JobStatus:
        """Read, change some fields, write back; returns the new status."""
        status = self.read_status(job_id)
        for name, value in changes.items():
            setattr(status, name, value)
        self.write_status(status)
        return status

    def append_log(self, job_id: str, message: str) -> None:
        """One timestamped line (or block, for tracebacks) at the end of log.txt."""
        try:
            with open(self.job_dir(job_id) / "log.txt", "a") as out:
                out.write(f"{utc_now()} {message.rstrip()}\n")
        except OSError as err:
            if err.errno not in NO_SPACE_ERRNOS:
                raise
            # A full disk loses log lines, not the job: its status still records how it ended.

    def read_log(self, job_id: str) -> str:
        """The whole log ('' when nothing was logged yet)."""
        path = self.job_dir(job_id) / "log.txt"
        if not self.job_dir(job_id).exists():
            raise UnknownJob(f"There is no job {job_id}.")
        return path.read_text() if path.exists() else ""

    def outputs_dir(self, job_id: str) -> Path:
        """Where the job's outputs are published."""
        return self.job_dir(job_id) / "outputs"

    def link_outputs(self, source_id: str, job_id: str) -> list[str]:
        """Publish finished job `source_id`'s outputs as `job_id`'s too (hard links: no copy, no shared deletion;
        a copy where the file system has none); returns their paths."""
        target = self.outputs_dir(job_id)
        staging = target.with_name(".outputs.staging")
        staging.mkdir()
        for path in self.outputs_dir(source_id).iterdir():
            try:
                os.link(path, staging / path.name)
            except OSError:
                shutil.copy2(path, staging / path.name)
        staging.rename(target)
        return [str(target / p.name) for p in sorted(target.iterdir())]

    def request_cancel(self, job_id: str) -> None:
        """Leave the cancel mark that a running job polls between tiles."""
        (self.job_dir(job_id) / "cancel").touch()

    def clear_cancel(self, job_id: str) -> None:
        """Remove the cancel mark (before a retry)."""
        (self.job_dir(job_id) / "cancel").unlink(missing_ok=True)

    def cancel_requested(self, job_id: str) -> bool:
        """Whether a user asked to cancel (a stat call: cheap enough to ask between tiles)."""
        return (self.job_dir(job_id) / "cancel").exists()

    def job_ids(self) -> list[str]:
        """All job ids on disk, newest first."""
        if not self.root.exists():
            return []
        return sorted((p.name for p in self.root.iterdir() if JOB_ID_PATTERN.match(p.name)), reverse=True)

    def in_submission_order(self) -> list[str]:
        """All job ids on disk, oldest first, to the nanosecond (ids alone order jobs only to the second):
        job.json is written once, at submission."""

        def submitted_ns(job_id: str) -> int:
            try:
                return (self.root / job_id / "job.json").stat().st_mtime_ns
            except OSError:
                return 0

        return sorted(self.job_ids(), key=lambda job_id: (submitted_ns(job_id), job_id))

    def readable_statuses(self, job_ids: list[str]) -> Iterator[JobStatus]:
        """The statuses of `job_ids` in the order given, skipping folders without a readable status: a folder
        left by a submission that failed half-way, or one being created or deleted right now, must not stop a
        scan of every other job."""
        for job_id in job_ids:
            try:
                yield self.read_status(job_id)
            except (UnknownJob, OSError) as err:
                log.warning("Job folder %s skipped: %s", job_id, err)

    def damaged_folders(self) -> list[DamagedFolder]:
        """The job folders without a status file, older than DAMAGED_AFTER_S and not locked (so no submission
        or job is writing them), newest first."""
        found = []
        for job_id in self.job_ids():
            folder = self.root / job_id
            try:
                if (folder / "status.json").exists() or time.time() - folder.stat().st_mtime < DAMAGED_AFTER_S:
                    continue
                contents = sorted(p.name for p in folder.iterdir())
                modified = datetime.fromtimestamp(folder.stat().st_mtime, UTC).isoformat(timespec="seconds")
            except OSError as err:  # unreadable: damaged too, but say how
                found.append(DamagedFolder(job_id, f"The folder cannot be read ({err.strerror}).", ""))
                continue
            if not self.is_unlocked(job_id):
                continue
            holds = ", ".join(contents) if contents else "nothing"
            found.append(DamagedFolder(job_id, f"No status file; the folder holds {holds}.", modified))
        return found

    def remove_damaged(self, job_id: str) -> bool:
        """Delete a folder that damaged_folders lists (checked again now); False when it is not damaged."""
        if job_id not in {damaged.job_id for damaged in self.damaged_folders()}:
            return False
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        log.warning("Damaged job folder %s removed", job_id)
        return True

    def find_finished(self, spec_hash: str) -> JobStatus | None:
        """A finished job with this spec hash whose outputs are still on disk, newest first."""
        for status in self.readable_statuses(self.job_ids()):
            if (
                status.state == "finished"
                and status.spec_hash == spec_hash
                and (self.outputs_dir(status.job_id) / "run.json").exists()
            ):
                return status
        return None

    def find_active(self, spec_hash: str) -> JobStatus | None:
        """A queued or running job with this spec hash, oldest first (the one whose work will be reused)."""
        for status in self.readable_statuses(list(reversed(self.job_ids()))):
            if status.state in ("queued", "running") and status.spec_hash == spec_hash:
                return status
        return None

    def try_lock(self, job_id: str, wait_s: float = 0.0) -> contextlib.AbstractContextManager[bool]:
        """flock the job's `.lock`: True while this process holds it, False when another process does.

        The kernel releases the lock when its holder dies, however it dies, so "lock free but state running"
        means the run was abandoned.
        """
        return file_lock(self.job_dir(job_id) / ".lock", wait_s)

    def is_unlocked(self, job_id: str) -> bool:
        """Whether no process holds the job's lock (probed by taking it for a moment; a job starting meanwhile
        waits for it, as it does for a client that is queueing it)."""
        with self.try_lock(job_id) as held:
            return held


# Lock files this process holds open. A forked child (RQ's work horse, its scheduler process) gets a copy of
# every open file, and an flock belongs to the open file, not to the process: a long-lived child would keep a
# lock taken by another thread of its parent (the recovery thread probing a job, a download's lock) long after
# the parent released it, and that job would never run again. The child drops its copies right after the fork;
# `_fork_guard` keeps a lock file from being opened while another thread forks, so none is missed.
_held_lock_fds: set[int] = set()
_fork_guard = threading.Lock()


def _drop_inherited_locks() -> None:
    """In a forked child: point every inherited lock file descriptor at /dev/null (the parent keeps its lock).

    dup2 rather than close: code that still holds the handle (the forking thread's own `with file_lock`, if it
    ever ran on in the child) closes a valid descriptor, not one a later open() reused.
    """
    _fork_guard.release()  # held by the forking thread (this child's only thread) since the `before` hook
    if not _held_lock_fds:
        return
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        for fd in list(_held_lock_fds):
            with contextlib.suppress(OSError):
                os.dup2(devnull, fd)
    finally:
        os.close(devnull)
    _held_lock_fds.clear()


os.register_at_fork(
    before=_fork_guard.acquire, after_in_parent=_fork_guard.release, after_in_child=_drop_inherited_locks
)


@contextlib.contextmanager
def file_lock(path: Path, wait_s: float = 0.0, remove: bool = False) -> Iterator[bool]:
    """Hold an exclusive flock on `path` (created if missing); yields False if not got within `wait_s`.

    With `remove`, the lock file is deleted when released (so such files do not pile up); a process that waited
    on the deleted file notices (its file is no longer the one at `path`) and locks the new one instead. A
    process forked while the lock is held does not hold it (see `_drop_inherited_locks`).
    """
    deadline = time.monotonic() + wait_s
    while True:
        with _fork_guard:
            handle = open(path, "a")  # noqa: SIM115 (kept open while locked)
            _held_lock_fds.add(handle.fileno())
        try:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        yield False
                        return
                    time.sleep(0.05)
            try:
                current = os.stat(path).st_ino
            except FileNotFoundError:
                current = None
            if current != os.fstat(handle.fileno()).st_ino:
                continue  # its holder removed it meanwhile: lock the file now at `path`
            try:
                yield True
            finally:
                if remove:
                    path.unlink(missing_ok=True)
            return
        finally:
            with _fork_guard:
                _held_lock_fds.discard(handle.fileno())
                handle.close()  # closing drops the lock
