"""A capture showing the scan as a picture of its own is measured on exactly that picture (find_picture)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fetalbio.geometry import Ellipse
from fetalbio.region import find_image_region, find_picture
from fetalbio.synthetic import draw_scan, random_ellipse, show_on_screen


def _scan(seed: int, hw=(360, 520)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return draw_scan(hw, random_ellipse(hw, rng), rng)


def _fan(img: np.ndarray) -> np.ndarray:
    """The scan inside a sector on black (its corners black), as HC18 scans are."""
    h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = np.degrees(np.arctan2(xx - w / 2, yy + 0.15 * h))
    return np.where((np.abs(ang) <= 38) & (np.hypot(xx - w / 2, yy + 0.15 * h) <= 1.3 * h), img, 0).astype(
        np.uint8
    )


def _whole(img: np.ndarray) -> tuple[int, int, int, int]:
    return find_image_region(img) or (0, 0, *img.shape)


@pytest.mark.parametrize("fill", [20, 80])
@pytest.mark.parametrize("fan", [False, True])
def test_the_picture_on_a_screen_is_found_exactly(fill, fan):
    img = _fan(_scan(1)) if fan else _scan(1)
    screen = show_on_screen(img, fill, at=(170, 70))
    assert find_picture(screen, _whole(screen)) == (70, 170, *img.shape)


@pytest.mark.parametrize("img", [_scan(2), _fan(_scan(3)), _fan(_scan(4))[:, 40:-40]])
def test_a_scan_as_given_is_no_picture(img):
    assert find_picture(img, _whole(img)) is None


def test_a_noisy_scan_is_no_picture():
    """Gaussian noise on a fan's black margins: its content is a solid piece off the border, but no flat
    screen lies around it."""
    img = np.zeros((600, 860), np.uint8)
    img[30:570, 30:830] = _fan(_scan(8, (540, 800)))  # black all round: the content touches no border
    noisy = np.clip(img + np.random.default_rng(0).normal(0, 20, img.shape), 0, 255).astype(np.uint8)
    # (without the flat-screen test around it, this is found as a picture of 560 x 812 px)
    assert find_picture(noisy, _whole(noisy)) is None


def test_a_fan_on_a_screen_of_its_own_black_is_no_picture():
    """Its edges are the screen's colour: no rectangle to cut out, the texture's region stays."""
    screen = show_on_screen(_fan(_scan(5)), fill=0)
    assert find_picture(screen, _whole(screen)) is None


def test_a_head_in_a_capture_is_measured_exactly_as_the_scan_itself():
    """The models see the very input of the scan alone: the same HC, the ellipse moved by the offset."""
    from fetalbio.engines import load_engine
    from fetalbio.geometry import measure_ellipse
    from fetalbio.io import Scan
    from fetalbio.modelinfo import default_model_path
    from fetalbio.pipeline import Predictor

    if not default_model_path("segmentation", "litert").exists():
        pytest.skip("no shipped int8 segmentation model")
    hw = (540, 800)
    e = Ellipse(380.0, 280.0, 160.0, 120.0, 5.0)
    img = _fan(draw_scan(hw, e, np.random.default_rng(6)))
    sp = (0.15, 0.15)
    pred = Predictor({"segmentation": load_engine(None, "segmentation", "litert")}, zoom=False)
    alone, shown = pred.predict_scans(
        [
            Scan(img, sp, Path("a.png"), "cli"),
            Scan(show_on_screen(img, at=(150, 90)), sp, Path("b.png"), "cli"),
        ]
    )
    a, b = alone.results["segmentation"].ellipse, shown.results["segmentation"].ellipse
    assert measure_ellipse(b, sp).hc == pytest.approx(measure_ellipse(a, sp).hc, rel=1e-4)
    assert (b.cx_px - 150, b.cy_px - 90) == pytest.approx((a.cx_px, a.cy_px), abs=0.05)


def test_the_pipeline_region_is_the_picture_else_the_textured_box_else_none():
    from fetalbio.region import find_region

    img = _fan(_scan(7))
    assert find_region(img) is None  # a scan as given: all of it
    on_grey = show_on_screen(img, 20, at=(150, 90))
    assert find_region(on_grey) == (90, 150, *img.shape)
    on_black = show_on_screen(img, 0, at=(150, 90))
    textured = find_image_region(on_black)
    assert textured is not None and find_region(on_black) == textured


@pytest.mark.parametrize("gap, line", [(1, 90), (2, 200), (8, 20)])
@pytest.mark.parametrize("fan", [False, True])
def test_a_dual_view_measures_the_left_scan_and_says_so(gap, line, fan):
    # two different scans side by side (a machine's dual view: touching, split by a thin line, or apart on
    # the screen's colour): the region was one of them by chance, the other head was reported "ok"
    from fetalbio.region import find_panels, locate

    a, b = (_scan(s) for s in (3, 4))
    if fan:
        a, b = _fan(a), _fan(b)
    pair = np.concatenate([a, np.full((a.shape[0], gap), line, np.uint8), b], axis=1)
    screen = show_on_screen(pair, 20, at=(60, 50))
    region, _, dual = locate(screen)
    assert dual
    y0, x0, h, w = region
    assert abs(x0 - 60) <= 2 and abs(y0 - 50) <= 2 and w <= a.shape[1] + 2 + gap  # the left panel
    one = show_on_screen(a, 20, at=(60, 50))
    assert not locate(one)[2] and find_panels(a, None) is None  # one scan is one scan
    # a file that is itself the two panels (no screen around them)
    assert find_panels(pair, None) is not None


def test_a_dual_view_row_goes_to_review_with_its_reason():
    from fetalbio.engines import load_engine
    from fetalbio.io import Scan
    from fetalbio.pipeline import Predictor
    from fetalbio.predict import apply_review, measurement_row

    a, b = _scan(3, (540, 800)), _scan(4, (540, 800))
    screen = show_on_screen(np.concatenate([a, np.full((540, 8), 20, np.uint8), b], axis=1), 20, at=(60, 50))
    engines = {m: load_engine(None, m, "litert") for m in ("segmentation", "landmarks")}
    single, dual = Predictor(engines, combined=("fused",)).predict_scans(
        [Scan(a, (0.15, 0.15), Path("a.png"), "cli"), Scan(screen, (0.15, 0.15), Path("dual.png"), "cli")]
    )
    row = measurement_row("dual.png", dual.results["fused"], dual.scan)
    apply_review([row])
    assert row["status"] == "review" and "two scans side by side" in row["review_reasons"]
    assert row["hc_mm"] == pytest.approx(
        measurement_row("a.png", single.results["fused"], single.scan)["hc_mm"], rel=0.02
    )


def test_a_dual_view_of_portrait_panels_measures_the_left_head_in_both_turned_views():
    # a 4:3 screen split in two has panels taller than wide: each turned view searched its own region and
    # chose another panel, and the two patients' heads were averaged
    from fetalbio.engines import load_engine
    from fetalbio.geometry import Ellipse
    from fetalbio.io import Scan
    from fetalbio.pipeline import Predictor

    rng = np.random.default_rng(1)
    left = draw_scan((520, 380), Ellipse.from_axes(190, 260, 150, 120, 90), rng)  # a large head
    right = draw_scan((520, 380), Ellipse.from_axes(190, 260, 90, 72, 90), rng)  # a small one
    screen = np.full((700, 1140), 20, np.uint8)
    screen[90:610, 150:530], screen[90:610, 570:950] = left, right
    engines = {m: load_engine(None, m, "litert") for m in ("segmentation", "landmarks")}
    (pred,) = Predictor(engines, combined=("fused",)).predict_scans(
        [Scan(screen, None, Path("d.png"), "none")]
    )
    assert pred.view.turns == (1, 3) and pred.view.flags == ("two_images",)
    for r in pred.results.values():
        assert 150 <= r.ellipse.cx_px <= 530 and r.ellipse.semi_major_px > 120  # the left, large head
