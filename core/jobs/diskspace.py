"""Full disks: tell them apart from other failures, and say which folder is full and how much space a job needs.

GDAL reports a full disk as "Write failed" or "TIFFAppendToStrip: Write error" (the ENOSPC itself goes to
stderr), onnxruntime as a damaged protobuf: so a failure while writing counts as a full disk when the errno
says so anywhere in its chain, or when one of the job's folders has less than `NEARLY_FULL_MB` left.
"""

import contextlib
import errno
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import AppError

NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
CACHE_FOLDER_LABEL = "the cache folder (TERRASEG_CACHE_DIR)"
# Below this a folder counts as full when a write failed without saying why (GDAL, onnxruntime).
NEARLY_FULL_MB = 16.0


class DiskFull(AppError):
    """A folder the job writes to has no space left; the sentence names it and the space the job needs."""


@dataclass(frozen=True)
class Folder:
    """A folder a job writes to, with how a user names it (`the cache folder (TERRASEG_CACHE_DIR)`)."""

    path: Path
    label: str


@dataclass
class DiskNeeds:
    """The space a job needs in each folder, in MB, known once its scenes are (filled in by the job)."""

    mb_by_label: dict[str, float] = field(default_factory=dict)


def free_mb(path: Path) -> float:
    """Free space for this process on the filesystem of `path` (or of its nearest existing parent), in MB."""
    for candidate in (path, *path.parents):
        with contextlib.suppress(OSError):
            return shutil.disk_usage(candidate).free / 1e6
    return float("inf")


def is_no_space(err: BaseException) -> bool:
    """Whether ENOSPC/EDQUOT is anywhere in the exception's chain."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in NO_SPACE_ERRNOS:
            return True
        current = current.__cause__ or current.__context__
    return False


def full_folder(err: BaseException, folders: list[Folder]) -> Folder | None:
    """The job folder that `err` ran out of space in, or None when `err` is not a full disk."""
    if isinstance(err, AppError | ConnectionError | TimeoutError):  # network errors are OSErrors too
        return None
    by_free = sorted(folders, key=lambda folder: free_mb(folder.path))
    if is_no_space(err):
        filename = getattr(err, "filename", None)
        if filename:
            for folder in folders:
                if Path(filename).resolve().is_relative_to(folder.path.resolve()):
                    return folder
        return by_free[0] if by_free else None
    # GDAL's and onnxruntime's own errors (told by their module: importing those here would cost every user).
    if isinstance(err, OSError) or type(err).__module__.startswith(("rasterio", "onnxruntime")):
        for folder in by_free:
            if free_mb(folder.path) < NEARLY_FULL_MB:
                return folder
    return None


def disk_full_sentence(folder: Folder, needed_mb: float | None) -> str:
    """'No space left in the output folder /x: the job needs about 12 MB there and 0.1 MB are free. ...'"""
    free = free_mb(folder.path)
    needs = f"the job needs about {format_mb(needed_mb)} there and " if needed_mb else ""
    return (
        f"No space left in {folder.label}: {needs}{format_mb(free)} are free. Free space there (or choose "
        "another folder), then retry the job; finished work is kept."
    )


def format_mb(megabytes: float) -> str:
    """0.04 -> '0.04 MB', 12.3 -> '12 MB', 2300 -> '2.3 GB'."""
    if megabytes >= 1000:
        return f"{megabytes / 1000:.1f} GB"
    return f"{megabytes:.0f} MB" if megabytes >= 10 else f"{megabytes:.2g} MB"


@contextlib.contextmanager
def disk_full_as_error(folders: list[Folder], needs: DiskNeeds) -> Iterator[None]:
    """Turn a full disk in one of `folders` into a DiskFull sentence; other errors pass unchanged."""
    try:
        yield
    except Exception as err:
        folder = full_folder(err, folders)
        if folder is None:
            raise
        raise DiskFull(disk_full_sentence(folder, needs.mb_by_label.get(folder.label))) from err


def cache_full_as_error(cache_dir: Path) -> contextlib.AbstractContextManager[None]:
    """A full cache disk met by work that writes only there (a chunk, a training run: checkpoints, features,
    the new version) as the DiskFull sentence that names the cache folder, not as an internal error."""
    return disk_full_as_error([Folder(cache_dir, CACHE_FOLDER_LABEL)], DiskNeeds())


def space_warning(needed_mb: float, folder: Folder) -> str | None:
    """A sentence for the pre-flight when `folder` has less free space than a job needs there."""
    free = free_mb(folder.path)
    if free >= needed_mb:
        return None
    return (
        f"{folder.label[0].upper()}{folder.label[1:]} has {format_mb(free)} free and this job needs about "
        f"{format_mb(needed_mb)} there: it will fail when the disk is full. Free space first."
    )
