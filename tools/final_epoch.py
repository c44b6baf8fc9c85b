"""Save the LAST completed epoch of a training run as ``final.keras`` (with model.json beside it).

The shipped models are final epochs: picking the best validation epoch would tune the model to the split
its figures are reported on.

    python tools/final_epoch.py runs/seg-robust
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from fetalbio.train import TrainConfig, build_model, save_model


def main() -> None:
    run = Path(sys.argv[1])
    cfg_d = json.loads((run / "config.json").read_text())
    cfg_d["image_size"] = tuple(cfg_d["image_size"])
    cfg = TrainConfig(**cfg_d)
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    model = build_model(cfg)
    with np.load(run / "checkpoint" / state["files"]["weights"]) as f:
        model.set_weights([f[f"arr_{i}"] for i in range(len(f.files))])
    save_model(model, run / "final.keras", cfg)
    print(f"{run / 'final.keras'}: epoch {state['epoch']}, {state['history'][-1]}")


if __name__ == "__main__":
    main()
