"""int8 LiteRT against Keras on the shipped models' validation split: per method, |HC difference| mean,
95th percentile, largest (and which scan), and how many scans differ by more than 0.3 mm.

    python tools/engine_parity.py     # ~3 min on 2 cores; needs TensorFlow (the train extra) and the data
"""

from __future__ import annotations

import json

import numpy as np

from fetalbio.datasets import default_data_root
from fetalbio.engines import load_engine
from fetalbio.evaluate import evaluate_dataset


def main() -> None:
    data = default_data_root() / "hc18" / "training_set"
    out = {}
    for m in ("segmentation", "landmarks"):
        split = f"fetalbio/shipped/{m}/splits.json"
        rows = {}
        for kind in ("keras", "litert"):
            _, r = evaluate_dataset(data, load_engine(None, m, kind), split_file=split)
            rows[kind] = {x["file"]: x for x in r if x["status"] == "ok"}
        common = sorted(set(rows["keras"]) & set(rows["litert"]))
        d = np.array([abs(rows["litert"][f]["hc_mm"] - rows["keras"][f]["hc_mm"]) for f in common])
        out[m] = {
            "n": len(common),
            "mean_abs_hc_diff_mm": round(float(d.mean()), 3),
            "p95_abs_hc_diff_mm": round(float(np.percentile(d, 95)), 3),
            "max_abs_hc_diff_mm": round(float(d.max()), 3),
            "worst": common[int(np.argmax(d))],
            "n_over_0_3_mm": int((d > 0.3).sum()),
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
