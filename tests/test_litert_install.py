"""The inference-only install: ``predict``/``evaluate --engine litert`` with TensorFlow and Keras
unimportable (an import hook in the child process makes ``import tensorflow``/``import keras`` fail, as
in a venv made with ``pip install '.[litert]'``)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ai_edge_litert")

pytestmark = pytest.mark.slow  # the fixture converts a model to .tflite

# Runs the CLI with TensorFlow, Keras (and tf_keras) blocked; fails if anything imported them anyway.
BLOCKED_RUN = """
import importlib.abc, sys
BLOCKED = ("tensorflow", "keras", "tf_keras", "tensorboard")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None
sys.meta_path.insert(0, Block())
from fetalbio.cli import main
sys.argv = ["fetalbio", *sys.argv[1:]]
try:
    main()
finally:
    heavy = [m for m in sys.modules if m.split(".")[0] in BLOCKED]
    assert not heavy, heavy
"""


@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory) -> dict:
    """A float32 .tflite (+ sidecar) of the hand-set head detector, and drawn annotated scans."""
    pytest.importorskip("tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from _models import head_detector, save_run, write_head_scans

    from fetalbio.export import export_model

    root = tmp_path_factory.mktemp("litert_install")
    scans = write_head_scans(root / "scans", n=3)
    model = save_run(head_detector(), root / "run")
    rep = export_model(
        model, "segmentation", root / "head.tflite", "none", scans, n_calibration=2, n_verify=2
    )
    return {"tflite": Path(rep["out"]), "scans": scans, "root": root}


def run_blocked(*args, **env_extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_the_blocker_blocks(tiny_tflite):
    """The Keras engine is refused in one line, without a traceback, when TensorFlow is absent."""
    res = run_blocked(
        "predict", tiny_tflite["scans"], "--engine", "keras", "--model", tiny_tflite["root"] / "run",
        "--method", "segmentation", "--out", tiny_tflite["root"] / "keras_out",
    )  # fmt: skip
    assert res.returncode == 2, res.stderr[-2000:]
    assert "needs TensorFlow and Keras" in res.stderr and "Traceback" not in res.stderr


def test_predict_with_litert_without_tensorflow(tiny_tflite):
    out = tiny_tflite["root"] / "out"
    res = run_blocked(
        "predict", tiny_tflite["scans"], "--engine", "litert", "--model", tiny_tflite["tflite"],
        "--method", "segmentation", "--pixel-csv", tiny_tflite["scans"] / "pixel_size.csv", "--out", out,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    rows = list(csv.DictReader(open(out / "measurements.csv")))
    assert len(rows) == 3
    assert all(r["status"] == "ok" and r["unit"] == "mm" and float(r["hc_mm"]) > 50 for r in rows)
    assert (out / "overlays").is_dir()


def test_evaluate_with_litert_without_tensorflow(tiny_tflite):
    out = tiny_tflite["root"] / "eval.json"
    res = run_blocked(
        "evaluate", tiny_tflite["scans"], "--engine", "litert", "--model", tiny_tflite["tflite"],
        "--json", out,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads(out.read_text())["summary"]
    assert summary["n_images"] == 3 and summary["n_failed"] == 0


def test_the_shipped_model_defaults_to_litert_without_tensorflow(tiny_tflite):
    """No --model, no --engine: without TensorFlow the shipped int8 .tflite is used."""
    models = tiny_tflite["root"] / "models"
    (models / "segmentation").mkdir(parents=True)
    for suffix in (".tflite", ".json"):
        shutil.copy(
            tiny_tflite["tflite"].with_suffix(suffix), models / "segmentation" / f"model_int8{suffix}"
        )
    out = tiny_tflite["root"] / "shipped_out"
    res = run_blocked(
        "predict", tiny_tflite["scans"], "--method", "segmentation", "--pixel-size", "0.2", "--out", out,
        FETALBIO_MODELS=str(models),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    rows = list(csv.DictReader(open(out / "measurements.csv")))
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows)
