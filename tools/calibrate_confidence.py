"""Set a landmark model's ``low_point_confidence``: the 5th percentile, over its validation scans, of
each scan's lowest point confidence, so that ``low_confidence`` flags the least sure 5 % of scans
(an absolute threshold flags every scan of a model whose heatmap peaks are low).

    python tools/calibrate_confidence.py fetalbio/shipped/landmarks
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from fetalbio.datasets import default_data_root, find_samples
from fetalbio.engines import KerasEngine
from fetalbio.io import read_scan
from fetalbio.pipeline import Predictor


def main() -> None:
    folder = Path(sys.argv[1])
    eng = KerasEngine(folder / "model.keras")
    val = set(json.loads((folder / "splits.json").read_text())["val"])
    samples = [s for s in find_samples(default_data_root() / "hc18" / "training_set") if s.name in val]
    lows = []
    for batch in Predictor({eng.method: eng}).run(samples, lambda s: read_scan(s.scan_path)):
        # the lowest point confidence of each scan, as the landmark method decodes it
        lows.extend(min(p.results[eng.method].point_confidence or [0.0]) for p in batch if not p.error)
    limit = round(float(np.percentile(lows, 5)), 4)
    for name in ("model.json", "model_int8.json", "model_float16.json"):
        path = folder / name
        if path.exists():
            info = json.loads(path.read_text())
            info["low_point_confidence"] = limit
            path.write_text(json.dumps(info, indent=2) + "\n")
    print(f"low_point_confidence = {limit} (median lowest-point confidence {np.median(lows):.3f})")


if __name__ == "__main__":
    main()
