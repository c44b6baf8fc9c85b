"""Ellipses, landmarks and distances: the one place where pixels become millimetres.

Conventions (used everywhere in fetalbio):

* Image coordinates: x to the right, y down, in pixels of the ORIGINAL scan; the centre of pixel
  (row r, column c) is at (x=c, y=r).
* An :class:`Ellipse` has ``semi_major_px >= semi_minor_px`` and ``angle_deg`` is the direction of the
  major axis, measured from +x towards +y (clockwise on screen), in [0, 180).
* Landmarks: the OFD end points are the ends of the major axis, the BPD end points the ends of the
  minor axis. Within a pair, **point 1 is the left end when the axis is closer to horizontal
  (|dx| >= |dy|), otherwise the upper end** (smaller y). :func:`canonical_pair` applies that rule; it
  is re-applied after every geometric augmentation, so a flip swaps a pair's points exactly when the
  rule requires it. Every error measure is also computed order-invariantly within a pair.
* Spacing is ``(x_mm, y_mm)`` per pixel and is passed explicitly to every function that returns mm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from fetalbio.biometry import ramanujan_perimeter

Spacing = tuple[float, float]
Point = tuple[float, float]


@dataclass(frozen=True)
class Ellipse:
    """An ellipse in pixel coordinates (see the module conventions)."""

    cx_px: float
    cy_px: float
    semi_major_px: float
    semi_minor_px: float
    angle_deg: float

    def __post_init__(self) -> None:
        if self.semi_minor_px > self.semi_major_px:
            raise ValueError("semi_minor_px must not exceed semi_major_px")

    @classmethod
    def from_axes(cls, cx: float, cy: float, semi_a: float, semi_b: float, angle_a_deg: float) -> Ellipse:
        """Build from two semi-axes in any order; ``angle_a_deg`` is the direction of ``semi_a``."""
        if semi_b > semi_a:
            semi_a, semi_b, angle_a_deg = semi_b, semi_a, angle_a_deg + 90.0
        return cls(float(cx), float(cy), float(semi_a), float(semi_b), float(angle_a_deg % 180.0))

    @property
    def centre(self) -> Point:
        return (self.cx_px, self.cy_px)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def to_cv2(self) -> tuple[tuple[float, float], tuple[float, float], float]:
        """OpenCV RotatedRect ((cx, cy), (full width, full height), angle) for drawing."""
        return ((self.cx_px, self.cy_px), (2 * self.semi_major_px, 2 * self.semi_minor_px), self.angle_deg)

    def points(self, n: int = 720) -> np.ndarray:
        """(n, 2) float64 points (x, y) on the ellipse."""
        t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
        th = math.radians(self.angle_deg)
        x = self.semi_major_px * np.cos(t)
        y = self.semi_minor_px * np.sin(t)
        return np.stack(
            [
                self.cx_px + x * math.cos(th) - y * math.sin(th),
                self.cy_px + x * math.sin(th) + y * math.cos(th),
            ],
            axis=1,
        )


@dataclass(frozen=True)
class EllipseFit:
    """An ellipse fitted to points, with its RMS radial residual in pixels (fit quality)."""

    ellipse: Ellipse
    residual_px: float
    n_points: int


@dataclass(frozen=True)
class Landmarks:
    """The four biometry points in original pixels, each pair in canonical order."""

    bpd1: Point
    bpd2: Point
    ofd1: Point
    ofd2: Point

    NAMES = ("bpd1", "bpd2", "ofd1", "ofd2")

    def as_array(self) -> np.ndarray:
        """(4, 2) float64 in the order bpd1, bpd2, ofd1, ofd2."""
        return np.array([self.bpd1, self.bpd2, self.ofd1, self.ofd2], dtype=np.float64)

    @classmethod
    def from_array(cls, pts: np.ndarray, canonical: bool = True) -> Landmarks:
        p = [tuple(map(float, q)) for q in np.asarray(pts, dtype=np.float64).reshape(4, 2)]
        if canonical:
            p[0], p[1] = canonical_pair(p[0], p[1])
            p[2], p[3] = canonical_pair(p[2], p[3])
        return cls(p[0], p[1], p[2], p[3])

    def to_dict(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, (x, y) in zip(self.NAMES, self.as_array(), strict=True):
            out[f"{name}_x"] = float(x)
            out[f"{name}_y"] = float(y)
        return out


def canonical_pair(p: Point, q: Point) -> tuple[Point, Point]:
    """Order a pair: the left point first if the axis is closer to horizontal, else the upper one."""
    dx, dy = q[0] - p[0], q[1] - p[1]
    if abs(dx) >= abs(dy):
        return (p, q) if dx >= 0 else (q, p)
    return (p, q) if dy >= 0 else (q, p)


def canonical_order(pts: np.ndarray) -> np.ndarray:
    """Canonical order for a (4, 2) array bpd1, bpd2, ofd1, ofd2 (returns a new array)."""
    return Landmarks.from_array(pts).as_array()


# --- fitting ---


def fit_ellipse(points_xy: np.ndarray) -> EllipseFit:
    """Least-squares ellipse through ``points_xy`` ((N, 2), x, y in px; N >= 5).

    OpenCV's ``fitEllipse`` returns full axis lengths and the angle of its FIRST axis, which may be
    the minor one; this normalises to the module convention.
    """
    pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 5:
        raise ValueError(f"an ellipse fit needs at least 5 points, got {len(pts)}")
    # Fit in coordinates centred on the mean: float32 inside OpenCV loses precision far from 0.
    mean = pts.mean(axis=0)
    (cx, cy), (w, h), ang = cv2.fitEllipse((pts - mean).astype(np.float32))
    if not (np.isfinite([cx, cy, w, h, ang]).all() and w > 0 and h > 0):
        raise ValueError("degenerate ellipse fit")
    e = Ellipse.from_axes(cx + mean[0], cy + mean[1], w / 2.0, h / 2.0, ang)
    return EllipseFit(e, radial_residual_px(e, pts), len(pts))


def radial_residual_px(e: Ellipse, points_xy: np.ndarray) -> float:
    """RMS distance (px) from each point to the ellipse along the ray from the centre."""
    return float(np.sqrt(np.mean(radial_distances_px(e, points_xy) ** 2)))


def radial_distances_px(e: Ellipse, points_xy: np.ndarray) -> np.ndarray:
    """``(N,)`` distance (px, >= 0) of each of ``(N, 2)`` points (x, y) from the ellipse along the ray
    from its centre: exact on a circle, close to the normal distance on a head's ellipse."""
    pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    th = math.radians(e.angle_deg)
    d = pts - np.array(e.centre)
    u = d[:, 0] * math.cos(th) + d[:, 1] * math.sin(th)
    v = -d[:, 0] * math.sin(th) + d[:, 1] * math.cos(th)
    r = np.hypot(u / e.semi_major_px, v / e.semi_minor_px)
    dist = np.hypot(u, v)
    return np.abs(np.where(r > 0, dist * (1.0 - 1.0 / np.maximum(r, 1e-12)), 0.0))


def boundary_points(mask: np.ndarray, prob: np.ndarray | None = None, level: float = 0.5) -> np.ndarray:
    """Sub-pixel boundary points of a binary ``mask`` ((H, W) bool), as (N, 2) x, y in px.

    One point per 'crack' between an inside pixel and an outside 4-neighbour. With ``prob`` (same
    shape, 0..1) the point sits where the linear interpolation between the two pixel centres crosses
    ``level``; without it, halfway between them. Both are unbiased, unlike the centres of the
    contour pixels, which lie half a pixel inside and shrink HC by about pi pixels.
    """
    m = np.asarray(mask, dtype=bool)
    p = None if prob is None else np.asarray(prob, dtype=np.float64)
    pts: list[np.ndarray] = []
    for axis in (0, 1):
        a = np.take(m, np.arange(m.shape[axis] - 1), axis=axis)
        b = np.take(m, np.arange(1, m.shape[axis]), axis=axis)
        edge = a != b
        rr, cc = np.nonzero(edge)
        if p is None:
            t = np.full(len(rr), 0.5)
        else:
            pa = np.take(p, np.arange(m.shape[axis] - 1), axis=axis)[rr, cc]
            pb = np.take(p, np.arange(1, m.shape[axis]), axis=axis)[rr, cc]
            denom = pb - pa
            safe = np.abs(denom) > 1e-6
            t = np.where(safe, (level - pa) / np.where(safe, denom, 1.0), 0.5)
            t = np.clip(t, 0.0, 1.0)
        if axis == 0:  # neighbours in y
            pts.append(np.stack([cc.astype(np.float64), rr + t], axis=1))
        else:
            pts.append(np.stack([cc + t, rr.astype(np.float64)], axis=1))
    return np.concatenate(pts, axis=0) if pts else np.zeros((0, 2))


def mask_boundary_points(mask: np.ndarray, prob: np.ndarray | None = None) -> np.ndarray:
    """Sub-pixel outer-boundary points ((N, 2), x, y in px) of a filled mask, without the image border.

    Cracks on the image border are left out, so a head cut by the edge of the scan is described by
    the visible part of its outline only.
    """
    m = np.asarray(mask) > 0
    padded = np.pad(m, 1)  # pad so that every crack is inside the array, then drop border cracks
    pts = boundary_points(padded, None if prob is None else np.pad(prob, 1, mode="edge")) - 1.0
    h, w = m.shape
    inside = (pts[:, 0] > -0.25) & (pts[:, 0] < w - 0.75) & (pts[:, 1] > -0.25) & (pts[:, 1] < h - 0.75)
    return pts[inside]


def fit_ellipse_mask(mask: np.ndarray, prob: np.ndarray | None = None) -> EllipseFit:
    """Fit an ellipse to the outer boundary of a filled mask ((H, W), nonzero = inside)."""
    return fit_ellipse(mask_boundary_points(mask, prob))


def fit_ellipse_outline(outline: np.ndarray) -> EllipseFit:
    """Fit an ellipse to a drawn outline image ((H, W), nonzero = on the outline), e.g. HC18's.

    Fits the centres of all outline pixels, i.e. the centre line of the drawn curve.
    """
    ys, xs = np.nonzero(np.asarray(outline) > 0)
    return fit_ellipse(np.stack([xs, ys], axis=1))


# --- drawing ---


def draw_ellipse_mask(shape_hw: tuple[int, int], e: Ellipse) -> np.ndarray:
    """A filled (H, W) uint8 mask (0/1) of ``e``: 1 where the pixel centre lies inside.

    Exact rasterisation (OpenCV's filled ellipses are polygons, off by up to a pixel), so drawn
    test ellipses have known answers.
    """
    h, w = shape_hw
    th = math.radians(e.angle_deg)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    dx, dy = xs - e.cx_px, ys - e.cy_px
    u = dx * math.cos(th) + dy * math.sin(th)
    v = -dx * math.sin(th) + dy * math.cos(th)
    return ((u / e.semi_major_px) ** 2 + (v / e.semi_minor_px) ** 2 <= 1.0).astype(np.uint8)


# --- landmarks and millimetres ---


def ellipse_to_landmarks(e: Ellipse) -> Landmarks:
    """End points of the axes: OFD = major axis, BPD = minor axis (canonical order)."""
    th = math.radians(e.angle_deg)
    ux, uy = math.cos(th), math.sin(th)
    a, b = e.semi_major_px, e.semi_minor_px
    ofd = ((e.cx_px - a * ux, e.cy_px - a * uy), (e.cx_px + a * ux, e.cy_px + a * uy))
    bpd = ((e.cx_px + b * uy, e.cy_px - b * ux), (e.cx_px - b * uy, e.cy_px + b * ux))
    return Landmarks.from_array(np.array([*bpd, *ofd]))


def landmarks_to_ellipse(lm: Landmarks) -> Ellipse:
    """The ellipse whose axes are the OFD (major) and BPD (minor) segments.

    Centre: the mean of the two pairs' midpoints; orientation: the OFD direction.
    """
    p = lm.as_array()
    c = (p[0] + p[1] + p[2] + p[3]) / 4.0
    d_ofd = p[3] - p[2]
    semi_ofd = float(np.hypot(*d_ofd)) / 2.0
    semi_bpd = float(np.hypot(*(p[1] - p[0]))) / 2.0
    ang = math.degrees(math.atan2(d_ofd[1], d_ofd[0]))
    return Ellipse.from_axes(c[0], c[1], semi_ofd, semi_bpd, ang)


def mean_ellipse(ellipses: Sequence[Ellipse]) -> Ellipse:
    """The average of ellipses of one head (e.g. measured in turned copies of one scan, all in its
    pixels): centres and semi-axes averaged, the orientation by the circular mean of twice the angle
    (an axis has no direction, so 179 and 1 degrees average to 0, not 90)."""
    es = list(ellipses)
    two = np.radians([2.0 * e.angle_deg for e in es])
    angle = math.degrees(math.atan2(np.sin(two).mean(), np.cos(two).mean())) / 2.0
    return Ellipse.from_axes(
        float(np.mean([e.cx_px for e in es])),
        float(np.mean([e.cy_px for e in es])),
        float(np.mean([e.semi_major_px for e in es])),
        float(np.mean([e.semi_minor_px for e in es])),
        angle,
    )


def mean_landmarks(sets: Sequence[Landmarks]) -> Landmarks:
    """The average of landmark sets of one head, in one scan's pixels. Each pair's two ends are matched
    to the first set's (the order with the shorter total distance), so a pair that the canonical order
    rule ranks differently in two sets (a near-vertical pair) is not averaged into its midpoint."""
    ref = sets[0].as_array()
    acc = ref.copy()
    for lm in sets[1:]:
        p = lm.as_array()
        for i in (0, 2):  # the BPD pair, the OFD pair
            same = np.hypot(*(p[i] - ref[i])) + np.hypot(*(p[i + 1] - ref[i + 1]))
            swapped = np.hypot(*(p[i + 1] - ref[i])) + np.hypot(*(p[i] - ref[i + 1]))
            acc[i : i + 2] += p[i : i + 2] if same <= swapped else p[i : i + 2][::-1]
    return Landmarks.from_array(acc / len(sets))


def distance_mm(p: Point, q: Point, spacing_mm: Spacing) -> float:
    """Euclidean distance between two pixel points in mm, with separate x and y spacing."""
    return math.hypot((q[0] - p[0]) * spacing_mm[0], (q[1] - p[1]) * spacing_mm[1])


@dataclass(frozen=True)
class HeadMeasure:
    """Head biometry in mm (or px when spacing is unknown: then ``unit == 'px'``)."""

    bpd: float
    ofd: float
    hc: float
    unit: str


def ellipse_semi_axes_mm(e: Ellipse, spacing_mm: Spacing) -> tuple[float, float, float]:
    """Semi-axes (major, minor) in mm and the major-axis angle (deg, in pixel space) of ``e``.

    With anisotropic spacing the ellipse in mm is the image of ``e`` under diag(sx, sy): its semi-axes
    are the singular values of diag(sx, sy) @ R(angle) @ diag(a, b).
    """
    th = math.radians(e.angle_deg)
    rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    m = np.diag(spacing_mm) @ rot @ np.diag([e.semi_major_px, e.semi_minor_px])
    u, s, _ = np.linalg.svd(m)
    # the major axis direction in mm space, mapped back to pixel space
    dir_px = u[:, 0] / np.array(spacing_mm)
    return float(s[0]), float(s[1]), math.degrees(math.atan2(dir_px[1], dir_px[0])) % 180.0


def measure_ellipse(e: Ellipse, spacing_mm: Spacing | None) -> HeadMeasure:
    """BPD (minor axis), OFD (major axis) and HC (Ramanujan perimeter) of ``e``.

    In mm when ``spacing_mm`` is given (axes measured in mm space, so anisotropic spacing is exact),
    else in px.
    """
    if spacing_mm is None:
        a, b, unit = e.semi_major_px, e.semi_minor_px, "px"
    else:
        a, b, _ = ellipse_semi_axes_mm(e, spacing_mm)
        unit = "mm"
    return HeadMeasure(bpd=2 * b, ofd=2 * a, hc=ramanujan_perimeter(a, b), unit=unit)


def measure_landmarks(lm: Landmarks, spacing_mm: Spacing | None) -> HeadMeasure:
    """BPD and OFD as the distances between the pairs; HC of the ellipse with those axes."""
    sp = spacing_mm or (1.0, 1.0)
    bpd = distance_mm(lm.bpd1, lm.bpd2, sp)
    ofd = distance_mm(lm.ofd1, lm.ofd2, sp)
    return HeadMeasure(
        bpd=bpd, ofd=ofd, hc=ramanujan_perimeter(ofd / 2, bpd / 2), unit="px" if spacing_mm is None else "mm"
    )


def pair_errors_mm(pred: np.ndarray, true: np.ndarray, spacing_mm: Spacing) -> np.ndarray:
    """Per-point errors (4,) in mm, order-invariant within each pair.

    ``pred`` and ``true`` are (4, 2) arrays bpd1, bpd2, ofd1, ofd2; within each pair the assignment
    with the smaller summed error is used.
    """
    pred = np.asarray(pred, dtype=np.float64).reshape(4, 2)
    true = np.asarray(true, dtype=np.float64).reshape(4, 2)
    sp = np.asarray(spacing_mm, dtype=np.float64)
    out = np.zeros(4)
    for i in (0, 2):
        straight = np.hypot(*((pred[i] - true[i]) * sp)), np.hypot(*((pred[i + 1] - true[i + 1]) * sp))
        swapped = np.hypot(*((pred[i] - true[i + 1]) * sp)), np.hypot(*((pred[i + 1] - true[i]) * sp))
        out[i : i + 2] = straight if sum(straight) <= sum(swapped) else swapped
    return out
