"""U-TAE: shapes, padded dates, date encoding, the published checkpoint layout, autocast and real Sentinel-2 dates.

The real series is RSGISLib's Tanzanian Sentinel-2 stack (tile T37MEM, 21 dates 2016-2020, 10 bands, reflectance
x 1000). Its declared nodata value (1) never fills all bands of a pixel; the masked pixels (cloud, outside the
orbit) are 0 in all 10 bands at once, so both count as nodata here.
"""

from datetime import datetime

import numpy as np
import pytest
import torch
from torch import nn

from core.errors import ModelError
from models import utae
from models.utae import UTAE, import_utae_checkpoint, load_utae
from tests.conftest import TEST_DATA

TANZANIA = TEST_DATA / "s2_tanzania_timeseries_rsgislib" / "timeseries_T37MEM_stack.npz"
# Irregular revisits, in days; the second series starts later and has a 140-day gap.
DAYS = torch.tensor([[0, 12, 31, 32, 95, 180], [5, 20, 21, 60, 200, 340]])


def published_layout() -> dict[str, tuple[int, ...]]:
    """Keys and shapes of utae-paps' UTAE(input_dim=10) state dict in the PASTIS configuration.

    Written out from src/backbones/utae.py and ltae.py (commit 5e75f03): ConvLayer keeps its layers in `.conv`
    (conv, norm, ReLU per step) and ConvBlock wraps one ConvLayer as `.conv`; the encoder uses GroupNorm, the
    decoder and head BatchNorm; L-TAE has `inconv`, `attention_heads.Q`/`fc1_k`, `in_norm`, `out_norm`, `mlp`.
    """
    layout: dict[str, tuple[int, ...]] = {}

    def conv(prefix: str, c_in: int, c_out: int, kernel: int) -> None:
        layout[f"{prefix}.weight"] = (c_out, c_in, kernel, kernel)
        layout[f"{prefix}.bias"] = (c_out,)

    def group_norm(prefix: str, channels: int) -> None:
        layout[f"{prefix}.weight"] = layout[f"{prefix}.bias"] = (channels,)

    def batch_norm(prefix: str, channels: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{prefix}.{name}"] = (channels,)
        layout[f"{prefix}.num_batches_tracked"] = ()

    conv("in_conv.conv.conv.0", 10, 64, 3)
    group_norm("in_conv.conv.conv.1", 64)
    conv("in_conv.conv.conv.3", 64, 64, 3)
    group_norm("in_conv.conv.conv.4", 64)
    for i, (d_in, d_out) in enumerate([(64, 64), (64, 64), (64, 128)]):
        parts = (("down", d_in, d_in, 4), ("conv1", d_in, d_out, 3), ("conv2", d_out, d_out, 3))
        for part, c_in, c_out, kernel in parts:
            conv(f"down_blocks.{i}.{part}.conv.0", c_in, c_out, kernel)
            group_norm(f"down_blocks.{i}.{part}.conv.1", c_out)
    for i, (d_in, d_out, d_skip) in enumerate([(128, 64, 64), (64, 32, 64), (32, 32, 64)]):
        conv(f"up_blocks.{i}.skip_conv.0", d_skip, d_skip, 1)
        batch_norm(f"up_blocks.{i}.skip_conv.1", d_skip)
        layout[f"up_blocks.{i}.up.0.weight"] = (d_in, d_out, 4, 4)  # ConvTranspose2d: (in, out, k, k)
        layout[f"up_blocks.{i}.up.0.bias"] = (d_out,)
        batch_norm(f"up_blocks.{i}.up.1", d_out)
        conv(f"up_blocks.{i}.conv1.conv.0", d_out + d_skip, d_out, 3)
        batch_norm(f"up_blocks.{i}.conv1.conv.1", d_out)
        conv(f"up_blocks.{i}.conv2.conv.0", d_out, d_out, 3)
        batch_norm(f"up_blocks.{i}.conv2.conv.1", d_out)
    layout["temporal_encoder.inconv.weight"] = (256, 128, 1)
    layout["temporal_encoder.inconv.bias"] = (256,)
    layout["temporal_encoder.attention_heads.Q"] = (16, 4)
    layout["temporal_encoder.attention_heads.fc1_k.weight"] = (64, 256)
    layout["temporal_encoder.attention_heads.fc1_k.bias"] = (64,)
    group_norm("temporal_encoder.in_norm", 128)
    group_norm("temporal_encoder.out_norm", 128)
    layout["temporal_encoder.mlp.0.weight"] = (128, 256)
    layout["temporal_encoder.mlp.0.bias"] = (128,)
    batch_norm("temporal_encoder.mlp.1", 128)
    conv("out_conv.conv.conv.0", 32, 32, 3)
    batch_norm("out_conv.conv.conv.1", 32)
    conv("out_conv.conv.conv.3", 32, 20, 3)
    batch_norm("out_conv.conv.conv.4", 20)
    return layout


def random_state(layout: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Trained-looking tensors for `layout`: small weights, norm scales near 1, positive running variances."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1234)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=generator)
        elif len(shape) == 1 and key.endswith("weight"):  # norm scales
            state[key] = 1 + 0.2 * torch.randn(shape, generator=generator)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 64
            state[key] = torch.randn(shape, generator=generator) / fan_in**0.5
    return state


def series(batch: int = 2, dates: int = 6, size: int = 32, seed: int = 0) -> torch.Tensor:
    """(B, T, 10, size, size) standardised-looking input."""
    return torch.randn(batch, dates, 10, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def model() -> UTAE:
    net = UTAE()
    net.load_state_dict(random_state(published_layout()))
    return net.eval()


def test_a_batch_of_irregular_series_gives_scores_for_every_pixel(model):
    with torch.inference_mode():
        scores = model(series(), DAYS)
    assert scores.shape == (2, 20, 32, 32)
    assert torch.isfinite(scores).all() and (scores >= 0).all()  # the published head ends in BatchNorm + ReLU
    assert scores.argmax(dim=1).unique().numel() > 1


def test_padded_dates_with_garbage_leave_every_sample_unchanged(model):
    x, days = series(), DAYS.float()
    # sample 0: its 6 dates, then 3 padded ones; sample 1: its first 4 dates, padding before, between and after
    order = [[0, 1, 2, 3, 4, 5, -1, -1, -1], [-1, 0, 1, -1, 2, 3, -1, -1, -1]]
    padded_x = 1e4 * series(batch=2, dates=9, seed=1)
    padded_x[1, 0] = float("nan")
    padded_days = torch.full((2, 9), 9999.0)
    pad_mask = torch.ones(2, 9, dtype=torch.bool)
    for i, slots in enumerate(order):
        for slot, date in enumerate(slots):
            if date >= 0:
                padded_x[i, slot], padded_days[i, slot], pad_mask[i, slot] = x[i, date], days[i, date], False
    with torch.inference_mode():
        padded = model(padded_x, padded_days, pad_mask)
        first = model(x[:1], days[:1])
        second = model(x[1:, :4], days[1:, :4])
    torch.testing.assert_close(padded[:1], first)
    torch.testing.assert_close(padded[1:], second)


def test_the_dates_are_encoded(model):
    x = series()
    with torch.inference_mode():
        reference = model(x, DAYS)
        shifted = model(x, DAYS * torch.tensor([1, 3, 1, 2, 1, 1]))
        reversed_dates = model(x, DAYS.flip(1))
    for other in (shifted, reversed_dates):
        assert (other - reference).abs().max() > 1e-2


def test_the_date_statistics_pool_real_dates_only_and_match_group_norm_without_padding():
    norm = nn.GroupNorm(16, 128)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = torch.randn(5, 128, 7)
    all_valid = torch.ones(5, 7, dtype=torch.bool)
    torch.testing.assert_close(utae.group_norm_over_dates(x, all_valid, norm), norm(x))
    valid = all_valid.clone()
    valid[:, 4:] = False
    torch.testing.assert_close(utae.group_norm_over_dates(x, valid, norm)[..., :4], norm(x[..., :4]))


def test_the_module_has_the_published_state_dict_layout():
    net = UTAE()
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == published_layout()
    # the paper and README give 1.1M parameters for U-TAE on PASTIS
    assert sum(p.numel() for p in net.parameters()) == 1_087_260


def test_a_training_checkpoint_round_trips(tmp_path):
    torch.manual_seed(0)
    net = UTAE()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(
        series(), DAYS
    ).mean().backward()  # one training step, so BatchNorm statistics and Adam state are real
    optimizer.step()
    path = tmp_path / "model.pth.tar"
    torch.save({"epoch": 1, "state_dict": net.state_dict(), "optimizer": optimizer.state_dict()}, path)

    state = import_utae_checkpoint(path)
    assert state.keys() == net.state_dict().keys()
    loaded = load_utae(path)
    assert not loaded.training
    with torch.inference_mode():
        torch.testing.assert_close(
            loaded(series(seed=2), DAYS), net.eval()(series(seed=2), DAYS), rtol=0, atol=0
        )


@pytest.mark.parametrize("wrapped", [True, False], ids=["training-checkpoint", "bare-state-dict"])
def test_a_checkpoint_in_the_published_layout_from_data_parallel_imports(tmp_path, wrapped):
    published = random_state(published_layout(), seed=3)
    state = {f"module.{key}": value for key, value in published.items()}
    path = tmp_path / "model.pth.tar"
    adam = {"state": {}, "param_groups": [{"lr": 0.001, "betas": (0.9, 0.999), "params": [0, 1]}]}
    torch.save({"epoch": 87, "state_dict": state, "optimizer": adam} if wrapped else state, path)

    imported = import_utae_checkpoint(path)
    assert imported.keys() == published.keys()
    assert all(torch.equal(imported[k], published[k]) for k in published)
    net = load_utae(path)
    assert torch.equal(
        net.temporal_encoder.attention_heads.Q, published["temporal_encoder.attention_heads.Q"]
    )
    with torch.inference_mode():
        assert torch.isfinite(net(series(batch=1), DAYS[:1])).all()


def test_a_damaged_checkpoint_is_refused_naming_the_keys(tmp_path):
    state = random_state(published_layout())
    del state["temporal_encoder.attention_heads.Q"]
    state["out_conv.conv.conv.3.weight"] = torch.zeros(18, 32, 3, 3)  # a head for 18 classes
    path = tmp_path / "model.pth.tar"
    torch.save({"epoch": 3, "state_dict": state}, path)
    with pytest.raises(ModelError) as error:
        import_utae_checkpoint(path)
    message = str(error.value)
    assert message.startswith("model.pth.tar does not fit the model's architecture")
    assert "missing 1 keys (temporal_encoder.attention_heads.Q)" in message
    assert "out_conv.conv.conv.3.weight (18, 32, 3, 3) != (20, 32, 3, 3)" in message


def test_a_file_that_is_no_checkpoint_is_refused(tmp_path):
    path = tmp_path / "model.pth.tar"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot be read as a PyTorch checkpoint"):
        load_utae(path)
    with pytest.raises(ModelError, match="does not exist"):
        load_utae(tmp_path / "missing.pth.tar")


def test_a_bf16_autocast_forward_on_cpu_is_finite_and_close(model):
    x = series()
    with torch.inference_mode():
        full = model(x, DAYS)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(x, DAYS)
    assert half.shape == full.shape and torch.isfinite(half).all()
    relative = (half.float() - full).abs().mean() / full.abs().mean()
    assert relative < 0.05, relative


@pytest.mark.parametrize(("height", "width", "match"), [(36, 32, "multiples of 8"), (8, 8, "at least 16")])
def test_tile_sizes_the_network_cannot_take_are_refused(model, height, width, match):
    with pytest.raises(ValueError, match=match):
        model(torch.randn(1, 3, 10, height, width), DAYS[:1, :3])


def test_a_sample_without_any_real_date_is_refused(model):
    pad_mask = torch.tensor([[False] * 6, [True] * 6])
    with pytest.raises(ValueError, match=r"every date of samples \[1\] is padding"):
        model(series(), DAYS, pad_mask)


def tanzania_crop() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 64 x 64 crop of the real stack -> (1, 21, 10, 64, 64) reflectance 0-1 with nodata at 0, (1, 21) days
    since the first date, (1, 21) True for dates with no valid pixel in the crop."""
    stack = np.load(TANZANIA)
    dn = stack["data"][:, :, 72:136, 0:64]  # (T, 10, 64, 64) uint16, reflectance x 1000
    nodata = (dn == stack["nodata"]).all(axis=1) | (dn == 0).all(axis=1)  # (T, 64, 64)
    reflectance = np.where(nodata[:, None], 0.0, dn / 1000.0).astype(np.float32)
    dates = [datetime.strptime(str(d), "%Y%m%d") for d in stack["dates"]]
    days = [(d - dates[0]).days for d in dates]
    pad = nodata.all(axis=(1, 2))
    return torch.from_numpy(reflectance)[None], torch.tensor([days]), torch.from_numpy(pad)[None]


def test_real_dates_without_valid_pixels_are_padding_and_leave_the_output_unchanged(model):
    x, days, pad = tanzania_crop()
    assert x.shape == (1, 21, 10, 64, 64) and float(x.max()) < 1.0
    assert torch.nonzero(pad[0]).flatten().tolist() == [3, 5, 20]  # 2016-08-29, 2017-06-15, 2020-01-01
    keep = ~pad[0]
    with torch.inference_mode():
        scores = model(x, days, pad)
        without = model(x[:, keep], days[:, keep])
        inferred = model(x, days)  # masked dates are all 0 == pad_value, so they are found without a mask
    assert scores.shape == (1, 20, 64, 64) and torch.isfinite(scores).all()
    torch.testing.assert_close(scores, without)
    torch.testing.assert_close(scores, inferred)
    assert scores.argmax(dim=1).unique().numel() > 1


def test_the_class_table_is_pastis():
    assert len(utae.CLASS_NAMES) == len(utae.CLASS_COLORS) == 20
    assert utae.CLASS_NAMES[utae.BACKGROUND_CLASS] == "background"
    assert utae.CLASS_NAMES[utae.VOID_CLASS] == "void label"
    assert utae.BANDS == ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_it_matches_the_cpu_and_runs_under_float16_autocast(model):
    x, days, pad = tanzania_crop()
    gpu_model = UTAE().cuda().eval()
    gpu_model.load_state_dict(model.state_dict())
    with torch.inference_mode():
        cpu = model(x, days, pad)
        gpu = gpu_model(x.cuda(), days.cuda(), pad.cuda())
        with torch.autocast("cuda", dtype=torch.float16):
            half = gpu_model(x.cuda(), days.cuda(), pad.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-2, atol=1e-2)  # cuDNN may use TF32
    assert torch.isfinite(half).all()
