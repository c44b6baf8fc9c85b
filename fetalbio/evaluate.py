"""Comparison with annotations: Dice, Hausdorff (mm), HC/BPD/OFD errors (mm), point errors (mm).

``score_prediction`` scores one scan and ``summarise`` aggregates; training-time validation uses the
same two functions, so the validation figures and ``fetalbio evaluate`` agree by construction.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from fetalbio import defaults
from fetalbio.datasets import Truth, subject_of
from fetalbio.geometry import draw_ellipse_mask, measure_ellipse, pair_errors_mm
from fetalbio.postprocess import dice, hausdorff_mm
from fetalbio.stats import mae_ci


def score_prediction(
    result, truth: Truth, spacing_mm: tuple[float, float] | None, name: str = ""
) -> dict[str, Any]:
    """One per-image row, with the scan's own (x, y) spacing. Without a spacing the figures are in pixels,
    named ``_px`` instead of ``_mm`` (``hc_px``, ``hc_diff_px``, ...), and the row says ``unit = px``;
    :func:`summarise` keeps such rows out of the mm figures."""
    row = _score(result, truth, spacing_mm, name)
    return (
        row
        if spacing_mm
        else {k.removesuffix("_mm") + "_px" if k.endswith("_mm") else k: v for k, v in row.items()}
    )


def _score(result, truth: Truth, spacing_mm: tuple[float, float] | None, name: str) -> dict[str, Any]:
    from fetalbio import methods

    sp = spacing_mm if spacing_mm else (1.0, 1.0)
    true = measure_ellipse(truth.ellipse, sp)
    row: dict[str, Any] = {
        "file": name,
        "method": result.method,
        "status": "error" if result.error else "ok",
        "error": result.error or "",
        "flags": ";".join(result.flags),
        "hc_true_mm": true.hc,
        "bpd_true_mm": true.bpd,
        "ofd_true_mm": true.ofd,
        "unit": "mm" if spacing_mm else "px",
    }
    if result.error:
        return row
    pred = methods.get(result.method).measure(result, sp)
    row.update(
        hc_mm=pred.hc,
        bpd_mm=pred.bpd,
        ofd_mm=pred.ofd,
        hc_diff_mm=pred.hc - true.hc,
        bpd_diff_mm=pred.bpd - true.bpd,
        ofd_diff_mm=pred.ofd - true.ofd,
    )
    errs = pair_errors_mm(result.landmarks.as_array(), truth.landmarks.as_array(), sp)
    row.update({f"{n}_err_mm": float(e) for n, e in zip(("bpd1", "bpd2", "ofd1", "ofd2"), errs, strict=True)})
    row["point_err_mean_mm"] = float(errs.mean())
    row["point_err_max_mm"] = float(errs.max())
    e = result.ellipse
    row["pred_ellipse"] = [[e.cx_px, e.cy_px], [2 * e.semi_major_px, 2 * e.semi_minor_px], e.angle_deg]
    if result.mask is not None:
        # HC18's convention: Dice and Hausdorff of the FITTED ellipse (the measurement) against the
        # annotation's ellipse; the raw network mask's Dice is kept beside it
        tmask = truth.mask()
        emask = draw_ellipse_mask(tmask.shape, result.ellipse)
        row["dice"] = dice(emask, tmask)
        row["dice_mask"] = dice(result.mask, tmask)
        row["hausdorff_mm"] = hausdorff_mm(emask, tmask, sp)
    return row


def _stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"mean": float("nan"), "median": float("nan"), "p95": float("nan")}
    return {"mean": float(a.mean()), "median": float(np.median(a)), "p95": float(np.percentile(a, 95))}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate rows: MAE/median/p95 of |differences|, signed means, Dice, Hausdorff, point errors.

    ``<m>_mae_mm_ci95_low`` / ``_high``: a 95 % subject-clustered bootstrap interval of each MAE
    (:func:`fetalbio.stats.mae_ci`). Only rows measured in mm enter the ``_mm`` figures; rows without a
    pixel size are counted in ``n_px_only``, and Hausdorff distances that could not be computed (an empty
    mask) in ``n_hausdorff_undefined``.
    """
    measured = [r for r in rows if r["status"] == "ok"]
    ok = [r for r in measured if r.get("unit") == "mm"]
    s: dict[str, Any] = {
        "n_images": len(rows),
        "n_failed": len(rows) - len(measured),
        "n_px_only": len(measured) - len(ok),
    }
    # how sure each MAE is: the scans of one subject are resampled together (fetalbio.stats)
    subjects = [subject_of(r["file"]) if r.get("file") else f"#{i}" for i, r in enumerate(ok)]
    for m in ("hc", "bpd", "ofd"):
        diffs = [r[f"{m}_diff_mm"] for r in ok]
        st = _stats([abs(d) for d in diffs])
        s[f"{m}_mae_mm"], s[f"{m}_abs_median_mm"], s[f"{m}_abs_p95_mm"] = st["mean"], st["median"], st["p95"]
        s[f"{m}_bias_mm"] = float(np.mean(diffs)) if diffs else float("nan")
        s[f"{m}_mae_mm_ci95_low"], s[f"{m}_mae_mm_ci95_high"] = mae_ci(diffs, subjects)
    for key in ("dice", "dice_mask"):  # overlap needs no pixel size: every measured row counts
        vals = [r[key] for r in measured if key in r]
        s[f"{key}_mean"] = float(np.mean(vals)) if vals else None
    hd_all = [r["hausdorff_mm"] for r in ok if "hausdorff_mm" in r]
    hd = [h for h in hd_all if math.isfinite(h)]
    s["hausdorff_mm_mean"] = float(np.mean(hd)) if hd else None
    s["n_hausdorff_undefined"] = len(hd_all) - len(hd)
    pts = [r[f"{n}_err_mm"] for r in ok for n in ("bpd1", "bpd2", "ofd1", "ofd2")]
    s["landmark_mre_mm"] = float(np.mean(pts)) if pts else float("nan")
    worst = [r["point_err_max_mm"] for r in ok]
    s["share_all_points_within_2mm"] = float(np.mean([w <= 2.0 for w in worst])) if worst else float("nan")
    s["share_all_points_within_4mm"] = float(np.mean([w <= 4.0 for w in worst])) if worst else float("nan")
    if any("truth_echo_edge_mm" in r for r in ok):
        s.update(_truth_on_echo(ok))
    px = [r for r in measured if r.get("unit") == "px"]
    if px:  # in pixels: comparable across the epochs of one dataset (training's fallback), not across scans
        for m in ("hc", "bpd", "ofd"):
            diffs = [r[f"{m}_diff_px"] for r in px]
            st = _stats([abs(d) for d in diffs])
            s[f"{m}_mae_px"], s[f"{m}_abs_median_px"], s[f"{m}_abs_p95_px"] = (
                st["mean"],
                st["median"],
                st["p95"],
            )
            s[f"{m}_bias_px"] = float(np.mean(diffs))
        s["landmark_mre_px"] = float(
            np.mean([r["point_err_mean_px"] for r in px if "point_err_mean_px" in r])
        )
    return s


def _truth_on_echo(ok: list[dict[str, Any]]) -> dict[str, Any]:
    """How many annotations lie more than :data:`fetalbio.echo.OFF_EDGE_MM` off the skull echo's outer
    edge (where HC is measured; None = no clear echo, not counted), and the HC MAE without them."""
    from fetalbio.echo import OFF_EDGE_MM

    edges = [r.get("truth_echo_edge_mm") for r in ok]
    off = [e is not None and abs(e) > OFF_EDGE_MM for e in edges]
    kept = [abs(r["hc_diff_mm"]) for r, o in zip(ok, off, strict=True) if not o]
    return {
        "n_truth_echo_checked": sum(e is not None for e in edges),
        "n_truth_off_echo": int(sum(off)),
        "hc_mae_mm_truth_on_echo": float(np.mean(kept)) if kept else float("nan"),
    }


def evaluate_dataset(
    dataset: str | Path,
    engine,
    pixel_csv: str | Path | None = None,
    split_file: str | Path | None = None,
    limit: int | None = None,
    batch_size: int = defaults.PREDICT_BATCH,
    method: str | None = None,
) -> tuple[dict, list[dict]]:
    """Run ``engine`` over an annotated folder and score every scan; returns (summary, rows).

    ``engine`` is one engine, or ``{method: engine}`` for the models a combining ``method`` (e.g.
    ``fused``) needs.

    ``split_file`` (a run's ``splits.json``) restricts it to that run's validation scans. A scan or
    annotation that cannot be read is a failed row, and the evaluation goes on.
    """

    from fetalbio.datasets import find_samples, load_truth
    from fetalbio.io import ScanError, read_scan
    from fetalbio.pipeline import Predictor

    samples = find_samples(dataset, pixel_csv)
    if split_file:
        keep = set(read_val_names(split_file))
        in_split = [s for s in samples if s.name in keep]
        if samples and not in_split:  # another dataset's split: say so, not "no annotated scans"
            why = f"none of its {len(keep)} validation scans is in {dataset}"
            raise ScanError(Path(split_file), why if keep else "its validation list is empty")
        samples = in_split
    unannotated = sorted(s.name for s in samples if s.annotation_path is None)  # nothing to score against
    samples = [s for s in samples if s.annotation_path is not None]
    if limit:
        samples = samples[:limit]
    if not samples:
        raise ScanError(Path(dataset), "no annotated scans to evaluate")
    truths: dict[str, Truth] = {}

    echo: dict[str, float | None] = {}

    def read(s):  # the truth is read with the scan: an unreadable annotation fails the sample
        scan = read_scan(s.scan_path, pixel_size_mm=s.pixel_size_mm)
        truths[s.name] = load_truth(s.annotation_path, scan.pixels.shape[:2])
        echo[s.name] = truth_echo_edge_mm(scan, truths[s.name])
        return scan

    rows: list[dict] = []
    engines = engine if isinstance(engine, dict) else {engine.method: engine}
    method = method or next(iter(engines))
    combined = (method,) if method not in engines else ()
    for batch in Predictor(engines, batch_size, combined=combined).run(samples, read):
        for pred in batch:
            s = pred.source
            if pred.error is not None:
                rows.append({"file": s.name, "method": method, "status": "error", "error": pred.error})
                continue
            res = pred.results[method]
            rows.append(score_prediction(res, truths.pop(s.name), pred.scan.spacing_mm, s.name))
            if rows[-1]["status"] == "ok" and rows[-1]["unit"] == "mm":
                rows[-1]["truth_echo_edge_mm"] = echo.get(s.name)
    return summarise(rows) | {"n_unannotated": len(unannotated), "unannotated": unannotated}, rows


def read_val_names(path: str | Path) -> list[str]:
    """The validation scans' names of a run's ``splits.json`` (``{"val": [names], ...}``).

    Raises:
        ScanError: one line naming the file: missing, unreadable, not JSON, or without a ``val`` list.
    """
    import json

    from fetalbio.io import ScanError

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScanError(path, "split file does not exist") from None
    except IsADirectoryError:
        raise ScanError(path, "is a folder, expected a run's splits.json") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ScanError(path, f"not a splits.json ({getattr(exc, 'strerror', None) or exc})") from None
    val = data.get("val") if isinstance(data, dict) else None
    if not isinstance(val, list) or not all(isinstance(v, str) for v in val):
        raise ScanError(path, "not a splits.json: no 'val' list of scan names")
    return val


def truth_echo_edge_mm(scan, truth: Truth) -> float | None:
    """Where the skull echo's outer edge lies outside the annotated ellipse (mm; None without a square
    pixel size or a clear echo): :func:`fetalbio.echo.echo_placement`."""
    from fetalbio.echo import echo_placement

    sp = scan.spacing_mm
    if sp is None or truth.shape_hw != scan.pixels.shape[:2] or abs(sp[0] - sp[1]) > 1e-6 * sp[0]:
        return None
    placement = echo_placement(scan.pixels, truth.ellipse, sp[0])
    return None if placement is None else round(placement.edge_offset_mm, 3)


def print_summary(summary: dict, method: str, console) -> None:
    """Rich tables of the headline figures: in mm for the scans with a pixel size, in pixels for those
    without (never an mm table of nan)."""
    from rich.table import Table

    n_mm = summary["n_images"] - summary["n_failed"] - summary["n_px_only"]
    n_px = summary["n_px_only"]
    title = f"{method}: {summary['n_images']} scans, {summary['n_failed']} failed"
    tables = [("mm", title)] if n_mm else []
    if n_px:
        tables.append(
            ("px", f"{n_px} scans without a pixel size, in pixels" if n_mm else title + ", in pixels")
        )
    if not tables:
        console.print(title, highlight=False)
    for unit, caption in tables:
        t = Table(title=caption)
        t.add_column("measure")
        for c in ("MAE", "MAE 95% CI", "median |err|", "p95 |err|", "bias"):
            t.add_column(c, justify="right")
        for m in ("hc", "bpd", "ofd"):
            lo, hi = summary.get(f"{m}_mae_{unit}_ci95_low"), summary.get(f"{m}_mae_{unit}_ci95_high")
            t.add_row(
                f"{m.upper()} ({unit})",
                f"{summary[f'{m}_mae_{unit}']:.2f}",
                "-" if lo is None or not math.isfinite(lo) else f"{lo:.2f}-{hi:.2f}",
                *(f"{summary[f'{m}_{k}_{unit}']:.2f}" for k in ("abs_median", "abs_p95", "bias")),
            )
        console.print(t)
    extra = (
        [
            f"point error (mean) {summary['landmark_mre_mm']:.2f} mm",
            f"all 4 points within 2 mm: {100 * summary['share_all_points_within_2mm']:.0f}%, "
            f"within 4 mm: {100 * summary['share_all_points_within_4mm']:.0f}%",
        ]
        if math.isfinite(summary["landmark_mre_mm"])  # nan: no scan measured in mm
        else []
    )
    if summary.get("n_truth_echo_checked"):
        from fetalbio.echo import OFF_EDGE_MM

        n, checked = summary["n_truth_off_echo"], summary["n_truth_echo_checked"]
        extra.append(
            f"annotations more than {OFF_EDGE_MM:g} mm off the skull echo's outer edge: {n} of {checked}"
            + (f" (HC MAE without them {summary['hc_mae_mm_truth_on_echo']:.2f} mm)" if n else "")
        )
    if summary.get("dice_mean") is not None:
        extra.insert(
            0,
            f"Dice {summary['dice_mean']:.4f} (fitted ellipse; raw mask {summary['dice_mask_mean']:.4f})"
            + (
                f", Hausdorff {summary['hausdorff_mm_mean']:.2f} mm (mean)"
                if summary.get("hausdorff_mm_mean") is not None
                else ""
            ),
        )
    for line in extra:
        console.print(line, highlight=False)


def write_report(report_dir: Path, rows: list[dict], summary: dict, dataset: str | Path) -> list[Path]:
    """Bland-Altman plot of HC, error histograms, and overlays of the five worst scans (by |HC error|)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fetalbio.writers import write_bytes_atomic, write_json_atomic

    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    ok = [r for r in rows if r["status"] == "ok" and r.get("unit") == "mm"]  # millimetres only
    written = []

    def save(fig, name: str) -> None:
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(write_bytes_atomic(report_dir / name, buf.getvalue()))

    if ok:
        true = np.array([r["hc_true_mm"] for r in ok])
        pred = np.array([r["hc_mm"] for r in ok])
        mean, diff = (true + pred) / 2, pred - true
        bias, sd = float(diff.mean()), float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.scatter(mean, diff, s=8, alpha=0.6)
        for y, style in ((bias, "-"), (bias + 1.96 * sd, "--"), (bias - 1.96 * sd, "--")):
            ax.axhline(y, color="k", ls=style, lw=1)
        ax.set(
            xlabel="mean of model and annotation HC (mm)",
            ylabel="model - annotation HC (mm)",
            title=f"Bland-Altman HC: bias {bias:.2f} mm, limits +/-{1.96 * sd:.2f} mm",
        )
        save(fig, "bland_altman_hc.png")
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
        for ax, m in zip(axes, ("hc", "bpd", "ofd"), strict=True):
            ax.hist([r[f"{m}_diff_mm"] for r in ok], bins=30)
            ax.set(title=f"{m.upper()} error (mm)", xlabel="model - annotation (mm)")
        save(fig, "error_histograms.png")
    write_json_atomic(report_dir / "summary.json", summary)
    written.append(report_dir / "summary.json")
    worst = sorted(ok, key=lambda r: -abs(r["hc_diff_mm"]))[:5]
    for r in worst:
        written.append(_worst_overlay(report_dir, Path(dataset), r))
    return written


def _worst_overlay(report_dir: Path, dataset: Path, row: dict) -> Path:
    """The scan with the annotation ellipse (red) and the model's ellipse (cyan)."""
    import cv2

    from fetalbio.datasets import load_truth, read_grey
    from fetalbio.io import annotation_path
    from fetalbio.writers import write_png_atomic

    scan = read_grey(dataset / row["file"])
    truth = load_truth(annotation_path(dataset / row["file"]))
    img = cv2.cvtColor(scan, cv2.COLOR_GRAY2BGR)
    for e, colour in ((truth.ellipse, (0, 0, 255)),):
        cv2.ellipse(img, e.to_cv2(), colour, 1, cv2.LINE_AA)
    text = f"{row['file']} HC err {row['hc_diff_mm']:+.1f} mm (red: annotation)"
    cv2.putText(img, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    if row.get("pred_ellipse"):
        (c, ax, ang) = row["pred_ellipse"]
        cv2.ellipse(img, (tuple(c), tuple(ax), ang), (255, 255, 0), 1, cv2.LINE_AA)
    return write_png_atomic(report_dir / f"worst_{Path(row['file']).stem}.png", img)
