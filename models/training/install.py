"""The one way a trained model becomes an installed version `<installed_dir>/<id>/v<N>/`: its weights, the files
that travel with it, and a card that pins the weights' sha256, renamed into place whole and recorded in
versions.json (models.versions); and the cards of the kinds of models trained here."""

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.errors import ModelError
from core.jobs.store import file_lock
from core.learning.metrics import Metrics
from core.types import ClassInfo, ModelCard, Series
from models.torch_files import save_state
from models.training.seeds import PatchInputs
from models.versions import State, next_version, read_versions, record_new_version

# Colours for a new legend (tab10), in class order.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip


@dataclass(frozen=True)
class WeightsFile:
    """The weights of a version being installed: its version, the file's name and its sha256."""

    version: str
    name: str
    sha256: str


@dataclass(frozen=True)
class NewVersion:
    """A trained model to install: its id, its weights, its card (made once the version and the weights' file
    are known), who trained it, the end of the weights' file name (`<id>-v<N><suffix>.pt`) and the files that
    travel with it (comparison PNGs of the validation area, shown by the admin page: {name: PNG})."""

    model_id: str
    state: dict[str, torch.Tensor]
    card: Callable[[WeightsFile], ModelCard]
    by: str | None
    suffix: str = ""
    maps: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class Installed:
    """Where a new version went, its number and the state it starts in (the first version of an id goes to
    production, later ones are candidates)."""

    folder: Path
    version: str
    state: State


def install_version(installed_dir: Path, new: NewVersion) -> Installed:
    """Install `new` as the next version of its id: the weights and maps are written into a staging folder,
    the card next to them, and the folder renamed into place as `<installed_dir>/<id>/v<N>/`."""
    model_dir = installed_dir / new.model_id
    if model_dir.exists() and read_versions(model_dir) is None:
        raise ModelError(
            f"A model {new.model_id} is installed already and has no versions; choose another --as id."
        )
    model_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(model_dir / ".install.lock", wait_s=60):
        version = next_version(model_dir)
        staging = Path(tempfile.mkdtemp(dir=model_dir, prefix=f".v{version}."))
        try:
            weights_name = f"{new.model_id}-v{version}{new.suffix}.pt"
            save_state(new.state, staging / weights_name)
            if new.maps:
                (staging / "maps").mkdir()
                for name, path in new.maps.items():
                    shutil.copyfile(path, staging / "maps" / f"{name}.png")
            sha256 = hashlib.sha256((staging / weights_name).read_bytes()).hexdigest()
            card = new.card(WeightsFile(version, weights_name, sha256))
            (staging / "card.json").write_text(json.dumps(card.model_dump(mode="json"), indent=1))
            os.rename(staging, model_dir / f"v{version}")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        started_as = record_new_version(model_dir, version, new.by)
    return Installed(model_dir / f"v{version}", version, started_as)


def trained_card(
    base: ModelCard,
    new_id: str,
    version: str,
    legend: tuple[str, ...],
    weights_name: str,
    sha256: str,
    training: dict[str, Any],
    metrics: dict[str, Metrics | None],
) -> ModelCard:
    """A head (or fine-tuned network) on a base's features: the base's input and normalisation, the new legend,
    where it came from."""
    classes = tuple(
        ClassInfo(value, name, PALETTE[value % len(PALETTE)]) for value, name in enumerate(legend)
    )
    # A head fitted on scenes of a level the base only ran on with a caveat has learnt that level (preferred
    # now); the base's features still know the levels they were trained on.
    level = str(training.get("processing_level", ""))
    levels = base.processing_levels
    if level and level not in levels:
        levels = (level, *levels)
    return base.replace(
        id=new_id,
        processing_levels=levels,
        level_caveats={lv: text for lv, text in base.level_caveats.items() if lv not in levels},
        version=version,
        description=(
            f"{base.task.capitalize()} in {len(legend)} classes ({', '.join(legend)}): the features of "
            f"{base.id} {base.version} with a classifier head trained here on labelled pixels."
        ),
        architecture=f"{base.architecture}; classifier head retrained here",
        classes=[asdict(c) for c in classes],
        status="trained-here",
        licence=f"{base.licence} (the base's terms apply to the frozen layers)",
        provenance=(
            f"Head trained by TerraSeg on {training['trained_at']} from {base.id} {base.version} "
            f"(dataset sha256 {training['dataset_sha256'][:16]}...)."
        ),
        weights=[weights_name],
        weights_sha256={weights_name: sha256},
        metrics={name: m.model_dump() if m is not None else None for name, m in metrics.items()},
        default_for_task=False,
        training=training,
    )


@dataclass(frozen=True)
class SeedModel:
    """A seed architecture trained on a dataset: its base, new id and legend, its constructor arguments and
    how it reads the patches, and its forward seconds per million 10 m pixels on a CPU (None: measured
    elsewhere)."""

    base: ModelCard
    new_id: str
    legend: tuple[str, ...]
    args: dict[str, Any]
    inputs: PatchInputs
    cpu_s_per_mpx: float | None


def seed_card(
    model: SeedModel, file: WeightsFile, training: dict[str, Any], metrics: dict[str, Any]
) -> ModelCard:
    """The trained model's card: the base's architecture with the dataset's bands, legend, level and pixel size."""
    base, legend, dataset, inputs = model.base, model.legend, model.inputs.dataset, model.inputs
    colours = {c.name: c.color for c in base.classes}  # a class the base has keeps its colour
    classes = tuple(
        asdict(ClassInfo(value, name, colours.get(name, PALETTE[value % len(PALETTE)])))
        for value, name in enumerate(legend)
    )
    temporal = base.temporal
    if isinstance(temporal, Series):
        temporal = temporal.model_copy(update={"max_dates": inputs.max_dates or temporal.max_dates})
    return base.replace(
        id=model.new_id,
        version=file.version,
        description=(
            f"{base.task.capitalize()} in {len(legend)} classes, {base.architecture.split(';')[0]} trained here "
            f"on the {dataset.format} patches of {dataset.root.name}."
        ),
        bands=inputs.bands,
        processing_levels=(dataset.processing_level,),
        resolution_m=dataset.resolution_m,
        normalisation=inputs.normalisation.model_dump(),
        classes=classes,
        status="trained-here",
        licence="GPL-3.0-or-later (weights trained by TerraSeg; the dataset's terms apply to what it learnt from)",
        provenance=(
            f"Trained by TerraSeg on {training['trained_at']} from {base.id} {base.version} "
            f"({'its imported weights' if base.status != 'untrained' else 'random initialisation'}) on "
            f"{dataset.format}: {dataset.root.name} (dataset sha256 {training['dataset_sha256'][:16]}...)."
        ),
        weights=[file.name],
        weights_sha256={file.name: file.sha256},
        builder_args=model.args,
        metrics=metrics,
        training=training,
        default_for_task=False,
        temporal=temporal.model_dump(),
        cpu_s_per_mpx=None if model.cpu_s_per_mpx is None else round(model.cpu_s_per_mpx, 3),
    )
