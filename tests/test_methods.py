"""The method registry: a new way of measuring is one file (here: one class in this test alone)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from fetalbio import methods
from fetalbio.geometry import Ellipse, ellipse_to_landmarks
from fetalbio.methods.base import Method, Result


class AxesEllipse(Method):
    """A toy third method on the landmark model: the ellipse centred on the mean of the four points, its
    axes half the two pair distances, along the OFD pair (not the landmark method's own ellipse)."""

    name = "axes-ellipse"
    out_channels = 4
    bpd_convention = "toy: minor axis of the ellipse spanned by the predicted pairs"

    @property
    def model_method(self) -> str:
        return "landmarks"

    def decode(self, output, letterbox, info) -> Result:
        base = methods.get("landmarks").decode(output, letterbox, info)
        if base.error:
            return Result(self.name, flags=base.flags, error=base.error)
        p = base.landmarks.as_array()
        bpd, ofd = np.hypot(*(p[1] - p[0])), np.hypot(*(p[3] - p[2]))
        angle = math.degrees(math.atan2(*(p[3] - p[2])[::-1]))
        cx, cy = p.mean(axis=0)
        e = Ellipse(float(cx), float(cy), float(ofd / 2), float(bpd / 2), angle)
        return Result(self.name, e, ellipse_to_landmarks(e), confidence=base.confidence)


@pytest.fixture
def toy_method():
    methods.register(AxesEllipse())
    yield "axes-ellipse"
    methods.unregister("axes-ellipse")


def test_registry_names_and_errors():
    assert methods.names()[:2] == ("segmentation", "landmarks")
    assert methods.for_channels(1).name == "segmentation" and methods.for_channels(4).name == "landmarks"
    assert methods.for_channels(3) is None
    with pytest.raises(ValueError, match="unknown method 'nope'.*segmentation"):
        methods.get("nope")


def test_a_third_method_runs_through_predict_and_evaluate(toy_method, synthetic_dataset, tmp_path):
    """Registered in this test alone, the toy method runs through the CLI's predict and evaluate with the
    shipped landmark model; its BPD/OFD equal the landmark method's (same points, measured another way)."""
    from fetalbio.cli import app

    common = ["--engine", "litert", "--pixel-csv", str(next(synthetic_dataset.glob("*.csv")))]
    rows = {}
    for m in (toy_method, "landmarks"):
        res = CliRunner().invoke(
            app, ["predict", str(synthetic_dataset), "--method", m, "--out", str(tmp_path / m), *common]
        )
        assert res.exit_code in (0, 1), res.output
        rows[m] = {r["file"]: r for r in csv.DictReader(open(tmp_path / m / "measurements.csv"))}
    assert rows[toy_method].keys() == rows["landmarks"].keys() and len(rows[toy_method]) == 8
    measured = 0
    for f, toy in rows[toy_method].items():
        lm = rows["landmarks"][f]
        assert toy["method"] == toy_method and toy["status"] == lm["status"]
        if toy["status"] != "ok":
            continue
        measured += 1
        assert toy["bpd_convention"].startswith("toy:")
        for k in ("bpd_mm", "ofd_mm"):
            assert float(toy[k]) == pytest.approx(float(lm[k]), abs=2e-4)
        # the toy ellipse is centred on the points' mean, the landmark one on the pairs' midpoints
        assert (toy["ellipse_cx_px"], toy["ellipse_cy_px"]) != ("", "")
    assert measured >= 6
    res = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(synthetic_dataset),
            "--method",
            toy_method,
            *common,
            "--json",
            str(tmp_path / "eval.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    import json

    summary = json.loads((tmp_path / "eval.json").read_text())["summary"]
    assert summary["n_images"] == 8 and summary["n_failed"] == 8 - measured
    assert summary["hc_mae_mm"] < 10.0  # a real measurement, on synthetic heads of 100-300 mm


def test_unknown_method_on_the_command_line_is_one_line(tmp_path):
    from fetalbio.cli import app

    res = CliRunner().invoke(app, ["predict", str(tmp_path), "--method", "nope"])
    assert res.exit_code == 2
    assert "unknown method 'nope'" in res.output and "Traceback" not in res.output


def test_names_keep_the_builtin_order_whichever_module_is_imported_first():
    import subprocess
    import sys

    code = "import fetalbio.methods.fused; from fetalbio import methods; print(','.join(methods.names()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().split(",")[:3] == ["segmentation", "landmarks", "fused"]


@pytest.mark.parametrize("unsure", [None, "segmentation", "landmarks"])
def test_the_fused_row_draws_the_head_whose_size_it_reports(unsure):
    # the row's ellipse (overlay, ellipse_* columns, the SR's HC outline) was always the segmentation's,
    # also when the segmentation was left out of the estimate: a 170 mm outline beside "HC 119 mm"
    from pathlib import Path

    from fetalbio.geometry import Ellipse, ellipse_to_landmarks, measure_ellipse
    from fetalbio.io import Scan
    from fetalbio.methods import get
    from fetalbio.methods.base import Result
    from fetalbio.predict import measurement_row

    def part(name: str, e: Ellipse) -> Result:
        flags = ["low_confidence"] if name == unsure else []
        return Result(name, e, ellipse_to_landmarks(e), flags=flags, confidence=0.3 if flags else 0.9)

    seg = part("segmentation", Ellipse(400.0, 270.0, 200.0, 160.0, 10.0))
    lm = part("landmarks", Ellipse(402.0, 268.0, 190.0, 150.0, 12.0))
    res = get("fused").combine({"segmentation": seg, "landmarks": lm})
    row = measurement_row(
        "x.png", res, Scan(np.ones((540, 800), np.uint8), (0.15, 0.15), Path("x.png"), "cli")
    )
    drawn = measure_ellipse(res.ellipse, (0.15, 0.15))
    assert drawn.hc == pytest.approx(row["hc_mm"], rel=2e-3)
    assert drawn.bpd == pytest.approx(row["bpd_mm"], rel=1e-9) and drawn.ofd == pytest.approx(
        row["ofd_mm"], rel=1e-9
    )
    if unsure == "segmentation":
        assert res.ellipse == lm.ellipse


def test_training_validation_measures_as_evaluate_does(synthetic_dataset):
    # validation decoded the letterboxed input only (no region, turn or noise finder, no second look at
    # small heads): the figures a run chose by were not the ones predict and evaluate give
    from fetalbio.datasets import find_samples
    from fetalbio.engines import load_engine
    from fetalbio.evaluate import evaluate_dataset
    from fetalbio.train import TrainConfig, prepare_samples, validate

    engine = load_engine(None, "segmentation", "litert")
    cfg = TrainConfig(method="segmentation", image_size=engine.image_size)
    val = prepare_samples(find_samples(synthetic_dataset), engine.image_size)
    got = validate(cfg, engine.predict, val)
    want, _ = evaluate_dataset(synthetic_dataset, engine)
    assert got["n_images"] == want["n_images"] == len(val) and got["n_failed"] == want["n_failed"] == 0
    for key in ("hc_mae_mm", "bpd_mae_mm", "ofd_mae_mm", "dice_mean"):
        assert got[key] == pytest.approx(want[key], abs=1e-9), key
