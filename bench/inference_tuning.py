"""Inference tuning benchmark: what folded batch norms, torch.compile and bf16 autocast do to each image network.

    .venv/bin/python bench/inference_tuning.py [--repeats 5] [--no-compile]

For each architecture, in eval mode on the CPU with channels_last (as models.torch_predictor runs them), the
median time of `--repeats` forward passes after a warm-up, at a typical tile and batch size:
- `eager_s`: the network as loaded; `folded_s`: batch norms folded into their convolutions;
  `compiled_s`: folded and torch.compile'd (`compile_s`: the first call, which compiles, with an empty cache);
- `max_prob_diff_*`: the largest softmax probability difference from the eager network (kept: <= 1e-4);
- `probability_share`: the time TorchPredictor spends after the network (softmax, float, copy to numpy) over the
  network's own time (target <= 5 %).
Dynamic World runs with its real weights; the others with random weights and random batch-norm statistics (so
folding has something to fold). For Dynamic World also bf16 autocast: its speed and its argmax agreement with
fp32 on the 5 real Slovenia scenes (tests/data/s2_slovenia_eolearn, 50,500 pixels). Prints JSON.
"""

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

# A fresh compile cache, so `compile_s` is what a worker's first compile costs (later ones reuse the cache).
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="terraseg-inductor-")
import torch  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.folding import fold_batch_norms  # noqa: E402
from models.torch_predictor import cpu_has_bf16  # noqa: E402

SLOVENIA_SCENES = ROOT / "tests" / "data" / "s2_slovenia_eolearn" / "REFERENCE_SCENES.npy"
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")


def dynamic_world() -> nn.Module:
    from models import dynamic_world
    from models.catalogue import catalogue

    cards = catalogue()
    card = cards.get("landcover-dynamic-world")
    weights = cards.folder(card.id) / card.weights[0]
    net, _ = dynamic_world.load_network(card.weights_sha256[weights.name], weights, card.n_classes)
    return net


def with_random_statistics(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    def built() -> nn.Module:
        torch.manual_seed(0)
        net = build()
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.data.uniform_(0.5, 1.5)
                module.bias.data.uniform_(-0.2, 0.2)
        return net

    return built


def architectures() -> dict[str, tuple[Callable[[], nn.Module], tuple[int, int, int, int]]]:
    """name -> (build the network, input shape B, C, H, W)."""
    from models import cloud_unet, dfc2020

    return {
        "dynamic-world (real weights)": (dynamic_world, (4, 9, 256, 256)),
        "cloud-unet": (with_random_statistics(cloud_unet.build_cloud_unet), (4, 4, 256, 256)),
        "dfc2020-unet": (with_random_statistics(lambda: dfc2020.DFCUNet(12, 9)), (4, 12, 256, 256)),
        "dfc2020-deeplabv3plus-r101": (
            with_random_statistics(lambda: dfc2020.DeepLabV3Plus(12, 9)),
            (2, 12, 256, 256),
        ),
    }


def medians_s(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """The median time of each call, the calls interleaved round by round (this machine's speed drifts by tens
    of percent within minutes: back-to-back series would compare different machines)."""
    for call in calls.values():
        call()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_index in range(repeats):
        names = list(calls)
        names = names[round_index % len(names) :] + names[: round_index % len(names)]
        for name in names:
            started = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def probabilities(net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(net(x).float(), dim=1)


@torch.inference_mode()
def bench_one(
    build: Callable[[], nn.Module], shape: tuple[int, int, int, int], repeats: int, compile: bool
) -> dict[str, object]:
    eager = build().eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    folded = copy.deepcopy(eager)
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    n_folded = fold_batch_norms(folded)
    x = torch.rand(shape).contiguous(memory_format=torch.channels_last)
    reference = probabilities(eager, x)
    row: dict[str, object] = {"input": list(shape), "batch_norms": norms, "folded": n_folded}
    calls: dict[str, Callable[[], object]] = {"eager": lambda: eager(x), "folded": lambda: folded(x)}
    row["max_prob_diff_folded"] = float((probabilities(folded, x) - reference).abs().max())
    if compile:
        compiled = torch.compile(folded)
        started = time.perf_counter()
        compiled(x)
        row["compile_s"] = round(time.perf_counter() - started, 1)
        row["max_prob_diff_compiled"] = float((probabilities(compiled, x) - reference).abs().max())
        calls["compiled"] = lambda: compiled(x)
    logits = folded(x)
    # What TorchPredictor.predict does after the network, on the folded network's logits.
    calls["probabilities"] = lambda: torch.softmax(logits.float(), dim=1).cpu().numpy()
    timed = medians_s(calls, repeats)
    for name in ("eager", "folded", "compiled"):
        if name in timed:
            row[f"{name}_s"] = round(timed[name], 4)
            row[f"{name}_speedup"] = round(timed["eager"] / timed[name], 3)
    row["probability_share"] = round(timed["probabilities"] / timed["folded"], 4)
    return row


@torch.inference_mode()
def bf16_on_real_scenes(repeats: int) -> dict[str, object]:
    """Dynamic World (folded) in fp32 and under bf16 autocast on the real Slovenia scenes: argmax agreement, and
    the speed of each at the tile size."""
    from core.mapping.inference import normalise
    from models.catalogue import catalogue

    card = catalogue().get("landcover-dynamic-world")
    net = dynamic_world().eval()
    fold_batch_norms(net)
    net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    scenes = np.load(SLOVENIA_SCENES)  # (5, H, W, 13) reflectance
    bands = [S2_BANDS.index(b) for b in card.bands]
    x = normalise(np.moveaxis(scenes[..., bands], -1, 1), card.normalisation)
    inputs = torch.from_numpy(np.ascontiguousarray(x)).contiguous(memory_format=torch.channels_last)
    fp32 = net(inputs).argmax(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = net(inputs).float().argmax(1)
    agreement = float((fp32 == bf16).float().mean())
    tile = torch.rand(4, 9, 256, 256).contiguous(memory_format=torch.channels_last)

    def run_bf16() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            net(tile)

    timed = medians_s({"fp32": lambda: net(tile), "bf16": run_bf16}, repeats)
    fp32_s, bf16_s = timed["fp32"], timed["bf16"]
    return {
        "scenes": "5 real Slovenia L1C scenes, 101 x 100 px each",
        "pixels": int(fp32.numel()),
        "argmax_agreement": round(agreement, 5),
        "cpu_has_bf16": cpu_has_bf16(),
        "fp32_s": round(fp32_s, 4),
        "bf16_s": round(bf16_s, 4),
        "bf16_speedup": round(fp32_s / bf16_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    report: dict[str, object] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    report["architectures"] = {
        name: bench_one(build, shape, args.repeats, not args.no_compile)
        for name, (build, shape) in architectures().items()
    }
    report["dynamic_world_bf16"] = bf16_on_real_scenes(args.repeats)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
