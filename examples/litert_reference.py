"""fetalbio's measurement in one file, for porting to a device: numpy, OpenCV and LiteRT only.

Nothing here imports fetalbio or TensorFlow. It runs the shipped (or exported) int8 ``.tflite`` models
with their ``.json`` sidecars on a grey, upright scan in square pixels and gives what ``fetalbio
predict`` gives for it: each method's HC, BPD and OFD (with the second look at a small head), the fused
estimate with its 90 % intervals, and each row's review status (docs/integrating.md, steps 3-9, 11).
``tests/test_litert_reference.py`` holds every figure, point, flag and status to fetalbio's own, so a
port that matches this file matches fetalbio. What ``predict`` does beyond it (captures, turned and
portrait scans, a machine's trace, colour overlays, non-square pixels, GA) is listed in
docs/integrating.md, step 10.

    python examples/litert_reference.py SCAN.png --pixel-size 0.15 [--method fused|segmentation|landmarks|all]

prints one JSON object per scan and method. Coordinates are (x, y) in the scan's pixels, pixel
centres at integers; lengths in mm.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np

SHIPPED = Path(__file__).resolve().parents[1] / "fetalbio" / "shipped"
# the values of fetalbio/defaults.py and the modules named beside them
SEG_MIN_AREA_FRAC = 0.005  # a mask under this share of the scan: no head (postprocess)
SEG_LOW_CONFIDENCE = 0.75  # mean probability inside the mask (postprocess)
SEG_POOR_FIT_FRAC = 0.02  # RMS outline residual / semi-minor axis (postprocess)
HULL_TOL_PX = 2.0  # outline points deeper inside the convex hull are a bite the net missed
MAX_POSTPROCESS_SIDE_PX = 2048
DECODE_RADIUS = 3  # 7 x 7 window (heatmaps)
FIT_MIN_FRACTION = 0.1
PAIR_MIN_SEPARATION_SIGMAS = 4.0
MIN_CEPHALIC_INDEX = 0.55
MIN_AXIS_PX = 4.0  # a landmark pair closer than this (scan px): no head
ZOOM_MARGIN = 1.8  # second look: the head's box grown so much...
ZOOM_MAX_AREA = 0.8  # ...and taken only when under this share of what was letterboxed


# --- steps 3-5: normalise, letterbox, run ----------------------------------------------------------------
def normalise(img: np.ndarray) -> np.ndarray:
    """(H, W) any dtype -> float32, zero mean, unit population SD (float32 arithmetic); flat -> zeros."""
    x = img.astype(np.float32)
    sd = float(x.std())
    return (x - float(x.mean())) / (sd if sd > 1e-6 else 1.0)


def letterbox(h: int, w: int, in_h: int, in_w: int) -> tuple[int, int, int, int]:
    """(new_h, new_w, pad_y, pad_x): Python's round (half to even), at least 1, at most the input."""
    scale = min(in_h / h, in_w / w)
    nh, nw = max(1, min(in_h, round(h * scale))), max(1, min(in_w, round(w * scale)))
    return nh, nw, (in_h - nh) // 2, (in_w - nw) // 2


class Model:
    """An int8 ``.tflite`` and its sidecar; ``run`` maps a normalised (H, W) crop to the output map."""

    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter

        self.info = json.loads(path.with_suffix(".json").read_text())
        self.in_h, self.in_w = self.info["image_size"]
        self.interp = Interpreter(model_path=str(path))
        self.interp.allocate_tensors()
        self.inp, self.out = self.interp.get_input_details()[0], self.interp.get_output_details()[0]

    def run(self, crop: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """(output (in_h, in_w, C) float32, letterbox (new_h, new_w, pad_y, pad_x)) of a scan crop."""
        nh, nw, py, px = letterbox(*crop.shape, self.in_h, self.in_w)
        x = np.zeros((self.in_h, self.in_w), np.float32)  # padding 0 = the crop's mean
        x[py : py + nh, px : px + nw] = cv2.resize(normalise(crop), (nw, nh), interpolation=cv2.INTER_AREA)
        scale, zero = self.inp["quantization"]
        if self.inp["dtype"] != np.float32:  # round(x / scale + zero) in float32, then clip to the type
            lim = np.iinfo(self.inp["dtype"])
            x = np.clip(np.round(x / np.float32(scale) + np.float32(zero)), lim.min, lim.max)
            x = x.astype(self.inp["dtype"])
        self.interp.set_tensor(self.inp["index"], x[None, ..., None])
        self.interp.invoke()
        y = self.interp.get_tensor(self.out["index"])[0]
        scale, zero = self.out["quantization"]
        if self.out["dtype"] != np.float32:
            y = (y.astype(np.float32) - zero) * np.float32(scale)
        return np.asarray(y, np.float32), (nh, nw, py, px)


# --- geometry ------------------------------------------------------------------------------------------
def ramanujan(a: float, b: float) -> float:
    """Perimeter of the ellipse with semi-axes a, b (Ramanujan's second approximation)."""
    t = ((a - b) / (a + b)) ** 2
    return math.pi * (a + b) * (1 + 3 * t / (10 + math.sqrt(4 - 3 * t)))


def ellipse_points(e: tuple, n: int = 72) -> np.ndarray:
    """(n, 2) points of e = (cx, cy, semi_major, semi_minor, angle_deg of the major axis)."""
    cx, cy, a, b, ang = e
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    th = math.radians(ang)
    x, y = a * np.cos(t), b * np.sin(t)
    return np.stack([cx + x * math.cos(th) - y * math.sin(th), cy + x * math.sin(th) + y * math.cos(th)], 1)


def major_first(cx, cy, a, b, ang) -> tuple:
    """The ellipse with its semi-major axis first, its angle in [0, 180)."""
    if b > a:
        a, b, ang = b, a, ang + 90.0
    return (float(cx), float(cy), float(a), float(b), float(ang % 180.0))


def canonical_pair(p, q):
    """The left point first when the axis is nearer horizontal, else the upper one."""
    dx, dy = q[0] - p[0], q[1] - p[1]
    if abs(dx) >= abs(dy):
        return (p, q) if dx >= 0 else (q, p)
    return (p, q) if dy >= 0 else (q, p)


# --- step 6: segmentation --------------------------------------------------------------------------------
def clean_mask(prob: np.ndarray) -> np.ndarray:
    """prob >= 0.5, the largest 8-connected piece, closed, holes filled: (H, W) uint8 0/1."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats((prob >= 0.5).astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros(prob.shape, np.uint8)
    mask = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    r = max(1, round(min(mask.shape) / 200))
    mask = cv2.morphologyEx(
        mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2)
    )
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled


def outline(mask: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """(N, 2) one point per crack between an inside pixel and an outside 4-neighbour, where prob
    (linear between the two centres) crosses 0.5, the crossing clipped to the crack; none on the border."""
    m = np.pad(mask > 0, 1)
    p = np.pad(np.clip(prob, 0.0, 1.0).astype(np.float64), 1, mode="edge")
    pts = []
    for axis in (0, 1):
        a, b = (m[:-1], m[1:]) if axis == 0 else (m[:, :-1], m[:, 1:])
        pa, pb = (p[:-1], p[1:]) if axis == 0 else (p[:, :-1], p[:, 1:])
        rr, cc = np.nonzero(a != b)
        d = pb[rr, cc] - pa[rr, cc]
        safe = np.abs(d) > 1e-6
        t = np.clip(np.where(safe, (0.5 - pa[rr, cc]) / np.where(safe, d, 1.0), 0.5), 0.0, 1.0)
        xy = np.stack([cc, rr + t], 1) if axis == 0 else np.stack([cc + t, rr.astype(np.float64)], 1)
        pts.append(xy - 1.0)
    pts = np.concatenate(pts)
    h, w = mask.shape
    keep = (pts[:, 0] > -0.25) & (pts[:, 0] < w - 0.75) & (pts[:, 1] > -0.25) & (pts[:, 1] < h - 0.75)
    return pts[keep]


def on_hull(mask: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """The points whose rounded pixel lies at most 2 px deep (distance transform, L2, 5x5) in the
    filled convex hull of the mask's longest outer contour; all of them when fewer than 5 would stay."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    hull = np.zeros(mask.shape, np.uint8)
    cv2.fillPoly(hull, [cv2.convexHull(max(contours, key=len))], 1)
    depth = cv2.distanceTransform(hull, cv2.DIST_L2, 5)
    ix = np.clip(np.round(pts).astype(int), 0, [mask.shape[1] - 1, mask.shape[0] - 1])
    keep = depth[ix[:, 1], ix[:, 0]] <= HULL_TOL_PX
    return pts[keep] if keep.sum() >= 5 else pts


def rim_of(seen: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """The border of what the model saw: the image's outer pixels, or the ring on a crop's side."""
    if seen is None:
        rim = np.zeros(shape, bool)
        rim[0], rim[-1], rim[:, 0], rim[:, -1] = True, True, True, True
        return rim
    k = np.ones((3, 3), np.uint8)
    inner = cv2.erode(seen.astype(np.uint8), k, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    return (cv2.dilate(seen.astype(np.uint8), k) > 0) & ~inner


def fit_ellipse(pts: np.ndarray) -> tuple:
    """OpenCV's fitEllipse on points centred on their mean (its float32 loses precision far from 0)."""
    mean = pts.mean(axis=0)
    (cx, cy), (w, h), ang = cv2.fitEllipse((pts - mean).astype(np.float32))
    return major_first(cx + mean[0], cy + mean[1], w / 2.0, h / 2.0, ang)


def residual_px(e: tuple, pts: np.ndarray) -> float:
    """RMS distance of the points from the ellipse along the ray from its centre."""
    cx, cy, a, b, ang = e
    th = math.radians(ang)
    dx, dy = pts[:, 0] - cx, pts[:, 1] - cy
    u, v = dx * math.cos(th) + dy * math.sin(th), -dx * math.sin(th) + dy * math.cos(th)
    r = np.hypot(u / a, v / b)
    d = np.abs(np.where(r > 0, np.hypot(u, v) * (1.0 - 1.0 / np.maximum(r, 1e-12)), 0.0))
    return float(np.sqrt(np.mean(d**2)))


def segment(prob: np.ndarray, seen: np.ndarray | None) -> dict:
    """Ellipse, confidence and flags from a probability map in the scan's pixels (step 6)."""
    f = min(1.0, MAX_POSTPROCESS_SIDE_PX / max(prob.shape))
    if f < 1.0:  # a huge scan: post-processed at 2048 px a side, the ellipse scaled back
        size, w0 = (round(prob.shape[1] * f), round(prob.shape[0] * f)), prob.shape[1]
        prob = cv2.resize(prob, size, interpolation=cv2.INTER_AREA)
        f = prob.shape[1] / w0
        if seen is not None:
            seen = cv2.resize(seen.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.5
    mask = clean_mask(prob)
    if mask.sum() < SEG_MIN_AREA_FRAC * mask.size:
        return {"error": "no head found", "flags": ["no_head"]}
    rim = rim_of(seen, mask.shape)
    flags = ["edge"] if mask[rim].any() else []
    pts = outline(mask, prob)
    if seen is not None:  # cracks on a crop's side are no skull
        ix = np.clip(np.round(pts).astype(int), 0, [mask.shape[1] - 1, mask.shape[0] - 1])
        kept = pts[~rim[ix[:, 1], ix[:, 0]]]
        pts = kept if len(kept) >= 5 else pts
    pts = on_hull(mask, pts)
    if len(pts) < 5:
        return {"error": "no head found", "flags": ["no_head"]}
    e = fit_ellipse(pts)
    if residual_px(e, pts) > SEG_POOR_FIT_FRAC * e[3]:
        flags.append("poor_fit")
    conf = float(prob[mask > 0].mean())
    if conf < SEG_LOW_CONFIDENCE:
        flags.append("low_confidence")
    if f < 1.0:
        e = ((e[0] + 0.5) / f - 0.5, (e[1] + 0.5) / f - 0.5, e[2] / f, e[3] / f, e[4])
    return {"ellipse": e, "confidence": conf, "flags": flags}


# --- step 7: landmarks -----------------------------------------------------------------------------------
def fit_log_parabola(win, dx, dy, peak):
    """(offset x, offset y, spread px) of a weighted least-squares fit of log f = a + b x + c y + d x^2 +
    e y^2 + g x y to the window's values above 10 % of the peak (rows times v: weights v^2), or None
    when degenerate: under 6 values, under 3 distinct x or y, no clear maximum (smallest eigenvalue of
    the negated Hessian <= 1e-4), or an offset beyond 3.5 px."""
    m = win > FIT_MIN_FRACTION * peak
    if m.sum() < 6 or len(np.unique(dx[m])) < 3 or len(np.unique(dy[m])) < 3:
        return None
    v, x, y = win[m], dx[m], dy[m]
    a = np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=1)
    coef, *_ = np.linalg.lstsq(a * v[:, None], np.log(v) * v, rcond=None)
    _, b, c, d, e, g = coef
    hess = np.array([[2 * d, g], [g, 2 * e]])
    lam = np.linalg.eigvalsh(-hess)
    if not (np.all(np.isfinite(lam)) and lam.min() > 1e-4):
        return None
    off = -np.linalg.solve(hess, np.array([b, c]))
    if not np.all(np.isfinite(off)) or np.any(np.abs(off) > DECODE_RADIUS + 0.5):
        return None
    return float(off[0]), float(off[1]), float(1.0 / math.sqrt(lam.min()))


def spread_factor(spread: float, sigma: float) -> float:
    """1 while the spot's spread is within [sigma / 2, 2 sigma], falling off as the square beyond."""
    if not math.isfinite(spread):
        return 0.0
    ratio = spread / sigma
    return (2.0 / ratio) ** 2 if ratio > 2.0 else (ratio / 0.5) ** 2 if ratio < 0.5 else 1.0


def decode_channel(ch: np.ndarray, sigma: float, at=None) -> tuple[float, float, float]:
    """(x, y, confidence) of one heatmap (float64, finite): its arg-max (or the maximum at ``at`` =
    (row, col)) refined. Confidence = peak (clipped to 1) x spread factor x (1 - the highest value
    further than 3 min(max(spread, sigma), 3 sigma) from the point / the peak)."""
    h, w = ch.shape
    r, c = divmod(int(np.argmax(ch)), w) if at is None else at
    peak = float(ch[r, c])
    if peak <= 1e-6:
        return float(c), float(r), 0.0
    r0, r1, c0, c1 = (
        max(r - DECODE_RADIUS, 0),
        min(r + DECODE_RADIUS + 1, h),
        max(c - DECODE_RADIUS, 0),
        min(c + DECODE_RADIUS + 1, w),
    )
    win = ch[r0:r1, c0:c1]
    dy, dx = np.mgrid[r0 - r : r1 - r, c0 - c : c1 - c].astype(np.float64)
    fit = fit_log_parabola(win, dx, dy, peak)
    if fit is None:  # a local soft-argmax above the window's floor
        wts = np.maximum(win - max(float(win.min()), 0.0), 0.0)
        total = float(wts.sum())
        if total <= 0:
            fit = (0.0, 0.0, math.inf)
        else:
            ox, oy = float((wts * dx).sum() / total), float((wts * dy).sum() / total)
            var = float((wts * ((dx - ox) ** 2 + (dy - oy) ** 2)).sum() / total) / 2.0
            fit = (ox, oy, math.sqrt(var))
    x, y, spread = c + fit[0], r + fit[1], fit[2]
    excl = 3.0 * min(max(spread, sigma), 3.0 * sigma)
    yy, xx = np.ogrid[0:h, 0:w]
    far = (xx - x) ** 2 + (yy - y) ** 2 > excl**2
    ambiguity = min(max((float(np.max(ch[far])) if far.any() else 0.0) / peak, 0.0), 1.0)
    conf = min(max(peak, 0.0), 1.0) * spread_factor(spread, sigma) * (1.0 - ambiguity)
    return x, y, float(min(max(conf, 0.0), 1.0))


def collapsed_pair(total: np.ndarray, sigma: float, sep: float):
    """Both ends of a pair from the sum of its two maps: the strongest peak and the strongest local
    maximum (7 x 7, float32) at least ``sep`` px from it, in canonical order; None without one."""
    x1, y1, _ = decode_channel(total, sigma)
    h, w = total.shape
    yy, xx = np.ogrid[0:h, 0:w]
    t32 = total.astype(np.float32)
    local_max = t32 >= cv2.dilate(t32, np.ones((2 * DECODE_RADIUS + 1,) * 2, np.uint8))
    cand = local_max & (total > 1e-6) & ((xx - x1) ** 2 + (yy - y1) ** 2 >= sep**2)
    if not cand.any():
        return None
    r, c = divmod(int(np.argmax(np.where(cand, total, -np.inf))), w)
    x2, y2, _ = decode_channel(total, sigma, at=(r, c))
    return [np.array(p, np.float64) for p in canonical_pair((x1, y1), (x2, y2))]


def decode_heatmaps(hm: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Points (4, 2) in input px (bpd1, bpd2, ofd1, ofd2) and their confidences (4,) (step 7)."""
    hm = hm.astype(np.float64)
    dec = [decode_channel(hm[..., k], sigma) for k in range(4)]
    pts, conf = np.array([d[:2] for d in dec]), np.array([d[2] for d in dec])
    for (a, b), (c, d) in (((0, 1), (2, 3)), ((2, 3), (0, 1))):  # a pair collapsed onto one spot
        other = float(np.hypot(*(pts[c] - pts[d])))
        sep = max(PAIR_MIN_SEPARATION_SIGMAS * sigma, 0.5 * other)
        old = float(np.hypot(*(pts[a] - pts[b])))
        if old >= sep or (joint := collapsed_pair(hm[..., a] + hm[..., b], sigma, sep)) is None:
            continue
        new = float(np.hypot(*(joint[0] - joint[1])))
        if new > old + 1.0 and min(new, other) / max(new, other) >= MIN_CEPHALIC_INDEX:
            pts[a], pts[b] = joint
            conf[a] = conf[b] = min(conf[a], conf[b])
    bpd, ofd = np.hypot(*(pts[0] - pts[1])), np.hypot(*(pts[2] - pts[3]))
    if bpd > ofd and ofd / bpd >= MIN_CEPHALIC_INDEX:  # the BPD is the short axis
        pts, conf = pts[[2, 3, 0, 1]], conf[[2, 3, 0, 1]]
    return pts, conf


# --- one look, the second look, the measurement ----------------------------------------------------------
def look(model: Model, method: str, img: np.ndarray, crop=None) -> dict:
    """One method's result on the scan, or on ``crop`` (y0, x0, h, w) of it, in the scan's pixels."""
    H, W = img.shape
    y0, x0, h, w = crop or (0, 0, H, W)
    out, (nh, nw, py, px) = model.run(img[y0 : y0 + h, x0 : x0 + w])
    seen = None
    if crop is not None and (h, w) != (H, W):
        seen = np.zeros((H, W), bool)
        seen[y0 : y0 + h, x0 : x0 + w] = True
    if method == "segmentation":  # the map without its padding, in the scan's pixels (0 outside a crop)
        prob = np.zeros((H, W), np.float32)
        prob[y0 : y0 + h, x0 : x0 + w] = cv2.resize(
            np.ascontiguousarray(out[py : py + nh, px : px + nw, 0]), (w, h), interpolation=cv2.INTER_LINEAR
        )
        return segment(prob, seen)
    pts_in, conf = decode_heatmaps(out, float(model.info["heatmap_sigma_px"]))
    pts = np.stack(
        [(pts_in[:, 0] - px + 0.5) * w / nw - 0.5 + x0, (pts_in[:, 1] - py + 0.5) * h / nh - 0.5 + y0], 1
    )
    pts[0], pts[1] = canonical_pair(pts[0].copy(), pts[1].copy())
    pts[2], pts[3] = canonical_pair(pts[2].copy(), pts[3].copy())
    flags = ["low_confidence"] if conf.min() < model.info.get("low_point_confidence", 0.3) else []
    if (pts < -0.5).any() or (pts[:, 0] > W - 0.5).any() or (pts[:, 1] > H - 0.5).any():
        flags.append("edge")  # a point outside the scan: the head is cut, or the points are wrong
    elif seen is not None:
        ix = np.clip(np.round(pts).astype(int), 0, [W - 1, H - 1])
        if not seen[ix[:, 1], ix[:, 0]].all():
            flags.append("edge")
    if min(np.hypot(*(pts[1] - pts[0])), np.hypot(*(pts[3] - pts[2]))) < MIN_AXIS_PX:
        return {"error": "no head found (landmarks collapsed)", "flags": ["no_head", *flags], "points": pts}
    d = pts[3] - pts[2]
    e = major_first(
        *pts.mean(axis=0),
        np.hypot(*d) / 2,
        np.hypot(*(pts[1] - pts[0])) / 2,
        math.degrees(math.atan2(d[1], d[0])),
    )
    return {
        "ellipse": e,
        "points": pts,
        "confidence": float(conf.mean()),
        "point_confidence": conf.tolist(),
        "flags": flags,
    }


def zoom_crop(e: tuple, shape: tuple[int, int], in_hw: tuple[int, int]):
    """(y0, x0, h, w) around a small head for a second look, or None: the box of 72 points of the
    first ellipse grown 1.8x about its centre, widened to the input's shape, taken when under 0.8 of
    the scan's area, rounded outwards, clipped to the scan, at least 8 px a side."""
    pts = ellipse_points(e)
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hx, hy = (x1 - x0) / 2 * ZOOM_MARGIN, (y1 - y0) / 2 * ZOOM_MARGIN
    aspect = in_hw[1] / in_hw[0]
    hx, hy = max(hx, aspect * hy), max(hy, hx / aspect)
    h, w = shape
    if 4 * hx * hy >= ZOOM_MAX_AREA * h * w:
        return None
    left, top = max(0, int(np.floor(cx - hx))), max(0, int(np.floor(cy - hy)))
    right, bottom = min(w, int(np.ceil(cx + hx))), min(h, int(np.ceil(cy + hy)))
    return None if right - left < 8 or bottom - top < 8 else (top, left, bottom - top, right - left)


def within(e: tuple, crop: tuple, shape: tuple[int, int]) -> bool:
    """Whether the second ellipse stays inside the crop: a pixel from its left and top sides, two from
    its right and bottom ones (sides that are the scan's own do not count)."""
    y0, x0, h, w = crop
    (px0, py0), (px1, py1) = (pts := ellipse_points(e)).min(axis=0), pts.max(axis=0)
    H, W = shape
    return (
        (x0 == 0 or px0 >= x0 + 1)
        and (y0 == 0 or py0 >= y0 + 1)
        and (x0 + w == W or px1 <= x0 + w - 2)
        and (y0 + h == H or py1 <= y0 + h - 2)
    )


def measure(model: Model, method: str, img: np.ndarray, pixel_size_mm: float) -> dict:
    """The method's row: its result with a second look at a small head, HC, BPD, OFD in mm (its status
    comes later: ``review``)."""
    res = look(model, method, img)
    res["second_look"] = False
    if "ellipse" in res and (crop := zoom_crop(res["ellipse"], img.shape, (model.in_h, model.in_w))):
        again = look(model, method, img, crop)
        if "ellipse" in again and within(again["ellipse"], crop, img.shape):
            res = {**again, "second_look": True}
    if "ellipse" not in res:
        return {"method": method, "status": "error", **res}
    if method == "segmentation":  # the ellipse's axes; HC its perimeter
        cx, cy, a, b, ang = res["ellipse"]
        bpd, ofd = 2 * b * pixel_size_mm, 2 * a * pixel_size_mm
    else:  # the pairs' lengths; HC the perimeter of the ellipse with those axes
        p = res["points"]
        bpd, ofd = (float(np.hypot(*(p[i + 1] - p[i]))) * pixel_size_mm for i in (0, 2))
    return {"method": method, "hc_mm": ramanujan(ofd / 2, bpd / 2), "bpd_mm": bpd, "ofd_mm": ofd, **res}


# --- steps 10-11: the fused estimate, its 90 % interval, the review status -------------------------------
REVIEW_FLAGS = {  # flag -> the reason a person reads (fetalbio.predict.REVIEW_FLAGS); poor_fit is none
    "edge": "head cut by the image border",
    "low_confidence": "low model confidence",
    "methods_disagree": "the methods disagree",
    "one_method_only": "only one method found a head",
}
REVIEW_DISAGREE_FRAC = 0.04  # the two HCs further apart than this share of their mean
REVIEW_INTERVAL_FRAC = 0.12  # a 90 % HC interval wider than this share of HC
REVIEW_HC_RANGE_MM = (30.0, 450.0)
REVIEW_CEPHALIC_INDEX = (60.0, 96.0)


def fuse(seg: dict, lm: dict, cal: dict) -> dict:
    """The fused row from the two methods' rows (``measure``) and the calibration of
    fetalbio/shipped/fused/model.json: their mean (a result its own model is unsure of left out while
    the other is sure), sd = hypot(floor_frac x estimate, seg - lm) or single_method_sigma_frac x
    estimate with one method, the interval estimate -/+ q x sd (never below 0)."""
    ok = {m: r for m, r in (("segmentation", seg), ("landmarks", lm)) if "hc_mm" in r}
    if not ok:
        why = "; ".join(f"{m}: {r['error']}" for m, r in (("segmentation", seg), ("landmarks", lm)))
        return {"method": "fused", "status": "error", "error": f"no head found ({why})", "flags": ["no_head"]}
    flags = {f for r in ok.values() for f in r["flags"]} | ({"one_method_only"} if len(ok) < 2 else set())
    if len(ok) == 2:
        hcs = [seg["hc_mm"], lm["hc_mm"]]  # square pixels: the ratio of mm is that of px
        if max(hcs) - min(hcs) > REVIEW_DISAGREE_FRAC * sum(hcs) / 2:
            flags.add("methods_disagree")
        low_s, low_l = "low_confidence" in seg["flags"], "low_confidence" in lm["flags"]
        use = {"segmentation": not low_s or low_l, "landmarks": not low_l or low_s}
        ok = {m: r for m, r in ok.items() if use[m]}
    row = {"method": "fused", "flags": sorted(flags)}
    for k in ("hc", "bpd", "ofd"):
        s = (
            ok["segmentation"][f"{k}_mm"] - cal["bias_mm"]["segmentation"][k]
            if "segmentation" in ok
            else None
        )
        l_ = ok["landmarks"][f"{k}_mm"] - cal["bias_mm"]["landmarks"][k] if "landmarks" in ok else None
        if s is not None and l_ is not None:
            w = cal["weights"][k]
            est = w * s + (1 - w) * l_
            sd = math.hypot(cal["floor_frac"][k] * est, s - l_)
        else:
            est = s if s is not None else l_
            sd = cal["single_method_sigma_frac"][k] * est
        half = cal["q"][k] * sd
        row.update(
            {
                f"{k}_mm": est,
                f"{k}_mm_low": max(0.0, est - half),
                f"{k}_mm_high": est + half,
                f"{k}_sd_mm": sd,
            }
        )
    return row


def flag_disagreement(rows: list[dict]) -> None:
    """Every measured row of a scan flagged ``methods_disagree`` when the rows' HCs spread by more than
    4 % of their mean (``predict`` with several methods: fetalbio.predict.flag_disagreement)."""
    hcs = [r["hc_mm"] for r in rows if "hc_mm" in r]
    if len(hcs) >= 2 and max(hcs) - min(hcs) > REVIEW_DISAGREE_FRAC * sum(hcs) / len(hcs):
        for r in rows:
            if "hc_mm" in r and "methods_disagree" not in r["flags"]:
                r["flags"] = [*r["flags"], "methods_disagree"]


def review(row: dict) -> dict:
    """``status`` ok or review and ``review_reasons`` (fetalbio.predict.review_reasons)."""
    if row.get("status") == "error":
        return row
    reasons = [text for flag, text in REVIEW_FLAGS.items() if flag in row["flags"]]
    hc, lo, hi = row["hc_mm"], row.get("hc_mm_low"), row.get("hc_mm_high")
    if lo is not None and hi - lo > REVIEW_INTERVAL_FRAC * hc:
        reasons.append(f"wide interval (HC {lo:.0f}-{hi:.0f} mm)")
    if not REVIEW_HC_RANGE_MM[0] <= hc <= REVIEW_HC_RANGE_MM[1]:
        reasons.append(f"no fetal head size (HC {hc:.0f} mm): check the pixel size")
    ci = 100.0 * row["bpd_mm"] / row["ofd_mm"]
    if not REVIEW_CEPHALIC_INDEX[0] <= ci <= REVIEW_CEPHALIC_INDEX[1]:
        reasons.append(f"implausible head shape (cephalic index {ci:.0f})")
    return {**row, "cephalic_index": ci, "status": "review" if reasons else "ok", "review_reasons": reasons}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scans", nargs="+", type=Path, help="grey (or colour, converted) 8/16-bit image files")
    ap.add_argument("--pixel-size", type=float, required=True, help="mm per pixel (square pixels)")
    ap.add_argument("--method", choices=("fused", "segmentation", "landmarks", "all"), default="fused")
    ap.add_argument(
        "--models", type=Path, default=SHIPPED, help="folder of segmentation/, landmarks/, fused/"
    )
    args = ap.parse_args(argv)
    names = ("segmentation", "landmarks") if args.method in ("fused", "all") else (args.method,)
    models = {m: Model(args.models / m / "model_int8.tflite") for m in names}
    cal = json.loads((args.models / "fused" / "model.json").read_text())["calibration"]
    for path in args.scans:
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            print(f"{path}: not an image OpenCV can read", file=sys.stderr)
            continue
        if img.ndim == 3:  # fetalbio first takes a machine's coloured overlays out (fetalbio.colour)
            img = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2GRAY)
        rows = {m: measure(models[m], m, img, args.pixel_size) for m in names}
        if len(names) == 2:
            rows["fused"] = fuse(rows["segmentation"], rows["landmarks"], cal)
        shown = [rows[m] for m in ("fused", "segmentation", "landmarks") if args.method in (m, "all")]
        flag_disagreement(shown)  # the rows predict writes for this scan, in its order
        for row in shown:
            print(json.dumps({"file": str(path), **review(row)}, default=lambda v: np.asarray(v).tolist()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
