"""Crop benchmark: Presto crop inference throughput on WorldCereal's real monthly cube (fp32 in the device's
default batch and in 4,096-pixel batches, bf16 autocast), an end-to-end crop job on the cube and one on cached
real scenes (the Tanzania series), and what masking the DEM and weather inputs costs the shipped heads on the
held-out samples. Prints JSON.

    .venv/bin/python bench/crop_presto.py [--repeats 3] [--device cpu|cuda]

Throughput is pixels (10 m) per second of Presto + both heads on the cube's pixels, already read (the cube is
read once, outside the timing); km2/h = px/s x 3600 / 10,000. Target (issue 16): >= 400 km2/h on a 2-core CPU.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CUBE = ROOT / "tests" / "data" / "worldcereal" / "monthly_cube_inputs.nc"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch

    from core.config import Settings
    from core.geometry.grid import Grid
    from core.jobs.request import JobRequest, build_spec
    from core.learning.crop_samples import concatenate, read_samples_table, to_series
    from core.learning.metrics import evaluate
    from core.mapping.presto_inputs import CHANNELS, normalise
    from core.sources import parse_source
    from core.sources.monthly_cube import open_cube, read_strip
    from models import presto
    from models.catalogue import catalogue
    from models.conversion.presto_heads import DEFAULT_SAMPLES, HOLDOUT_FRACTION
    from models.presto_heads import block_holdout, load_head_model, spatial_blocks
    from worker.pipelines.crop_job import lat_lon_of
    from worker.pipelines.map_job import run_job

    cards = catalogue()
    crop_type = load_head_model(cards.get("crop-presto-croptype"), cards.folder("crop-presto-croptype"))
    cropland = load_head_model(cards.get("crop-presto-cropland"), cards.folder("crop-presto-cropland"))
    cube = open_cube(CUBE)
    with __import__("rasterio").open(cube.subdatasets["S2-L2A-B02"]) as first:
        grid = Grid(cube.crs, first.transform, first.width, first.height)
    values, missing = read_strip(cube, grid, slice(0, grid.height))
    x, mask = normalise(values, missing)
    latlon = lat_lon_of(grid.crs, grid.transform, slice(0, grid.height), grid.width)
    months = presto.months_from(np.full(len(x), cube.start_month), 12)

    def run(dtype: "torch.dtype | None", batch: int | None = None) -> tuple[float, np.ndarray, np.ndarray]:
        times, embedded = [], None
        for _ in range(args.repeats):
            started = time.perf_counter()
            embedded = presto.embed(
                crop_type.encoder, x, mask, latlon, months, batch, args.device, autocast_dtype=dtype
            )
            classes = crop_type.head(embedded).argmax(1)
            land = cropland.head(embedded).argmax(1)
            times.append(time.perf_counter() - started)
        return len(x) / statistics.median(times), classes, land

    fp32_px_s, fp32_classes, fp32_land = run(None)
    # The batch size the encoder took before it was chosen per device (models/presto.default_batch_pixels).
    large_batch_px_s, large_classes, _ = run(None, presto.GPU_BATCH_PIXELS)
    low = torch.float16 if args.device == "cuda" else torch.bfloat16
    low_px_s, low_classes, low_land = run(low)

    # End to end: a crop job over the whole cube (read, Presto, both heads, COGs, preview, stats), in process.
    from pyproj import Transformer

    to_wgs84 = Transformer.from_crs(cube.crs, "EPSG:4326", always_xy=True)
    left, bottom, right, top = cube.bounds
    area_km2 = (right - left) * (top - bottom) / 1e6
    corners = ((left + 2, bottom + 2), (right - 2, bottom + 2), (right - 2, top - 2), (left + 2, top - 2))
    ring = [to_wgs84.transform(px, py) for px, py in (*corners, corners[0])]
    job_s = []
    with tempfile.TemporaryDirectory() as work:
        settings = Settings(cache_dir=Path(work) / "cache", device=args.device)
        request = JobRequest(
            aoi={"type": "Polygon", "coordinates": [ring]}, start="2020-11-01", end="2021-10-31", task="crop",
            model_id=None, sources=(f"cube:{CUBE}",),
        )  # fmt: skip
        spec = build_spec(request, settings, cards, lambda name: parse_source(name, settings))
        for repeat in range(args.repeats):
            started = time.perf_counter()
            run_job(spec, Path(work) / f"out{repeat}", settings)
            job_s.append(time.perf_counter() - started)

    # End to end from cached scenes: the real Tanzania series (L2A, 20 m) as a local source, a crop job over all of
    # it for 2018 (6 dates: the cloud model on each, monthly medians, Presto, both heads, COGs, preview, stats).
    from shapely.geometry import box, mapping

    from core.geometry.grid import project_geometry
    from tests.services import write_tanzania_source

    scene_job_s, scene_area_km2 = [], 0.0
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work) / "tanzania"
        folder.mkdir()
        series = write_tanzania_source(folder)
        t = np.asarray(series["transform"])  # type: ignore[index]
        rows, cols = series["data"].shape[2:]  # type: ignore[index]
        inside = box(t[2] + 10, t[5] + t[4] * rows + 10, t[2] + t[0] * cols - 10, t[5] - 10)  # 10 m inside
        scene_area_km2 = inside.area / 1e6
        settings = Settings(cache_dir=Path(work) / "cache", device=args.device)
        request = JobRequest(
            aoi=mapping(project_geometry(inside, str(series["crs_wkt"]), "EPSG:4326")),  # type: ignore[index]
            start="2018-01-01", end="2018-12-31", task="crop", model_id=None, sources=(f"local:{folder}",),
        )  # fmt: skip
        spec = build_spec(request, settings, cards, lambda name: parse_source(name, settings))
        for repeat in range(args.repeats):
            started = time.perf_counter()
            run_job(spec, Path(work) / f"out{repeat}", settings)
            scene_job_s.append(time.perf_counter() - started)

    # What the shipped heads lose on their held-out samples when the job has no DEM or weather (masked inputs).
    series = concatenate([to_series(read_samples_table(str(p))) for p in DEFAULT_SAMPLES])
    masking = {}
    for model in (crop_type, cropland):
        _, truth = model.labels(series)
        held = block_holdout(spatial_blocks(series.latlon_deg), truth, HOLDOUT_FRACTION, 0)
        scores = {}
        for name, channels in (
            ("all inputs", ()),
            ("no DEM", ("elevation", "slope")),
            ("no weather", ("temperature_2m", "total_precipitation")),
            ("no DEM, no weather", ("elevation", "slope", "temperature_2m", "total_precipitation")),
            ("no S1", ("VV", "VH")),
            # what a crop job on scenes has today: S2 composites alone
            (
                "S2 only (no S1, DEM, weather)",
                ("VV", "VH", "elevation", "slope", "temperature_2m", "total_precipitation"),
            ),
        ):
            part = series.take(held)
            hidden = part.missing.copy()
            for channel in channels:
                hidden[..., CHANNELS.index(channel)] = True
            part = type(part)(**{**part.__dict__, "missing": hidden})
            metrics = evaluate(truth[held], model.probabilities(part).argmax(1), model.classes)
            scores[name] = {
                "overall_accuracy": round(metrics.overall_accuracy, 4),
                "macro_f1": round(metrics.macro_f1, 4),
            }
        masking[model.card.id] = scores

    print(
        json.dumps(
            {
                "device": args.device,
                "torch_threads": torch.get_num_threads(),
                "cube_pixels": len(x),
                "batch_pixels": presto.default_batch_pixels(torch.device(args.device)),
                "fp32": {"px_per_s": round(fp32_px_s), "km2_per_h": round(fp32_px_s * 0.36, 1)},
                f"fp32_batch_{presto.GPU_BATCH_PIXELS}": {
                    "px_per_s": round(large_batch_px_s),
                    "km2_per_h": round(large_batch_px_s * 0.36, 1),
                    "same_classes": bool((large_classes == fp32_classes).all()),
                },
                "default_batch_speedup": round(fp32_px_s / large_batch_px_s, 3),
                str(low).removeprefix("torch."): {
                    "px_per_s": round(low_px_s),
                    "km2_per_h": round(low_px_s * 0.36, 1),
                    "argmax_agreement_crop_type": round(float((low_classes == fp32_classes).mean()), 5),
                    "argmax_agreement_cropland": round(float((low_land == fp32_land).mean()), 5),
                },
                "low_precision_speedup": round(low_px_s / fp32_px_s, 3),
                "crop_job_on_the_cube_s": {
                    "median": round(statistics.median(job_s), 2),
                    "runs": [round(t, 2) for t in job_s],
                },
                "crop_job_km2_per_h": round(area_km2 / statistics.median(job_s) * 3600, 1),
                "crop_job_on_scenes": {
                    "area_km2": round(scene_area_km2, 2),
                    "dates": 6,
                    "median_s": round(statistics.median(scene_job_s), 2),
                    "runs": [round(t, 2) for t in scene_job_s],
                    "km2_per_h": round(scene_area_km2 / statistics.median(scene_job_s) * 3600, 1),
                },
                "held_out_with_inputs_masked": masking,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
