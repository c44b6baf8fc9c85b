"""examples/litert_reference.py, the one-file port reference for device makers (numpy, OpenCV, LiteRT),
measures as fetalbio does: the same HC, BPD, OFD, points, confidence and flags as fetalbio's pipeline
on the shipped int8 models, with the second look at a small head, and it imports no fetalbio."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import HC18_TRAIN, REPO, needs_data

from fetalbio.geometry import Ellipse
from fetalbio.io import Scan
from fetalbio.synthetic import draw_scan

pytest.importorskip("ai_edge_litert")
SCRIPT = REPO / "examples" / "litert_reference.py"
METHODS = ("segmentation", "landmarks")
ALL = ("fused", *METHODS)  # predict --method all, in its order


def _reference(files: list[Path], pixel_size_mm: float) -> dict[tuple[str, str], dict]:
    """The script's rows {(file name, method): row}, run as a program; it fails if anything of fetalbio
    (or TensorFlow) was imported."""
    code = (
        "import runpy, sys\n"
        "sys.argv = sys.argv[1:]\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('fetalbio', 'tensorflow', 'keras'))\n"
        "assert not bad, bad\n"
    )
    args = [str(SCRIPT), *map(str, files), "--pixel-size", str(pixel_size_mm), "--method", "all"]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    return {(Path(r["file"]).name, r["method"]): r for r in rows}


def _fetalbio(files: list[Path], pixel_size_mm: float) -> tuple[dict, dict]:
    """fetalbio's rows {(file name, method): row} (``predict``'s, review applied) and predictions, with
    its capture, turn and trace finders off (the path the script covers), the shipped int8 models."""
    from fetalbio.engines import load_engine
    from fetalbio.pipeline import Predictor
    from fetalbio.predict import apply_review, flag_disagreement, measurement_row

    engines = {m: load_engine(None, m, "litert") for m in METHODS}
    pred = Predictor(engines, combined=("fused",), find_region=False, turn_portrait=False)
    scans = [Scan(cv2.imread(str(f), cv2.IMREAD_UNCHANGED), (pixel_size_mm,) * 2, f, "cli") for f in files]
    rows, preds = {}, {}
    for p in pred.predict_scans(scans):
        name = p.source.source.name
        preds[name] = p
        scan_rows = [measurement_row(str(p.source.source), p.results[m], p.source) for m in ALL]
        flag_disagreement(scan_rows)  # as predict --method all does for a scan's rows
        rows.update({(name, r["method"]): r for r in scan_rows})
    apply_review(list(rows.values()))
    return rows, preds


def _assert_same(files: list[Path], pixel_size_mm: float) -> dict[str, int]:
    """Every row of the script equals fetalbio's; returns how many second looks each method took and
    how many fused rows say review."""
    ref = _reference(files, pixel_size_mm)
    ours, preds = _fetalbio(files, pixel_size_mm)
    assert set(ref) == set(ours) and len(ours) == 3 * len(files)
    counts = {"segmentation": 0, "landmarks": 0, "review": 0}
    for key, row in ours.items():
        r, where = ref[key], " ".join(key)
        assert r["status"] == row["status"], where
        assert sorted(r["flags"]) == sorted(filter(None, row["flags"].split(";"))), where
        if row["status"] == "error":
            assert r["error"] == row["error"], where
            continue
        assert "; ".join(r["review_reasons"]) == row["review_reasons"], where
        for q in ("hc", "bpd", "ofd"):
            assert r[f"{q}_mm"] == pytest.approx(row[f"{q}_mm"], abs=1e-3), f"{where} {q}"
        assert r["cephalic_index"] == pytest.approx(row["cephalic_index"], abs=1e-3), where
        if key[1] == "fused":
            for col in ("hc_mm_low", "hc_mm_high", "bpd_mm_low", "bpd_mm_high", "ofd_mm_low", "ofd_mm_high"):
                assert r[col] == pytest.approx(row[col], abs=1e-3), f"{where} {col}"
            counts["review"] += row["status"] == "review"
            continue
        want = [row[f"ellipse_{k}"] for k in ("cx_px", "cy_px", "semi_major_px", "semi_minor_px")]
        np.testing.assert_allclose(r["ellipse"][:4], want, atol=1e-3, err_msg=where)
        if want[2] - want[3] > 1e-2:
            assert r["ellipse"][4] == pytest.approx(row["ellipse_angle_deg"], abs=1e-3), where
        assert r["confidence"] == pytest.approx(row["confidence"], abs=1e-6), where
        if key[1] == "landmarks":
            pts = [[row[f"{n}_x"], row[f"{n}_y"]] for n in ("bpd1", "bpd2", "ofd1", "ofd2")]
            np.testing.assert_allclose(r["points"], pts, atol=1e-3, err_msg=where)
        lb = preds[key[0]].letterboxes[key[1]]
        assert r["second_look"] == (lb.full_h is not None), where  # fetalbio kept its crop's look
        counts[key[1]] += r["second_look"]
    return counts


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
    counts = _assert_same(synthetic_scans, 0.15)
    # the small head's second look, and fused rows that go to review, are covered
    assert counts["segmentation"] >= 1 and counts["landmarks"] >= 1 and counts["review"] >= 1


@needs_data()
def test_reference_measures_hc18_scans_as_fetalbio():
    files = sorted(HC18_TRAIN.glob("*HC.png"))[::40]  # 20 scans, two of them small heads (second look)
    counts = _assert_same(files, 0.12)
    assert counts["segmentation"] >= 1 and counts["landmarks"] >= 1


def test_reference_matches_predict_on_a_clean_scan(synthetic_scans, tmp_path):
    """On a clean, upright scan in square pixels `fetalbio predict` itself (its default, the fused row,
    and each method's) gives the script's figures and statuses (docs/integrating.md: the conformance
    check)."""
    from typer.testing import CliRunner

    from fetalbio.cli import app

    scans = synthetic_scans[:2]
    args = ["predict", *map(str, scans), "--pixel-size", "0.15", "--method", "all", "--no-overlays"]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    journal = (tmp_path / "out" / "journal.jsonl").read_text().splitlines()
    rows = [row for line in journal for row in json.loads(line)["rows"]]
    ref = _reference(scans, 0.15)
    assert len(rows) == len(ref) == 3 * len(scans)
    for row in rows:
        r = ref[(Path(row["file"]).name, row["method"])]
        assert (r["status"], "; ".join(r["review_reasons"])) == (row["status"], row["review_reasons"])
        for q in (
            "hc_mm",
            "bpd_mm",
            "ofd_mm",
            *(("hc_mm_low", "hc_mm_high") if row["method"] == "fused" else ()),
        ):
            assert r[q] == pytest.approx(row[q], abs=1e-3), (row["file"], row["method"], q)


def test_reference_constants_are_fetalbios():
    """The script copies fetalbio's thresholds (it may not import them): a change to one must reach it."""
    import importlib.util

    from fetalbio import defaults, heatmaps, pipeline, postprocess, predict
    from fetalbio.methods import landmarks

    spec = importlib.util.spec_from_file_location("litert_reference", SCRIPT)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    assert (ref.SEG_MIN_AREA_FRAC, ref.SEG_LOW_CONFIDENCE) == (
        postprocess.MIN_AREA_FRAC,
        postprocess.LOW_CONFIDENCE,
    )
    assert ref.SEG_POOR_FIT_FRAC == postprocess.POOR_FIT_RESIDUAL_FRAC
    assert ref.MAX_POSTPROCESS_SIDE_PX == defaults.MAX_POSTPROCESS_SIDE_PX
    assert (ref.DECODE_RADIUS, ref.FIT_MIN_FRACTION) == (heatmaps.DECODE_RADIUS, heatmaps.FIT_MIN_FRACTION)
    assert ref.PAIR_MIN_SEPARATION_SIGMAS == heatmaps.PAIR_MIN_SEPARATION_SIGMAS
    assert ref.MIN_CEPHALIC_INDEX == heatmaps.MIN_CEPHALIC_INDEX and ref.MIN_AXIS_PX == landmarks.MIN_AXIS_PX
    assert (ref.ZOOM_MARGIN, ref.ZOOM_MAX_AREA) == (defaults.ZOOM_MARGIN, defaults.ZOOM_MAX_AREA)
    assert ref.REVIEW_DISAGREE_FRAC == defaults.REVIEW_DISAGREE_FRAC
    assert ref.REVIEW_INTERVAL_FRAC == defaults.REVIEW_INTERVAL_FRAC
    assert ref.REVIEW_HC_RANGE_MM == defaults.REVIEW_HC_RANGE_MM
    assert ref.REVIEW_CEPHALIC_INDEX == defaults.REVIEW_CEPHALIC_INDEX
    assert {k: v for k, v in predict.REVIEW_FLAGS.items() if k != "two_images"} == ref.REVIEW_FLAGS
    assert pipeline.zoom_region.__module__ == "fetalbio.pipeline"  # the second look the script copies
