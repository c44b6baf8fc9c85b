"""Model outputs -> measurements in the scan's original pixels and in mm."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fetalbio import methods
from fetalbio.methods.base import Result

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
    "pixel_size_mm",
    "pixel_size_y_mm",
    "spacing_source",
    "hc_mm",
    "bpd_mm",
    "ofd_mm",
    "hc_px",
    "bpd_px",
    "ofd_px",
    "cephalic_index",
    "ga_hadlock_hc_weeks",
    "ga_hadlock_bpd_weeks",
    "ga_intergrowth_hc_weeks",
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
    "bpd_convention",
]


def measurement_row(file: str, result: Result, scan: Scan) -> dict:
    """One output row (see COLUMNS), with the scan's own spacing. Millimetre columns stay empty when the
    spacing is unknown."""
    from fetalbio.biometry import biometry_from_axes

    spacing_mm, spacing_source = scan.spacing_mm, scan.spacing_source
    method = methods.get(result.method)
    row: dict = {
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
    row.update(
        hc_px=px.hc, bpd_px=px.bpd, ofd_px=px.ofd, cephalic_index=100.0 * px.bpd / px.ofd if px.ofd else None
    )
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
    return row


def error_row(file: str, method: str, reason: str) -> dict:
    return {"file": file, "method": method, "status": "error", "error": reason, "unit": "", "flags": ""}


# --- the batch run ---


@dataclass
class PredictOptions:
    methods: tuple[str, ...] = methods.PRIMARY  # the registered methods to run, in row order
    pixel_size_mm: float | None = None
    pixel_csv: dict[str, float] | None = None
    overlays: bool = True
    save_masks: bool = False
    batch_size: int = 8
    disagreement_hc_mm: float = 5.0


def predict_paths(
    paths: list, engines: dict, out_dir, opts: PredictOptions, progress: Callable[[int], None] | None = None
) -> list[dict]:
    """Run every engine (``{method: Engine}``) over scan paths; write overlays/masks; return rows.

    A scan that fails gets an ``error`` row per method and the batch goes on.
    """
    from fetalbio.io import read_scan
    from fetalbio.pipeline import Predictor

    predictor = Predictor({m: engines[m] for m in opts.methods}, opts.batch_size)
    rows: list[dict] = []

    def read(p):
        return read_scan(p, pixel_size_mm=opts.pixel_size_mm, pixel_csv=opts.pixel_csv)

    for batch in predictor.run(paths, read):
        for pred in batch:
            rows.extend(_scan_rows(pred, Path(out_dir), opts))
        if progress:
            progress(len(batch))
    return rows


def _scan_rows(pred: Prediction, out_dir: Path, opts: PredictOptions) -> list[dict]:
    """The rows of one scan (one per method), with its overlays and masks written."""
    from fetalbio.writers import write_png_atomic

    file = str(pred.source)
    if pred.error is not None:
        return [error_row(file, m, pred.error) for m in opts.methods]
    rows = []
    for method in opts.methods:
        res = pred.results[method]
        row = measurement_row(file, res, pred.scan)
        rows.append(row)
        if opts.overlays and not res.error:
            from fetalbio.overlay import draw_overlay

            write_png_atomic(
                out_dir / "overlays" / f"{Path(file).stem}_{method}.png",
                draw_overlay(pred.scan.pixels, res, row),
            )
        if opts.save_masks and res.mask is not None:
            write_png_atomic(out_dir / "masks" / f"{Path(file).stem}_mask.png", res.mask * 255)
    flag_disagreement(rows, opts.disagreement_hc_mm)
    return rows


def flag_disagreement(rows: list[dict], threshold_mm: float) -> None:
    """Flag every row of a scan when its methods' HC (mm) differ by more than ``threshold_mm``."""
    hcs = [r["hc_mm"] for r in rows if r.get("hc_mm") is not None]
    if len(hcs) >= 2 and max(hcs) - min(hcs) > threshold_mm:
        for r in rows:
            if r.get("hc_mm") is not None:
                r["flags"] = ";".join(filter(None, [r["flags"], "methods_disagree"]))
