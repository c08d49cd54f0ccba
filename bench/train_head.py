"""Head-training benchmark: the wall time of `terraseg train --mode head` on Dynamic World over the embedded
sample (about 1 km2) with eo-learn's real land-use polygons (tests/data), stage by stage. Prints JSON.

    .venv/bin/python bench/train_head.py [--repeats 3]

Target (issue 15): a head-only fine-tune of Dynamic World on 1 km2 of labels in under 60 s on a 2-core CPU.
Each repeat starts from an empty cache (so cloud masking and features are computed, not reused).
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLASSES = ["artificial surface", "forest", "grassland", "schrubland"]
PARENT_CLASSES = {
    "artificial surface": "built",
    "forest": "trees",
    "grassland": "grass",
    "schrubland": "shrub and scrub",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import pyogrio

    from core.config import Settings
    from core.sources import SAMPLE_DIR
    from worker.pipelines.training import TrainRequest, train_model

    stages: dict[str, float] = {}
    runs_s = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            frame = pyogrio.read_dataframe(ROOT / "tests" / "data" / "s2_slovenia_eolearn" / "LULC.gpkg")
            labels = Path(tmp) / "labels.gpkg"
            pyogrio.write_dataframe(frame[frame.LULC_NAME.isin(CLASSES)][["LULC_NAME", "geometry"]], labels)
            marks: list[tuple[float, str]] = []

            def progress(fraction: float, message: str, marks: list[tuple[float, str]] = marks) -> None:
                marks.append((time.perf_counter(), message.split(":")[0]))

            request = TrainRequest(
                base_id="landcover-dynamic-world",
                new_id="bench-head",
                labels=labels,
                label_field="LULC_NAME",
                aoi=str(SAMPLE_DIR / "aoi.geojson"),
                start="2015-07-01",
                end="2015-09-30",
                parent_classes=PARENT_CLASSES,
            )
            started = time.perf_counter()
            result = train_model(request, Settings(cache_dir=Path(tmp) / "cache"), progress=progress)
            runs_s.append(time.perf_counter() - started)
            previous = started
            for when, stage in marks:  # time from the previous mark, credited to the stage reported now
                stages[stage] = stages.get(stage, 0.0) + (when - previous) / args.repeats
                previous = when
    print(
        json.dumps(
            {
                "benchmark": "train_head",
                "cpu_count": os.cpu_count(),
                "repeats": args.repeats,
                "wall_s": {"min": min(runs_s), "median": statistics.median(runs_s), "max": max(runs_s)},
                "target_s": 60,
                "mean_s_by_stage": {k: round(v, 2) for k, v in stages.items()},
                "validation_macro_f1": round(result.metrics.macro_f1, 4),
                "parent_macro_f1": round(result.parent_metrics.macro_f1, 4)
                if result.parent_metrics
                else None,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
