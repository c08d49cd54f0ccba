"""Model benchmark: forward-pass pixels per second for each architecture, and the land-cover job's time per km2.

    .venv/bin/python bench/models.py [--repeats 3] [--skip-pipeline]

For each architecture a random-weight network in eval mode runs on random input of a typical tile shape and
batch size; the time is the median of `--repeats` runs after one warm-up. Pixels are output pixels (B x H x W),
so series models count each output pixel once, whatever the number of dates. On the CPU: fp32. With CUDA also
fp32 and fp16/bf16 autocast. Then, on the CPU, the whole land-cover job (cloud model on every date, Dynamic
World on the clearest, masking, COGs) over a synthetic 4-date local source built from the real sample's pixels,
reported as seconds per km2. Prints JSON.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def architectures() -> dict[
    str, tuple[Callable[[], nn.Module], Callable[[int], tuple[torch.Tensor, ...]], int]
]:
    """name -> (build the network, make its inputs for a batch size, batch size)."""
    from models import cloud_unet, dfc2020, dynamic_world

    def image(channels: int, size: int) -> Callable[[int], tuple[torch.Tensor, ...]]:
        return lambda batch: (torch.rand(batch, channels, size, size),)

    table: dict[str, tuple[Callable[[], nn.Module], Callable[[int], tuple[torch.Tensor, ...]], int]] = {
        "dynamic-world": (dynamic_world.DynamicWorldNet, image(9, 256), 4),
        "dfc2020-unet": (lambda: dfc2020.DFCUNet(12, 9), image(12, 256), 4),
        "dfc2020-deeplabv3plus-r101": (lambda: dfc2020.DeepLabV3Plus(12, 9), image(12, 256), 2),
        "cloud-unet": (cloud_unet.build_cloud_unet, image(4, 256), 4),
    }
    try:
        from models import utae

        def utae_inputs(batch: int) -> tuple[torch.Tensor, ...]:
            dates = torch.sort(torch.randint(0, 365, (batch, 20)), dim=1).values.float()
            return torch.rand(batch, 20, 10, 128, 128), dates

        table["utae-pastis (T=20)"] = (utae.UTAE, utae_inputs, 2)
    except ImportError:
        pass
    try:
        from models import convrnn

        for cell in ("lstm", "gru"):
            table[f"conv{cell}-mtlcc (T=30)"] = (
                lambda cell=cell: convrnn.ConvRNNSegmenter(in_channels=13, n_classes=17, cell=cell),
                lambda batch: (torch.rand(batch, 30, 13, 64, 64),),
                2,
            )
    except ImportError:
        pass
    try:
        from models import bigearthnet

        table["bigearthnet-resnet50"] = (
            lambda: bigearthnet.BigEarthNetResNet50(in_channels=12, n_labels=19),
            image(12, 120),
            16,
        )
    except ImportError:
        pass
    return table


def time_forward(
    net: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    device: torch.device,
    dtype: torch.dtype | None,
    repeats: int,
) -> float:
    net = net.eval().to(device)
    moved = tuple(t.to(device) for t in inputs)

    def run() -> None:
        with (
            torch.inference_mode(),
            torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None),
        ):
            net(*moved)
        if device.type == "cuda":
            torch.cuda.synchronize()

    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_architectures(repeats: int) -> list[dict[str, object]]:
    modes: list[tuple[str, torch.device, torch.dtype | None]] = [("cpu fp32", torch.device("cpu"), None)]
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        modes += [
            ("cuda fp32", cuda, None),
            ("cuda fp16 amp", cuda, torch.float16),
            ("cuda bf16 amp", cuda, torch.bfloat16),
        ]
    rows = []
    for name, (build, make_inputs, batch) in architectures().items():
        torch.manual_seed(0)
        net = build()
        inputs = make_inputs(batch)
        pixels = inputs[0].shape[0] * inputs[0].shape[-2] * inputs[0].shape[-1]
        for mode, device, dtype in modes:
            seconds = time_forward(net, inputs, device, dtype, repeats)
            rows.append(
                {
                    "architecture": name,
                    "mode": mode,
                    "batch": batch,
                    "input_shape": list(inputs[0].shape),
                    "params_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 2),
                    "seconds": round(seconds, 4),
                    "mpx_per_s": round(pixels / seconds / 1e6, 4),
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def bench_landcover_job() -> dict[str, object]:
    """The land-cover job on a 4-date, 1,500 x 1,500 px (225 km2) local source made by tiling the sample."""
    import numpy as np
    import rasterio
    from rasterio.warp import transform_bounds

    from core.config import Settings
    from core.jobs.request import JobRequest, build_spec
    from core.sources import SAMPLE_DIR
    from models.catalogue import catalogue
    from tests.conftest import write_scene
    from worker.pipelines.map_job import run_job

    size = 1500
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        for index, name in enumerate(sorted(SAMPLE_DIR.glob("*.tif"))[:4]):
            with rasterio.open(name) as src:
                pixels, crs, bounds = src.read(), src.crs, src.bounds
                acquired = src.tags()["ACQUISITION_DATETIME"]
            tiled = np.tile(pixels, (1, size // pixels.shape[1] + 1, size // pixels.shape[2] + 1))[
                :, :size, :size
            ]
            write_scene(
                folder / f"scene_{index}.tif", tiled, origin=(bounds.left, bounds.top), acquired=acquired
            )
        west, south, east, north = transform_bounds(
            crs, "EPSG:4326", bounds.left, bounds.top - size * 10, bounds.left + size * 10, bounds.top
        )
        aoi = {
            "type": "Polygon",
            "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]],
        }
        settings = Settings(cache_dir=folder / "cache")
        request = JobRequest(
            aoi=aoi, start="2015-07-01", end="2015-09-30", task="landcover", model_id="landcover-dynamic-world",
            sources=(f"local:{folder}",),
        )  # fmt: skip
        spec = build_spec(request, settings, catalogue(settings.cache_dir), lambda name: None)
        started = time.perf_counter()
        result = run_job(spec, folder / "out", settings)
        seconds = time.perf_counter() - started
        area_km2 = result.stats.aoi_area_km2
        run = json.loads((folder / "out" / "run.json").read_text())
    return {
        "job": "landcover (4 dates, cloud-csmask on each, dynamic-world on the clearest), CPU",
        "aoi_km2": round(area_km2, 2),
        "seconds": round(seconds, 2),
        "s_per_km2": round(seconds / area_km2, 4),
        "stage_seconds": run["timings_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-pipeline", action="store_true")
    args = parser.parse_args()
    report: dict[str, object] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "forward": bench_architectures(args.repeats),
    }
    if not args.skip_pipeline:
        report["landcover_job"] = bench_landcover_job()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
