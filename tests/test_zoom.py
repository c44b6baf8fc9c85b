"""A second look at small heads: the crop around the head, its turned views, and the pipeline's use of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fetalbio import defaults
from fetalbio.geometry import Ellipse, measure_ellipse
from fetalbio.methods.base import Result
from fetalbio.pipeline import ScanView, zoom_region
from fetalbio.preprocess import turned, turned_region

INPUT_HW = (256, 384)


def _view(hw=(800, 1000), turns=(0,), tilt=None, area=None) -> ScanView:
    return ScanView(np.zeros(hw, np.uint8), tilt, turns, area if area is not None else hw[0] * hw[1])


def _res(e: Ellipse | None, error: str | None = None) -> Result:
    return Result("segmentation", ellipse=e, error=error)


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_a_turned_region_holds_the_same_pixels(k):
    img = np.arange(7 * 11).reshape(7, 11)
    y0, x0, h, w = turned_region((1, 2, 4, 6), k, 7, 11)
    assert np.array_equal(turned(img, k)[y0 : y0 + h, x0 : x0 + w], turned(img[1:5, 2:8], k))


def test_the_crop_is_the_head_box_grown_by_the_margin_and_widened_to_the_input_shape():
    # a circle of radius 50 px at (200, 150): box half-sides 50 -> 90 (x1.8) -> 135 x 90 (input 3:2)
    assert defaults.ZOOM_MARGIN == 1.8  # the hand-computed numbers below are for this margin
    crop = zoom_region({"s": _res(Ellipse(200.0, 150.0, 50.0, 50.0, 0.0))}, _view(), INPUT_HW)
    assert crop is not None
    assert np.allclose(crop, (60, 65, 180, 270), atol=1)


def test_the_crop_covers_every_method_s_head_and_ignores_failed_ones():
    a, b = Ellipse(300.0, 300.0, 40.0, 30.0, 0.0), Ellipse(340.0, 300.0, 40.0, 30.0, 0.0)
    crop = zoom_region({"s": _res(a), "l": _res(b), "x": _res(None, "no head found")}, _view(), INPUT_HW)
    # union box x 260-380, y 270-330: half-sides 60, 30 -> 108, 54 -> 108 x 72 about (320, 300)
    assert np.allclose(crop, (228, 212, 144, 216), atol=1)
    assert zoom_region({"x": _res(None, "no head found")}, _view(), INPUT_HW) is None


def test_a_large_head_is_measured_once():
    big = Ellipse(500.0, 400.0, 300.0, 250.0, 0.0)  # 1.8x its box would cover the whole image
    assert zoom_region({"s": _res(big)}, _view(), INPUT_HW) is None
    # the area compared is what the first look letterboxed: a small region (a capture's image) counts
    small = Ellipse(500.0, 400.0, 60.0, 50.0, 0.0)
    assert zoom_region({"s": _res(small)}, _view(), INPUT_HW) is not None
    assert zoom_region({"s": _res(small)}, _view(area=120 * 180), INPUT_HW) is None


def test_the_crop_is_clipped_to_the_image():
    crop = zoom_region({"s": _res(Ellipse(30.0, 40.0, 20.0, 20.0, 0.0))}, _view(), INPUT_HW)
    # unclipped x -24..84, y 4..76
    assert np.allclose(crop, (4, 0, 72, 84), atol=1)


def test_a_portrait_scan_s_crop_is_tall_so_that_its_turned_views_have_the_input_shape():
    crop = zoom_region({"s": _res(Ellipse(400.0, 500.0, 50.0, 50.0, 0.0))}, _view(turns=(1, 3)), INPUT_HW)
    _, _, h, w = crop
    assert w / h == pytest.approx(INPUT_HW[0] / INPUT_HW[1], rel=0.02)
    y0, x0, th, tw = turned_region(crop, 1, 800, 1000)
    assert tw / th == pytest.approx(INPUT_HW[1] / INPUT_HW[0], rel=0.02)


def test_a_turned_scan_s_crop_is_in_the_squared_back_pixels():
    # the affine from the file's pixels to the upright image's: here a shift by (-100, -50)
    tilt = ((1.0, 0.0, -100.0, 0.0, 1.0, -50.0), 900, 1100, 10.0)
    e = Ellipse(300.0, 200.0, 50.0, 50.0, 0.0)
    crop = zoom_region({"s": _res(e)}, _view(tilt=tilt), INPUT_HW)
    assert np.allclose(crop, (60, 65, 180, 270), atol=1)  # the circle at (200, 150) in the upright image


def _engine():
    from fetalbio.engines import load_engine

    return load_engine(None, "segmentation", "litert")


def test_a_small_head_is_measured_again_in_a_crop_and_mapped_back_to_the_scan():
    from fetalbio.io import Scan
    from fetalbio.pipeline import Predictor
    from fetalbio.synthetic import draw_scan

    rng = np.random.default_rng(3)
    e = Ellipse(330.0, 250.0, 70.0, 56.0, 20.0)  # a small head in an 800 x 540 scan
    img = draw_scan((540, 800), e, rng)
    sp = (0.2, 0.2)
    eng = _engine()
    scan = Scan(img, sp, Path("a.png"), "cli")
    once = Predictor({"segmentation": eng}, zoom=False).predict_scans([scan])[0]
    twice = Predictor({"segmentation": eng}).predict_scans([scan])[0]
    assert once.zoom_regions == {}
    y0, x0, h, w = twice.zoom_regions["segmentation"]
    assert x0 < e.cx_px - e.semi_major_px and x0 + w > e.cx_px + e.semi_major_px
    assert y0 < e.cy_px - e.semi_major_px and y0 + h > e.cy_px + e.semi_major_px
    lb = twice.letterboxes["segmentation"]
    assert (lb.off_y, lb.off_x, lb.orig_h, lb.orig_w) == (y0, x0, h, w)  # the second look's letterbox
    got = twice.results["segmentation"].ellipse
    assert np.hypot(got.cx_px - e.cx_px, got.cy_px - e.cy_px) < 0.03 * e.semi_major_px
    hc_once = measure_ellipse(once.results["segmentation"].ellipse, sp).hc
    hc_twice = measure_ellipse(got, sp).hc
    assert hc_twice == pytest.approx(hc_once, rel=0.03)
    assert hc_twice == pytest.approx(measure_ellipse(e, sp).hc, rel=0.05)
    assert twice.results["segmentation"].mask.shape == img.shape  # maps in the scan's pixels


def test_a_second_look_that_cuts_the_head_or_finds_none_keeps_the_first():
    from fetalbio.engines import CallableEngine
    from fetalbio.io import Scan
    from fetalbio.pipeline import Predictor

    info = _engine().info
    calls = []

    def fn(x):  # first look: a disc in the input's middle; second: everything is head (cut by the crop)
        calls.append(len(x))
        n, h, w, _ = x.shape
        yy, xx = np.mgrid[0:h, 0:w]
        disc = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (0.15 * h) ** 2).astype(np.float32)
        out = disc if len(calls) == 1 else np.ones((h, w), np.float32)
        return np.broadcast_to(out[None, :, :, None], (n, h, w, 1)).copy()

    eng = CallableEngine(fn, info)
    scan = Scan(np.full((540, 800), 40, np.uint8), (0.2, 0.2), Path("a.png"), "cli")
    p = Predictor({"segmentation": eng}).predict_scans([scan])[0]
    assert len(calls) == 2 and "segmentation" in p.zoom_regions  # a second look was taken ...
    res = p.results["segmentation"]
    assert "edge" not in res.flags  # ... and dropped: it cut the head
    assert res.ellipse.semi_major_px == pytest.approx(0.15 * 540, rel=0.05)


def test_a_method_s_second_look_does_not_depend_on_which_other_methods_ran():
    from fetalbio.engines import load_engine
    from fetalbio.io import Scan
    from fetalbio.pipeline import Predictor
    from fetalbio.synthetic import draw_scan

    img = draw_scan((540, 800), Ellipse(420.0, 280.0, 80.0, 62.0, -15.0), np.random.default_rng(5))
    scan = Scan(img, (0.2, 0.2), Path("a.png"), "cli")
    seg = _engine()
    alone = Predictor({"segmentation": seg}).predict_scans([scan])[0]
    both = Predictor(
        {"segmentation": seg, "landmarks": load_engine(None, "landmarks", "litert")}
    ).predict_scans([scan])[0]
    assert set(both.zoom_regions) == {"segmentation", "landmarks"}
    assert alone.zoom_regions["segmentation"] == both.zoom_regions["segmentation"]
    assert alone.results["segmentation"].ellipse == both.results["segmentation"].ellipse
