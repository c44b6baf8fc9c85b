"""Regression of the shipped models on a fixed set of ~20 validation scans (real HC18 data).

Each model folder holds ``regression.json``: the scan names (from the model's own validation split,
never trained on) and the figures measured when the model was shipped. The test holds the model to
them within a small tolerance; it is skipped only when the data is absent.
"""

import json

import pytest
from conftest import HC18_TRAIN, REPO, needs_data

TOLERANCE = {
    "dice_mean": -0.003,
    "hc_mae_mm": 0.15,
    "bpd_mae_mm": 0.1,
    "ofd_mae_mm": 0.15,
    "landmark_mre_mm": 0.1,
}


@needs_data()
@pytest.mark.parametrize("method", ["segmentation", "landmarks"])
def test_shipped_model_regression(method, tmp_path):
    from fetalbio.engines import load_engine
    from fetalbio.evaluate import evaluate_dataset

    folder = REPO / "models" / method
    if not (folder / "model.keras").exists():
        pytest.fail(f"no shipped {method} model in {folder}")
    reg = json.loads((folder / "regression.json").read_text())
    assert 15 <= len(reg["val"]) <= 25
    summary, rows = evaluate_dataset(
        HC18_TRAIN, load_engine(None, method), split_file=folder / "regression.json"
    )
    assert summary["n_images"] == len(reg["val"])
    assert summary["n_failed"] == reg["expected"]["n_failed"]
    for key, tol in TOLERANCE.items():
        want = reg["expected"].get(key)
        if want is None:
            continue
        if tol < 0:  # higher is better
            assert summary[key] >= want + tol, (key, summary[key], want)
        else:
            assert summary[key] <= want + tol, (key, summary[key], want)
