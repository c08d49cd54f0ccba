"""Training-throughput benchmark: samples per second of one optimisation step (forward, loss, backward, AdamW)
of every architecture TerraSeg trains, at the batch and patch size its training uses, with random weights and
inputs. CPU fp32; on a GPU also fp32 and mixed precision (bf16 where the GPU has it, else fp16 with loss
scaling), as models.training.loop runs it. Prints JSON.

    .venv/bin/python bench/training.py [--steps 3] [--only utae,cloud-unet]

The wall time of a head-only fine-tune of Dynamic World on 1 km2 of labels is bench/train_head.py's.
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# architecture -> (card whose builder_args it uses, batch, dates (0: single image), bands, patch px, classes)
CASES = {
    "cloud-unet": ("cloud-unet", 4, 0, 4, 256, 2),
    "dfc2020-unet": ("landcover-dfc2020-unet", 4, 0, 12, 256, 9),
    "dfc2020-deeplab": ("landcover-dfc2020-deeplab", 2, 0, 12, 256, 9),
    "utae": ("crop-utae-pastis", 2, 30, 10, 128, 20),
    "convlstm": ("landcover-mtlcc-convlstm", 2, 30, 13, 48, 17),
    "convgru": ("landcover-mtlcc-convgru", 2, 30, 13, 48, 17),
    "bigearthnet-resnet50": ("scene-tags-bigearthnet-resnet50", 16, 0, 12, 120, 19),
    "dynamic-world (full fine-tune)": ("landcover-dynamic-world", 4, 0, 9, 256, 9),
}


def network(card_id: str) -> tuple[torch.nn.Module, str]:
    """The card's architecture with random weights, and how it is called."""
    from models.catalogue import catalogue
    from models.training.seeds import CALLING, build_network

    card = catalogue().get(card_id)
    if card.builder == "dynamic-world":
        from models.dynamic_world import DynamicWorldNet

        return DynamicWorldNet(card.n_classes), "image"
    return build_network(card.builder, dict(card.builder_args)), CALLING[card.builder][0]


def batch(calling: str, size: int, dates: int, bands: int, px: int, classes: int, device: torch.device) -> tuple:
    """Random inputs, keyword options and targets of one batch."""
    generator = torch.Generator().manual_seed(0)
    shape = (size, dates, bands, px, px) if dates else (size, bands, px, px)
    x = torch.randn(shape, generator=generator).to(device)
    options: dict[str, torch.Tensor] = {}
    if calling.startswith("series"):
        options["pad_mask"] = torch.zeros((size, dates), dtype=torch.bool, device=device)
    if calling == "series-dates":
        options["batch_positions"] = torch.arange(dates, dtype=torch.float32, device=device).repeat(size, 1) * 10
    if calling == "tags":
        target = (torch.rand((size, classes), generator=generator) < 0.2).float().to(device)
    else:
        target = torch.randint(0, classes, (size, px, px), generator=generator).to(device)
    return x, options, target


def time_steps(name: str, device: torch.device, amp: torch.dtype | None, steps: int) -> dict[str, object]:
    """Seconds per training step after one warm-up step, and the samples and 10 m pixels per second."""
    from models.training.objectives import binary_cross_entropy, cross_entropy

    card_id, size, dates, bands, px, classes = CASES[name]
    module, calling = network(card_id)
    module.to(device).train()
    x, options, target = batch(calling, size, dates, bands, px, classes, device)
    if calling == "tags":
        loss_fn = binary_cross_entropy(np.full(classes, 3), 16)
    else:
        loss_fn = cross_entropy(np.ones(classes, np.float32))
    optimiser = torch.optim.AdamW(module.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    durations = []
    for step in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        optimiser.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = module(x, **options)
        loss = loss_fn(logits.float(), target)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step:  # the first step warms up allocators and kernels
            durations.append(time.perf_counter() - started)
    step_s = float(np.median(durations))
    return {
        "step_s": round(step_s, 4),
        "samples_per_s": round(size / step_s, 3),
        "mpx_per_s": round(size * px * px / step_s / 1e6, 4),
        "input": f"{size} x {f'{dates} dates x ' if dates else ''}{bands} x {px}^2",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per case, after one warm-up")
    parser.add_argument("--only", help="comma-separated architectures (default: all)")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",")] if args.only else list(CASES)
    torch.manual_seed(0)
    result: dict[str, object] = {
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "steps": args.steps,
        "cpu_fp32": {},
    }
    for name in names:
        result["cpu_fp32"][name] = time_steps(name, torch.device("cpu"), None, args.steps)  # type: ignore[index]
        print(f"{name}: {result['cpu_fp32'][name]}", file=sys.stderr)  # type: ignore[index]
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        result["gpu"] = torch.cuda.get_device_name(0)
        result["cuda_fp32"] = {n: time_steps(n, gpu, None, args.steps) for n in names}
        result[f"cuda_amp_{str(amp).removeprefix('torch.')}"] = {n: time_steps(n, gpu, amp, args.steps) for n in names}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
