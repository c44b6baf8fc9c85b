"""fetalbio.echo: where an ellipse lies on a drawn skull echo whose outer edge is known exactly."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from fetalbio.echo import echo_placement
from fetalbio.geometry import Ellipse

PIXEL_MM = 0.1
SHAPE_HW = (400, 500)
CENTRE = (250.0, 200.0)
OUTER_PX = 140.0  # the echo's outer edge: a circle of this radius
THICK_PX = 25.0  # the echo's thickness (2.5 mm)


def _skull(shadow: bool = False) -> np.ndarray:
    """A grey scan: dark tissue 30, brain 60, a bright skull band 200 from OUTER-THICK to OUTER px.

    Drawn from each pixel's exact distance to the centre (4x supersampled), then blurred: the band's
    outer half-maximum edge stays at OUTER_PX because the band is flat and much wider than the blur.
    """
    ss = 4
    yy, xx = np.mgrid[0 : SHAPE_HW[0] * ss, 0 : SHAPE_HW[1] * ss]
    r = np.hypot((xx + 0.5) / ss - 0.5 - CENTRE[0], (yy + 0.5) / ss - 0.5 - CENTRE[1])
    img = np.where(r < OUTER_PX - THICK_PX, 60.0, np.where(r <= OUTER_PX, 200.0, 30.0))
    if shadow:  # acoustic shadow: no echo on the lower half of the head
        img[yy / ss > CENTRE[1] + 10] = 30.0
    img = cv2.resize(img.astype(np.float32), SHAPE_HW[::-1], interpolation=cv2.INTER_AREA)
    return np.clip(cv2.GaussianBlur(img, (0, 0), 1.5), 0, 255).astype(np.uint8)


def _circle(radius_px: float) -> Ellipse:
    return Ellipse(CENTRE[0], CENTRE[1], radius_px, radius_px, 0.0)


@pytest.mark.parametrize("offset_mm", [-0.8, 0.0, 0.5, 1.5])
def test_edge_offset_is_the_distance_to_the_outer_edge(offset_mm: float) -> None:
    p = echo_placement(_skull(), _circle(OUTER_PX - offset_mm / PIXEL_MM), PIXEL_MM)
    assert p is not None and p.support > 0.95
    assert p.edge_offset_mm == pytest.approx(offset_mm, abs=0.1)
    assert p.spread_mm < 0.15  # a circle on a circle: the same everywhere
    # the HC an outline on the outer edge would read longer: that of a circle offset_mm larger
    assert p.hc_shift_mm == pytest.approx(2 * math.pi * offset_mm, abs=2 * math.pi * 0.1)


def test_an_ellipse_that_does_not_follow_the_echo_has_a_spread() -> None:
    e = Ellipse(CENTRE[0], CENTRE[1], OUTER_PX + 8, OUTER_PX - 8, 30.0)  # +-0.8 mm at its axes' ends
    p = echo_placement(_skull(), e, PIXEL_MM)
    assert p is not None and p.spread_mm > 0.6 and abs(p.edge_offset_mm) < 0.3


def test_a_shadowed_half_is_left_out() -> None:
    p = echo_placement(_skull(shadow=True), _circle(OUTER_PX - 5), PIXEL_MM)
    assert p is not None and 0.35 < p.support < 0.65
    assert p.edge_offset_mm == pytest.approx(0.5, abs=0.1)


def test_no_echo_says_nothing() -> None:
    flat = np.full(SHAPE_HW, 80, np.uint8)
    assert echo_placement(flat, _circle(OUTER_PX), PIXEL_MM) is None
    # an ellipse in the brain, 8 mm from the skull: nothing bright within reach of it
    assert echo_placement(_skull(), _circle(OUTER_PX - 80), PIXEL_MM) is None


def test_the_pixel_size_scales_the_answer() -> None:
    """The same drawing read at a 1.2x pixel size: every distance in mm is 1.2x (the echo then 3 mm)."""
    img, e = _skull(), _circle(OUTER_PX - 5)
    a, b = echo_placement(img, e, PIXEL_MM), echo_placement(img, e, 1.2 * PIXEL_MM)
    assert a is not None and b is not None
    assert a.edge_offset_mm == pytest.approx(0.5, abs=0.06)
    assert b.edge_offset_mm == pytest.approx(0.6, abs=0.06)


def test_evaluate_counts_annotations_off_the_echo() -> None:
    """summarise: annotations more than 1 mm off the echo are counted and left out of one extra MAE;
    one without a clear echo (None) is neither checked nor left out."""
    from fetalbio.evaluate import summarise

    def row(hc_diff: float, edge: float | None) -> dict:
        r = {"status": "ok", "unit": "mm", "hc_diff_mm": hc_diff, "bpd_diff_mm": 0.0, "ofd_diff_mm": 0.0}
        r |= {f"{n}_err_mm": 1.0 for n in ("bpd1", "bpd2", "ofd1", "ofd2")} | {"point_err_max_mm": 1.0}
        return r | {"truth_echo_edge_mm": edge}

    s = summarise([row(2.0, 0.2), row(-4.0, 1.5), row(1.0, None), row(3.0, -1.2)])
    assert s["n_truth_echo_checked"] == 3 and s["n_truth_off_echo"] == 2
    assert s["hc_mae_mm_truth_on_echo"] == pytest.approx((2.0 + 1.0) / 2)
    assert s["hc_mae_mm"] == pytest.approx((2 + 4 + 1 + 3) / 4)
    plain = summarise([{k: v for k, v in row(2.0, 0.2).items() if k != "truth_echo_edge_mm"}])
    assert "n_truth_off_echo" not in plain  # training-time validation does not look at the echo
