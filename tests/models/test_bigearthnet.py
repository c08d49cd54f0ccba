"""BigEarthNet-19 ResNet-50: shapes, torchvision's layout and size, checkpoint loading, and the scene-tag helpers."""

import numpy as np
import pytest
import torch

from core.errors import ModelError
from models import bigearthnet
from models.bigearthnet import BigEarthNetResNet50, load_checkpoint, patch_tags, scene_tags

# torchvision.models.resnet50(): 25,557,032 parameters, of which fc (2048 x 1000 + 1000) is 2,049,000.
TORCHVISION_RESNET50_WITHOUT_FC = 23_508_032


def n_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def model12() -> BigEarthNetResNet50:
    torch.manual_seed(0)
    return BigEarthNetResNet50(in_channels=12).eval()


@pytest.mark.parametrize(("in_channels", "height", "width"), [(12, 120, 120), (10, 120, 120), (12, 32, 45)])
def test_logits_have_one_score_per_label(in_channels, height, width):
    model = BigEarthNetResNet50(in_channels).eval()
    with torch.inference_mode():
        logits = model(torch.randn(2, in_channels, height, width))
    assert logits.shape == (2, 19) and torch.isfinite(logits).all()


def test_inputs_of_the_wrong_band_count_or_too_small_are_refused(model12):
    with pytest.raises(ValueError, match=r"expected x of shape \(B, 12, H, W\) with H, W >= 32"):
        model12(torch.randn(1, 10, 120, 120))
    with pytest.raises(ValueError, match=r"got \(1, 12, 31, 120\)"):
        model12(torch.randn(1, 12, 31, 120))


def test_the_architecture_is_torchvisions_resnet50_in_size_and_names(model12):
    three_band = BigEarthNetResNet50(in_channels=3)
    assert n_parameters(three_band) - n_parameters(three_band.fc) == TORCHVISION_RESNET50_WITHOUT_FC
    # 12 bands: conv1 grows by 9 x 64 x 7 x 7; fc is 2048 x 19 + 19
    assert (
        n_parameters(model12) == TORCHVISION_RESNET50_WITHOUT_FC + 9 * 64 * 49 + 2048 * 19 + 19 == 23_575_187
    )
    keys = model12.state_dict().keys()
    assert len(keys) == 320  # as torchvision's resnet50 state dict
    for key in ("conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight", "layer1.0.downsample.1.weight",
                "layer3.5.bn3.num_batches_tracked", "layer4.2.conv3.weight", "fc.weight", "fc.bias"):  # fmt: skip
        assert key in keys
    assert model12.state_dict()["conv1.weight"].shape == (64, 12, 7, 7)
    assert model12.state_dict()["layer4.0.downsample.0.weight"].shape == (2048, 1024, 1, 1)


def test_bf16_autocast_on_cpu_gives_finite_logits(model12):
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model12(torch.randn(2, 12, 64, 64))
    assert logits.shape == (2, 19) and torch.isfinite(logits.float()).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fp16_autocast_matches_cpu_float32():
    torch.manual_seed(0)
    model, x = BigEarthNetResNet50(10).eval(), torch.randn(2, 10, 120, 120)
    with torch.inference_mode():
        expected = torch.sigmoid(model(x))
        with torch.autocast("cuda", dtype=torch.float16):
            probabilities = torch.sigmoid(model.cuda()(x.cuda()).float()).cpu()
    torch.testing.assert_close(probabilities, expected, rtol=0.02, atol=0.02)


@pytest.mark.parametrize("wrap", ["bare", "state_dict"])
def test_a_dataparallel_checkpoint_loads_with_or_without_its_wrapper(model12, tmp_path, wrap):
    state = {f"module.{k}": v for k, v in model12.state_dict().items()}
    path = tmp_path / "bigearthnet_resnet50.pth.tar"
    torch.save(state if wrap == "bare" else {"state_dict": state, "epoch": 3, "arch": "resnet50"}, path)
    loaded = load_checkpoint(path, in_channels=12)
    x = torch.randn(2, 12, 120, 120)
    with torch.inference_mode():
        assert not loaded.training
        torch.testing.assert_close(loaded(x), model12(x), rtol=0, atol=0)


def test_a_checkpoint_with_another_band_count_names_the_mismatched_shape(tmp_path):
    path = tmp_path / "ben_10_bands.pt"
    torch.save({"state_dict": BigEarthNetResNet50(in_channels=10).state_dict()}, path)
    with pytest.raises(
        ModelError, match=r"1 shapes differ \(conv1.weight \(64, 10, 7, 7\) != \(64, 12, 7, 7\)\)"
    ):
        load_checkpoint(path, in_channels=12)


def test_checkpoints_that_are_not_state_dicts_are_refused(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt", in_channels=12)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot be read as a PyTorch checkpoint"):
        load_checkpoint(garbage, in_channels=12)
    mixed = tmp_path / "mixed.pt"
    torch.save({"conv1.weight": torch.zeros(1), "epoch": 3}, mixed)
    with pytest.raises(ModelError, match="epoch are not tensors"):
        load_checkpoint(mixed, in_channels=12)


def test_scene_tags_keep_the_labels_over_the_threshold_most_probable_first():
    probabilities = np.full(19, 0.1)
    probabilities[[2, 9, 17]] = [0.7, 0.95, 0.5]
    tags = scene_tags(probabilities)
    assert [t["name"] for t in tags] == ["Coniferous forest", "Arable land", "Inland waters"]
    assert [t["probability"] for t in tags] == pytest.approx([0.95, 0.7, 0.5])
    assert [t["name"] for t in scene_tags(probabilities, threshold=0.8)] == ["Coniferous forest"]
    assert len(scene_tags(probabilities, threshold=0.05)) == 19
    with pytest.raises(ValueError, match=r"expected \(19,\) probabilities"):
        scene_tags(np.zeros(43))


def test_patch_tags_give_one_probability_vector_per_120_px_patch(model12):
    image = np.random.default_rng(0).standard_normal((12, 360, 240)).astype(np.float32)
    probabilities = patch_tags(model12, image, batch_size=4)
    assert probabilities.shape == (3, 2, 19) and probabilities.dtype == np.float32
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    with torch.inference_mode():  # patch (1, 1) is rows 120:240, cols 120:240
        expected = torch.sigmoid(model12(torch.from_numpy(image[None, :, 120:240, 120:240]))).numpy()[0]
    np.testing.assert_allclose(probabilities[1, 1], expected, rtol=1e-4, atol=1e-5)


def test_patch_origins_shift_the_last_patch_inward():
    assert bigearthnet.patch_origins(360) == [0, 120, 240]
    assert bigearthnet.patch_origins(250) == [0, 120, 130]
    assert bigearthnet.patch_origins(120) == [0]
    assert bigearthnet.patch_origins(240, patch_px=120, stride_px=60) == [0, 60, 120]
    with pytest.raises(ValueError, match="patch_px <= size_px"):
        bigearthnet.patch_origins(100)


def test_the_nomenclature_and_band_lists():
    assert len(bigearthnet.CLASS_NAMES) == len(set(bigearthnet.CLASS_NAMES)) == 19
    assert bigearthnet.CLASS_NAMES[0] == "Urban fabric" and bigearthnet.CLASS_NAMES[-1] == "Marine waters"
    assert len(bigearthnet.BANDS_12) == 12 and bigearthnet.BANDS_12[:10] == bigearthnet.BANDS_10
    assert "B10" not in bigearthnet.BANDS_12  # BigEarthNet drops the cirrus band
    for normalisation, n in ((bigearthnet.NORMALISATION_12, 12), (bigearthnet.NORMALISATION_10, 10)):
        assert len(normalisation["mean"]) == len(normalisation["std"]) == n  # type: ignore[arg-type]
