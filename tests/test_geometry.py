import math

import numpy as np
import pytest

from fetalbio.biometry import ramanujan_perimeter
from fetalbio.geometry import (
    Ellipse,
    Landmarks,
    canonical_pair,
    distance_mm,
    draw_ellipse_mask,
    ellipse_to_landmarks,
    fit_ellipse,
    fit_ellipse_mask,
    fit_ellipse_outline,
    landmarks_to_ellipse,
    measure_ellipse,
    measure_landmarks,
    pair_errors_mm,
)
from fetalbio.synthetic import draw_outline


def random_ellipses(rng, n, shape=(540, 800), lo=80.0):
    h, w = shape
    for _ in range(n):
        a = rng.uniform(lo, 250)
        b = a * rng.uniform(0.6, 1.0)
        yield Ellipse.from_axes(
            rng.uniform(0.4, 0.6) * w, rng.uniform(0.45, 0.55) * h, a, b, rng.uniform(0, 180)
        )


def test_from_axes_normalises_order_and_angle():
    e = Ellipse.from_axes(10, 20, 30, 50, 200)
    assert (e.semi_major_px, e.semi_minor_px) == (50, 30)
    assert e.angle_deg == pytest.approx(110.0)
    with pytest.raises(ValueError):
        Ellipse(0, 0, 1, 2, 0)


def test_fit_points_exact():
    e = Ellipse(400.3, 270.7, 210.0, 150.0, 33.0)
    fit = fit_ellipse(e.points(400))
    f = fit.ellipse
    assert f.semi_major_px == pytest.approx(210.0, rel=1e-5)
    assert f.semi_minor_px == pytest.approx(150.0, rel=1e-5)
    assert f.angle_deg == pytest.approx(33.0, abs=1e-3)
    assert (f.cx_px, f.cy_px) == pytest.approx((400.3, 270.7), abs=1e-3)
    assert fit.residual_px < 1e-3


def test_opencv_minor_first_convention_is_normalised():
    # an ellipse whose major axis is vertical: OpenCV reports the minor axis first for it
    e = Ellipse(300, 300, 200, 100, 90.0)
    f = fit_ellipse(e.points()).ellipse
    assert f.semi_major_px > f.semi_minor_px
    assert f.angle_deg == pytest.approx(90.0, abs=1e-3)


@pytest.mark.parametrize("spacing", [(0.1, 0.1), (0.08, 0.12), (0.2, 0.15)])
def test_drawn_masks_recover_axes_and_hc_within_0_1_percent(rng, spacing):
    for e in random_ellipses(rng, 12):
        f = fit_ellipse_mask(draw_ellipse_mask((540, 800), e)).ellipse
        assert f.semi_major_px == pytest.approx(e.semi_major_px, rel=1e-3)
        assert f.semi_minor_px == pytest.approx(e.semi_minor_px, rel=1e-3)
        hc_true = measure_ellipse(e, spacing).hc
        assert measure_ellipse(f, spacing).hc == pytest.approx(hc_true, rel=1e-3)


def test_drawn_outlines_recover_axes(rng):
    for e in random_ellipses(rng, 8):
        f = fit_ellipse_outline(draw_outline((540, 800), e)).ellipse
        assert f.semi_major_px == pytest.approx(e.semi_major_px, rel=1e-3)
        assert f.semi_minor_px == pytest.approx(e.semi_minor_px, rel=1e-3)


def test_ellipse_cut_by_the_image_edge(rng):
    # centre near the right border: about a third of the head is outside the scan
    e = Ellipse(720.0, 270.0, 200.0, 150.0, 10.0)
    mask = draw_ellipse_mask((540, 800), e)
    assert mask[:, -1].any()
    f = fit_ellipse_mask(mask).ellipse
    assert f.semi_major_px == pytest.approx(200.0, rel=1e-3)
    assert f.semi_minor_px == pytest.approx(150.0, rel=1e-3)


def test_anisotropic_spacing_measures_in_mm_space():
    # a circle of radius 100 px with x spacing 0.1 mm and y 0.2 mm is an ellipse 20 x 40 mm (semi)
    e = Ellipse(200, 200, 100, 100, 0)
    m = measure_ellipse(e, (0.1, 0.2))
    assert m.ofd == pytest.approx(40.0)
    assert m.bpd == pytest.approx(20.0)
    assert m.hc == pytest.approx(ramanujan_perimeter(20.0, 10.0))
    assert m.unit == "mm"
    assert measure_ellipse(e, None).unit == "px"


def test_distance_mm_separate_spacings():
    assert distance_mm((0, 0), (3, 4), (1.0, 1.0)) == pytest.approx(5.0)
    assert distance_mm((0, 0), (10, 10), (0.3, 0.4)) == pytest.approx(5.0)


def test_landmarks_round_trip_and_order():
    e = Ellipse(100, 80, 50, 30, 20)
    lm = ellipse_to_landmarks(e)
    # OFD pair is the major axis, BPD the minor
    assert math.dist(lm.ofd1, lm.ofd2) == pytest.approx(100.0)
    assert math.dist(lm.bpd1, lm.bpd2) == pytest.approx(60.0)
    # canonical order: OFD (near horizontal) left first; BPD (near vertical) upper first
    assert lm.ofd1[0] < lm.ofd2[0]
    assert lm.bpd1[1] < lm.bpd2[1]
    back = landmarks_to_ellipse(lm)
    assert (back.cx_px, back.cy_px, back.semi_major_px, back.semi_minor_px) == pytest.approx(
        (100, 80, 50, 30)
    )
    assert back.angle_deg == pytest.approx(20.0)
    m = measure_landmarks(lm, (0.5, 0.5))
    assert (m.bpd, m.ofd) == pytest.approx((30.0, 50.0))


def test_canonical_pair_rule():
    assert canonical_pair((10, 0), (0, 1)) == ((0, 1), (10, 0))  # horizontal-ish: left first
    assert canonical_pair((0, 10), (1, 0)) == ((1, 0), (0, 10))  # vertical-ish: upper first


def test_pair_errors_are_order_invariant():
    true = np.array([[0, 0], [0, 10], [-5, 5], [5, 5]], float)
    pred = true[[1, 0, 3, 2]] + np.array([0.3, 0.4])
    errs = pair_errors_mm(pred, true, (1.0, 1.0))
    assert errs == pytest.approx([0.5] * 4)
    assert pair_errors_mm(pred, true, (2.0, 2.0)) == pytest.approx([1.0] * 4)


def test_landmarks_to_dict_names():
    lm = Landmarks.from_array(np.arange(8).reshape(4, 2))
    assert list(lm.to_dict()) == [
        "bpd1_x",
        "bpd1_y",
        "bpd2_x",
        "bpd2_y",
        "ofd1_x",
        "ofd1_y",
        "ofd2_x",
        "ofd2_y",
    ]


def test_mean_ellipse_averages_axes_and_the_orientation_without_sign():
    from fetalbio.geometry import mean_ellipse

    a = Ellipse(100.0, 50.0, 40.0, 30.0, 179.0)
    b = Ellipse(102.0, 54.0, 44.0, 32.0, 1.0)  # the same axis direction as 179 degrees, nearly
    m = mean_ellipse([a, b])
    assert (m.cx_px, m.cy_px, m.semi_major_px, m.semi_minor_px) == pytest.approx((101.0, 52.0, 42.0, 31.0))
    assert min(m.angle_deg, 180.0 - m.angle_deg) == pytest.approx(0.0, abs=1e-9)  # not 90
    assert mean_ellipse([a]) == a


def test_mean_landmarks_matches_pair_ends_before_averaging():
    from fetalbio.geometry import mean_landmarks

    a = Landmarks((10.0, 0.0), (10.0, 20.0), (0.0, 10.0), (20.0, 10.0))
    # the same head with the BPD pair listed the other way round, each point 1 px lower
    b = Landmarks((10.0, 21.0), (10.0, 1.0), (0.0, 11.0), (20.0, 11.0))
    m = mean_landmarks([a, b]).as_array()
    # averaged end to end (a pair averaged the wrong way round would collapse to its midpoint)
    assert np.hypot(*(m[1] - m[0])) == pytest.approx(20.0)
    assert np.sort(m[:2, 1]) == pytest.approx([0.5, 20.5]) and m[2:, 1] == pytest.approx([10.5, 10.5])
