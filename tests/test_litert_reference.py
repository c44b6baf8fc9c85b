"""examples/litert_reference.py, the one-file port reference for device makers (numpy, OpenCV, LiteRT),
measures as fetalbio does: the same HC, BPD, OFD, points, confidence and flags as fetalbio's pipeline
on the shipped int8 models, with the second look at a small head, and it imports no fetalbio."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import HC18_TRAIN, REPO, needs_data

from fetalbio import methods
from fetalbio.geometry import Ellipse
from fetalbio.io import Scan
from fetalbio.synthetic import draw_scan

pytest.importorskip("ai_edge_litert")
SCRIPT = REPO / "examples" / "litert_reference.py"
METHODS = ("segmentation", "landmarks")


def _reference(files: list[Path], method: str, pixel_size_mm: float) -> list[dict]:
    """The script's rows, run as a program; it fails if anything of fetalbio was imported."""
    code = (
        "import runpy, sys\n"
        "sys.argv = sys.argv[1:]\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('fetalbio', 'tensorflow', 'keras'))\n"
        "assert not bad, bad\n"
    )
    args = [str(SCRIPT), *map(str, files), "--pixel-size", str(pixel_size_mm), "--method", method]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def _fetalbio(files: list[Path], method: str, pixel_size_mm: float) -> list:
    """fetalbio's pipeline on the same pixels, with its capture, turn and trace finders off (the core
    path the script covers), the shipped int8 model."""
    from fetalbio.engines import load_engine
    from fetalbio.pipeline import Predictor

    pred = Predictor({method: load_engine(None, method, "litert")}, find_region=False, turn_portrait=False)
    scans = [Scan(cv2.imread(str(f), cv2.IMREAD_UNCHANGED), (pixel_size_mm,) * 2, f, "cli") for f in files]
    return pred.predict_scans(scans)


def _assert_same(files: list[Path], pixel_size_mm: float) -> dict[str, int]:
    """Every row of the script equals fetalbio's; returns how many second looks each method took."""
    looks = {}
    for method in METHODS:
        ref = _reference(files, method, pixel_size_mm)
        ours = _fetalbio(files, method, pixel_size_mm)
        assert len(ref) == len(ours) == len(files)
        looks[method] = 0
        for r, p in zip(ref, ours, strict=True):
            res = p.results[method]
            where = f"{method} {Path(r['file']).name}"
            assert sorted(r["flags"]) == sorted(res.flags), where
            if res.error is not None:
                assert "hc_mm" not in r and r["error"] == res.error, where
                continue
            m = methods.get(method).measure(res, (pixel_size_mm,) * 2)
            for q in ("hc", "bpd", "ofd"):
                assert r[f"{q}_mm"] == pytest.approx(getattr(m, q), abs=1e-3), f"{where} {q}"
            e = res.ellipse
            want = (e.cx_px, e.cy_px, e.semi_major_px, e.semi_minor_px)
            np.testing.assert_allclose(r["ellipse"][:4], want, atol=1e-3, err_msg=where)
            assert (
                math.isclose(r["ellipse"][4], e.angle_deg, abs_tol=1e-3)
                or e.semi_major_px - e.semi_minor_px < 1e-2
            )
            assert r["confidence"] == pytest.approx(res.confidence, abs=1e-6), where
            if method == "landmarks":
                np.testing.assert_allclose(r["points"], res.landmarks.as_array(), atol=1e-3, err_msg=where)
                np.testing.assert_allclose(r["point_confidence"], res.point_confidence, atol=1e-6)
            assert r["second_look"] == _second(p, method), where
            looks[method] += r["second_look"]
    return looks


def _second(pred, method: str) -> bool:
    """Whether fetalbio kept the second look (its letterbox is the crop's)."""
    lb = pred.letterboxes[method]
    return getattr(lb, "full_h", None) is not None


@pytest.fixture(scope="module")
def synthetic_scans(tmp_path_factory) -> list[Path]:
    """Drawn heads: ordinary, small (a second look), cut by the border, tilted; and a flat image."""
    folder = tmp_path_factory.mktemp("ref")
    rng = np.random.default_rng(7)
    heads = [
        ((540, 800), Ellipse(400, 270, 240, 190, 10)),
        ((540, 800), Ellipse(380, 300, 70, 55, 30)),  # small: measured again in a crop
        ((540, 800), Ellipse(120, 270, 200, 160, 0)),  # cut by the left border
        ((600, 700), Ellipse(350, 300, 200, 170, 125)),
        ((400, 400), Ellipse(200, 200, 150, 120, 80)),
    ]
    files = []
    for i, (shape, e) in enumerate(heads):
        files.append(folder / f"head{i}.png")
        cv2.imwrite(str(files[-1]), draw_scan(shape, e, rng))
    files.append(folder / "flat.png")
    cv2.imwrite(str(files[-1]), np.full((300, 450), 90, np.uint8))
    return files


def test_reference_measures_drawn_scans_as_fetalbio(synthetic_scans):
    looks = _assert_same(synthetic_scans, 0.15)
    assert looks["segmentation"] >= 1 and looks["landmarks"] >= 1  # the small head's second look is covered


@needs_data()
def test_reference_measures_hc18_scans_as_fetalbio():
    files = sorted(HC18_TRAIN.glob("*HC.png"))[::40]  # 20 scans, two of them small heads (second look)
    looks = _assert_same(files, 0.12)
    assert looks["segmentation"] >= 1 and looks["landmarks"] >= 1


def test_reference_matches_predict_on_a_clean_scan(synthetic_scans, tmp_path):
    """On a clean, upright scan in square pixels `fetalbio predict` itself gives the script's figures
    (docs/integrating.md: the conformance check)."""
    from typer.testing import CliRunner

    from fetalbio.cli import app

    scan = synthetic_scans[0]
    for method in METHODS:
        out = tmp_path / method
        res = CliRunner().invoke(
            app,
            [
                "predict",
                str(scan),
                "--pixel-size",
                "0.15",
                "--method",
                method,
                "--no-overlays",
                "--out",
                str(out),
            ],
        )
        assert res.exit_code == 0, res.output
        row = json.loads((out / "journal.jsonl").read_text().splitlines()[0])["rows"][0]
        ref = _reference([scan], method, 0.15)[0]
        for q in ("hc", "bpd", "ofd"):
            assert row[f"{q}_mm"] == pytest.approx(ref[f"{q}_mm"], abs=1e-3)
