"""Model outputs -> measurements in the scan's original pixels and in mm."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fetalbio import defaults, methods
from fetalbio.clinical import GA_COLUMNS
from fetalbio.methods.base import Result
from fetalbio.runfolder import OutputNames, RunFolder, file_sha256

if TYPE_CHECKING:
    from fetalbio.io import Scan
    from fetalbio.pipeline import Prediction


# --- measurements ---

COLUMNS = [
    "file",
    "method",
    "status",
    "error",
    "unit",
    "frame",
    "pixel_size_mm",
    "pixel_size_y_mm",
    "spacing_source",
    "hc_mm",
    "bpd_mm",
    "ofd_mm",
    "hc_px",
    "bpd_px",
    "ofd_px",
    "hc_mm_low",
    "hc_mm_high",
    "bpd_mm_low",
    "bpd_mm_high",
    "ofd_mm_low",
    "ofd_mm_high",
    "cephalic_index",
    "ga_hadlock_hc_weeks",
    "ga_hadlock_bpd_weeks",
    "ga_intergrowth_hc_weeks",
    "ga_note",
    *GA_COLUMNS,
    "bpd1_x",
    "bpd1_y",
    "bpd2_x",
    "bpd2_y",
    "ofd1_x",
    "ofd1_y",
    "ofd2_x",
    "ofd2_y",
    "ellipse_cx_px",
    "ellipse_cy_px",
    "ellipse_semi_major_px",
    "ellipse_semi_minor_px",
    "ellipse_angle_deg",
    "fit_residual_px",
    "confidence",
    "flags",
    "review_reasons",
    "bpd_convention",
    "model_id",
    "engine",
    "overlay",
]


def measurement_row(file: str, result: Result, scan: Scan) -> dict:
    """One output row (see COLUMNS), with the scan's own spacing. Millimetre columns stay empty when the
    spacing is unknown."""
    from fetalbio.biometry import biometry_from_axes, cephalic_index

    spacing_mm, spacing_source = scan.spacing_mm, scan.spacing_source
    method = methods.get(result.method)
    row: dict = {
        "frame": scan.frame,
        "file": file,
        "method": result.method,
        "status": "error" if result.error else "ok",
        "error": result.error or "",
        "unit": "mm" if spacing_mm else "px",
        "pixel_size_mm": spacing_mm[0] if spacing_mm else None,
        "pixel_size_y_mm": spacing_mm[1] if spacing_mm else None,
        "spacing_source": spacing_source,
        "flags": ";".join(result.flags),
    }
    if result.error:
        return row
    px = method.measure(result, None)
    ci = cephalic_index(px.bpd, px.ofd) if px.bpd > 0 and px.ofd > 0 else None  # a ratio: pixels serve
    row.update(hc_px=px.hc, bpd_px=px.bpd, ofd_px=px.ofd, cephalic_index=ci)
    if spacing_mm:
        mm = method.measure(result, spacing_mm)
        bio = biometry_from_axes(mm.bpd, mm.ofd, mm.hc)
        row.update(
            hc_mm=mm.hc,
            bpd_mm=mm.bpd,
            ofd_mm=mm.ofd,
            cephalic_index=bio.cephalic_index,
            ga_hadlock_hc_weeks=bio.ga_hadlock_hc_weeks,
            ga_hadlock_bpd_weeks=bio.ga_hadlock_bpd_weeks,
            ga_intergrowth_hc_weeks=bio.ga_intergrowth_hc_weeks,
            ga_note=bio.ga_note,
        )
    row.update(result.landmarks.to_dict())
    e = result.ellipse
    row.update(
        ellipse_cx_px=e.cx_px,
        ellipse_cy_px=e.cy_px,
        ellipse_semi_major_px=e.semi_major_px,
        ellipse_semi_minor_px=e.semi_minor_px,
        ellipse_angle_deg=e.angle_deg,
        fit_residual_px=result.fit_residual_px,
        confidence=result.confidence,
        bpd_convention=method.bpd_convention,
    )
    row.update(method.row_extras(result, spacing_mm))
    return row


def error_row(file: str, method: str, reason: str) -> dict:
    return {"file": file, "method": method, "status": "error", "error": reason, "unit": "", "flags": ""}


# --- the batch run ---


@dataclass
class PredictOptions:
    methods: tuple[str, ...] = methods.PRIMARY  # the registered methods to run, in row order
    pixel_size_mm: float | None = None
    pixel_csv: dict[str, float] | None = None
    require_mm: bool = False  # a scan without a pixel size is an error row, not a row in pixels
    overlays: bool = True
    save_masks: bool = False
    batch_size: int = defaults.PREDICT_BATCH
    disagreement_frac: float | None = None  # None: defaults.REVIEW_DISAGREE_FRAC
    ga_weeks: dict[str, float] | None = None  # --ga-csv: known GA per file, for z-scores
    frames: list[int] | None = None  # multi-frame DICOM: the frames to measure (None: all)


@dataclass
class BatchRun:
    """Where a batch's outputs go: the run folder (journal, overlays) and the models' identities.

    Attributes:
        folder: the open run folder, or None (rows are only returned: benchmarks, tests).
        names: the overlay/mask file stems (collision-free, relative to the input roots).
        options: hash of everything that changes a result (the journal's and --resume's key).
        model_ids: ``{method: model id}`` written into each row, with ``engine``.
        done: rows of scans already measured with the same options ({(path, sha256): rows}).
        stop: checked after each batch; set it (a signal handler does) to stop after the batch in flight.
    """

    folder: RunFolder | None = None
    names: OutputNames | None = None
    options: str = ""
    model_ids: dict[str, str] = field(default_factory=dict)
    engine: str = ""
    done: dict = field(default_factory=dict)
    stop: list = field(default_factory=list)

    def model_id(self, method: str) -> str:
        """A row's ``model_id``: its model's, or for a combining method (fused) every model it combines
        and its own calibration file, ``;``-separated ("" when unknown: benchmarks, tests)."""
        if method in self.model_ids:
            return self.model_ids[method]
        from fetalbio import methods

        keys = [*methods.get(method).requires, f"{method}/calibration"]
        return ";".join(self.model_ids[k] for k in keys if k in self.model_ids)


def predict_paths(
    paths: list,
    engines: dict,
    out_dir,
    opts: PredictOptions,
    progress: Callable[[int], None] | None = None,
    run: BatchRun | None = None,
) -> list[dict]:
    """Run every engine (``{method: Engine}``) over scan paths; write overlays/masks; return rows.

    A scan that fails gets an ``error`` row per method and the batch goes on. With a ``run`` folder,
    each batch's rows are appended to its journal as the batch finishes, scans already measured (same
    path, content and options) are taken from it, and ``run.stop`` ends the run after the batch in flight.
    """
    from fetalbio.pipeline import Predictor

    run = run or BatchRun()
    base = methods.engines_needed(opts.methods)
    combined = tuple(m for m in opts.methods if methods.get(m).requires)
    predictor = Predictor({m: engines[m] for m in base}, opts.batch_size, combined=combined)
    keys: dict[str, tuple[str, str]] = {}
    rows_by_path: dict[str, list[dict]] = {}
    todo = []
    for p in paths:
        keys[str(p)] = key = (str(p), _content_hash(p))
        if key in run.done:
            rows_by_path[str(p)] = run.done[key]
        else:
            todo.append(p)
    if progress and len(todo) < len(paths):
        progress(len(paths) - len(todo))
    frame_lists = {str(p): _frames(p, opts) for p in todo}  # one header read per file
    sources = [(p, f) for p in todo for f in frame_lists[str(p)]]
    expected = {path: len(fs) for path, fs in frame_lists.items()}
    frames: dict[str, list[Prediction]] = {}
    for batch in predictor.run(sources, lambda s: _read(s, opts)):
        records, done = [], 0
        for pred in batch:
            path = str(pred.source[0])
            frames.setdefault(path, []).append(pred)
            if len(frames[path]) < expected[path]:
                continue  # the other frames of this file are still to come
            rows = _scan_rows(_best_frame(frames.pop(path)), Path(out_dir), opts, run)
            rows_by_path[path] = rows
            records.append((keys[path], rows))
            done += 1
        if run.folder is not None:
            run.folder.append(records, run.options)
        if progress:
            progress(done)
        if run.stop and not frames:
            break
    return [r for p in paths if str(p) in rows_by_path for r in rows_by_path[str(p)]]


def _frames(path, opts: PredictOptions) -> list[int]:
    """The frames to measure: every frame of a multi-frame DICOM (or those --frames names), else [0]."""
    from fetalbio.io import count_frames

    n = count_frames(Path(path))
    if opts.frames is None or n == 1:  # --frames names a cine's frames: a single image is measured as it is
        return list(range(n))
    return [f for f in opts.frames if f < n] or [opts.frames[0]]  # none exists: its read says so


def _best_frame(preds: list[Prediction]) -> Prediction:
    """The frame the models are surest of (sum of the methods' confidences); the file is the source."""
    from dataclasses import replace

    def score(p: Prediction) -> float:
        return -1.0 if p.error else sum(r.confidence for r in p.results.values() if not r.error)

    best = max(preds, key=score)
    return replace(best, source=best.source[0])


def _content_hash(path) -> str:
    try:
        return file_sha256(Path(path))
    except OSError:
        return ""  # unreadable: read_scan says why


def _read(source: tuple, opts: PredictOptions) -> Scan:
    from fetalbio.io import ScanError, read_scan

    path, frame = source
    scan = read_scan(path, pixel_size_mm=opts.pixel_size_mm, pixel_csv=opts.pixel_csv, frame=frame)
    if opts.require_mm and scan.spacing_mm is None:
        raise ScanError(Path(path), "no pixel size (--require-mm): give --pixel-size or --pixel-csv")
    return scan


def _scan_rows(pred: Prediction, out_dir: Path, opts: PredictOptions, run: BatchRun) -> list[dict]:
    """The rows of one scan (one per method), with its overlays and masks written."""
    file = str(pred.source)
    ident = {"engine": run.engine}
    if pred.error is not None:
        return [
            {**error_row(file, m, pred.error), "model_id": run.model_id(m), **ident} for m in opts.methods
        ]
    rows = []
    for method in opts.methods:
        try:
            row = measurement_row(file, pred.results[method], pred.scan)
        except (ValueError, ArithmeticError) as exc:  # a degenerate result: that row fails, not the batch
            row = error_row(file, method, f"measurement failed ({exc})")
        row.update(model_id=run.model_id(method), **ident)
        rows.append(row)
    flag_disagreement(rows, opts.disagreement_frac)
    apply_review(rows)
    for method, row in zip(opts.methods, rows, strict=True):
        _write_images(pred, method, row, out_dir, opts, run)
    return rows


def _write_images(
    pred: Prediction, method: str, row: dict, out_dir: Path, opts: PredictOptions, run: BatchRun
):
    """The overlay (and mask) of one row; a failure to draw or write becomes the row's error."""
    from fetalbio.writers import write_png_atomic

    res = pred.results[method]
    stem = run.names.stem(Path(str(pred.source))) if run.names else Path(str(pred.source)).stem
    try:
        if opts.overlays and not res.error:
            from fetalbio.overlay import draw_overlay

            rel = Path("overlays") / f"{stem}_{method}.png"
            write_png_atomic(out_dir / rel, draw_overlay(pred.scan.pixels, res, row))
            row["overlay"] = rel.as_posix()
        # a combining method's mask is its segmentation part's (what that model segmented as the head)
        mask = next(
            (r.mask for r in [res, *res.parts.values()] if r is not None and r.mask is not None), None
        )
        if opts.save_masks and mask is not None and not res.error:
            write_png_atomic(out_dir / "masks" / f"{stem}_mask.png", mask * 255)
    except (OSError, ValueError) as exc:
        row.update(
            status="error", error=f"cannot write the overlay ({getattr(exc, 'strerror', None) or exc})"
        )


def flag_disagreement(rows: list[dict], frac: float | None = None) -> None:
    """Flag every row of a scan when its methods' HC differ by more than ``frac`` of the HC (any unit)."""
    from fetalbio.methods.fused import hcs_disagree

    hcs = [r.get("hc_mm") if r.get("hc_mm") is not None else r.get("hc_px") for r in rows]
    if hcs_disagree([h for h in hcs if h is not None], frac):
        for r in rows:
            if r.get("hc_px") is not None and "methods_disagree" not in r["flags"].split(";"):
                r["flags"] = ";".join(filter(None, [r["flags"], "methods_disagree"]))


REVIEW_FLAGS = {  # flag -> the review reason a person reads
    "edge": "head cut by the image border",
    "low_confidence": "low model confidence",
    "methods_disagree": "the methods disagree",
    "one_method_only": "only one method found a head",
    "two_images": "two scans side by side: the left (or top) one was measured",
}


def review_reasons(row: dict) -> list[str]:
    """Why a measured row needs a person (empty: it may be reported as it is). Thresholds scale with the
    head (fractions of HC), never with pixels; they are in :mod:`fetalbio.defaults`."""
    from fetalbio import defaults

    flags = set(filter(None, row.get("flags", "").split(";")))
    reasons = [text for flag, text in REVIEW_FLAGS.items() if flag in flags]
    hc, lo, hi = row.get("hc_mm"), row.get("hc_mm_low"), row.get("hc_mm_high")
    if hc and lo is not None and hi is not None and hi - lo > defaults.REVIEW_INTERVAL_FRAC * hc:
        reasons.append(f"wide interval (HC {lo:.0f}-{hi:.0f} mm)")
    hc_lo, hc_hi = defaults.REVIEW_HC_RANGE_MM
    if hc and row.get("unit") == "mm" and not hc_lo <= hc <= hc_hi:
        reasons.append(f"no fetal head size (HC {hc:.0f} mm): check the pixel size")
    ci_lo, ci_hi = defaults.REVIEW_CEPHALIC_INDEX
    ci = row.get("cephalic_index")
    if ci is not None and not ci_lo <= ci <= ci_hi:
        reasons.append(f"implausible head shape (cephalic index {ci:.0f})")
    return reasons


def apply_review(rows: list[dict]) -> None:
    """Set ``status`` to ``review`` (numbers kept) with ``review_reasons`` on rows that need a person."""
    for r in rows:
        if r["status"] == "error":
            continue
        reasons = review_reasons(r)
        r["review_reasons"] = "; ".join(reasons)
        if reasons:
            r["status"] = "review"


# --- a whole run: folder, models' identities, journal, outputs ---


def model_identity(engine) -> tuple[str, str]:
    """(model id, sha256) of an engine's model file: ``<parent>/<file>@<sha256[:12]>``."""
    return file_identity(engine.path)


def file_identity(path: Path) -> tuple[str, str]:
    """(id, sha256) of a model or calibration file: ``<parent>/<file>@<sha256[:12]>``."""
    sha = file_sha256(path) if path.exists() else ""
    return f"{path.parent.name}/{path.name}@{sha[:12]}", sha


def calibration_identities(method_names) -> dict[str, tuple[str, str]]:
    """``{"<method>/calibration": (id, sha256)}`` of each combining method's calibration file
    (``<models>/<method>/model.json``, e.g. the fused intervals), where it exists: it changes the rows."""
    from fetalbio import methods
    from fetalbio.modelinfo import models_dir

    out = {}
    for name in method_names:
        path = models_dir() / name / "model.json"
        if methods.get(name).requires and path.exists():
            out[f"{name}/calibration"] = file_identity(path)
    return out


def summarise_run(rows: list[dict]) -> dict[str, int]:
    """Counts per SCAN (not per row): scans, ok, review, failed, measured in pixels only."""
    by_file: dict[str, list[dict]] = {}
    for r in rows:
        by_file.setdefault(r["file"], []).append(r)
    from fetalbio.report import scan_status

    status = [scan_status(rs) for rs in by_file.values()]
    return {
        "n_scans": len(by_file),
        "n_ok": status.count("ok"),
        "n_review": status.count("review"),
        "n_failed": status.count("error"),
        "n_px": sum(any(r.get("unit") == "px" for r in rs) for rs in by_file.values()),
        "n_rows": len(rows),
        "n_error_rows": sum(r["status"] == "error" for r in rows),
    }


def write_outputs(out: Path, rows: list[dict], run_info: dict) -> dict:
    """measurements.csv/.json (atomically, rebuilt from all rows), run.json and report.html."""
    from fetalbio.writers import round_row, write_csv_atomic, write_json_atomic

    summary = summarise_run(rows)
    write_csv_atomic(out / "measurements.csv", rows, COLUMNS)
    write_json_atomic(out / "measurements.json", {"columns": COLUMNS, "rows": [round_row(r) for r in rows]})
    run_info = {**run_info, "counts": summary}
    write_json_atomic(out / "run.json", run_info)
    from fetalbio.report import write_report

    shown = ("model", "engine", "started", "finished", "fetalbio_version")
    # the page shows millimetres to 0.1 mm as the terminal does, rounded once from the full value (from the
    # CSV's 2 decimals, 43.05 read 43.0 where 43.0508 is 43.1); its text passes the same safety as the CSV's
    full = [round_row(r, {k: 6 for k in r if k.endswith("_mm")}) for r in rows]
    write_report(out, full, {**summary, **{k: run_info.get(k) for k in shown}})
    return summary


def options_for(opts: PredictOptions, model_sha256: dict[str, str]) -> str:
    """The options hash of a run: models (sha256), methods and everything that changes a number."""
    from fetalbio.runfolder import options_hash

    return options_hash(
        {
            "models": model_sha256,
            "methods": list(opts.methods),
            "pixel_size_mm": opts.pixel_size_mm,
            "pixel_csv": sorted((opts.pixel_csv or {}).items()),
            "require_mm": opts.require_mm,
            "disagreement_frac": opts.disagreement_frac,
            "frames": opts.frames,  # other frames of a cine: another row
        }
    )
