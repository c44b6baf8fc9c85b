"""Finding the ultrasound image inside a full-screen capture (dark UI, text, bars, depth ticks).

The ultrasound image is the one large region of speckle texture; UI is flat with thin text. The local
standard deviation (a 7x7 window) is thresholded, thin structures (text, ticks, calipers) are removed by
an opening, and the bounding box of the largest remaining region is the image. A scan that is already
just the image (its textured box covers most of it) is left whole, so clean scans are untouched.

A scan turned by an angle that is not a quarter turn (:func:`find_tilt`) sits in a larger canvas with
flat-filled corners; its frame is found so that the pipeline can square it back to the axes
(:func:`fetalbio.preprocess.upright`) before the models, which learned upright scans, see it. On the 1133
HC18 scans (training and test sets) as given it finds no tilt; on 263 turned copies (some also JPEG-
compressed, speckled or inside a capture) it finds the angle to 0.03 degrees (median; 90th percentile
0.3) and misses 5 (`tools/tilt_check.py`). A scan turned inside its own canvas, corners cut off
(:func:`find_tilt_in_place`), is squared back the same way: no false find on the 1133 scans as given
nor on their darkened copies (gamma 1.6); of 233 copies turned in place by 8 degrees or more (some
JPEG-compressed or speckled) it finds 198, the angle to 0.06 degrees (median; 90th percentile 0.6,
worst 2.4), and leaves 35 as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

WORK_SIDE = 400  # the search runs on a copy at most this many pixels a side (cost independent of size)
TEXTURE_SD = 3.0  # grey levels (of 255): tissue speckle is above, flat UI (bars, background) below
OPEN_FRAC = 0.04  # opening size, as a fraction of the short side: removes text lines and ticks
MIN_AREA_FRAC = 0.08  # a smaller textured region is no scan: keep the whole image
WHOLE_FRAC = 0.6  # a box covering more of the image than this: the image is the scan (HC18: >0.63 in 95 %)
PIECE_FRAC = 0.05  # a textured piece this large next to the largest belongs to the scan (0.15 until
# this release: on dark scans it left out the far skull, a crop that cut the head)
PAD_FRAC = 0.08  # margin kept around the box (of the box size): a missed dark edge of the scan stays in


def _texture(small: np.ndarray) -> np.ndarray:
    x = small.astype(np.float32)
    mean = cv2.blur(x, (7, 7))
    var = cv2.blur(x * x, (7, 7)) - mean * mean
    return np.sqrt(np.maximum(var, 0.0))


def _small(pixels: np.ndarray) -> tuple[np.ndarray, float]:
    """An 8-bit copy at most :data:`WORK_SIDE` pixels a side (searches cost the same on any size) and
    its scale (small / original)."""
    h, w = pixels.shape[:2]
    img = pixels
    if img.dtype != np.uint8:
        img = cv2.normalize(img.astype(np.float32), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    scale = min(1.0, WORK_SIDE / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA), scale


def find_image_region(pixels: np.ndarray) -> tuple[int, int, int, int] | None:
    """(y0, x0, h, w) of the ultrasound image in ``pixels`` (H, W, any dtype), in its pixels; None when
    the whole image is the scan (or no clear region is found)."""
    h, w = pixels.shape[:2]
    small, scale = _small(pixels)
    textured = (_texture(small) > TEXTURE_SD).astype(np.uint8)
    k = max(3, int(OPEN_FRAC * min(small.shape)) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    textured = cv2.morphologyEx(textured, cv2.MORPH_OPEN, kernel)
    textured = cv2.morphologyEx(textured, cv2.MORPH_CLOSE, kernel)
    n, _, stats, _ = cv2.connectedComponentsWithStats(textured, connectivity=8)
    largest = int(stats[1:, cv2.CC_STAT_AREA].max()) if n > 1 else 0
    # the scan's pieces: large next to the largest (a block of text is not)
    least = max(0.01 * small.size, PIECE_FRAC * largest)
    big = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= least]
    if not big:
        return None
    area = int(sum(stats[i, cv2.CC_STAT_AREA] for i in big))
    x = int(min(stats[i, cv2.CC_STAT_LEFT] for i in big))
    y = int(min(stats[i, cv2.CC_STAT_TOP] for i in big))
    bw = int(max(stats[i, cv2.CC_STAT_LEFT] + stats[i, cv2.CC_STAT_WIDTH] for i in big)) - x
    bh = int(max(stats[i, cv2.CC_STAT_TOP] + stats[i, cv2.CC_STAT_HEIGHT] for i in big)) - y
    if area < MIN_AREA_FRAC * small.size or bw * bh > WHOLE_FRAC * small.size:
        return None
    pad_x, pad_y = PAD_FRAC * bw, PAD_FRAC * bh
    x0 = max(0, int(np.floor((x - pad_x) / scale)))
    y0 = max(0, int(np.floor((y - pad_y) / scale)))
    x1 = min(w, int(np.ceil((x + bw + pad_x) / scale)))
    y1 = min(h, int(np.ceil((y + bh + pad_y) / scale)))
    return y0, x0, y1 - y0, x1 - x0


def find_region(pixels: np.ndarray) -> tuple[int, int, int, int] | None:
    """(y0, x0, h, w) of the part of ``pixels`` the models should see, or None (all of it): the picture
    a capture shows, exactly, when it is one (:func:`find_picture`), else the textured region with its
    margin (:func:`find_image_region`). The one region the pipeline uses."""
    return locate(pixels)[0]


def locate(
    pixels: np.ndarray,
) -> tuple[tuple[int, int, int, int] | None, tuple[int, int, int, int] | None, bool]:
    """(region, picture, dual): :func:`find_region`'s answer, the box of the picture a capture's screen
    shows, solid or not (:func:`_picture`; None when there is none), found once for both the region and
    the search for a scan shown turned inside it (:func:`find_tilt_in_picture`), and whether the image
    shows two scans (a dual view: the region is then the left or top one, :func:`find_panels`)."""
    textured = find_image_region(pixels)
    pic = _picture(pixels, textured or (0, 0, *pixels.shape[:2]))
    region = textured if pic is None or (pic[1] < PICTURE_SOLID and not pic[2]) else pic[0]
    panel = find_panels(pixels, region)  # two images in one box: a dual view's panels touching
    if panel is not None:
        return panel, None, True
    return region, None if pic is None else pic[0], pic is not None and pic[2]


def find_panels(
    pixels: np.ndarray, box: tuple[int, int, int, int] | None
) -> tuple[int, int, int, int] | None:
    """(y0, x0, h, w) of the LEFT (or top) panel when ``box`` (None: the whole image) shows two images
    side by side (or one above the other), as an ultrasound machine's dual view does; None when it
    shows one.

    Two panels: the box is at least :data:`DUAL_MIN_ASPECT` times as wide as tall (or as tall as wide),
    a band of columns (rows) in its middle third is flat from top to bottom (one grey within
    :data:`DUAL_FLAT_TOL`: the gap or line between the panels and their dark margins), and there is
    texture on both sides of it. One ultrasound image has tissue across its middle: no HC18 scan, as
    given or in 14 perturbations (captures, turns, noise, darker grey maps), splits (docs/robustness.md)."""
    y0, x0, h, w = box if box is not None else (0, 0, *pixels.shape[:2])
    for axis in (1, 0):
        long_, short = (w, h) if axis == 1 else (h, w)
        if long_ < DUAL_MIN_ASPECT * short:
            continue
        crop = pixels[y0 : y0 + h, x0 : x0 + w]
        crop = crop if axis == 1 else crop.T
        # full resolution across (a separator line may be one pixel wide), every 2nd pixel along
        step = crop[::2] if crop.shape[0] > 64 else crop
        flat = (step.max(axis=0).astype(np.float32) - step.min(axis=0)) <= DUAL_FLAT_TOL * _grey_unit(pixels)
        n = len(flat)
        band = np.flatnonzero(flat[n // 3 : n - n // 3]) + n // 3
        if len(band) == 0:
            continue
        first, last = int(band[0]), int(band[-1])
        # texture on both sides: two images, not one image beside a strip of screen
        if (~flat[:first]).sum() < n // 4 or (~flat[last + 1 :]).sum() < n // 4:
            continue
        end = max(1, first)
        return (y0, x0, h, end) if axis == 1 else (y0, x0, end, w)
    return None


TILT_MIN_DEG = 3.0  # a smaller tilt is left alone: a resampling would cost more than the tilt does
TILT_FILL_TOL = 6  # grey levels: the canvas fill around a turned image (JPEG may move it a little)
TILT_SIDE_TOL = 0.008  # of the canvas's long side: content this far outside the turned frame still fits
TILT_MAX_OUTSIDE = 0.002  # share of content pixels allowed outside the turned frame (JPEG ringing)
TILT_MIN_COVER = 0.3  # the turned image covers at least this much of its canvas (0.44 at 45 deg, 2:1)
TILT_ILL_POSED = 0.2  # cos(2 angle) below this (within ~6 deg of 45): the canvas alone cannot size the frame
# A scan turned inside its own canvas (PIL's ``rotate`` and OpenCV's ``warpAffine`` keep the size by
# default; corners cut off, flat fill in the canvas's corners) is found from the cut edges: straight
# borders of the content, at the frame's angle, on the sides of a rectangle the canvas's size turned
# about its centre (:func:`find_tilt_in_place`). Thresholds set on HC18 (``tools/tilt_check.py``).
IN_PLACE_MIN_DEG = 8.0  # a smaller turn is left alone: the models learned turns this small, and below it
# the cut corners are too small to tell from a fan's own edges (3-5 degree false finds on upright scans)
IN_PLACE_MIN_EDGE = 0.06  # of the short side: a shorter border of the content is no cut edge
IN_PLACE_SIDE_TOL = 0.012  # of the long side: a cut edge this close to the turned frame's side lies on it
IN_PLACE_MIN_SIDES = 2  # cut edges on at least this many sides of the frame: one long straight edge alone
# was sometimes a dark fan's side (2 of ~1100 darkened HC18 scans; none with two)
DUAL_MIN_ASPECT = 1.9  # two panels side by side: one ultrasound image is 1.0-1.6 times as wide as tall
DUAL_BOX_TOL = 0.15  # ... and of one size: their boxes' sides within this fraction of each other
DUAL_MIN_SHARE = 0.6  # a second picture at least this large beside the first: a dual view
DUAL_FLAT_TOL = 12  # grey levels (8-bit): the band between two panels, JPEG ringing included
PICTURE_SOLID = 0.97  # a picture's hull fills its box (a fan on the screen's colour: about 0.8)
PICTURE_FRAMED = 0.9  # of a thin ring around a picture is the screen's flat background


Frame = tuple[float, tuple[float, float], tuple[float, float]]  # angle_deg, centre_xy_px, size_wh_px


@dataclass(frozen=True)
class _Content:
    """What both turned-frame finders look at: a small copy's non-fill pixels and their convex hull."""

    h: int  # the original's size
    w: int
    scale: float  # small / original
    content: np.ndarray  # (h', w') uint8 0/1: anything but the corners' flat fill
    hull: np.ndarray  # (N, 2) float64 x y, small pixels


def _content(pixels: np.ndarray) -> _Content | None:
    """The non-fill content of ``pixels`` (H, W) and its hull, or None: the four corners are not one
    flat fill (no canvas around a turned image), or almost nothing is content."""
    small, scale = _small(pixels)
    corners = np.array([small[0, 0], small[0, -1], small[-1, 0], small[-1, -1]], np.int32)
    if int(corners.max()) - int(corners.min()) > TILT_FILL_TOL:
        return None  # a turned image leaves the same fill in all four corners
    content = (np.abs(small.astype(np.int32) - int(np.median(corners))) > TILT_FILL_TOL).astype(np.uint8)
    if int(content.sum()) < 0.05 * content.size:
        return None
    # the hull of the outer contours is the hull of every content pixel, at a fraction of the cost
    cnts, _ = cv2.findContours(content, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.convexHull(np.concatenate(cnts)).reshape(-1, 2).astype(np.float64)
    return _Content(*pixels.shape[:2], scale, content, hull)


def find_any_tilt(pixels: np.ndarray) -> Frame | None:
    """:func:`find_tilt`, else :func:`find_tilt_in_place`, looking at the content once."""
    c = _content(pixels)
    return None if c is None else (_tilt_grown(c) or _tilt_in_place(c))


def find_tilt(pixels: np.ndarray) -> Frame | None:
    """The turned image inside ``pixels`` (H, W): a whole scan rotated by an angle that is not a quarter
    turn, on a canvas grown to hold it (centred, corners touching the canvas's sides) with a flat fill.

    The angle is that of the smallest rectangle around the content (anything but the fill colour); the
    frame is the rectangle at that angle inscribed in the canvas. A scan's own dark areas (a fan on
    black) look like fill, so the test is that every content pixel lies inside that frame: a fan whose
    smallest rectangle happens to lean spills out of it and stays upright.

    Returns (angle_deg, centre_xy_px, size_wh_px) of the turned frame in ``pixels``' own pixels (pixel
    centres at integers), ``angle_deg`` in (-45, 45] the direction of its ``w`` side (image axes, y
    down), or None when the image is not turned (or by less than :data:`TILT_MIN_DEG`).
    """
    c = _content(pixels)
    return None if c is None else _tilt_grown(c)


def _tilt_grown(c: _Content) -> Frame | None:
    h, w, scale, content = c.h, c.w, c.scale, c.content
    box = cv2.boxPoints(cv2.minAreaRect(c.hull.astype(np.float32)))
    edge = box[1] - box[0]
    angle = float((np.degrees(np.arctan2(edge[1], edge[0])) + 45.0) % 90.0 - 45.0)
    if abs(angle) < TILT_MIN_DEG:
        return None
    t = np.radians(angle)
    along, across = np.array([np.cos(t), np.sin(t)]), np.array([-np.sin(t), np.cos(t)])
    frame = _inscribed(w, h, angle, box / scale, along, across)
    if frame is None or frame[0] * frame[1] < TILT_MIN_COVER * w * h:
        return None
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    q = (cv2.findNonZero(content).reshape(-1, 2) + 0.5) / scale - 0.5 - centre
    tol = TILT_SIDE_TOL * max(w, h)
    outside = (np.abs(q @ along) > frame[0] / 2 + tol) | (np.abs(q @ across) > frame[1] / 2 + tol)
    if outside.mean() > TILT_MAX_OUTSIDE:
        return None
    return angle, (float(centre[0]), float(centre[1])), frame


def find_tilt_in_place(pixels: np.ndarray) -> Frame | None:
    """The turned image inside ``pixels`` (H, W) when a scan was turned inside its own canvas: the same
    size, turned about the centre, corners cut off, a flat fill where nothing was.

    The content's convex hull has straight edges where the canvas cut the turned scan. An edge at least
    :data:`IN_PLACE_MIN_EDGE` long, leaning by :data:`IN_PLACE_MIN_DEG` or more and not on the canvas's
    border proposes an angle (edges within 1.5 degrees of it averaged, by length); the frame is the
    canvas's (W, H), or (H, W) for a turn near a quarter, at that angle about the canvas centre. It is
    accepted when every content pixel lies inside it and the hull's edges lie on at least
    :data:`IN_PLACE_MIN_SIDES` of its sides (a fan's own straight edges propose angles too, but lie on
    no such frame). Same return as :func:`find_tilt`; the frame reaches outside the canvas (its corners
    were cut off).
    """
    c = _content(pixels)
    return None if c is None else _tilt_in_place(c)


def _tilt_in_place(c: _Content) -> Frame | None:
    h, w, scale, content, p = c.h, c.w, c.scale, c.content, c.hull
    sh, sw = content.shape
    q = np.roll(p, -1, axis=0)  # hull edges p[i] -> q[i]
    length = np.hypot(*(q - p).T)
    phi = (np.degrees(np.arctan2(*(q - p).T[::-1])) + 45.0) % 90.0 - 45.0
    on_border = np.zeros(len(p), bool)
    for axis, lim in ((0, 0), (0, sw - 1), (1, 0), (1, sh - 1)):
        on_border |= (np.abs(p[:, axis] - lim) <= 1.5) & (np.abs(q[:, axis] - lim) <= 1.5)
    cand = (length >= IN_PLACE_MIN_EDGE * min(sw, sh)) & (np.abs(phi) >= IN_PLACE_MIN_DEG) & ~on_border
    centre = np.array([(sw - 1) / 2, (sh - 1) / 2])
    tol = IN_PLACE_SIDE_TOL * max(sw, sh)
    for i in np.argsort(-length):  # the longest proposing edge first
        if not cand[i]:
            continue
        near = cand & (np.abs((phi - phi[i] + 45.0) % 90.0 - 45.0) < 1.5)
        angle = float(np.average(phi[near], weights=length[near]))
        for fw, fh in ((w, h), (h, w)):
            frame = (angle, fw * scale, fh * scale)
            if _frame_fits(p[near] - centre, q[near] - centre, content, centre, frame, tol):
                return angle, ((w - 1) / 2, (h - 1) / 2), (float(fw), float(fh))
    return None


def find_tilt_in_capture(pixels: np.ndarray, region: tuple[int, int, int, int]) -> Frame | None:
    """A turned scan shown inside a capture (a viewer's screen): the picture on the screen is the turned
    scan's own canvas, an upright rectangle of flat fill with the scan leaning inside it; ``region``
    (y0, x0, h, w) is where :func:`find_region` found the ultrasound image.

    The picture (:func:`_picture`) is searched as a file of its own (:func:`find_any_tilt`, with all its
    tests). Same return as :func:`find_tilt`, in ``pixels``' coordinates. A picture whose canvas is the
    screen's own colour (a black canvas on a black screen) is not separated from it: None.
    """
    pic = _picture(pixels, region)
    return None if pic is None else find_tilt_in_picture(pixels, pic[0])


def find_tilt_in_picture(pixels: np.ndarray, picture: tuple[int, int, int, int]) -> Frame | None:
    """:func:`find_any_tilt` on the picture (y0, x0, h, w) a capture shows, cut out as a file of its own;
    the frame in ``pixels``' coordinates."""
    y0, x0, h, w = picture
    found = find_any_tilt(pixels[y0 : y0 + h, x0 : x0 + w])
    if found is None:
        return None
    angle, (cx, cy), size = found
    return angle, (cx + x0, cy + y0), size


def find_picture(pixels: np.ndarray, region: tuple[int, int, int, int]) -> tuple[int, int, int, int] | None:
    """(y0, x0, h, w) of the picture a capture shows, exactly, when it is a solid rectangle unlike the
    screen around it (:func:`_picture`; it fills at least :data:`PICTURE_SOLID` of its box), else None.

    :func:`find_image_region` finds the ultrasound image from its texture and keeps a margin, so that a
    dark edge of the scan is not cut off; the models measure a head a little smaller in that margin than
    in the scan itself (they learned heads at HC18's scale). When the screen shows the scan as a picture
    of its own, that picture is the scan.
    """
    pic = _picture(pixels, region)
    return pic[0] if pic is not None and pic[1] >= PICTURE_SOLID else None


def _picture(
    pixels: np.ndarray, region: tuple[int, int, int, int]
) -> tuple[tuple[int, int, int, int], float, bool] | None:
    """((y0, x0, h, w), solidity, dual) of the picture on a capture's screen around ``region``, or None;
    ``dual``: the screen shows two pictures of about one size side by side (or stacked), and this is the
    left (top) one (:func:`_first_panel`).

    The screen's background is the median of its border; the picture is the largest piece that differs
    from it by more than :data:`TILT_FILL_TOL` and overlaps ``region``, off the screen's border, cut out
    exactly at full resolution, with the screen's flat background right around it (:func:`_framed`);
    its solidity is the area of its convex hull over its box's.
    """
    small, scale = _small(pixels)
    sh, sw = small.shape
    bg = int(np.median(np.concatenate([small[0], small[-1], small[:, 0], small[:, -1]])))
    content = (np.abs(small.astype(np.int32) - bg) > TILT_FILL_TOL).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(content, connectivity=8)
    y0, x0, rh, rw = (round(v * scale) for v in region)
    inside = labels[y0 : y0 + rh, x0 : x0 + rw]
    ids, counts = np.unique(inside[inside > 0], return_counts=True)
    if len(ids) == 0:
        return None
    order = np.argsort(-counts, kind="stable")  # the piece most inside the region first
    alike = [int(ids[k]) for k in order if counts[k] >= DUAL_MIN_SHARE * counts.max()]
    i, dual = _first_panel(stats, alike)
    x, y, bw, bh = (int(v) for v in stats[i, :4])
    if x == 0 or y == 0 or x + bw >= sw or y + bh >= sh:
        return None  # a picture reaching the screen's edge is no picture on a screen
    # the same piece at full resolution, in a window a little larger than its small copy's box
    h, w = pixels.shape[:2]
    wx0, wy0 = max(0, int((x - 1) / scale)), max(0, int((y - 1) / scale))
    wx1, wy1 = min(w, int(np.ceil((x + bw + 1) / scale))), min(h, int(np.ceil((y + bh + 1) / scale)))
    window = pixels[wy0:wy1, wx0:wx1]
    bg_full = float(bg) if pixels.dtype == np.uint8 else float(np.median(pixels[0]))
    # a 3x3 median first: one-pixel lines beside the picture (depth ticks, a frame line round it, whose
    # outline would enclose the picture) vanish, and the picture's straight edges stay where they are
    smooth = cv2.medianBlur(window if window.dtype in (np.uint8, np.uint16) else window.astype(np.float32), 3)
    mask = (np.abs(smooth.astype(np.float32) - bg_full) > TILT_FILL_TOL * _grey_unit(pixels)).astype(np.uint8)
    # tissue as dark as the screen leaves gaps (closed, on a margin of screen so the window's edge adds
    # nothing) and holes (filled: every outer outline drawn solid); what is left thin is opened away
    pad = 4
    mask = cv2.copyMakeBorder(mask, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))[pad:-pad, pad:-pad]
    outlines, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    mask = cv2.drawContours(np.zeros_like(mask), outlines, -1, 1, cv2.FILLED)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    n, labels_full, st, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n < 2:
        return None
    j = 1 + int(np.argmax(st[1:, cv2.CC_STAT_AREA]))
    px0, py0, pw, ph = (int(v) for v in st[j, :4])
    # the hull: dark tissue at the picture's edge, as dark as the screen, notches the piece, not its hull
    piece = (labels_full == j).astype(np.uint8)
    cnts, _ = cv2.findContours(piece, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.convexHull(np.concatenate(cnts))
    solid = cv2.contourArea(hull) / max(1.0, (pw - 1) * (ph - 1))
    box = (wy0 + py0, wx0 + px0, ph, pw)
    framed = _framed(pixels, box, bg_full, TILT_FILL_TOL * _grey_unit(pixels))
    return (box, float(solid), dual) if framed else None


def _first_panel(stats: np.ndarray, ids: list[int]) -> tuple[int, bool]:
    """(label, dual): of pieces of about one size (``ids``, the one most inside the region first), the
    first, or when another as large lies beside or below it (a dual view's two pictures) the left (top)
    one of the two, so that every run measures the same panel, and ``dual`` True."""
    area = stats[:, cv2.CC_STAT_AREA]
    best = ids[0]
    x, y, w, h = stats[best, :4]
    for j in ids:
        jx, jy, jw, jh = stats[j, :4]
        beside, below = jx + jw <= x or x + w <= jx, jy + jh <= y or y + h <= jy
        # a dual view's panels are boxes of one size, aligned (pieces of one dark scan are not)
        alike = abs(jh - h) <= DUAL_BOX_TOL * max(jh, h) and abs(jw - w) <= DUAL_BOX_TOL * max(jw, w)
        if j != best and (beside or below) and alike and area[j] >= DUAL_MIN_SHARE * area[best]:
            return (j if (jx < x if beside else jy < y) else best), True
    return best, False


def _framed(pixels: np.ndarray, box: tuple[int, int, int, int], bg: float, tol: float) -> bool:
    """Whether the screen's flat background lies right around ``box`` (y0, x0, h, w): at least
    :data:`PICTURE_FRAMED` of a ring 2-4 px outside it within ``tol`` of ``bg``. A noisy scan's own dark
    surroundings (Gaussian noise on black) pass the piece tests but are no flat screen."""
    y0, x0, h, w = box
    H, W = pixels.shape[:2]
    if y0 < 4 or x0 < 4 or y0 + h > H - 4 or x0 + w > W - 4:
        return False  # a picture needs screen around it
    outer = pixels[y0 - 4 : y0 + h + 4, x0 - 4 : x0 + w + 4].astype(np.float32)
    ring = np.ones(outer.shape, bool)
    ring[2:-2, 2:-2] = False
    return float(np.mean(np.abs(outer[ring] - bg) <= tol)) >= PICTURE_FRAMED


def _grey_unit(pixels: np.ndarray) -> float:
    """One grey level of an 8-bit copy in ``pixels``' own units (16-bit data spans its own range)."""
    if pixels.dtype == np.uint8:
        return 1.0
    lo, hi = float(pixels.min()), float(pixels.max())
    return max(hi - lo, 1.0) / 255.0


def _frame_fits(p, q, content, centre, frame: tuple[float, float, float], tol: float) -> bool:
    """Whether edges p -> q (N, 2; about the centre) lie on :data:`IN_PLACE_MIN_SIDES` sides of the
    ``frame`` (angle_deg, width, height) and every ``content`` pixel (a 0/1 map;
    ``centre`` its centre, x y) inside it."""
    angle, fw, fh = frame
    t = np.radians(angle)
    along, across = np.array([np.cos(t), np.sin(t)]), np.array([-np.sin(t), np.cos(t)])
    a, b = fw / 2, fh / 2

    def side(x: np.ndarray) -> np.ndarray:  # which side each point (N, 2) lies on: 0-3, or -1 none
        u, v = x @ along, x @ across
        out = np.full(len(x), -1)
        out[np.abs(np.abs(u) - a) < tol] = (u > 0)[np.abs(np.abs(u) - a) < tol]
        out[np.abs(np.abs(v) - b) < tol] = 2 + (v > 0)[np.abs(np.abs(v) - b) < tol]
        return out

    sp, sq = side(p), side(q)
    on = (sp >= 0) & (sp == sq)
    if len(set(sp[on].tolist())) < IN_PLACE_MIN_SIDES:
        return False
    pts = cv2.findNonZero(content).reshape(-1, 2) - centre  # only now: most proposals fail above
    outside = (np.abs(pts @ along) > a + tol) | (np.abs(pts @ across) > b + tol)
    return bool(outside.mean() <= TILT_MAX_OUTSIDE)


def _inscribed(w: int, h: int, angle: float, box: np.ndarray, along, across) -> tuple[float, float] | None:
    """(along, across) sides of the rectangle at ``angle`` whose bounding box is the (w, h) canvas; near
    45 degrees (where the canvas fixes only their sum) the content ``box``'s proportions decide."""
    c, s = abs(np.cos(np.radians(angle))), abs(np.sin(np.radians(angle)))
    if c * c - s * s > TILT_ILL_POSED:
        a, b = (w * c - h * s) / (c * c - s * s), (h * c - w * s) / (c * c - s * s)
    else:
        a, b = float(np.ptp(box @ along)), float(np.ptp(box @ across))
        f = min(w / (a * c + b * s), h / (a * s + b * c))
        a, b = a * f, b * f
    return (float(a), float(b)) if a > 0 and b > 0 else None
