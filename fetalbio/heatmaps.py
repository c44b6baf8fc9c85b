"""Landmark heatmaps: rendering targets, the training loss, and sub-pixel decoding.

Conventions (see :mod:`fetalbio.geometry`): points are (x, y) in pixels of the MODEL INPUT, x to the
right, y down, the centre of pixel (row r, column c) at (x=c, y=r). Channel k of a heatmap belongs to
landmark k of bpd1, bpd2, ofd1, ofd2 (canonical order).

* :func:`render_heatmaps` draws unnormalised Gaussians ``exp(-d^2 / (2 sigma^2))`` with peak 1 at the
  TRUE sub-pixel position: the target is never rounded to a pixel, so the decoder can (and must)
  recover sub-pixel positions.
* :func:`heatmap_loss` is a foreground-weighted MSE (see its docstring for why plain MSE lets a
  network collapse to an all-zero output).
* :func:`decode_heatmaps` takes the arg-max of each channel and refines it with a weighted
  least-squares Gaussian fit (a parabola fitted to the log of the values) in a small window around
  it; the fit is exact for a Gaussian, also where the window is cut by the image border. It falls
  back to a local soft-argmax where the fit is degenerate. A pair whose two points land on the same
  spot is decoded jointly: the two strongest separate peaks of the pair's summed maps.

Rendering and decoding use numpy (and OpenCV's dilation for local maxima); the loss uses
``keras.ops`` (imported lazily) so that it runs inside the training step on any backend.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from fetalbio import defaults
from fetalbio.defaults import HEATMAP_SIGMA_PX
from fetalbio.geometry import canonical_pair

N_POINTS = 4

# A point whose confidence is below this is flagged ``low_confidence`` by ``predict`` (defaults.py).
LOW_POINT_CONFIDENCE = defaults.LM_LOW_POINT_CONFIDENCE

# Weight of the foreground in :func:`heatmap_loss`: a pixel with target t counts 1 + FOREGROUND_WEIGHT * t.
FOREGROUND_WEIGHT = 10.0

# Decoding: half-size of the refinement window (7x7) and the fraction of the peak below which pixels
# are left out of the log-parabola fit (their logs are dominated by noise).
DECODE_RADIUS = 3
FIT_MIN_FRACTION = 0.1

# The two ends of a pair (a skull diameter apart) decoded closer than this many sigmas mean the pair has
# collapsed: both channels fire at the same end, as happens for heads near the 45-degree switch of the
# canonical order (which end is "first" is ambiguous there). Such a pair is decoded jointly instead.
PAIR_MIN_SEPARATION_SIGMAS = 4.0
PAIRS = ((0, 1), (2, 3))
# ... and the result is kept only if it gives a head shape: short / long axis (the cephalic index, about
# 0.7-0.9 in life) at least this.
MIN_CEPHALIC_INDEX = 0.55


# --- rendering -------------------------------------------------------------------------------------


def render_heatmaps(
    points_xy: np.ndarray, image_hw: tuple[int, int], sigma_px: float = HEATMAP_SIGMA_PX
) -> np.ndarray:
    """(H, W, N) float32 target heatmaps for ``points_xy`` ((N, 2) x, y in input px; N = 4 normally).

    Channel k is ``exp(-((x - x_k)^2 + (y - y_k)^2) / (2 sigma^2))`` evaluated at the pixel centres:
    peak 1 exactly at the true (sub-pixel) point. A point outside the image gives the part of its
    Gaussian that falls inside (zeros when it is far away); a non-finite point (missing) gives zeros.
    """
    pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    h, w = int(image_hw[0]), int(image_hw[1])
    if sigma_px <= 0:
        raise ValueError(f"sigma_px must be positive, got {sigma_px}")
    xs = np.arange(w, dtype=np.float64)
    ys = np.arange(h, dtype=np.float64)
    out = np.zeros((h, w, len(pts)), dtype=np.float32)
    inv = 1.0 / (2.0 * float(sigma_px) ** 2)
    for k, (px, py) in enumerate(pts):
        if not (math.isfinite(px) and math.isfinite(py)):
            continue
        # separable: exp(-(dx^2 + dy^2) c) = exp(-dx^2 c) * exp(-dy^2 c)
        gx = np.exp(-((xs - px) ** 2) * inv)
        gy = np.exp(-((ys - py) ** 2) * inv)
        out[..., k] = np.outer(gy, gx)
    return out


# --- loss ---------------------------------------------------------------------------------------------


def heatmap_loss(y_true, y_pred, foreground_weight: float = FOREGROUND_WEIGHT):
    """Per-example foreground-weighted MSE, shape (batch,): mean over (H, W, C) of ``(1 + w t) (p - t)^2``.

    Why not plain MSE: the peaks cover a tiny fraction of the image (a sigma-3 Gaussian has an
    "area" of 2 pi sigma^2 ~ 57 px out of 98 304 at 256x384), so with plain MSE an all-zero output
    already scores within ~3e-4 of a perfect one, the gradient towards the peaks is tiny compared to the
    noise of the background pixels, and networks settle on predicting zeros (the failure this project
    started from: a final loss equal to the all-zero output's). Weighting each pixel by
    ``1 + w * y_true`` (w = :data:`FOREGROUND_WEIGHT`) makes the peak pixels count ~11x more, so the
    all-zero output costs ``mean(t^2 + w t^3)`` (about 8x plain MSE's for sigma 3, see
    :func:`zero_output_loss`) and the gradient at a zero output, ``-2 (1 + w t) t / (H W C)``, points
    straight at the peaks; background pixels keep weight 1, so false peaks are still penalised.

    The weight depends on the target only (no gradient flows through it), so the loss stays a convex
    quadratic in the prediction with its minimum at ``y_pred == y_true``. Values are small in absolute
    terms (the mean runs over every pixel); compare them with :func:`zero_output_loss`.
    """
    from keras import ops

    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    weight = 1.0 + foreground_weight * y_true
    return ops.mean(weight * ops.square(y_pred - y_true), axis=(1, 2, 3))


def zero_output_loss(y_true, foreground_weight: float = FOREGROUND_WEIGHT):
    """(batch,) :func:`heatmap_loss` of an all-zero prediction: a training loss near this means collapse."""
    from keras import ops

    return heatmap_loss(y_true, ops.zeros_like(ops.cast(y_true, "float32")), foreground_weight)


# --- decoding -----------------------------------------------------------------------------------------


def _spread_factor(spread_px: float, sigma_px: float) -> float:
    """1 while the fitted spread is within [sigma/2, 2 sigma]; falls off quadratically outside."""
    if not math.isfinite(spread_px):
        return 0.0
    ratio = spread_px / sigma_px
    if ratio > 2.0:
        return (2.0 / ratio) ** 2
    if ratio < 0.5:
        return (ratio / 0.5) ** 2
    return 1.0


def _fit_log_parabola(win: np.ndarray, dx: np.ndarray, dy: np.ndarray, peak: float, radius: int):
    """Weighted LS fit of ``log f = a + b x + c y + d x^2 + e y^2 + g x y`` (exact for a Gaussian).

    Returns (offset_x, offset_y, spread_px) relative to the arg-max, or None if the fit is degenerate
    (too few points, not a maximum, or an offset outside the window).
    """
    m = win > FIT_MIN_FRACTION * peak
    if m.sum() < 6 or len(np.unique(dx[m])) < 3 or len(np.unique(dy[m])) < 3:
        return None
    v = win[m]
    x, y = dx[m], dy[m]
    a = np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=1)
    # weights v^2 (var(log v) ~ var(v) / v^2): multiply each row by v
    coef, *_ = np.linalg.lstsq(a * v[:, None], np.log(v) * v, rcond=None)
    _, b, c, d, e, g = coef
    hess = np.array([[2 * d, g], [g, 2 * e]])
    # a maximum, and not a flat one (spread under ~100 px): else the offset is numerical noise
    lam = np.linalg.eigvalsh(-hess)
    if not (np.all(np.isfinite(lam)) and lam.min() > 1e-4):
        return None
    off = -np.linalg.solve(hess, np.array([b, c]))
    if not np.all(np.isfinite(off)) or np.any(np.abs(off) > radius + 0.5):
        return None
    # log f = -(u^2 / (2 s^2)) along each principal axis: eigenvalues of -hess are 1 / s^2
    spread = float(1.0 / math.sqrt(lam.min()))
    return float(off[0]), float(off[1]), spread


def _decode_channel(
    ch: np.ndarray, sigma_px: float, radius: int, at: tuple[int, int] | None = None
) -> tuple[float, float, float]:
    """(x, y, confidence) of one (H, W) heatmap channel: its arg-max refined, or the peak at ``at``
    ((row, col) of a local maximum) refined."""
    h, w = ch.shape
    finite = np.where(np.isfinite(ch), ch, -np.inf)
    if at is None:
        r, c = divmod(int(np.argmax(finite)), w)
    else:
        r, c = int(at[0]), int(at[1])
    peak = float(finite[r, c])
    if not math.isfinite(peak) or peak <= 1e-6:
        return float(c), float(r), 0.0
    r0, r1 = max(r - radius, 0), min(r + radius + 1, h)
    c0, c1 = max(c - radius, 0), min(c + radius + 1, w)
    win = np.nan_to_num(ch[r0:r1, c0:c1].astype(np.float64), nan=0.0, posinf=peak, neginf=0.0)
    dy, dx = np.mgrid[r0 - r : r1 - r, c0 - c : c1 - c].astype(np.float64)

    fit = _fit_log_parabola(win, dx, dy, peak, radius)
    if fit is not None:
        ox, oy, spread = fit
    else:
        # local soft-argmax over the window, above its floor
        wts = np.maximum(win - max(float(win.min()), 0.0), 0.0)
        total = float(wts.sum())
        if total <= 0:
            ox, oy, spread = 0.0, 0.0, math.inf
        else:
            ox = float((wts * dx).sum() / total)
            oy = float((wts * dy).sum() / total)
            var = float((wts * ((dx - ox) ** 2 + (dy - oy) ** 2)).sum() / total) / 2.0
            spread = math.sqrt(var)
    x, y = c + ox, r + oy

    # ambiguity: the strongest response away from this peak (e.g. a second candidate position)
    excl = 3.0 * min(max(spread, sigma_px), 3.0 * sigma_px)
    yy, xx = np.ogrid[0:h, 0:w]
    far = (xx - x) ** 2 + (yy - y) ** 2 > excl**2
    second = float(np.max(finite[far])) if far.any() else 0.0
    ambiguity = min(max(second / peak, 0.0), 1.0)

    conf = min(max(peak, 0.0), 1.0) * _spread_factor(spread, sigma_px) * (1.0 - ambiguity)
    return x, y, float(min(max(conf, 0.0), 1.0))


def decode_heatmaps(
    hm: np.ndarray, sigma_px: float = HEATMAP_SIGMA_PX, radius: int = DECODE_RADIUS
) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel points and confidences of an (H, W, N) heatmap (N = 4: bpd1, bpd2, ofd1, ofd2).

    Returns ``(points, conf)``: points (N, 2) float64 (x, y) in input pixels, conf (N,) float64 in
    [0, 1]. Position: arg-max, refined by a weighted least-squares fit of a 2-D parabola to the log of
    the values above 10 % of the peak in the (2 radius + 1)^2 window around it (exact for a Gaussian,
    also when the window is cut by the border); a local soft-argmax where that fit is degenerate.

    Confidence = ``clip(peak, 0, 1) * spread_factor * (1 - ambiguity)``:

    * peak: the maximum value (targets peak at 1);
    * spread_factor: 1 while the fitted Gaussian's widest spread is within [sigma/2, 2 sigma] of the
      training ``sigma_px``, falling off as (2 sigma / spread)^2 beyond (and 0 for a flat map);
    * ambiguity: the highest value further than 3 sigma from the peak, relative to the peak (a second
      candidate position, e.g. the other end of the same axis).

    An empty or flat map therefore gets confidence 0.
    """
    arr = np.asarray(hm)
    if arr.ndim != 3:
        raise ValueError(f"expected an (H, W, N) heatmap, got shape {arr.shape}")
    n = arr.shape[-1]
    pts = np.zeros((n, 2), dtype=np.float64)
    conf = np.zeros(n, dtype=np.float64)
    for k in range(n):
        x, y, cf = _decode_channel(np.asarray(arr[..., k], dtype=np.float64), float(sigma_px), int(radius))
        pts[k] = (x, y)
        conf[k] = cf
    if n == 4:
        for (a, b), (c, d) in zip(PAIRS, PAIRS[::-1], strict=True):
            # a head's diameters differ by well under 2x (cephalic index ~0.7-0.9)
            sep = max(PAIR_MIN_SEPARATION_SIGMAS * sigma_px, 0.5 * float(np.hypot(*(pts[c] - pts[d]))))
            if np.hypot(*(pts[a] - pts[b])) < sep:
                joint = _decode_collapsed_pair(arr[..., a], arr[..., b], float(sigma_px), int(radius), sep)
                if joint is None:
                    continue
                new_len = float(np.hypot(*(joint[0] - joint[1])))
                other = float(np.hypot(*(pts[c] - pts[d])))
                # kept only where it resolves a collapse (a clean short pair decodes to itself) into a
                # head-shaped pair of pairs
                longer = new_len > np.hypot(*(pts[a] - pts[b])) + 1.0
                if longer and min(new_len, other) / max(new_len, other) >= MIN_CEPHALIC_INDEX:
                    pts[a], pts[b] = joint
                    conf[a] = conf[b] = min(conf[a], conf[b])
        # the BPD is the head's short axis by definition: head-shaped pairs decoded the other way round
        # are swapped (a pair still collapsed is left for the low-confidence flag)
        bpd_len, ofd_len = np.hypot(*(pts[0] - pts[1])), np.hypot(*(pts[2] - pts[3]))
        if bpd_len > ofd_len and ofd_len / bpd_len >= MIN_CEPHALIC_INDEX:
            pts = pts[[2, 3, 0, 1]]
            conf = conf[[2, 3, 0, 1]]
    return pts, conf


def _decode_collapsed_pair(
    ch_a: np.ndarray, ch_b: np.ndarray, sigma_px: float, radius: int, sep_px: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """Both ends of a pair from the sum of its two maps: the strongest peak, and the strongest local
    maximum at least ``sep_px`` away from it, in canonical order. None when there is no such second peak
    (then the per-channel points stand)."""
    total = np.nan_to_num(np.asarray(ch_a, np.float64) + np.asarray(ch_b, np.float64), nan=0.0)
    x1, y1, _ = _decode_channel(total, sigma_px, radius)
    h, w = total.shape
    yy, xx = np.ogrid[0:h, 0:w]
    size = 2 * radius + 1
    t32 = total.astype(np.float32)
    local_max = t32 >= cv2.dilate(t32, np.ones((size, size), np.uint8))
    candidates = local_max & (total > 1e-6) & ((xx - x1) ** 2 + (yy - y1) ** 2 >= sep_px**2)
    if not candidates.any():
        return None
    r, c = divmod(int(np.argmax(np.where(candidates, total, -np.inf))), w)
    x2, y2, _ = _decode_channel(total, sigma_px, radius, at=(r, c))
    p, q = canonical_pair((x1, y1), (x2, y2))
    return np.array(p, np.float64), np.array(q, np.float64)


def decode_batch(
    hms: np.ndarray, sigma_px: float = HEATMAP_SIGMA_PX, radius: int = DECODE_RADIUS
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`decode_heatmaps` over a batch (B, H, W, N): points (B, N, 2) and conf (B, N)."""
    arr = np.asarray(hms)
    if arr.ndim != 4:
        raise ValueError(f"expected a (B, H, W, N) batch of heatmaps, got shape {arr.shape}")
    out = [decode_heatmaps(a, sigma_px, radius) for a in arr]
    if not out:
        return np.zeros((0, arr.shape[-1], 2)), np.zeros((0, arr.shape[-1]))
    return np.stack([p for p, _ in out]), np.stack([c for _, c in out])
