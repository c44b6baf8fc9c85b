"""The accelerator training path (tools/pack_landmarks.py, tools/train_packed.py, tools/import_packed_run.py)
on synthetic scans: the pack rebuilds the product's model input, the on-device targets equal the
product's, and a tiny run goes end to end into a run folder that ``evaluate`` reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fetalbio.datasets import find_samples, load_truth
from fetalbio.heatmaps import heatmap_loss, render_heatmaps
from fetalbio.io import read_scan
from fetalbio.pack import (
    LETTERBOX_FIELDS,
    heatmap_points_loss,
    load_images,
    load_pack,
    normalised,
    pack_scan,
    save_pack,
    to_original,
)
from fetalbio.preprocess import prepare_input

REPO = Path(__file__).resolve().parents[1]

SIZE = (64, 96)


def run_tool(*args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "KERAS_BACKEND": "tensorflow",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": "",
    }
    res = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res


@pytest.fixture(scope="module")
def pack(synthetic_dataset, tmp_path_factory) -> tuple[Path, Path]:
    names = [s.name for s in find_samples(synthetic_dataset)]
    folder = tmp_path_factory.mktemp("pack")
    split = folder / "splits.json"
    split.write_text(json.dumps({"seed": 0, "val_fraction": 0.25, "train": names[:6], "val": names[6:]}))
    out = folder / "pack.npz"
    run_tool(
        "tools/pack_landmarks.py",
        str(synthetic_dataset),
        "--split",
        str(split),
        "--size",
        *map(str, SIZE),
        "--out",
        str(out),
    )
    return out, split


def test_pack_rebuilds_the_model_input_and_points(pack, synthetic_dataset):
    path, split = pack
    d = load_pack(path)
    assert d["images"].shape == (8, *SIZE)
    assert int(d["is_val"].sum()) == 2
    by_name = {s.name: s for s in find_samples(synthetic_dataset)}
    for i, name in enumerate(d["names"]):
        s = by_name[str(name)]
        pixels = read_scan(s.scan_path).pixels
        expected, lb = prepare_input(pixels, SIZE)
        # the uint8 rounding moves an input by at most 0.5 / SD (plus float error)
        tol = 0.5 / float(pixels.std()) + 1e-4
        assert np.abs(normalised(d, i) - expected).max() <= tol
        truth = load_truth(s.annotation_path).landmarks.as_array()
        np.testing.assert_allclose(d["points_orig"][i], truth)
        np.testing.assert_allclose(d["points_in"][i], lb.to_input(truth))
        np.testing.assert_allclose(to_original(d["points_in"][i], d["letterbox"][i]), truth, atol=1e-9)
        assert d["spacing_mm"][i] == pytest.approx(s.pixel_size_mm)
    with np.load(path) as p:
        np.testing.assert_array_equal(load_images(p), d["images"])  # lossless WebP


def test_save_pack_round_trip_in_process(synthetic_dataset, tmp_path):
    samples = find_samples(synthetic_dataset)[:3]
    pts = np.stack([load_truth(s.annotation_path).landmarks.as_array() for s in samples])
    scans = [pack_scan(read_scan(s.scan_path).pixels, p, SIZE) for s, p in zip(samples, pts, strict=True)]
    path = tmp_path / "sub" / "p.npz"
    names = [s.name for s in samples]
    save_pack(path, scans, names=names, is_val=[0, 0, 1], points_orig=pts, spacing_mm=[0.2] * 3)
    d = load_pack(path)
    assert [str(n) for n in d["names"]] == names and d["is_val"].tolist() == [0, 0, 1]
    np.testing.assert_array_equal(d["images"], np.stack([sc.image for sc in scans]))
    lb = prepare_input(read_scan(samples[0].scan_path).pixels, SIZE)[1]
    assert d["letterbox"][0].tolist() == [getattr(lb, f) for f in LETTERBOX_FIELDS]
    np.testing.assert_allclose(to_original(d["points_in"][0], d["letterbox"][0]), pts[0], atol=1e-9)


def test_pack_module_does_not_import_keras():
    code = "import sys, fetalbio.pack; sys.exit(any(m in sys.modules for m in ('keras', 'tensorflow')))"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=120).returncode == 0


def test_loss_from_points_equals_the_products_heatmap_loss():
    rng = np.random.default_rng(5)
    points = rng.uniform([-3, -3], [SIZE[1] + 3, SIZE[0] + 3], size=(3, 4, 2)).astype(np.float32)
    pred = rng.normal(0, 0.3, size=(3, *SIZE, 4)).astype(np.float32)
    target = np.stack([render_heatmaps(p, SIZE, 2.5) for p in points])
    expected = np.asarray(heatmap_loss(target, pred))
    got = np.asarray(heatmap_points_loss(2.5, SIZE)(points, pred))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.slow
def test_tiny_run_end_to_end_into_a_run_folder(pack, synthetic_dataset, tmp_path):
    path, split = pack
    out = tmp_path / "gpu_out"
    common = [
        "--pack",
        str(path),
        "--arch",
        "resnet",
        "--base-filters",
        "4",
        "--batch-size",
        "2",
        "--workers",
        "1",
    ]
    common += ["--val-every", "1", "--budget-s", "1", "--sigma", "2"]
    run_tool("tools/train_packed.py", *common, "--out", str(out), "--max-epochs", "2")
    info = json.loads((out / "resnet.json").read_text())
    assert info["epochs"] == 2 and info["steps"] == 6 and info["n_train"] == 6 and info["n_val"] == 2
    assert np.isfinite([h["loss"] for h in info["history"]]).all()
    assert "landmark_mre_mm" in info["history"][-1]

    # --init-from with a zero learning rate keeps the convolution kernels it was given
    res = run_tool(
        "tools/train_packed.py",
        *common,
        "--out",
        str(out),
        "--name",
        "again",
        "--max-epochs",
        "1",
        "--lr",
        "0",
        "--init-from",
        str(out / "resnet.keras"),
    )
    assert "starting from" in res.stdout
    import keras

    import fetalbio.models.resnet_head  # noqa: F401

    before = keras.models.load_model(out / "resnet.keras", compile=False)
    after = keras.models.load_model(out / "again.keras", compile=False)
    kernels = [(a, b) for a, b in zip(before.weights, after.weights, strict=True) if "kernel" in a.path]
    assert kernels and all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in kernels)

    (out / "logs").mkdir()
    (out / "resnet.json").rename(out / "logs" / "resnet.json")
    run_dir = tmp_path / "run"
    res = run_tool(
        "tools/import_packed_run.py",
        str(out),
        "resnet",
        "--split",
        str(split),
        "--pack",
        str(path),
        "--out",
        str(run_dir),
        "--dataset",
        str(synthetic_dataset),
    )
    for f in ("config.json", "splits.json", "history.csv", "best.keras", "model.json", "metrics.json"):
        assert (run_dir / f).exists(), f
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["check_points_max_diff_px"] < 1e-3  # the same points after saving and loading
    assert metrics["val"]["n_images"] == 2 and metrics["best_epoch"] == 2
    assert json.loads((run_dir / "model.json").read_text())["heatmap_sigma_px"] == 2.0
