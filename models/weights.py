"""Weights files: locate them and check them against the sha256 their card pins."""

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import ModelError

if TYPE_CHECKING:
    import torch


# (path, size, mtime) -> sha256, so a process (and the job processes a worker forks) hashes each weights file
# once; a file that is rewritten gets a new size or mtime and is hashed again.
_SHA256_SEEN: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (remembered per path, size and mtime)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _SHA256_SEEN:
        return _SHA256_SEEN[key]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    _SHA256_SEEN[key] = digest.hexdigest()
    return _SHA256_SEEN[key]


def verify_weights(path: Path, expected_sha256: str, model_id: str) -> str:
    """Return the file's sha256, or raise ModelError saying which file differs from what the card expects."""
    if not path.is_file():
        raise ModelError(
            f"The weights of model {model_id} are missing: {path} does not exist. Reinstall TerraSeg "
            "with 'make demo' or 'pip install -e .'."
        )
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise ModelError(
            f"The weights of model {model_id} ({path.name}) have sha256 {actual[:12]}..., but its "
            f"card expects {expected_sha256[:12]}...; the file was changed or a different package "
            "version is installed."
        )
    return actual


def check_state_dict(module: "torch.nn.Module", state: dict[str, "torch.Tensor"], file_name: str) -> None:
    """Raise ModelError naming the missing, unexpected and mis-shaped keys when `state` does not fit `module`."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    not_tensors = sorted(k for k, v in state.items() if not hasattr(v, "shape"))
    if not_tensors:
        raise ModelError(f"{file_name} is not a state dict: {', '.join(not_tensors[:3])} hold no tensors.")
    found = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mis_shaped = [
        f"{k} {found[k]} != {expected[k]}"
        for k in sorted(set(expected) & set(found))
        if found[k] != expected[k]
    ]
    problems = []
    if missing:
        problems.append(
            f"missing {len(missing)} keys ({', '.join(missing[:3])}{'...' if len(missing) > 3 else ''})"
        )
    if unexpected:
        problems.append(
            f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:3])}{'...' if len(unexpected) > 3 else ''})"
        )
    if mis_shaped:
        problems.append(f"{len(mis_shaped)} shapes differ ({'; '.join(mis_shaped[:3])})")
    if problems:
        raise ModelError(f"{file_name} does not fit the model's architecture: {'; '.join(problems)}.")
