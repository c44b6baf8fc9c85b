"""Can a self-consistency signal find the gross errors? Each validation scan (clean and perturbed) is
measured as it is and left-right flipped; for the scans whose fused HC is more than 5 mm off, three
independent signals are compared: the fused interval (SD / HC), segmentation vs landmarks, and the
flipped view vs the original. Prints, per split half, the share of clean scans each signal would send
to review if its threshold caught 90 % of the gross errors (the issue's target asks for <= 10 %).

    python tools/review_signals.py collect --out .cache/review_signals.json   # ~5 min on 2 cores
    python tools/review_signals.py analyse --records .cache/review_signals.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fetalbio.robustness import GROSS_MM

KINDS = "clean,rotate30,rotate_any,capture,gain_gamma,portrait,flip_lr,speckle"
METHODS = ("fused", "segmentation", "landmarks")


def collect(kinds: list[str], out: Path) -> None:
    """Every kind as it is and followed by a left-right flip (``kind+flip_lr``), all three methods."""
    from fetalbio.engines import load_engine
    from fetalbio.modelinfo import models_dir
    from fetalbio.robustness import collect as collect_records
    from fetalbio.robustness import report_and_calibration_halves, validation_samples
    from fetalbio.writers import write_json_atomic

    samples = validation_samples(models_dir() / "segmentation" / "splits.json")
    report = set(report_and_calibration_halves([s.name for s in samples])[0])
    engines = {m: load_engine(None, m, "litert") for m in ("segmentation", "landmarks")}
    recs = collect_records(samples, [*kinds, *(f"{k}+flip_lr" for k in kinds)], engines, METHODS)
    for r in recs:
        kind, plus, _ = r["kind"].partition("+")
        r.update(
            kind=kind,
            view="flip" if plus else "orig",
            half="report" if r["file"] in report else "calibration",
        )
    write_json_atomic(out, recs)
    print(f"{len(recs)} records -> {out}")


def analyse(records: Path) -> None:
    recs = json.loads(records.read_text())
    idx = {(r["file"], r["kind"], r["view"], r["method"]): r for r in recs}
    rows = []
    for (f, k, v, m), r in idx.items():
        if v != "orig" or m != "fused" or r["hc_mm"] is None:
            continue
        hc, seg, lm = r["hc_mm"], idx[(f, k, v, "segmentation")], idx[(f, k, v, "landmarks")]
        flip = idx[(f, k, "flip", "fused")]
        sig = {
            "fused interval (SD / HC)": r["hc_sd_mm"] / hc,
            "segmentation vs landmarks": abs((seg["hc_mm"] or hc) - (lm["hc_mm"] or hc)) / hc,
            "flipped view vs original": abs((flip["hc_mm"] or hc) - hc) / hc,
        }
        sig["the largest of the three"] = max(sig.values())
        err = abs(hc - r["hc_true_mm"])
        rows.append({"kind": k, "half": r["half"], "err": err, "rel": err / r["hc_true_mm"],
                     "review": r["status"] == "review", "sig": sig})  # fmt: skip
    for half in ("calibration", "report"):
        gross = [x for x in rows if x["half"] == half and x["err"] > GROSS_MM]
        clean = [x for x in rows if x["half"] == half and x["kind"] == "clean"]
        rel = [g["rel"] for g in gross]
        print(f"\n{half} half: {len(gross)} HC errors > {GROSS_MM:g} mm over the kinds; median {np.median(rel):.1%} "
              f"of HC, {np.mean(np.array(rel) < 0.05):.0%} below 5 % of HC; reviewed by the shipped rules: "
              f"{sum(g['review'] for g in gross)}")  # fmt: skip
        for name in gross[0]["sig"]:
            thr = np.quantile([g["sig"][name] for g in gross], 0.10)
            share = np.mean([c["sig"][name] >= thr for c in clean])
            print(
                f"  {name:27s} threshold for 90 % of them {thr:.2%} of HC -> clean scans reviewed {share:.0%}"
            )
        for frac in (0.05, 0.10):
            big = [x for x in rows if x["half"] == half and x["rel"] > frac]
            print(
                f"  errors > {frac:.0%} of HC: {len(big)}, reviewed by the shipped rules {sum(b['review'] for b in big)}"
            )


def tta_table(records: Path, half: str = "report") -> None:
    """Fused HC MAE per kind: as measured, flipped, and the mean of the two (test-time augmentation)."""
    recs = json.loads(records.read_text())
    idx = {(r["file"], r["kind"], r["view"]): r for r in recs if r["method"] == "fused" and r["half"] == half}
    print(f"\n{half} half, fused HC MAE (mm): as measured / flipped / mean of both (flip TTA)")
    for kind in dict.fromkeys(k for _, k, _ in idx):
        pairs = [(r, idx[(f, k, "flip")]) for (f, k, v), r in idx.items() if k == kind and v == "orig"]
        pairs = [(a, b) for a, b in pairs if a["hc_mm"] is not None and b["hc_mm"] is not None]
        t = np.array([a["hc_true_mm"] for a, _ in pairs])
        o, fl = np.array([a["hc_mm"] for a, _ in pairs]), np.array([b["hc_mm"] for _, b in pairs])
        print(
            f"  {kind:11s} {np.abs(o - t).mean():.2f} / {np.abs(fl - t).mean():.2f} / {np.abs((o + fl) / 2 - t).mean():.2f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--out", type=Path, default=Path(".cache/review_signals.json"))
    c.add_argument("--kinds", default=KINDS)
    a = sub.add_parser("analyse")
    a.add_argument("--records", type=Path, default=Path(".cache/review_signals.json"))
    args = ap.parse_args()
    if args.cmd == "collect":
        collect(args.kinds.split(","), args.out)
    else:
        analyse(args.records)
        tta_table(args.records)


if __name__ == "__main__":
    main()
