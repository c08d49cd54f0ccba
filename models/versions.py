"""Versions of a model trained here: immutable folders `<cache>/models/<id>/v<N>/` (card + weights), and
`<id>/versions.json`, which says which version is in production and keeps an append-only record of who made,
promoted or rolled back which version, and when.

A version is a *candidate* until promoted, *production* while jobs use it, *archived* once another version
replaced it. The first version of a new id starts in production (there is nothing to compare it with); later
ones start as candidates. Torch-free: the web app and the CLI read this.
"""

import getpass
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.errors import ModelError
from core.jobs.store import file_lock, utc_now, write_json_atomic

VERSIONS_FILE = "versions.json"
VERSION_FOLDER = re.compile(r"^v([1-9][0-9]*)$")
State = Literal["candidate", "production", "archived"]


@dataclass
class Versions:
    """versions.json: the production version, the versions that were in production before (oldest first), and
    the events."""

    production: str
    previous: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def state(self, version: str) -> State:
        if version == self.production:
            return "production"
        return "archived" if version in self.previous else "candidate"


def read_versions(model_dir: Path) -> Versions | None:
    """The model's versions.json, or None for a model that is not versioned (shipped or imported)."""
    path = model_dir / VERSIONS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return Versions(str(data["production"]), list(data.get("previous", [])), list(data.get("events", [])))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelError(f"The version record {path} is damaged ({err}); restore it from a backup.") from err


def version_folders(model_dir: Path) -> dict[str, Path]:
    """{version: folder} of the model's version folders, oldest first."""
    found = {}
    for child in model_dir.iterdir() if model_dir.is_dir() else []:
        match = VERSION_FOLDER.match(child.name)
        if match and (child / "card.json").is_file():
            found[match.group(1)] = child
    return dict(sorted(found.items(), key=lambda item: int(item[0])))


def _write(model_dir: Path, versions: Versions) -> None:
    write_json_atomic(
        model_dir / VERSIONS_FILE,
        {"production": versions.production, "previous": versions.previous, "events": versions.events},
    )


def _event(action: str, version: str, by: str | None) -> dict[str, Any]:
    return {"at": utc_now(), "by": by or getpass.getuser(), "action": action, "version": version}


def next_version(model_dir: Path) -> str:
    """The number the next version of this model gets."""
    existing = version_folders(model_dir)
    return str(max((int(v) for v in existing), default=0) + 1)


def record_new_version(model_dir: Path, version: str, by: str | None = None) -> State:
    """Record a version just installed in `model_dir/v<version>/`; returns the state it starts in."""
    with file_lock(model_dir / ".versions.lock", wait_s=30):
        versions = read_versions(model_dir)
        if versions is None:
            versions = Versions(production=version)
            versions.events.append(_event("created (production: the first version)", version, by))
        else:
            versions.events.append(_event("created (candidate)", version, by))
        _write(model_dir, versions)
        return versions.state(version)


def promote(model_dir: Path, version: str, by: str | None = None) -> Versions:
    """Put `version` in production; the one it replaces is archived."""
    with file_lock(model_dir / ".versions.lock", wait_s=30):
        versions = _require(model_dir)
        if version not in version_folders(model_dir):
            known = ", ".join(version_folders(model_dir))
            raise ModelError(f"{model_dir.name} has no version {version}; its versions are {known}.")
        if version == versions.production:
            raise ModelError(f"Version {version} of {model_dir.name} is in production already.")
        versions.previous = [v for v in versions.previous if v != version] + [versions.production]
        versions.production = version
        versions.events.append(_event("promoted to production", version, by))
        _write(model_dir, versions)
        return versions


def rollback(model_dir: Path, by: str | None = None) -> Versions:
    """Put the version that was in production before back; the current one is archived."""
    with file_lock(model_dir / ".versions.lock", wait_s=30):
        versions = _require(model_dir)
        if not versions.previous:
            raise ModelError(f"{model_dir.name} has no earlier production version to roll back to.")
        replaced = versions.production
        versions.production = versions.previous.pop()
        versions.previous.append(replaced)  # archived
        versions.events.append(_event(f"rolled back from {replaced}", versions.production, by))
        _write(model_dir, versions)
        return versions


def _require(model_dir: Path) -> Versions:
    versions = read_versions(model_dir)
    if versions is None:
        raise ModelError(
            f"{model_dir.name} has no versions: only models trained here do (shipped and imported ones have one)."
        )
    return versions
