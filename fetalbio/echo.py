"""Where an ellipse lies on the skull echo: the image's own check of a head outline.

The head circumference is measured around the outer edge of the skull's echo (ISUOG). Along normals
to an ellipse (an annotation or a model's result), the grey profile shows the skull as a bright band;
its outer edge (half way down from the band's peak to the darker tissue outside) is where the outline
should lie. :func:`echo_placement` measures, in mm along the outward normal, how far that edge lies
from the ellipse: positive = the echo's outer edge is outside the ellipse (the outline is drawn inside
the bone, the HC comes out short by about 2 pi times the offset).

Used by ``fetalbio data check`` (annotations off the echo) and ``tools/annotation_check.py`` (how much
of the models' error on HC18 is where the annotator drew the outline).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from fetalbio.geometry import Ellipse

REACH_MM = 4.0  # profiles run this far either side of the ellipse
BAND_MM = 3.0  # the skull's peak is looked for within this distance of the ellipse
STEP_MM = 0.05  # profile sampling step
MIN_CONTRAST = 0.15  # a normal counts when its peak stands this far (share of the image's grey range)
# above the profile's median: no echo there (shadow, dropout, outside the image) otherwise
MIN_SUPPORT = 0.2  # the share of normals with a clear echo below which nothing is said
OFF_EDGE_MM = 1.0  # an outline this far from the echo's outer edge moves the HC by ~6 mm: reported


@dataclass(frozen=True)
class EchoPlacement:
    """Placement of an ellipse on the skull echo.

    Attributes:
        edge_offset_mm: median over the normals with a clear echo of the distance (mm, along the
            outward normal) from the ellipse to the echo's outer half-maximum edge; > 0: edge outside.
        spread_mm: interquartile range of the per-normal offsets (mm): how evenly the ellipse follows it.
        support: share of the normals (inside the image) with a clear echo, 0..1.
        n_normals: number of normals used.
    """

    edge_offset_mm: float
    spread_mm: float
    support: float
    n_normals: int

    @property
    def hc_shift_mm(self) -> float:
        """About how much longer the HC would be with the outline moved onto the echo's outer edge."""
        return 2 * math.pi * self.edge_offset_mm


def normal_profiles(
    grey: np.ndarray, e: Ellipse, pixel_mm: float, n_normals: int = 180
) -> tuple[np.ndarray, np.ndarray]:
    """Grey profiles along the outward normals of ``e``.

    Args:
        grey: (H, W) image (any dtype), pixels of the ellipse's coordinate system.
        e: the ellipse, in pixels.
        pixel_mm: isotropic pixel size (mm).
    Returns:
        ``(s_mm, profiles)``: the (S,) distances along the normal in mm (negative = inside) and the
        (n_normals, S) float32 profiles, NaN where a sample falls outside the image.
    """
    s_mm = np.arange(-REACH_MM, REACH_MM + STEP_MM / 2, STEP_MM)
    t = np.linspace(0.0, 2 * np.pi, n_normals, endpoint=False)
    th = math.radians(e.angle_deg)
    c, s = math.cos(th), math.sin(th)
    x, y = e.semi_major_px * np.cos(t), e.semi_minor_px * np.sin(t)
    px, py = e.cx_px + x * c - y * s, e.cy_px + x * s + y * c
    # the outward normal of (a cos t, b sin t) is along (b cos t, a sin t), then rotated
    nx0, ny0 = e.semi_minor_px * np.cos(t), e.semi_major_px * np.sin(t)
    nx, ny = nx0 * c - ny0 * s, nx0 * s + ny0 * c
    norm = np.hypot(nx, ny)
    nx, ny = nx / norm, ny / norm
    step_px = s_mm / pixel_mm
    map_x = (px[:, None] + nx[:, None] * step_px[None]).astype(np.float32)
    map_y = (py[:, None] + ny[:, None] * step_px[None]).astype(np.float32)
    img = cv2.GaussianBlur(np.asarray(grey, np.float32), (0, 0), 1.0)
    prof = cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)
    return s_mm, prof


def outer_edge_mm(s_mm: np.ndarray, profile: np.ndarray, min_contrast: float) -> float | None:
    """The outer half-maximum edge (mm) of the brightest band within ``BAND_MM`` of 0, or None."""
    band = np.abs(s_mm) <= BAND_MM
    i = int(np.argmax(np.where(band, profile, -np.inf)))
    peak = profile[i]
    if peak - np.median(profile) < min_contrast:
        return None
    outside = profile[i:]
    half = (peak + outside.min()) / 2
    below = np.nonzero(outside <= half)[0]
    return float(s_mm[i + below[0]]) if below.size else None


def echo_placement(
    grey: np.ndarray, e: Ellipse, pixel_mm: float, n_normals: int = 180
) -> EchoPlacement | None:
    """Where ``e`` lies on the skull echo of ``grey`` (see the module docstring); None when fewer than
    ``MIN_SUPPORT`` of its normals inside the image show a clear echo."""
    s_mm, prof = normal_profiles(grey, e, pixel_mm, n_normals)
    lo, hi = np.percentile(np.asarray(grey, np.float32), [0.5, 99.5])
    min_contrast = MIN_CONTRAST * max(float(hi - lo), 1e-6)
    inside = ~np.isnan(prof).any(axis=1)
    edges = [outer_edge_mm(s_mm, p, min_contrast) for p in prof[inside]]
    edges = np.array([x for x in edges if x is not None])
    n_in = int(inside.sum())
    if n_in == 0 or edges.size < max(5, MIN_SUPPORT * n_in):
        return None
    q1, med, q3 = np.percentile(edges, [25, 50, 75])
    return EchoPlacement(float(med), float(q3 - q1), edges.size / n_in, int(edges.size))
