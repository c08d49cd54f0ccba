"""Weights files: locate them and check them against the sha256 their card pins."""

import hashlib
from pathlib import Path

from core.errors import ModelError


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
