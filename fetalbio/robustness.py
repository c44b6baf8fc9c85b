"""Measuring the shipped models on perturbed copies of annotated scans (clean and as users' scans look).

:func:`collect` runs every method over every perturbation kind of each scan and returns one record per
(scan, kind, method) with the estimates, the truth (mm), the status and review reasons and the
intervals; :func:`summarise` turns records into the per-kind, per-method table of ``tools/robustness.py``.
The same records calibrate the fused estimate (``tools/calibrate_fused.py``).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from fetalbio.methods.fused import MEASURES, fit_fused_calibration  # noqa: F401  (the tools import it here)

GROSS_MM = 5.0  # an HC error above this is a gross error, which must be sent to review


def report_and_calibration_halves(names: list[str], seed: int = 2026) -> tuple[list[str], list[str]]:
    """Split validation scans BY SUBJECT into (report, calibration) halves, seeded."""
    from fetalbio.datasets import subject_of

    subjects = sorted({subject_of(n) for n in names})
    random.Random(seed).shuffle(subjects)
    cal = set(subjects[: len(subjects) // 2])
    return [n for n in names if subject_of(n) not in cal], [n for n in names if subject_of(n) in cal]


def collect(
    samples: Iterable,
    kinds: list[str],
    engines: dict,
    methods_out: tuple[str, ...],
    batch_size: int = 8,
    seeds: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    """One record per (sample, kind, method): estimates and truth in mm, status, reasons, intervals.

    ``samples`` are :class:`fetalbio.datasets.Sample` with a pixel size and an annotation. A random
    perturbation of a scan is seeded by ``seeds[name]``, else by the scan's place in ``samples``: a
    subset measured again (cross-fitting) passes the whole run's seeds, so it draws the same noise.
    """
    from fetalbio import methods
    from fetalbio.colour import colour_to_grey
    from fetalbio.datasets import load_truth
    from fetalbio.geometry import measure_ellipse
    from fetalbio.io import Scan, read_scan
    from fetalbio.perturb import perturb
    from fetalbio.pipeline import Predictor
    from fetalbio.predict import apply_review, measurement_row

    combined = tuple(m for m in methods_out if methods.get(m).requires)
    base = methods.engines_needed(methods_out)
    predictor = Predictor({m: engines[m] for m in base}, batch_size, combined=combined)
    jobs = []
    for i, s in enumerate(samples):
        clean = read_scan(s.scan_path, pixel_size_mm=s.pixel_size_mm)
        truth_ellipse = load_truth(s.annotation_path).ellipse
        truth = measure_ellipse(truth_ellipse, clean.spacing_mm)
        for kind in kinds:
            seed = seeds[s.name] if seeds else i
            px, sp = perturb(kind, clean.pixels, s.pixel_size_mm, seed, truth_ellipse)
            if px.ndim == 3:  # drawn in colour: read as a file would be
                px = colour_to_grey(px, bgr=False)[0]
            jobs.append((s.name, kind, truth, Scan(px, (sp, sp), s.scan_path, "cli")))
    records = []
    for batch in predictor.run(jobs, lambda job: job[3]):
        for pred in batch:
            name, kind, truth, scan = pred.source
            rows = [measurement_row(name, pred.results[m], scan) for m in methods_out]
            apply_review(rows)
            for r in rows:
                rec = {
                    "file": name,
                    "kind": kind,
                    "method": r["method"],
                    "status": r["status"],
                    "reasons": r.get("review_reasons", ""),
                    "flags": r.get("flags", ""),
                    "cephalic_index": r.get("cephalic_index"),
                    "error": r.get("error", ""),
                }
                for k in ("hc", "bpd", "ofd"):
                    rec[f"{k}_true_mm"] = getattr(truth, k)
                    for col in (f"{k}_mm", f"{k}_mm_low", f"{k}_mm_high", f"{k}_sd_mm"):
                        rec[col] = r.get(col)
                records.append(rec)
    return records


def summarise(records: list[dict], kinds: list[str], methods_out: tuple[str, ...]) -> list[dict]:
    """Per (kind, method): MAE of HC/BPD/OFD (mm), ratio to clean, failures, gross errors sent to review,
    review rate and interval coverage; 95 % bootstrap intervals of the HC MAE and of its ratio to clean
    (:func:`_intervals`)."""
    out = []
    clean_mae, clean_err = {}, {}
    for kind in kinds:
        for m in methods_out:
            rs = [r for r in records if r["kind"] == kind and r["method"] == m]
            ok = [r for r in rs if r["status"] != "error" and r["hc_mm"] is not None]
            row: dict[str, Any] = {"kind": kind, "method": m, "n": len(rs), "failed": len(rs) - len(ok)}
            for k in ("hc", "bpd", "ofd"):
                errs = np.array([abs(r[f"{k}_mm"] - r[f"{k}_true_mm"]) for r in ok])
                row[f"{k}_mae_mm"] = float(errs.mean()) if errs.size else float("nan")
                cov = [
                    r[f"{k}_mm_low"] <= r[f"{k}_true_mm"] <= r[f"{k}_mm_high"]
                    for r in ok
                    if r.get(f"{k}_mm_low") is not None
                ]
                row[f"{k}_coverage"] = float(np.mean(cov)) if cov else None
            if kind == "clean":
                clean_mae[m] = row["hc_mae_mm"]
                clean_err[m] = {r["file"]: abs(r["hc_mm"] - r["hc_true_mm"]) for r in ok}
            row["hc_ratio"] = row["hc_mae_mm"] / clean_mae[m] if clean_mae.get(m) else float("nan")
            row.update(_intervals(ok, clean_err.get(m, {})))
            gross = [r for r in ok if abs(r["hc_mm"] - r["hc_true_mm"]) > GROSS_MM]
            row["gross"] = len(gross)
            row["gross_reviewed"] = sum(r["status"] == "review" for r in gross)
            row["review_rate"] = float(np.mean([r["status"] == "review" for r in ok])) if ok else float("nan")
            out.append(row)
    return out


def _intervals(ok: list[dict], clean_err: dict[str, float]) -> dict[str, tuple[float, float]]:
    """How sure the HC MAE and its ratio to clean are, on this many subjects (fetalbio.stats): the
    MAE's interval resamples subjects; the ratio's pairs each scan's error with its clean error (the
    scans measured both ways), so what a scan's two errors share cancels."""
    from fetalbio.datasets import subject_of
    from fetalbio.stats import bootstrap_ratio_ci, mae_ci

    errs = [r["hc_mm"] - r["hc_true_mm"] for r in ok]
    both = [r for r in ok if r["file"] in clean_err]
    return {
        "hc_mae_ci95": mae_ci(errs, [subject_of(r["file"]) for r in ok]),
        "hc_ratio_ci95": bootstrap_ratio_ci(
            [abs(r["hc_mm"] - r["hc_true_mm"]) for r in both],
            [clean_err[r["file"]] for r in both],
            [subject_of(r["file"]) for r in both],
        ),
    }


def compare(new: list[dict], old: list[dict], kinds: list[str], methods_out: tuple[str, ...]) -> list[dict]:
    """Two record sets of the same scans (a candidate model and the shipped one), per (kind, method):
    each HC MAE (mm) over the scans both measured, and the paired difference new - old with its 95 %
    interval (subjects resampled, each scan's two errors drawn together). An interval that spans 0
    means this split cannot tell the two apart."""
    from fetalbio.datasets import subject_of
    from fetalbio.stats import bootstrap_mean_ci

    def errors(recs: list[dict]) -> dict[tuple, float]:
        return {
            (r["file"], r["kind"], r["method"]): abs(r["hc_mm"] - r["hc_true_mm"])
            for r in recs
            if r["status"] != "error" and r["hc_mm"] is not None
        }

    a, b = errors(new), errors(old)
    out = []
    for kind in kinds:
        for m in methods_out:
            keys = sorted(k for k in a if k in b and k[1] == kind and k[2] == m)
            d = [a[k] - b[k] for k in keys]
            out.append(
                {
                    "kind": kind,
                    "method": m,
                    "n": len(keys),
                    "hc_mae_new_mm": float(np.mean([a[k] for k in keys])) if keys else float("nan"),
                    "hc_mae_old_mm": float(np.mean([b[k] for k in keys])) if keys else float("nan"),
                    "diff_mm": float(np.mean(d)) if d else float("nan"),
                    "diff_ci95": bootstrap_mean_ci(d, [subject_of(k[0]) for k in keys]),
                }
            )
    return out


def markdown(table: list[dict]) -> str:
    """The summary as a markdown table."""
    head = (
        "| kind | method | n | HC MAE (95 % CI) | x clean (95 % CI) | BPD MAE | OFD MAE | failed | "
        "gross (>5 mm) reviewed | review rate | HC coverage |"
    )
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in table:
        cov = "-" if r["hc_coverage"] is None else f"{100 * r['hc_coverage']:.0f} %"
        gross = f"{r['gross_reviewed']}/{r['gross']}" if r["gross"] else "0"
        lines.append(
            f"| {r['kind']} | {r['method']} | {r['n']} | {r['hc_mae_mm']:.2f} {_ci(r.get('hc_mae_ci95'))} | "
            f"{r['hc_ratio']:.2f} {_ci(r.get('hc_ratio_ci95'))} | "
            f"{r['bpd_mae_mm']:.2f} | {r['ofd_mae_mm']:.2f} | {r['failed']} | {gross} | "
            f"{100 * r['review_rate']:.0f} % | {cov} |"
        )
    return "\n".join(lines)


def _ci(ci: tuple[float, float] | None) -> str:
    return "" if ci is None or not np.isfinite(ci[0]) else f"({ci[0]:.2f}-{ci[1]:.2f})"


def validation_samples(split_file: Path, names: list[str] | None = None) -> list:
    """The annotated HC18 samples of a split's validation list (optionally only ``names``)."""
    import json

    from fetalbio.datasets import default_data_root, find_samples

    val = set(json.loads(Path(split_file).read_text())["val"])
    keep = set(names) if names is not None else val
    folder = default_data_root() / "hc18" / "training_set"
    return [s for s in find_samples(folder) if s.name in val and s.name in keep and s.annotation_path]
