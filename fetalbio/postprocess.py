"""Segmentation post-processing: probability map (original pixels) -> clean skull mask -> ellipse.

Shared by training-time validation, predict, evaluate and export verification, so millimetres are
measured one way only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from fetalbio import defaults
from fetalbio.geometry import EllipseFit, fit_ellipse, mask_boundary_points

# Quality-flag thresholds: fetalbio/defaults.py, with their reasons (the flags are listed in the README).
POOR_FIT_RESIDUAL_FRAC = defaults.SEG_POOR_FIT_RESIDUAL_FRAC
LOW_CONFIDENCE = defaults.SEG_LOW_CONFIDENCE
MIN_AREA_FRAC = defaults.SEG_MIN_AREA_FRAC


@dataclass
class SegResult:
    """Result of post-processing one probability map."""

    fit: EllipseFit | None
    mask: np.ndarray  # (H, W) uint8 0/1, the cleaned mask
    flags: list[str] = field(default_factory=list)
    confidence: float = 0.0
    error: str | None = None


def clean_mask(prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Threshold, keep the largest component, close small gaps and fill holes. (H, W) -> uint8 0/1."""
    binary = (prob >= threshold).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n <= 1:
        return np.zeros_like(binary)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    mask = (labels == largest).astype(np.uint8)
    # closing radius scales with the scan so that behaviour does not depend on resolution
    r = max(1, round(min(mask.shape) / 200))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    # fill holes: everything not reachable from outside the outer contour
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled


def on_convex_hull(mask: np.ndarray, pts: np.ndarray, tol_px: float = 2.0) -> np.ndarray:
    """The boundary points (N, 2) that lie on the mask's convex hull.

    The skull is convex: where the net misses a piece of it (acoustic shadow, weak echo) the mask has
    a bite, whose points would pull the ellipse inwards. Points more than ``tol_px`` inside the
    convex hull are such bites and are left out (on HC18 validation this cut the HC error by ~20 %).
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    hull = cv2.convexHull(max(contours, key=len))
    hull_mask = np.zeros(mask.shape, np.uint8)
    cv2.fillPoly(hull_mask, [hull], 1)
    depth = cv2.distanceTransform(hull_mask, cv2.DIST_L2, 5)  # distance to outside the hull
    ix = np.clip(np.round(pts).astype(int), 0, [mask.shape[1] - 1, mask.shape[0] - 1])
    keep = depth[ix[:, 1], ix[:, 0]] <= tol_px
    return pts[keep] if keep.sum() >= 5 else pts


def footprint_rim(seen: np.ndarray | None, shape_hw: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the pixels on the border of what the model saw, ``seen`` ((H, W) bool, None = the
    whole image): the image's outer pixels, and the last pixel inside a capture's region or a turned
    scan's frame (with the pixel beyond it, where the zero-padded map makes the mask's outline)."""
    if seen is None:
        rim = np.zeros(shape_hw, bool)
        rim[0], rim[-1], rim[:, 0], rim[:, -1] = True, True, True, True
        return rim
    # pixels within 1.5 px of an unseen one (or of the image border) or unseen ones next to a seen one
    kernel = np.ones((3, 3), np.uint8)
    inner = cv2.erode(seen.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    outer = cv2.dilate(seen.astype(np.uint8), kernel) > 0
    return outer & ~inner


def segment_to_ellipse(prob: np.ndarray, threshold: float = 0.5, seen: np.ndarray | None = None) -> SegResult:
    """Turn a skull probability map ((H, W) float in 0..1, ORIGINAL pixels) into an ellipse and flags.

    ``seen`` ((H, W) bool, None = everywhere): the pixels the model saw (a capture's region, a turned
    scan's frame: :func:`fetalbio.preprocess.footprint`).
    Flags: ``no_head`` (nothing segmented; then ``error`` is set), ``edge`` (the mask touches the scan's
    border or the border of what the model saw: the head is cut, the cut is left out of the fit and the
    ellipse extrapolated), ``poor_fit`` (the boundary is far from an ellipse), ``low_confidence`` (mean
    probability inside the mask is low).
    """
    mask = clean_mask(prob, threshold)
    area = int(mask.sum())
    if area < MIN_AREA_FRAC * mask.size:
        return SegResult(None, mask, ["no_head"], 0.0, "no head found")
    flags = []
    rim = footprint_rim(seen, mask.shape)  # the border of what the model saw: the image's, or a region's
    if mask[rim].any():
        flags.append("edge")
    # sub-pixel boundary where the probability crosses the threshold, on the convex hull only
    try:
        pts = mask_boundary_points(mask, prob=np.clip(prob, 0.0, 1.0) if threshold == 0.5 else None)
        if seen is not None:  # a cut by the region's or frame's border is no skull: left out, as the image's
            ix = np.clip(np.round(pts).astype(int), 0, [mask.shape[1] - 1, mask.shape[0] - 1])
            kept = pts[~rim[ix[:, 1], ix[:, 0]]]
            pts = kept if len(kept) >= 5 else pts
        fit = fit_ellipse(on_convex_hull(mask, pts))
    except ValueError as exc:
        return SegResult(None, mask, ["no_head"], 0.0, f"no head found ({exc})")
    if fit.residual_px > POOR_FIT_RESIDUAL_FRAC * fit.ellipse.semi_minor_px:
        flags.append("poor_fit")
    confidence = float(prob[mask > 0].mean())
    if confidence < LOW_CONFIDENCE:
        flags.append("low_confidence")
    return SegResult(fit, mask, flags, confidence)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two (H, W) binary masks (1.0 when both are empty)."""
    a, b = a > 0, b > 0
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def hausdorff_mm(a: np.ndarray, b: np.ndarray, spacing_mm: tuple[float, float]) -> float:
    """Symmetric Hausdorff distance (mm) between the outlines of two (H, W) binary masks."""
    pts = []
    for m in (a, b):
        cs, _ = cv2.findContours((m > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        if not cs:
            return float("inf")
        pts.append(np.concatenate(cs).reshape(-1, 2).astype(np.float64) * np.asarray(spacing_mm))
    pa, pb = pts

    # chunked nearest distances: outlines have a few thousand points, so this stays small
    def directed(p: np.ndarray, q: np.ndarray) -> float:
        best = 0.0
        for i in range(0, len(p), 512):
            d = np.sqrt(((p[i : i + 512, None, :] - q[None, :, :]) ** 2).sum(-1)).min(axis=1)
            best = max(best, float(d.max()))
        return best

    return max(directed(pa, pb), directed(pb, pa))
