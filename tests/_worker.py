"""Run ``fetalbio`` (the real CLI) in a fresh process for tests/test_distributed.py.

Usage: ``python tests/_worker.py REPORT.json train-seg DATASET --out RUN ...``

Before handing over to the CLI it wraps ``fetalbio.train.train`` and ``fetalbio.train.save_model`` so
that REPORT.json records what the run did: train()'s result, and the BatchNorm moving statistics on
EVERY replica when the best model was saved and when training ended. After a successful run the chief
also records the statistics in the last checkpoint, loads ``best.keras``, predicts on one batch and
records the loaded model's statistics, so the test can compare what was saved with each replica without
importing TensorFlow itself.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def bn_statistics(model) -> dict[str, list[list[list[float]]]]:
    """{variable path: [values on replica 0, replica 1, ...]} for every BN moving mean/variance."""
    out = {}
    for v in model.non_trainable_variables:
        if "moving_" not in v.path:
            continue
        value = getattr(v, "value", v)  # the tf.Variable (a MirroredVariable under a strategy)
        per_replica = getattr(value, "values", None) or (value,)
        out[v.path] = [[float(a) for a in t.numpy().ravel()] for t in per_replica]
    return out


def main() -> int:
    report_path = Path(sys.argv[1])
    args = sys.argv[2:]
    import fetalbio.train as T

    report: dict = {"bn_at_save": None, "result": None}
    original_train, original_save, original_build = T.train, T.save_model, T.build_model
    built = []  # train() builds the model it trains (under the strategy) first, then a plain copy

    def build_model(cfg):
        built.append(original_build(cfg))
        return built[-1]

    def save_model(model, path, cfg):
        original_save(model, path, cfg)
        report["bn_at_save"] = bn_statistics(built[0])

    delay = float(os.environ.get("FETALBIO_TEST_STEP_DELAY_S", "0") or 0)

    def train(*a, **k):
        if delay:  # slow every step down, so that the test can kill the run in the middle of an epoch
            k["on_step"] = lambda epoch, step: time.sleep(delay)
        report["result"] = original_train(*a, **k)
        return report["result"]

    T.build_model, T.save_model, T.train = build_model, save_model, train
    from fetalbio.cli import app

    try:
        app(args, prog_name="fetalbio")
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    except Exception as exc:  # the test reads the report; the traceback goes to stderr
        import traceback

        traceback.print_exc()
        report["error"] = f"{type(exc).__name__}: {exc}"
        code = 1
    result = report["result"]
    if built:
        report["bn_final"] = bn_statistics(built[0])
    if code == 0 and result and result.get("chief"):
        import keras
        import numpy as np

        run = Path(result["run_folder"])
        # the last checkpoint's weights are saved in model.weights order
        state = json.loads((run / "checkpoint" / "state.json").read_text())
        with np.load(run / "checkpoint" / state["files"]["weights"]) as f:
            report["bn_checkpoint"] = {
                v.path: [float(a) for a in f[f"arr_{i}"].ravel()]
                for i, v in enumerate(built[0].weights)
                if "moving_" in v.path
            }
        model = keras.saving.load_model(run / "best.keras")
        h, w = model.input_shape[1:3]
        pred = model.predict(np.zeros((2, h, w, 1), np.float32), verbose=0)
        report["loaded"] = {
            "bn": bn_statistics(model),
            "pred_shape": list(pred.shape),
            "pred_finite": bool(np.isfinite(pred).all()),
        }
    report["exit_code"] = code
    report_path.write_text(json.dumps(report))
    return code


if __name__ == "__main__":
    sys.exit(main())
