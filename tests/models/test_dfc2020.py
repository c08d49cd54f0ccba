"""DFC2020 UNet and DeepLabv3+: shapes, the baseline checkpoint importer, and the safe args.pkl reader."""

import argparse
import os
import pickle
from pathlib import Path

import pytest
import torch

from core.errors import ModelError
from models.dfc2020 import (
    DeepLabV3Plus,
    DFCUNet,
    config_from_args,
    import_dfc2020,
    input_bands,
    read_args_pkl,
)


def baseline_args(**changes: object) -> argparse.Namespace:
    """The training arguments the baseline's train.py pickles (its argparse defaults plus typical flags)."""
    values: dict[str, object] = {
        "experiment_name": "s1s2_deeplab",
        "seed": None,
        "use_s2hr": True,
        "use_s2mr": True,
        "use_s2lr": False,
        "use_s1": True,
        "no_savanna": True,
        "lr": 0.01,
        "batch_size": 32,
        "model": "deeplab",
        "pretrained_backbone": False,
        "out_stride": 16,
        "dataset_val": "sen12ms_holdout",
        "log_dir": "logs",
        "use_gpu": True,
        "checkpoint_dir": "logs/s1s2_deeplab/checkpoints",
    } | changes
    return argparse.Namespace(**values)


def write_baseline_run(
    folder: Path, net: torch.nn.Module, protocol: int = 4, **changes: object
) -> tuple[Path, Path]:
    """args.pkl and checkpoint_step_1000.pth in the baseline's layout (optimizer state included, as it saves)."""
    args_path = folder / "args.pkl"
    args_path.write_bytes(pickle.dumps(baseline_args(**changes), protocol=protocol))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    checkpoint = folder / "checkpoint_step_1000.pth"
    torch.save(
        {
            "model_state_dict": net.state_dict(),
            "step": 1000,
            "optimizer_state_dict": optimizer.state_dict(),
        },
        checkpoint,
    )
    return args_path, checkpoint


def test_band_order_follows_the_baselines_flags():
    assert input_bands(True, True, False, True) == (
        "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12", "VV", "VH",
    )  # fmt: skip
    assert input_bands(True, False, True, False) == ("B01", "B02", "B03", "B04", "B08", "B09", "B10")
    config = config_from_args(vars(baseline_args()))
    assert len(config.classes) == 9 and "savanna" not in [c.name for c in config.classes]
    assert [c.value for c in config.classes] == list(range(9))
    assert len(config_from_args(vars(baseline_args(no_savanna=False))).classes) == 10


@pytest.mark.parametrize(("height", "width"), [(64, 64), (50, 70)])
def test_unet_keeps_any_size(height, width):
    model = DFCUNet(12, 9).eval()
    with torch.inference_mode():
        assert model(torch.randn(2, 12, height, width)).shape == (2, 9, height, width)


@pytest.mark.parametrize("output_stride", [16, 8])
def test_deeplab_output_is_upsampled_to_the_input(output_stride):
    model = DeepLabV3Plus(12, 10, output_stride).eval()
    with torch.inference_mode():
        assert model(torch.randn(1, 12, 64, 48)).shape == (1, 10, 64, 48)


def test_deeplab_has_the_resnet101_deeplabv3plus_size():
    # 59.34 M parameters is DeepLabv3+ with a ResNet-101 (multi-grid) for 3 bands and 21 classes.
    assert sum(p.numel() for p in DeepLabV3Plus(3, 21).parameters()) == 59_344_309


@pytest.mark.parametrize(("kind", "protocol"), [("deeplab", 4), ("unet", 2), ("unet", 5)])
def test_a_baseline_checkpoint_imports_and_predicts_the_same(tmp_path, kind, protocol):
    torch.manual_seed(0)
    original = (DeepLabV3Plus(12, 9) if kind == "deeplab" else DFCUNet(12, 9)).eval()
    args_path, checkpoint = write_baseline_run(tmp_path, original, protocol=protocol, model=kind)
    imported, config = import_dfc2020(args_path, checkpoint)
    assert config.model == kind and len(config.bands) == 12 and config.bands[-2:] == ("VV", "VH")
    x = torch.randn(1, 12, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(imported(x), original(x))


def test_a_checkpoint_for_other_bands_is_refused_with_the_shapes(tmp_path):
    args_path, checkpoint = write_baseline_run(tmp_path, DFCUNet(4, 9), model="unet")  # args say 12 bands
    with pytest.raises(ModelError, match=r"inc.double_conv.0.weight \(64, 4, 3, 3\) != \(64, 12, 3, 3\)"):
        import_dfc2020(args_path, checkpoint)


class _Exploit:
    def __reduce__(self):  # noqa: ANN204
        return (os.system, ("touch pwned",))


def test_an_args_pkl_that_would_run_code_is_refused_without_running_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "args.pkl"
    path.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(ModelError, match=r"asks to build posix.system"):
        read_args_pkl(path)
    assert not (tmp_path / "pwned").exists()


def test_an_args_pkl_with_an_object_value_is_refused(tmp_path):
    path = tmp_path / "args.pkl"
    path.write_bytes(pickle.dumps(argparse.Namespace(model="unet", data_dir_train=Path("/data"))))
    with pytest.raises(ModelError, match="pathlib"):
        read_args_pkl(path)


def test_both_networks_run_under_bf16_autocast():
    for model in (DFCUNet(12, 9).eval(), DeepLabV3Plus(12, 9).eval()):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(torch.randn(1, 12, 64, 64))
        assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize("model_id", ["landcover-dfc2020-unet", "landcover-dfc2020-deeplab", "cloud-unet"])
def test_an_untrained_seed_model_is_refused_with_how_to_get_weights(model_id):
    from models.catalogue import catalogue
    from tests.conftest import load_model

    card = catalogue().get(model_id)
    assert card.status == "untrained" and card.weights == ()
    with pytest.raises(
        ModelError,
        match=r"has no trained weights yet; import published weights or train it",
    ):
        load_model(model_id, processing_level="L1C", available_bands=set(card.bands))


def test_the_dfc2020_card_normalisation_matches_the_baselines_input_scaling():
    import numpy as np

    from core.mapping.inference import normalise
    from models.catalogue import catalogue

    card = catalogue().get("landcover-dfc2020-unet")
    assert card.bands[-2:] == ("VV", "VH") and len(card.bands) == 12
    pixels = np.array([0.05] * 10 + [-30.0, -12.5], np.float32)[:, None, None]  # reflectance, then S1 dB
    expected = np.array([0.05] * 10 + [0.0, 0.5], np.float32)[:, None, None]  # clip(dB, -25, 0) / 25 + 1
    np.testing.assert_allclose(normalise(pixels, card.normalisation), expected, rtol=1e-6)
