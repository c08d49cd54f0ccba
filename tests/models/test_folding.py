"""Batch norms folded into convolutions keep every network's outputs; the card's tuning is checked when read."""

import copy

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from core.types import InferenceTuning
from models.folding import fold_batch_norms


def with_statistics(net: nn.Module) -> nn.Module:
    """Random running statistics and affine parameters: folding an untouched norm (mean 0, var 1) proves little."""
    generator = torch.Generator().manual_seed(1)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
    return net.eval()


def networks() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    from models import bigearthnet, cloud_unet, dfc2020, dynamic_world

    torch.manual_seed(0)
    return {
        "dynamic-world": (dynamic_world.DynamicWorldNet(), torch.rand(2, 9, 64, 64)),
        "cloud-unet": (cloud_unet.build_cloud_unet(), torch.rand(2, 4, 64, 64)),
        "dfc2020-unet": (dfc2020.DFCUNet(12, 9), torch.rand(1, 12, 64, 64)),
        "dfc2020-deeplab": (dfc2020.DeepLabV3Plus(12, 9), torch.rand(1, 12, 64, 64)),
        "bigearthnet": (bigearthnet.BigEarthNetResNet50(in_channels=12, n_labels=19), torch.rand(2, 12, 64, 64)),
    }


@pytest.mark.parametrize("name", list(networks()))
@torch.inference_mode()
def test_folded_networks_give_the_same_probabilities(name):
    net, x = networks()[name]
    net = with_statistics(net)
    folded = copy.deepcopy(net)
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    count = fold_batch_norms(folded)
    assert count > 0
    assert sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) == norms - count
    if name != "bigearthnet":  # torch.fx traces these: every norm after a convolution goes
        assert count == norms
    reference, result = net(x), folded(x)
    # float32 rounding differs between the two graphs by ~1e-6 of the outputs' scale (measured 0.5-2.3e-6, on
    # 1 and 2 threads). ResNet-50 with random statistics gives logits of ~300, where softmax turns that into a
    # few 1e-5 of probability (CI saw 2.7e-5), so the bound is on the logits relative to their scale.
    assert float((reference - result).abs().max() / reference.abs().max()) < 1e-5
    assert torch.equal(reference.argmax(1), result.argmax(1))
    if float(reference.abs().max()) < 10:  # the seeds' outputs: probabilities within 1e-5
        assert float((torch.softmax(reference, 1) - torch.softmax(result, 1)).abs().max()) < 1e-5


class SharedOutput(nn.Module):
    """conv -> bn, and the conv's own output read again: folding would change the second reader's input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.other = nn.Conv2d(3, 4, 1)
        self.bn_other = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y + self.bn_other(self.other(x))


@torch.inference_mode()
def test_a_convolution_whose_output_is_read_twice_keeps_its_norm():
    net = with_statistics(SharedOutput())
    folded = copy.deepcopy(net)
    assert fold_batch_norms(folded) == 1  # only other -> bn_other
    assert isinstance(folded.bn, nn.BatchNorm2d) and isinstance(folded.bn_other, nn.Identity)
    x = torch.rand(1, 3, 8, 8)
    assert torch.allclose(net(x), folded(x), atol=1e-5)


def test_a_network_in_training_mode_is_not_folded():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).train())


def test_the_registry_folds_dynamic_world_and_maps_the_real_scenes_as_the_unfolded_network():
    """The loaded model (folded, as the card says) against Google's converted network as it is, on the five real
    Slovenia scenes."""
    from core.mapping.inference import normalise
    from models import dynamic_world
    from models.catalogue import catalogue
    from models.registry import LoadOptions, load
    from tests.services import TEST_DATA

    cards = catalogue()
    card = cards.get("landcover-dynamic-world")
    assert card.inference.fold_batch_norms
    loaded = load(cards, card.id, LoadOptions("L1C", frozenset(card.bands), device="cpu"))
    weights = cards.folder(card.id) / card.weights[0]
    net, _ = dynamic_world.load_network(card.weights_sha256[weights.name], weights, card.n_classes)
    scenes = np.load(TEST_DATA / "s2_slovenia_eolearn" / "REFERENCE_SCENES.npy")  # (5, H, W, 13)
    order = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
    x = normalise(np.moveaxis(scenes[..., [order.index(b) for b in card.bands]], -1, 1), card.normalisation)
    with torch.inference_mode():
        reference = torch.softmax(net.eval()(torch.from_numpy(np.ascontiguousarray(x))), 1).numpy()
    result = loaded.predict(x)
    assert np.abs(result - reference).max() < 1e-4
    assert (result.argmax(1) == reference.argmax(1)).mean() > 0.9999


def test_bf16_on_the_cpu_needs_a_measured_agreement():
    with pytest.raises(ValidationError, match="bf16_argmax_agreement"):
        InferenceTuning(cpu_bf16=True)
    with pytest.raises(ValidationError, match="bf16_argmax_agreement"):
        InferenceTuning(cpu_bf16=True, bf16_argmax_agreement=0.99)
    assert InferenceTuning(cpu_bf16=True, bf16_argmax_agreement=0.996).cpu_bf16


def test_a_worker_compiles_only_where_both_the_card_and_the_operator_say_so():
    from models.catalogue import catalogue
    from models.registry import LoadOptions, tuning

    card = catalogue().get("landcover-dynamic-world")
    allowed = card.replace(inference=card.inference.model_copy(update={"compile": True}))
    refused = card.replace(inference=card.inference.model_copy(update={"compile": False}))
    asked, not_asked = (LoadOptions("L1C", frozenset(card.bands), compile=c) for c in (True, False))
    assert tuning(allowed, asked)["compile"]
    assert not tuning(allowed, not_asked)["compile"] and not tuning(refused, asked)["compile"]
