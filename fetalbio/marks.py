"""A machine's grey HC trace (and the calipers and text drawn with it) taken out of a grey scan.

A sonographer's screen capture often shows the machine's own measurement: an ellipse traced round the
skull, with caliper crosses and a text box. :mod:`fetalbio.colour` takes out such marks when they are
coloured; drawn white or grey they are the scan's own grey, and the models measured the traced ellipse
(validation scans with a grey trace 0.92-1.08 times the head: fused HC MAE 2.64 mm, clean 1.92;
docs/robustness.md). What tells a drawn line from an echo is that a machine draws it in one grey value:
a line of pixels of the same value, 1-3 px wide, on an ellipse or a straight line to a pixel, and
brighter than the echo beside it. Speckle never repeats one value along a line, and the skull's echo is
wider and ragged. Such lines, when together they trace most of an ellipse, are filled in from the scan
around them (OpenCV inpainting), so the models measure the skull, not the trace.

Two passes: pixels of exactly one value (a lossless capture), then, when that finds none, values within
:data:`LOSSY_TOLERANCE` grey levels of each other (a JPEG capture, whose compression spreads a line's
value). A capture enlarged with its pixels repeated draws the trace 2-6 px wide, and a line that wide
holds areas of one value: such an image is searched at its own scale (each block one pixel) and, for a
trace drawn over it, at full scale; any other large image at half scale too. Only 8-bit values: a 16-bit
scan is a machine's raw data, not a capture with marks burnt in, unless every value is an 8-bit one
stored in 16 bits (times 257, 256 or 1). A 1 px antialiased trace varies too much along its length and
is left as it is (docs/robustness.md).
"""

from __future__ import annotations

import cv2
import numpy as np

from fetalbio.colour import INPAINT_RADIUS_PX
from fetalbio.geometry import Ellipse, radial_distances_px

MARK_RISE = 20  # grey levels a mark's pixel stands above the median of the window round it
RISE_WINDOW_PX = 9  # that window's side: a 3 px line (OpenCV's thickness 2) across it is under half of it
MARK_MIN_PIECE_PX = 25  # a piece of line of one value has at least this many pixels (speckle: fewer)
MARK_PURITY = 0.9  # share of a piece's pixels within the tolerance of its median value
LOSSY_TOLERANCE = 12  # grey levels, the second pass (JPEG quality 90: 39 of 42 traces found; 20: a false one)
CALIPER_SPREAD_PX = 1.0  # a straight piece (a caliper's line or cross, a text stroke): RMS off its line
CALIPER_REACH_PX = 8  # a caliper's cross sits on the trace: its pixels' median distance from the ellipse
# 75th percentile of a piece's distance (px) to its own line or ellipse (a 3 px wide line: 1.1)
MARK_MAX_SPREAD_PX = 1.5
TRACE_MIN_LENGTH_FRAC = 0.5  # of the shorter side: the pixels of one value's pieces together (traces: 0.9-9)
TRACE_MIN_GREY = 100  # a machine draws its trace to be seen on the dark scan (a fan's dark rim: 36)
TRACE_MIN_SIDE_FRAC = 0.1  # of the shorter side: their box's shorter side (not a ruler along an edge)
# share of the angles round an ellipse that its pieces trace within TRACE_BAND_PX (drawn traces on the
# validation split: 0.43-1; a speckled or saturated echo's pieces of one value: up to 0.21)
TRACE_MIN_COVER = 0.35
TRACE_BAND_PX = 1.5
# grown round the pixels found before inpainting: a line's antialiased rim (exact pass), JPEG ringing
INPAINT_GROW_PX = (2, 3)
# an image at least this large is also searched at half scale (a capture enlarged 1.5x or smoothly; HC18's
# 800x540 scans are not: searching them at half scale would cost a third more for traces not there)
HALF_SCALE_MIN_SIDE_PX = 720
# a capture enlarged with its pixels repeated: neighbours differ in at least this share of pairs where its
# blocks end, and within blocks at most this fraction as often (JPEG 90 blurs blocks a little; in a scan
# all phases differ alike)
REPEAT_MIN_CHANGE = 0.03
REPEAT_WITHIN = 0.25


def _equal_neighbours(g: np.ndarray, tol: int) -> np.ndarray:
    """``(H, W)`` uint8: how many of each pixel's 8 neighbours lie within ``tol`` grey levels of it."""
    p = cv2.copyMakeBorder(g, 1, 1, 1, 1, cv2.BORDER_REPLICATE)
    h, w = g.shape
    n = np.zeros(g.shape, np.uint8)
    for dy in range(3):
        for dx in range(3):
            if dy != 1 or dx != 1:
                n += cv2.absdiff(p[dy : dy + h, dx : dx + w], g) <= tol
    return n


def _rises(g: np.ndarray, ys: np.ndarray, xs: np.ndarray, r: int = RISE_WINDOW_PX // 2) -> np.ndarray:
    """Whether each pixel stands :data:`MARK_RISE` above the median of the (2r+1)^2 window round it
    (the border replicated), computed at those pixels only: the median is at most ``v`` when at least
    half the window is, which one gather per window pixel counts (a 7x7 median filter costs 12 ms a scan)."""
    p = cv2.copyMakeBorder(g, r, r, r, r, cv2.BORDER_REPLICATE).ravel()
    stride = g.shape[1] + 2 * r
    at = ys.astype(np.intp) * stride + xs  # the window's top-left corner in the padded image
    limit = g[ys, xs].astype(np.int16) - MARK_RISE
    below = np.zeros(len(ys), np.uint8)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            below += p[at + (dy * stride + dx)] <= limit
    return below > (2 * r + 1) ** 2 // 2


def _radial_distance(e: tuple, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """:func:`fetalbio.geometry.radial_distances_px` of points from an OpenCV ellipse ``((cx, cy), (d1,
    d2), angle_deg)`` (a 1-2 px tolerance needs no more than the distance along the ray)."""
    (cx, cy), (d1, d2), ang = e
    ellipse = Ellipse.from_axes(cx, cy, max(d1 / 2, 1e-3), max(d2 / 2, 1e-3), ang)
    return radial_distances_px(ellipse, np.stack([xs, ys], 1))


def _spread_px(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float]:
    """How far (px) a piece's pixels lie from the straight line through them (RMS) and from the ellipse
    through them (75th percentile; inf under 6 pixels, and not fitted when the line is close enough)."""
    p = np.stack([xs, ys], 1).astype(np.float32)
    line = float(np.sqrt(max(np.linalg.eigvalsh(np.cov(p.T))[0], 0.0)))
    if len(p) < 6 or line <= MARK_MAX_SPREAD_PX:  # the ellipse fit is most of the time on busy screens
        return line, float("inf")
    return line, float(np.quantile(_radial_distance(cv2.fitEllipse(p), p[:, 0], p[:, 1]), 0.75))


def _ellipse_fit(xs: np.ndarray, ys: np.ndarray, start: np.ndarray) -> tuple[float, np.ndarray]:
    """(share of the 360 one-degree angles round the ellipse fitted to the points (first to those of
    ``start``, the curved pieces, then twice to those within :data:`TRACE_BAND_PX` or the nearer half)
    at which a point within the band lies, each point's distance (px) from that ellipse)."""
    xs, ys = xs.astype(np.float32), ys.astype(np.float32)
    near = start if start.sum() >= 6 else np.ones(len(xs), bool)  # curved pieces first: a ruler is no arc
    d = np.full(len(xs), np.inf)
    for _ in range(3):
        if near.sum() < 6:
            return 0.0, d
        e = cv2.fitEllipse(np.stack([xs[near], ys[near]], 1))
        d = _radial_distance(e, xs, ys)
        near = d <= max(TRACE_BAND_PX, float(np.median(d)))
    (cx, cy), _, _ = e
    on = d <= TRACE_BAND_PX
    angles = np.degrees(np.arctan2(ys[on] - cy, xs[on] - cx)).astype(int) % 360
    return len(np.unique(angles)) / 360, d


def _pieces(
    g: np.ndarray, tol: int, skip: np.ndarray | None = None
) -> tuple[np.ndarray, dict[int, list[int]], np.ndarray, set[int]]:
    """(labels, {grey value: [label of each line piece of that value, within ``tol``]}, component stats,
    the labels of straight pieces); pixels where ``skip`` is True are no part of a piece."""
    k5 = np.ones((5, 5), np.uint8)
    flat = cv2.subtract(cv2.dilate(g, k5), cv2.erode(g, k5)) <= tol  # a 5x5 of one value: an area
    thin = (_equal_neighbours(g, tol) >= 2) & (cv2.dilate(flat.astype(np.uint8), k5) == 0)
    low = cv2.erode(g, np.ones((RISE_WINDOW_PX,) * 2, np.uint8))
    thin &= cv2.subtract(g, low) >= MARK_RISE  # a first cut: above the window's darkest pixel
    if skip is not None:
        thin &= ~skip
    ys, xs = np.nonzero(thin)
    thin[ys, xs] = _rises(g, ys, xs)
    n, lab, st, _ = cv2.connectedComponentsWithStats(thin.astype(np.uint8), connectivity=8)
    groups: dict[int, list[int]] = {}
    straight = set()
    for i in np.nonzero(st[1:, cv2.CC_STAT_AREA] >= MARK_MIN_PIECE_PX)[0] + 1:
        x, y, bw, bh, area = st[i]
        ys, xs = np.nonzero(lab[y : y + bh, x : x + bw] == i)
        values = g[y + ys, x + xs]
        value = int(np.median(values))
        line, curve = _spread_px(xs, ys)
        pure = np.count_nonzero(np.abs(values.astype(np.int16) - value) <= tol) >= MARK_PURITY * area
        if pure and min(line, curve) <= MARK_MAX_SPREAD_PX:
            groups.setdefault(value, []).append(int(i))
            if line <= CALIPER_SPREAD_PX and max(bw, bh) ** 2 >= 4 * area:  # a line, not a speck
                straight.add(int(i))
    if tol:  # one line's pieces differ by a few grey levels: values within 2 tol of a group's first join it
        merged: dict[int, list[int]] = {}
        first = -256
        for v in sorted(groups):
            if v - first > 2 * tol:
                first = v
            merged.setdefault(first, []).extend(groups[v])
        groups = merged
    return lab, groups, st, straight


def trace_mask(grey: np.ndarray, tol: int = 0, skip: np.ndarray | None = None) -> np.ndarray:
    """``(H, W)`` bool: the pixels of a drawn trace in an 8-bit grey scan (all False when there is none),
    its pixels' values within ``tol`` grey levels of each other.

    A trace is the pieces of line of one grey value (at least :data:`TRACE_MIN_GREY`) that together are
    long (:data:`TRACE_MIN_LENGTH_FRAC` of the shorter side), spread over both directions, and trace an
    ellipse over at least :data:`TRACE_MIN_COVER` of its angles. Its pieces on that ellipse and the
    straight ones within :data:`CALIPER_REACH_PX` of it (calipers) are taken; others of the same value
    (a saturated echo's bits when it is white, text) are not.
    """
    h, w = grey.shape[:2]
    none = np.zeros((h, w), bool)
    if grey.ndim != 2 or grey.dtype != np.uint8 or min(h, w) < 32:
        return none
    lab, groups, st, straight = _pieces(grey, tol, skip)
    keep = np.zeros(len(st), bool)
    side = min(h, w)
    for value, ids in groups.items():
        if value < TRACE_MIN_GREY:
            continue
        s = st[ids]
        x0, y0 = s[:, 0].min(), s[:, 1].min()
        x1, y1 = (s[:, 0] + s[:, 2]).max(), (s[:, 1] + s[:, 3]).max()
        if s[:, cv2.CC_STAT_AREA].sum() < TRACE_MIN_LENGTH_FRAC * side:
            continue
        if min(x1 - x0, y1 - y0) < TRACE_MIN_SIDE_FRAC * side:
            continue
        crop = lab[y0:y1, x0:x1]
        ys, xs = np.nonzero(np.isin(crop, ids))
        which = crop[ys, xs]
        cover, d = _ellipse_fit(xs + x0, ys + y0, ~np.isin(which, list(straight)))
        if cover < TRACE_MIN_COVER:
            continue
        for i in ids:  # the trace's pieces and the calipers on it; not an echo's bits of the same grey
            off = float(np.median(d[which == i]))
            keep[i] = off <= TRACE_BAND_PX or (i in straight and off <= CALIPER_REACH_PX)
    return keep[lab] if keep.any() else none


def _eight_bit(grey: np.ndarray) -> tuple[np.ndarray, int] | None:
    """(the 8-bit values of ``grey``, the factor they were stored with), or None when it has others."""
    if grey.ndim != 2 or grey.dtype not in (np.uint8, np.uint16):
        return None
    if grey.dtype == np.uint8:
        return grey, 1
    for factor in (257, 256):  # PNG's 8 -> 16-bit scaling, a shift by 8 bits
        if not np.any(grey % factor):
            return (grey // factor).astype(np.uint8), factor
    return (grey.astype(np.uint8), 1) if grey.max() <= 255 else None  # the 8-bit values as they are


def _repeated(g: np.ndarray) -> tuple[int, int, int]:
    """(k, row, column): ``g`` is made of k x k blocks of one grey (within JPEG's few levels) from that
    row and column on: a capture enlarged k times with its pixels repeated; (1, 0, 0) when it is not.

    Along a row of such an image a pixel differs from its right neighbour mostly where a block ends, so
    one of the k column phases stands out; in a scan all phases look alike. Every 7th row and column is
    enough. The share of pairs that differ is compared, not of those that match: a scan's black and
    smooth areas match at block ends too (HC18: 77-88 % of pairs)."""
    rows, cols = g[::7].astype(np.int16), g[:, ::7].T.astype(np.int16)
    along = [np.abs(np.diff(a, axis=1)) > 2 for a in (rows, cols)]  # each pixel vs its next, both ways
    for k in (4, 3, 2):  # 4 first: a 4x image is a 2x one twice over
        start = []
        for differ in along:
            if differ.shape[0] == 0 or differ.shape[1] < 2 * k:
                break
            share = np.array([differ[:, o::k].mean() for o in range(k)])
            end = int(share.argmax())  # the phase where blocks end
            if share[end] < REPEAT_MIN_CHANGE or np.delete(share, end).max() > REPEAT_WITHIN * share[end]:
                break
            start.append((end + 1) % k)
        else:
            return k, start[1], start[0]
    return 1, 0, 0


def _blocks(g: np.ndarray, k: int, y0: int, x0: int) -> tuple[np.ndarray, tuple[slice, slice]]:
    """``g``'s k x k blocks from row ``y0``, column ``x0`` on, as ``(rows, k, columns, k)``, and the
    part of ``g`` they cover (a cut block at the far edges is left out)."""
    sh, sw = (g.shape[0] - y0) // k, (g.shape[1] - x0) // k
    part = (slice(y0, y0 + sh * k), slice(x0, x0 + sw * k))
    return g[part].reshape(sh, k, sw, k), part


def _blown_up(small: np.ndarray, shape: tuple[int, int], k: int, part: tuple[slice, slice]) -> np.ndarray:
    """A mask of the blocks back in ``shape``: each pixel of ``small`` a k x k block of ``part``."""
    out = np.zeros(shape, bool)
    out[part] = np.repeat(np.repeat(small, k, 0), k, 1)
    return out


def _picture_blocks(g: np.ndarray, k: int, y0: int, x0: int) -> np.ndarray:
    """``(H, W)`` bool: the pixels of ``g``'s k x k blocks of one grey that no pixel of that grey touches
    from outside the block: the enlarged picture itself (its repeated noise made the search slow), not a
    line drawn over it, whose blocks touch others of its grey (a 3 px line covers whole 2x2 blocks)."""
    blocks, part = _blocks(g, k, y0, x0)
    uniform = (blocks == blocks[:, :1, :, :1]).all(axis=(1, 3))
    ones = np.ones((k, k), np.float32)
    inside = cv2.filter2D(ones, -1, np.ones((3, 3), np.float32), borderType=cv2.BORDER_CONSTANT) - 1
    equal = _equal_neighbours(g, 0)[part].reshape(blocks.shape)  # 8-neighbours of the very same grey
    touched = (equal > inside[None, :, None, :]).any(axis=(1, 3))  # more than its own block gives it
    return _blown_up(uniform & ~touched, g.shape, k, part)


def _find(g: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: the pixels to fill in in ``g`` (8-bit): the trace's and :data:`INPAINT_GROW_PX`
    round them (times the view's scale); all False when there is no trace. Exactly one grey, then
    :data:`LOSSY_TOLERANCE`, in views of the image:

    * a capture enlarged with its pixels repeated: both at full scale with the picture's own blocks left
      out (:func:`_picture_blocks`: a speckled scan so enlarged repeats its noise in every block and the
      search took 1.5 s at 2x), for a trace drawn over the enlarged picture, and at its own scale (each
      block one pixel), for one enlarged with it; the pixels either finds;
    * else at full scale, then at half scale on an image of :data:`HALF_SCALE_MIN_SIDE_PX` or more (a
      capture enlarged smoothly or 1.5x)."""
    h, w = g.shape
    none = np.zeros((h, w), bool)
    if min(h, w) < 32:
        return none
    k, y0, x0 = _repeated(g)
    if k > 1:
        views = [(1, 0, 0, True), (k, y0, x0, False)]
    else:
        views = [(1, 0, 0, False)] + [(2, 0, 0, False)] * (min(h, w) >= HALF_SCALE_MIN_SIDE_PX)
    found = []
    for scale, v0, u0, drawn_over in views:
        b, p = _blocks(g, scale, v0, u0)
        view = g if scale == 1 else cv2.resize(g[p], (b.shape[2], b.shape[0]), interpolation=cv2.INTER_AREA)
        skip = _picture_blocks(g, k, y0, x0) if drawn_over else None
        for tol, grow in zip((0, LOSSY_TOLERANCE), INPAINT_GROW_PX, strict=True):
            mask = trace_mask(view, tol, skip)
            if mask.any():
                mask = mask if scale == 1 else _blown_up(mask, (h, w), scale, p)
                side = 2 * grow * scale + 1
                found.append(cv2.dilate(mask.astype(np.uint8), np.ones((side, side), np.uint8)) > 0)
                break
        if found and k == 1:
            break
    # a capture with repeated pixels: what either view found (a trace enlarged with it, one drawn over it)
    return np.logical_or.reduce(found) if found else none


def remove_trace(grey: np.ndarray) -> tuple[np.ndarray, bool]:
    """(the scan with a drawn grey trace filled in from around it, whether one was found).

    ``grey``: ``(H, W)`` scan, uint8 (or uint16 holding 8-bit values, returned in its own scaling);
    anything else comes back as it is. The pixels found (:func:`_find`) and :data:`INPAINT_GROW_PX` round
    them are inpainted (Telea).
    """
    eight = _eight_bit(grey)
    if eight is None:
        return grey, False
    g, factor = eight
    region = _find(g)
    if not region.any():
        return grey, False
    filled = cv2.inpaint(g, region.astype(np.uint8), INPAINT_RADIUS_PX, cv2.INPAINT_TELEA)
    return (filled if grey.dtype == np.uint8 else filled.astype(grey.dtype) * grey.dtype.type(factor)), True
