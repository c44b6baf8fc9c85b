"""How much of the shipped models' HC error on HC18 is where the annotator drew the outline.

    python tools/annotation_check.py [--json EVAL.json] [DATA_ROOT]   # ~30 s (int8 LiteRT)

The HC is measured around the outer edge of the skull's echo. :func:`fetalbio.echo.echo_placement`
finds that edge along normals to an ellipse. For each scan of the validation split this measures where
the annotated outline lies on the echo and where the fused estimate's ellipse lies, and prints:

- the spread (SD, mm) of each placement, and the HC spread it makes (2 pi SD);
- how the fused HC error correlates with the annotation's placement and with the model's;
- the fused HC MAE, and what is left of it once the part of the error linear in the annotation's
  placement is taken out (leave-one-out fit). This is an analysis, not a method: it needs the
  annotation; it says how much of the error no model could remove against these annotations;
- the scans with the largest errors, with both placements in HC mm (2 pi x offset from the median).

``--json`` reads a fused ``fetalbio evaluate ... --json`` file instead of measuring the split again.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from fetalbio.datasets import default_data_root, find_samples, load_truth, read_grey
from fetalbio.echo import echo_placement
from fetalbio.geometry import Ellipse

SPLIT = Path(__file__).resolve().parents[1] / "fetalbio" / "shipped" / "segmentation" / "splits.json"


def _evaluate(data: Path) -> list[dict]:
    from fetalbio.engines import load_engine
    from fetalbio.evaluate import evaluate_dataset

    engines = {m: load_engine(None, m, "litert") for m in ("segmentation", "landmarks")}
    return evaluate_dataset(data, engines, split_file=SPLIT, method="fused")[1]


def placements(data: Path, rows: list[dict]) -> list[dict]:
    """Per measured scan: true HC, fused HC error, annotation's and model's echo edge offsets (mm)."""
    samples = {s.name: s for s in find_samples(data)}
    out = []
    for r in rows:
        s = samples.get(r["file"])
        if r.get("status") == "error" or s is None or not r.get("pred_ellipse"):
            continue
        (cx, cy), (w, h), ang = r["pred_ellipse"]
        pred = Ellipse.from_axes(cx, cy, w / 2, h / 2, ang)
        grey = read_grey(s.scan_path)
        ann = echo_placement(grey, load_truth(s.annotation_path).ellipse, s.pixel_size_mm)
        mod = echo_placement(grey, pred, s.pixel_size_mm)
        if ann is None or mod is None:
            continue
        err = r["hc_mm"] - r["hc_true_mm"]
        out.append(
            {"file": s.name, "hc_true_mm": r["hc_true_mm"], "hc_err_mm": err, "ann_mm": ann.edge_offset_mm}
            | {"model_mm": mod.edge_offset_mm}
        )
    return out


def loo_residual_mae(x: np.ndarray, y: np.ndarray) -> float:
    """MAE of y after a leave-one-out linear fit on x (each scan predicted from the others)."""
    res = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        slope, icpt = np.polyfit(x[keep], y[keep], 1)
        res.append(y[i] - (icpt + slope * x[i]))
    return float(np.mean(np.abs(res)))


def _corr(a: np.ndarray, b: np.ndarray) -> str:
    return "n/a" if a.std() < 1e-9 or b.std() < 1e-9 else f"{np.corrcoef(a, b)[0, 1]:+.2f}"


def report(p: list[dict], source: str, n_worst: int = 12) -> None:
    ann, mod = np.array([q["ann_mm"] for q in p]), np.array([q["model_mm"] for q in p])
    err = np.array([q["hc_err_mm"] for q in p])
    print(f"{len(p)} scans ({source})")
    print("where the skull echo's outer edge lies, mm outside the ellipse (median, SD -> HC SD 2 pi SD):")
    for label, v in (("annotation", ann), ("fused ellipse", mod)):
        print(f"  {label:14s} {np.median(v):+.2f}  SD {v.std():.2f} -> {2 * math.pi * v.std():.1f} mm of HC")
    print(
        f"correlation of the HC error with the annotation's placement {_corr(err, ann)}, "
        f"with the model's {_corr(err, -mod)} (sign: both would make the HC too long)"
    )
    print(
        f"fused HC MAE {np.abs(err).mean():.2f} mm; without the part linear in the annotation's placement "
        f"(leave-one-out) {loo_residual_mae(2 * math.pi * ann, err):.2f} mm"
    )
    ma, mm = np.median(ann), np.median(mod)
    print("largest errors (2 pi x offset from the median, HC mm: + = makes the estimate read long)")
    print(f"  {'file':14s} {'HC':>6s} {'error':>6s} {'annotation':>10s} {'model':>6s}")
    for q in sorted(p, key=lambda q: -abs(q["hc_err_mm"]))[:n_worst]:
        a, m = 2 * math.pi * (q["ann_mm"] - ma), -2 * math.pi * (q["model_mm"] - mm)
        print(f"  {q['file']:14s} {q['hc_true_mm']:6.1f} {q['hc_err_mm']:+6.1f} {a:+10.1f} {m:+6.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", nargs="?", type=Path, default=None, help="HC18 root (default: ../shared/data)")
    ap.add_argument("--json", type=Path, help="a fused `fetalbio evaluate --json` file of the split")
    a = ap.parse_args()
    data = (a.data or default_data_root()) / "hc18" / "training_set"
    rows = json.loads(a.json.read_text())["rows"] if a.json else _evaluate(data)
    source = str(a.json) if a.json else "the validation split, fused, int8 LiteRT"
    report(placements(data, rows), source)


if __name__ == "__main__":
    main()
