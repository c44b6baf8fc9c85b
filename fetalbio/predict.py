"""Model outputs -> measurements in the scan's original pixels and in mm."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fetalbio.geometry import Ellipse, Landmarks, ellipse_to_landmarks, landmarks_to_ellipse
from fetalbio.postprocess import segment_to_ellipse
from fetalbio.preprocess import Letterbox

MIN_AXIS_PX = 4.0  # a BPD or OFD pair closer than this (original px) is not a head


@dataclass
class Result:
    """One method's result on one scan, in ORIGINAL pixels."""

    method: str
    ellipse: Ellipse | None = None
    landmarks: Landmarks | None = None
    mask: np.ndarray | None = None  # (H, W) uint8 0/1, segmentation only
    flags: list[str] = field(default_factory=list)
    confidence: float = 0.0
    point_confidence: list[float] | None = None
    fit_residual_px: float | None = None
    error: str | None = None


def outputs_to_result(
    method: str,
    output: np.ndarray,
    letterbox: Letterbox,
    spacing_mm: tuple[float, float] | None,
    *,
    threshold: float = 0.5,
    sigma_px: float = 3.0,
    low_confidence: float | None = None,
) -> Result:
    """Post-process one model output ((in_h, in_w, C)) into a :class:`Result` in original pixels."""
    if method == "segmentation":
        prob = letterbox.map_to_original(np.asarray(output, np.float32)[..., 0])
        seg = segment_to_ellipse(prob, threshold)
        if seg.fit is None:
            return Result(method, mask=seg.mask, flags=seg.flags, error=seg.error)
        e = seg.fit.ellipse
        return Result(
            method,
            e,
            ellipse_to_landmarks(e),
            seg.mask,
            seg.flags,
            seg.confidence,
            fit_residual_px=seg.fit.residual_px,
        )
    if method == "landmarks":
        from fetalbio.heatmaps import LOW_POINT_CONFIDENCE, decode_heatmaps

        pts_in, conf = decode_heatmaps(np.asarray(output, np.float32), sigma_px=sigma_px)
        lm = Landmarks.from_array(letterbox.to_original(pts_in))
        # a model may carry its own threshold (calibrated on its validation split, see model.json)
        limit = LOW_POINT_CONFIDENCE if low_confidence is None else low_confidence
        flags = ["low_confidence"] if min(conf) < limit else []
        pts = lm.as_array()
        # a collapsed pair (both points on one spot) is no measurement: an empty or degenerate output
        if min(np.hypot(*(pts[1] - pts[0])), np.hypot(*(pts[3] - pts[2]))) < MIN_AXIS_PX:
            return Result(
                method, landmarks=lm, flags=["no_head", *flags], error="no head found (landmarks collapsed)"
            )
        return Result(
            method, landmarks_to_ellipse(lm), lm, None, flags, float(np.mean(conf)), list(map(float, conf))
        )
    raise ValueError(f"unknown method {method!r}")


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


def measurement_row(
    file: str, result: Result, spacing_mm: tuple[float, float] | None, spacing_source: str
) -> dict:
    """One output row (see COLUMNS). Millimetre columns stay empty when the spacing is unknown."""
    from fetalbio.biometry import BPD_CONVENTION, biometry_from_axes
    from fetalbio.geometry import measure_ellipse, measure_landmarks

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
    measure = measure_landmarks if result.method == "landmarks" else measure_ellipse
    obj = result.landmarks if result.method == "landmarks" else result.ellipse
    px = measure(obj, None)
    row.update(
        hc_px=px.hc, bpd_px=px.bpd, ofd_px=px.ofd, cephalic_index=100.0 * px.bpd / px.ofd if px.ofd else None
    )
    if spacing_mm:
        mm = measure(obj, spacing_mm)
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
        bpd_convention=BPD_CONVENTION
        if result.method == "segmentation"
        else "distance between the two predicted BPD points",
    )
    return row


def error_row(file: str, method: str, reason: str) -> dict:
    return {"file": file, "method": method, "status": "error", "error": reason, "unit": "", "flags": ""}


# --- the batch pipeline ---


@dataclass
class PredictOptions:
    methods: tuple[str, ...] = ("segmentation",)
    pixel_size_mm: float | None = None
    pixel_csv: dict[str, float] | None = None
    overlays: bool = True
    save_masks: bool = False
    batch_size: int = 8
    disagreement_hc_mm: float = 5.0


def predict_paths(paths: list, engines: dict, out_dir, opts: PredictOptions, progress=None) -> list[dict]:
    """Run every engine (``{method: Engine}``) over scan paths; write overlays/masks; return rows.

    A scan that fails gets an ``error`` row per method and the batch goes on.
    """
    from pathlib import Path

    from fetalbio.io import ScanError, read_scan
    from fetalbio.preprocess import prepare_input
    from fetalbio.writers import write_png_atomic

    out_dir = Path(out_dir)
    rows: list[dict] = []
    for start in range(0, len(paths), opts.batch_size):
        chunk = paths[start : start + opts.batch_size]
        ready = []
        for p in chunk:
            try:
                scan = read_scan(p, pixel_size_mm=opts.pixel_size_mm, pixel_csv=opts.pixel_csv)
                ready.append((p, scan))
            except ScanError as exc:
                rows.extend(error_row(str(p), m, exc.reason) for m in opts.methods)
        by_method: dict[str, list[dict]] = {}
        for method in opts.methods:
            eng = engines[method]
            inputs = [prepare_input(s.pixels, eng.image_size) for _, s in ready]
            outs = eng.predict(np.stack([x for x, _ in inputs])[..., None]) if inputs else []
            by_method[method] = []
            for (p, scan), (_, lb), o in zip(ready, inputs, outs, strict=True):
                res = outputs_to_result(
                    method,
                    o,
                    lb,
                    scan.spacing_mm,
                    sigma_px=eng.heatmap_sigma_px,
                    low_confidence=eng.low_point_confidence,
                )
                row = measurement_row(str(p), res, scan.spacing_mm, scan.spacing_source)
                by_method[method].append(row)
                if opts.overlays and not res.error:
                    write_png_atomic(
                        out_dir / "overlays" / f"{Path(p).stem}_{method}.png",
                        draw_overlay(scan.pixels, res, row),
                    )
                if opts.save_masks and res.mask is not None:
                    write_png_atomic(out_dir / "masks" / f"{Path(p).stem}_mask.png", res.mask * 255)
        if len(opts.methods) == 2:
            flag_disagreement(by_method, opts.disagreement_hc_mm)
        for i in range(len(ready)):
            rows.extend(by_method[m][i] for m in opts.methods)
        if progress:
            progress(len(chunk))
    return rows


def flag_disagreement(by_method: dict[str, list[dict]], threshold_mm: float) -> None:
    """Flag both rows of a scan whose two methods' HC differ by more than ``threshold_mm``."""
    for a, b in zip(by_method["segmentation"], by_method["landmarks"], strict=True):
        key = "hc_mm" if a.get("hc_mm") is not None and b.get("hc_mm") is not None else "hc_px"
        if a.get(key) is None or b.get(key) is None:
            continue
        if key == "hc_mm" and abs(a[key] - b[key]) > threshold_mm:
            for r in (a, b):
                r["flags"] = ";".join(filter(None, [r["flags"], "methods_disagree"]))


def draw_overlay(pixels: np.ndarray, result: Result, row: dict) -> np.ndarray:
    """The scan (BGR uint8) with the ellipse, the BPD (green) and OFD (orange) calipers and values."""
    import cv2

    img = pixels
    if img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    bgr = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    scale = max(1, round(max(img.shape) / 800))
    s = 1 << 4  # drawing with 4 fractional bits keeps sub-pixel positions
    if result.ellipse is not None:
        e = result.ellipse
        cv2.ellipse(
            bgr,
            (round(e.cx_px * s), round(e.cy_px * s)),
            (round(e.semi_major_px * s), round(e.semi_minor_px * s)),
            e.angle_deg,
            0,
            360,
            (255, 255, 0),
            scale,
            cv2.LINE_AA,
            4,
        )
    pts = result.landmarks.as_array()
    for (i, j), colour in (((0, 1), (0, 220, 0)), ((2, 3), (0, 140, 255))):
        p, q = (tuple(int(round(v * s)) for v in pts[k]) for k in (i, j))
        cv2.line(bgr, p, q, colour, scale, cv2.LINE_AA, 4)
        for k in (p, q):
            cv2.drawMarker(bgr, (k[0] // s, k[1] // s), colour, cv2.MARKER_CROSS, 10 * scale, scale)
    unit = row.get("unit", "px")

    def val(k: str) -> str:
        v = row.get(f"{k}_mm") if unit == "mm" else row.get(f"{k}_px")
        return "-" if v is None else f"{v:.1f} {unit}"

    lines = [f"{result.method}", f"HC {val('hc')}", f"BPD {val('bpd')}", f"OFD {val('ofd')}"]
    if result.flags:
        lines.append("flags: " + ",".join(result.flags))
    for n, text in enumerate(lines):
        y = (22 + 22 * n) * scale
        cv2.putText(
            bgr,
            text,
            (10 * scale, y),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.6 * scale,
            (0, 0, 0),
            3 * scale,
            cv2.LINE_AA,
        )
        cv2.putText(
            bgr,
            text,
            (10 * scale, y),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.6 * scale,
            (255, 255, 255),
            scale,
            cv2.LINE_AA,
        )
    return bgr
