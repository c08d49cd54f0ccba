"""Writing torch state files (checkpoints, model versions, imported weights)."""

import errno
from pathlib import Path
from typing import Any

import torch


def save_state(state: Any, path: Path) -> None:  # noqa: ANN401 (whatever torch.save takes)
    """torch.save, with a failed write raised as an OSError: torch reports a full disk as a RuntimeError about
    stream positions ("unexpected pos 576 vs 534"), which callers could not tell from a bug; as an OSError it is
    turned into the full-disk sentence when the folder is (nearly) full (core.jobs.diskspace.full_folder)."""
    try:
        torch.save(state, path)
    except RuntimeError as err:
        raise OSError(errno.EIO, f"writing {path.name} failed ({err})", str(path)) from err
