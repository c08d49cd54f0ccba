"""`terraseg import`: published weights for an untrained architecture become a model that jobs can use."""

import argparse
import json
import pickle
from pathlib import Path

import rasterio
import torch

from models.dfc2020 import DFCUNet
from tests.worker.cli.test_cli import SAMPLE_AOI, SAMPLE_DATES, terraseg


def write_baseline_unet(folder: Path) -> list[Path]:
    """A DFC2020 baseline run trained on S2 only (10 bands, no Savanna): args.pkl and a checkpoint, as it saves."""
    args = argparse.Namespace(
        model="unet",
        use_s2hr=True,
        use_s2mr=True,
        use_s2lr=False,
        use_s1=False,
        no_savanna=True,
        out_stride=16,
    )
    (folder / "args.pkl").write_bytes(pickle.dumps(args))
    torch.manual_seed(0)
    net = DFCUNet(10, 9)
    torch.save({"model_state_dict": net.state_dict(), "step": 5000}, folder / "checkpoint_step_5000.pth")
    return [folder / "args.pkl", folder / "checkpoint_step_5000.pth"]


def test_imported_dfc2020_weights_run_a_landcover_job_on_the_sample(tmp_path):
    files = write_baseline_unet(tmp_path)
    imported = terraseg("import", "landcover-dfc2020-unet", *map(str, files), cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    model_id = imported.stdout.split()[-1]
    assert model_id == "landcover-dfc2020-unet-imported"
    card = json.loads((tmp_path / "cache" / "models" / model_id / "card.json").read_text())
    assert card["status"] == "pretrained" and len(card["bands"]) == 10 and "VV" not in card["bands"]
    assert "args.pkl (sha256" in card["provenance"]
    listed = terraseg("models", cwd=tmp_path)
    assert any(line.startswith(model_id) and "pretrained" in line for line in listed.stdout.splitlines())

    run = terraseg(
        "run", "--task", "landcover", "--model", model_id, "--aoi", SAMPLE_AOI, *SAMPLE_DATES, "--source", "sample",
        "--out", "out", cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert (
        record["model"]["id"] == model_id
        and record["model"]["weights_sha256"] == card["weights_sha256"]["weights.pt"]
    )
    with rasterio.open(tmp_path / "out" / "classes.tif") as cog:
        assert len(json.loads(cog.tags()["CLASS_NAMES"])) == 9 and (cog.read(1) < 9).any()

    again = terraseg("import", "landcover-dfc2020-unet", *map(str, files), cwd=tmp_path)
    assert again.returncode == 2 and "already installed" in again.stderr


def test_weights_of_another_architecture_are_refused_and_nothing_is_installed(tmp_path):
    files = write_baseline_unet(tmp_path)
    result = terraseg("import", "landcover-dfc2020-deeplab", *map(str, files), cwd=tmp_path)
    assert result.returncode == 2 and "describes a unet model" in result.stderr
    wrong = terraseg("import", "crop-utae-pastis", str(files[1]), cwd=tmp_path)
    # A DFC2020 file is no U-TAE checkpoint; and nothing was half-installed by either refusal.
    assert wrong.returncode == 2 and "holds no state dict" in wrong.stderr
    assert not list((tmp_path / "cache").glob("models/*/card.json"))


def test_bad_or_taken_ids_are_refused(tmp_path):
    files = write_baseline_unet(tmp_path)
    for new_id, message in (("../outside", "not a usable model id"), ("cloud-csmask", "already installed")):
        result = terraseg("import", "landcover-dfc2020-unet", *map(str, files), "--as", new_id, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "cache" / "outside").exists()


def test_an_imported_utae_without_normalisation_statistics_is_refused_before_any_work(tmp_path):
    from models.utae import UTAE

    checkpoint = tmp_path / "model.pth.tar"
    torch.save({"epoch": 1, "state_dict": UTAE().state_dict()}, checkpoint)
    imported = terraseg("import", "crop-utae-pastis", str(checkpoint), cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    run = terraseg(
        "run", "--task", "crop", "--model", imported.stdout.split()[-1], "--aoi", SAMPLE_AOI, *SAMPLE_DATES,
        "--source", "sample", "--out", "out", cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 2
    assert "does not say how to normalise its input (normalisation 'unknown')" in run.stderr
