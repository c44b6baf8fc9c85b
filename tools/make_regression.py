"""Write fetalbio/shipped/<method>/regression.json: 20 scans of the model's validation split and their figures.

python tools/make_regression.py segmentation runs/seg/splits.json
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from fetalbio.datasets import default_data_root
from fetalbio.engines import load_engine
from fetalbio.evaluate import evaluate_dataset
from fetalbio.writers import write_json_atomic


def main() -> None:
    method, split_path = sys.argv[1], Path(sys.argv[2])
    val = sorted(json.loads(split_path.read_text())["val"])
    names = sorted(random.Random(0).sample(val, 20))
    out = Path("fetalbio/shipped") / method / "regression.json"
    write_json_atomic(out, {"val": names, "expected": {}})
    summary, _ = evaluate_dataset(
        default_data_root() / "hc18" / "training_set", load_engine(None, method, "keras"), split_file=out
    )
    keys = ("n_failed", "dice_mean", "hc_mae_mm", "bpd_mae_mm", "ofd_mae_mm", "landmark_mre_mm")
    write_json_atomic(out, {"val": names, "expected": {k: summary[k] for k in keys}})
    print(json.dumps({k: summary[k] for k in keys}, indent=1))


if __name__ == "__main__":
    main()
