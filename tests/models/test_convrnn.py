"""ConvLSTM / ConvGRU segmenters (MTLCC): shapes, padding invariance, date order, checkpoints, autocast, and
padding of the cloud-masked dates of a real Sentinel-2 series."""

import numpy as np
import pytest
import torch

from models import convrnn
from models.convrnn import ConvRNNSegmenter
from models.weights import check_state_dict
from tests.conftest import TEST_DATA

TANZANIA = TEST_DATA / "s2_tanzania_timeseries_rsgislib" / "timeseries_T37MEM_stack.npz"
CELLS_AND_DIRECTIONS = [("lstm", True), ("lstm", False), ("gru", True), ("gru", False)]


def small_model(
    cell: str, bidirectional: bool = True, in_channels: int = 4, seed: int = 0
) -> ConvRNNSegmenter:
    torch.manual_seed(seed)
    return ConvRNNSegmenter(in_channels, n_classes=5, hidden=8, cell=cell, bidirectional=bidirectional).eval()


def series(batch: int = 2, dates: int = 6, channels: int = 4, size: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand((batch, dates, channels, size, size), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("cell", "bidirectional"), CELLS_AND_DIRECTIONS)
def test_logits_keep_the_tile_size_for_both_cells_and_directions(cell, bidirectional):
    model = ConvRNNSegmenter(in_channels=13, cell=cell, bidirectional=bidirectional).eval()
    with torch.inference_mode():
        logits = model(torch.rand(2, 5, 13, 24, 20))
    assert logits.shape == (2, 17, 24, 20) and torch.isfinite(logits).all()


@pytest.mark.parametrize(("cell", "bidirectional"), CELLS_AND_DIRECTIONS)
def test_padded_dates_at_the_end_with_garbage_do_not_change_the_output(cell, bidirectional):
    model, x = small_model(cell, bidirectional), series()
    garbage = torch.full((2, 3, 4, 12, 12), 1e6)
    garbage[:, 1] = float("nan")
    pad_mask = torch.zeros(2, 9, dtype=torch.bool)
    pad_mask[:, 6:] = True
    with torch.inference_mode():
        expected = model(x)
        padded = model(torch.cat([x, garbage], dim=1), pad_mask)
    torch.testing.assert_close(padded, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", convrnn.CELLS)
def test_padding_at_the_start_and_in_between_is_skipped_in_both_directions(cell):
    model, x = small_model(cell, bidirectional=True), series()
    garbage = -50 * torch.ones(2, 1, 4, 12, 12)
    # padding first, then three dates, padding, three dates; the second sample also pads its last real date
    padded_x = torch.cat([garbage, garbage, x[:, :3], garbage, x[:, 3:]], dim=1)
    pad_mask = torch.tensor([[True, True, False, False, False, True, False, False, False]] * 2)
    pad_mask[1, -1] = True
    with torch.inference_mode():
        expected = torch.cat([model(x[:1]), model(x[1:, :5])])
        padded = model(padded_x, pad_mask)
    torch.testing.assert_close(padded, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", convrnn.CELLS)
def test_cells_without_layer_norm_also_skip_padding(cell):
    torch.manual_seed(0)
    model = ConvRNNSegmenter(4, n_classes=5, hidden=8, cell=cell, normalize=False).eval()
    x, pad_mask = series(), torch.tensor([[True] + [False] * 6] * 2)
    assert not any("norms" in key for key in model.state_dict())
    with torch.inference_mode():
        padded = model(torch.cat([torch.rand(2, 1, 4, 12, 12), x], dim=1), pad_mask)
        torch.testing.assert_close(padded, model(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", convrnn.CELLS)
def test_the_order_of_dates_matters_to_a_unidirectional_model(cell):
    model = small_model(cell, bidirectional=False)
    x = series(batch=1) + torch.linspace(0, 1, 6).view(
        1, 6, 1, 1, 1
    )  # a trend, so reversing is not symmetric
    with torch.inference_mode():
        forward, reversed_ = model(x), model(x.flip(1))
    assert (forward - reversed_).abs().max() > 1e-3


@pytest.mark.parametrize("cell", convrnn.CELLS)
def test_a_saved_state_dict_reloads_to_identical_outputs(cell, tmp_path):
    model, x = small_model(cell, seed=1), series()
    path = tmp_path / f"convrnn_{cell}.pt"
    torch.save(model.state_dict(), path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    fresh = small_model(cell, seed=2)
    check_state_dict(fresh, state, path.name)
    fresh.load_state_dict(state)
    with torch.inference_mode():
        assert torch.equal(fresh(x), model(x))


@pytest.mark.parametrize("cell", convrnn.CELLS)
def test_bf16_autocast_on_cpu_gives_finite_logits(cell):
    model, x = small_model(cell), series()
    pad_mask = torch.zeros(2, 6, dtype=torch.bool)
    pad_mask[0, -2:] = True
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x, pad_mask)
    assert logits.shape == (2, 5, 12, 12) and torch.isfinite(logits.float()).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fp16_autocast_matches_cpu_float32():
    model, x = small_model("lstm"), series()
    pad_mask = torch.zeros(2, 6, dtype=torch.bool)
    pad_mask[1, :2] = True
    with torch.inference_mode():
        expected = model(x, pad_mask)
        with torch.autocast("cuda", dtype=torch.float16):
            logits = model.cuda()(x.cuda(), pad_mask.cuda())
    torch.testing.assert_close(logits.float().cpu(), expected, rtol=0.05, atol=0.05)


def test_wrong_inputs_are_refused_with_the_expected_shapes():
    model = small_model("gru")
    with pytest.raises(ValueError, match=r"expected x of shape \(B, T >= 1, 4, H, W\)"):
        model(torch.rand(2, 6, 3, 12, 12))
    with pytest.raises(ValueError, match=r"expected a bool pad_mask of shape \(2, 6\)"):
        model(series(), torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="cell must be one of"):
        ConvRNNSegmenter(cell="rnn")
    with pytest.raises(ValueError, match="positive odd size"):
        ConvRNNSegmenter(kernel=4)


@pytest.fixture(scope="module")
def tanzania_crop() -> tuple[np.ndarray, np.ndarray]:
    """All 21 dates of a 32 x 32 crop (reflectance 0-1) and the dates the cloud mask emptied in it."""
    stack = np.load(TANZANIA)
    assert stack["data"].shape == (21, 10, 140, 169)
    crop = stack["data"][:, :, 108:140, 32:64]
    # The masked pixels are 0 in all 10 bands; the file's `nodata` key (1) matches no whole pixel.
    empty = convrnn.empty_dates(crop, nodata=0)
    return crop.astype(np.float32) / 1000.0, empty  # uint16 reflectance x 1000


def test_dates_masked_out_of_a_real_series_can_be_padding_instead_of_dropped(tanzania_crop):
    crop, empty = tanzania_crop
    # first, last and three dates in between: both directions must skip padding at either end
    assert np.flatnonzero(empty).tolist() == [0, 3, 5, 8, 20]
    torch.manual_seed(0)
    model = ConvRNNSegmenter(in_channels=10, cell="lstm").eval()
    with torch.inference_mode():
        padded = model(torch.from_numpy(crop)[None], torch.from_numpy(empty)[None])
        dropped = model(torch.from_numpy(crop[~empty])[None])
    assert padded.shape == (1, 17, 32, 32)
    torch.testing.assert_close(padded, dropped, rtol=1e-5, atol=1e-5)
    # and the padded dates were not ignored by accident: they are real zeros that would change the output
    with torch.inference_mode():
        unmasked = model(torch.from_numpy(crop)[None])
    assert (unmasked - dropped).abs().max() > 1e-3


def test_the_published_configuration_constants_agree():
    assert len(convrnn.CLASS_NAMES) == len(convrnn.SOURCE_LABEL_IDS) == 17
    assert len(convrnn.BANDS) == len(set(convrnn.BANDS)) == 13
    assert convrnn.MAX_DATES == 30
