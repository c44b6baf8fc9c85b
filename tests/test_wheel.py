"""A wheel works alone: built, installed into a fresh venv WITHOUT TensorFlow, it measures a synthetic
scan from another folder with the shipped int8 LiteRT model it carries."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def run(cmd: list, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kw)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done


@pytest.mark.slow
def test_wheel_installs_without_tensorflow_and_measures(tmp_path):
    from fetalbio.synthetic import draw_scan, random_ellipse

    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(REPO),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
        ]
    )
    (wheel,) = (tmp_path / "dist").glob("fetalbio-*.whl")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    py = venv / "bin" / "python"
    run([str(py), "-m", "pip", "install", "-q", f"{wheel}[litert]"])
    tf = subprocess.run([str(py), "-c", "import tensorflow"], capture_output=True)
    assert tf.returncode != 0  # an inference-only install: no TensorFlow
    rng = np.random.default_rng(3)
    e = random_ellipse((540, 800), rng)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cv2.imwrite(str(elsewhere / "scan.png"), draw_scan((540, 800), e, rng))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FETALBIO_MODELS")}
    run(
        [str(venv / "bin" / "fetalbio"), "predict", "scan.png", "--pixel-size", "0.15", "--out", "out", "-q"],
        cwd=elsewhere,
        env=env,
    )
    (row,) = list(csv.DictReader(open(elsewhere / "out" / "measurements.csv")))
    assert row["status"] in ("ok", "review") and row["engine"] == "litert"
    truth = e.perimeter() * 0.15 if hasattr(e, "perimeter") else None
    if truth is None:
        from fetalbio.biometry import ramanujan_perimeter

        truth = ramanujan_perimeter(e.semi_major_px, e.semi_minor_px) * 0.15
    assert abs(float(row["hc_mm"]) - truth) < 0.06 * truth
