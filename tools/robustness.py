"""Robustness of the shipped models on perturbed validation scans, and the fused calibration.

    python tools/robustness.py collect  --out .cache/robust.json [--engine litert] [--kinds clean,capture,...]
    python tools/robustness.py calibrate --records .cache/robust.json   # writes <models>/fused/model.json
    python tools/robustness.py report    --records .cache/robust.json   # table, plot -> docs/robustness.md
    python tools/robustness.py crossfit  --records .cache/robust.json   # each half with the other half's fit
    python tools/robustness.py report    --records .cache/robust_crossfit.json --half all   # the whole split
    python tools/robustness.py compare   --records .cache/cand.json --against .cache/robust.json  # paired

The validation split is the shipped models' own (never trained on). Its subjects are split in two,
seeded: the calibration half fits the fused estimate (weights, biases, conformal quantiles) on clean and
perturbed scans; the report half is what every figure in docs/robustness.md is measured on. Records
hold numbers and file names only (no pixels) and stay out of the repository (.cache/).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fetalbio.engines import load_engine
from fetalbio.modelinfo import models_dir
from fetalbio.perturb import KINDS
from fetalbio.robustness import (
    collect,
    compare,
    fit_fused_calibration,
    markdown,
    report_and_calibration_halves,
    summarise,
    validation_samples,
)
from fetalbio.writers import write_json_atomic

METHODS_OUT = ("fused", "segmentation", "landmarks")
ALL_KINDS = ["clean", *KINDS]


def _split() -> Path:
    return models_dir() / "segmentation" / "splits.json"


def cmd_collect(args) -> None:
    samples = validation_samples(_split())
    report, cal = report_and_calibration_halves([s.name for s in samples])
    engines = {m: load_engine(None, m, args.engine) for m in ("segmentation", "landmarks")}
    kinds = args.kinds.split(",") if args.kinds else ALL_KINDS
    recs = collect(samples, kinds, engines, METHODS_OUT)
    for r in recs:
        r["half"] = "report" if r["file"] in set(report) else "calibration"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, {"engine": args.engine, "kinds": kinds, "records": recs})
    print(f"{len(recs)} records of {len(samples)} scans ({len(report)} report, {len(cal)} calibration)")


def _fused_info(data: dict, half: str) -> dict:
    """The fused model.json fitted on one half's records (``data``: a collect's output)."""
    recs = [r for r in data["records"] if r["half"] == half]
    return {
        "format": "fetalbio-model/1",
        "method": "fused",
        "requires": ["segmentation", "landmarks"],
        "engine_calibrated": data["engine"],
        "perturbations": data["kinds"],
        "calibration": fit_fused_calibration(recs),
    }


def cmd_calibrate(args) -> None:
    info = _fused_info(json.loads(args.records.read_text()), "calibration")
    out = models_dir() / "fused" / "model.json"
    out.parent.mkdir(exist_ok=True)
    write_json_atomic(out, info)
    print(json.dumps(info["calibration"], indent=1))
    print(f"wrote {out}")


def cmd_crossfit(args) -> None:
    """Both halves measured with a fused calibration fitted on the OTHER half (two-fold cross-fitting):
    every scan of the split gets figures from a calibration that never saw it, so the report can use all
    of the split (167 scans) instead of one half (84), halving the sampling noise of each figure."""
    import os
    import tempfile

    from fetalbio import modelinfo
    from fetalbio.methods import fused

    data = json.loads(args.records.read_text())
    samples = validation_samples(_split())
    report, _ = report_and_calibration_halves([s.name for s in samples])
    shipped = models_dir()
    before = os.environ.get("FETALBIO_MODELS")  # put back afterwards: candidates are measured this way
    out_recs = []
    for half, other in (("report", "calibration"), ("calibration", "report")):
        with tempfile.TemporaryDirectory() as tmp:
            for m in ("segmentation", "landmarks"):
                os.symlink(shipped / m, Path(tmp) / m)
            (Path(tmp) / "fused").mkdir()
            write_json_atomic(Path(tmp) / "fused" / "model.json", _fused_info(data, other))
            os.environ["FETALBIO_MODELS"] = tmp
            fused.calibration.cache_clear()  # read again from FETALBIO_MODELS
            try:
                engines = {m: load_engine(None, m, data["engine"]) for m in ("segmentation", "landmarks")}
                mine = [s for s in samples if (s.name in set(report)) == (half == "report")]
                # the noise `collect` drew for each scan (seeded by its place in the whole split)
                seeds = {s.name: i for i, s in enumerate(samples)}
                recs = collect(mine, data["kinds"], engines, METHODS_OUT, seeds=seeds)
            finally:
                if before is None:
                    del os.environ["FETALBIO_MODELS"]
                else:
                    os.environ["FETALBIO_MODELS"] = before
                fused.calibration.cache_clear()
        for r in recs:
            r["half"] = half
        out_recs += recs
        print(f"{half} half: {len(recs)} records, fused calibrated on the {other} half")
    assert modelinfo.models_dir() == shipped
    write_json_atomic(
        args.out, {"engine": data["engine"], "kinds": data["kinds"], "records": out_recs, "crossfit": True}
    )


def cmd_report(args) -> None:
    data = json.loads(args.records.read_text())
    if args.half == "all" and not data.get("crossfit"):
        sys.exit(
            "--half all needs cross-fitted records (tools/robustness.py crossfit): the calibration "
            "half's fused figures would be measured with a calibration fitted on them"
        )
    recs = [r for r in data["records"] if args.half in ("all", r["half"])]
    kinds = data["kinds"]
    table = summarise(recs, kinds, METHODS_OUT)
    md = markdown(table)
    print(md)
    if args.json:
        write_json_atomic(args.json, table)
    if args.plot:
        _plot(table, kinds, args.plot, args.half)


def cmd_compare(args) -> None:
    """Candidate records against the shipped ones (the same scans and seeds): paired HC differences."""
    new, old = (json.loads(p.read_text()) for p in (args.records, args.against))
    kinds = [k for k in new["kinds"] if k in old["kinds"]]
    rows = compare(new["records"], old["records"], kinds, METHODS_OUT)
    print("| kind | method | n | HC MAE new | HC MAE old | new - old (95 % CI) |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        lo, hi = r["diff_ci95"]
        print(
            f"| {r['kind']} | {r['method']} | {r['n']} | {r['hc_mae_new_mm']:.2f} | {r['hc_mae_old_mm']:.2f} | "
            f"{r['diff_mm']:+.2f} ({lo:+.2f} to {hi:+.2f}) |"
        )


def cmd_tune_review(args) -> None:
    """The fused review threshold (HC interval width / HC) on the CALIBRATION half: the largest share of
    gross errors sent to review while at most ``--max-clean`` of the clean scans are."""
    from fetalbio import defaults

    recs = [r for r in json.loads(args.records.read_text())["records"] if r["half"] == "calibration"]
    fused = [
        r for r in recs if r["method"] == "fused" and r["status"] != "error" and r["hc_mm_low"] is not None
    ]
    ci_lo, ci_hi = defaults.REVIEW_CEPHALIC_INDEX

    def other(r):  # the reasons that do not depend on the threshold being tuned
        flags = set(filter(None, (r.get("flags") or "").split(";"))) - {"methods_disagree"}
        ci = r.get("cephalic_index")
        return bool(flags & {"edge", "low_confidence", "one_method_only"}) or (
            ci is not None and not ci_lo <= ci <= ci_hi
        )

    best = None
    for t in np.linspace(0.02, 0.3, 57):
        review = [other(r) or (r["hc_mm_high"] - r["hc_mm_low"]) > t * r["hc_mm"] for r in fused]
        clean = [v for v, r in zip(review, fused, strict=True) if r["kind"] == "clean"]
        gross = [v for v, r in zip(review, fused, strict=True) if abs(r["hc_mm"] - r["hc_true_mm"]) > 5]
        rate, caught = float(np.mean(clean)), float(np.mean(gross)) if gross else 1.0
        if rate <= args.max_clean and (
            best is None or caught > best[1] or (caught == best[1] and t > best[0])
        ):
            best = (float(t), caught, rate)
        print(f"interval/HC > {t:.3f}: clean review {100 * rate:.0f} %, gross reviewed {100 * caught:.0f} %")
    print(f"best: {best}")


def _plot(table: list[dict], kinds: list[str], path: Path, half: str = "report") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4))
    x = np.arange(len(kinds))
    for j, m in enumerate(METHODS_OUT):
        rows = [next(r for r in table if r["kind"] == k and r["method"] == m) for k in kinds]
        ys = np.array([r["hc_mae_mm"] for r in rows])
        ci = np.array([r["hc_mae_ci95"] for r in rows])  # 95 % bootstrap interval over subjects
        yerr = np.vstack([ys - ci[:, 0], ci[:, 1] - ys])
        ax.bar(x + (j - 1) * 0.27, ys, 0.27, label=m, yerr=yerr, capsize=2, error_kw={"lw": 0.8})
    ax.axhline(2.5, color="k", ls="--", lw=1, label="2.5 mm target")
    ax.set_xticks(x, kinds, rotation=30, ha="right")
    ax.set_ylabel("HC MAE (mm)")
    what = "the whole validation split, cross-fitted" if half == "all" else f"the {half} half of the split"
    ax.set_title(f"HC error per perturbation ({what}; bars: 95 % interval over subjects)")
    ax.legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--out", type=Path, default=Path(".cache/robust.json"))
    c.add_argument("--engine", default="litert")
    c.add_argument("--kinds", default="")
    c.set_defaults(fn=cmd_collect)
    k = sub.add_parser("calibrate")
    k.add_argument("--records", type=Path, default=Path(".cache/robust.json"))
    k.set_defaults(fn=cmd_calibrate)
    t = sub.add_parser("tune-review")
    t.add_argument("--records", type=Path, default=Path(".cache/robust.json"))
    t.add_argument("--max-clean", type=float, default=0.10)
    t.set_defaults(fn=cmd_tune_review)
    r = sub.add_parser("report")
    r.add_argument("--records", type=Path, default=Path(".cache/robust.json"))
    r.add_argument("--json", type=Path)
    r.add_argument("--plot", type=Path)
    r.add_argument("--half", choices=("report", "calibration", "all"), default="report")
    r.set_defaults(fn=cmd_report)
    x = sub.add_parser("crossfit")
    x.add_argument("--records", type=Path, default=Path(".cache/robust.json"))
    x.add_argument("--out", type=Path, default=Path(".cache/robust_crossfit.json"))
    x.set_defaults(fn=cmd_crossfit)
    v = sub.add_parser("compare", help="a candidate's records against the shipped ones, paired by scan")
    v.add_argument("--records", type=Path, required=True, help="the candidate's records (collect)")
    v.add_argument("--against", type=Path, default=Path(".cache/robust.json"))
    v.set_defaults(fn=cmd_compare)
    args = ap.parse_args()
    args.fn(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
