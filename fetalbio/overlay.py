"""Overlay PNGs: the scan with the fitted ellipse, the BPD and OFD calipers, values, status and flags."""

from __future__ import annotations

import numpy as np

from fetalbio import methods
from fetalbio.methods.base import Result


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
    methods.get(result.method).overlay(bgr, result, scale)
    unit = row.get("unit", "px")

    def val(k: str) -> str:
        v = row.get(f"{k}_mm") if unit == "mm" else row.get(f"{k}_px")
        return "-" if v is None else f"{v:.1f} {unit}"

    lines = [
        f"{result.method}: {row.get('status', 'ok')}",
        f"HC {val('hc')}",
        f"BPD {val('bpd')}",
        f"OFD {val('ofd')}",
    ]
    flags = [f for f in str(row.get("flags", "")).split(";") if f]  # the row's: methods_disagree included
    if flags:
        lines.append("flags: " + ",".join(flags))
    if row.get("review_reasons"):
        lines.append("review: " + row["review_reasons"])
    for n, text in enumerate(lines):
        y = (22 + 22 * n) * scale
        for colour, width in (((0, 0, 0), 3 * scale), ((255, 255, 255), scale)):  # white on a dark outline
            cv2.putText(
                bgr, text, (10 * scale, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, colour, width, cv2.LINE_AA
            )
    return bgr
