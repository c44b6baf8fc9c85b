"""Scans turned by any angle: the turned frame is found, squared back to the axes and mapped back exactly."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fetalbio.geometry import Ellipse
from fetalbio.perturb import rotate
from fetalbio.preprocess import Letterbox, RotatedView, TiltedView, turned, upright
from fetalbio.region import TILT_MIN_DEG, find_tilt
from fetalbio.synthetic import draw_scan, random_ellipse, show_on_screen


def _scan(seed: int, hw=(360, 520)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return draw_scan(hw, random_ellipse(hw, rng), rng)


def _fan(img: np.ndarray, half_angle_deg: float = 38.0) -> np.ndarray:
    """The scan inside a sector (apex above the top edge), black outside, as HC18 scans are."""
    h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    apex = (w / 2, -0.15 * h)
    ang = np.degrees(np.arctan2(xx - apex[0], yy - apex[1]))
    r = np.hypot(xx - apex[0], yy - apex[1])
    inside = (np.abs(ang) <= half_angle_deg) & (r <= 1.3 * h)  # cut by the top and bottom edges
    return np.where(inside, img, 0).astype(np.uint8)


def _expected(deg: float) -> float:
    """The frame's side direction in image axes (y down) after ``rotate(img, deg)``, in (-45, 45]."""
    return (-deg + 45.0) % 90.0 - 45.0


@pytest.mark.parametrize("deg", [7.0, 30.0, -22.5, 44.0, 120.0, 200.0, 313.0])
def test_a_turned_scan_is_found_with_its_angle_and_size(deg):
    img = _scan(1)
    found = find_tilt(rotate(img, deg))
    assert found is not None
    angle, _, (fw, fh) = found
    assert abs((angle - _expected(deg) + 45) % 90 - 45) < 0.5
    # the frame is the whole scan, whichever side ended up along the angle
    h, w = img.shape
    assert sorted((fw, fh)) == pytest.approx(sorted((w, h)), abs=0.03 * w)


def test_a_turned_fan_is_found_even_though_its_black_corners_look_like_fill():
    img = _fan(_scan(2, (400, 560)))
    found = find_tilt(rotate(img, 25.0))
    assert found is not None and abs(found[0] - _expected(25.0)) < 1.0


@pytest.mark.parametrize(
    "img",
    [
        _scan(3),  # a plain scan
        _fan(_scan(4, (400, 560))),  # a fan on black, upright: its bounding rectangle may lean a little
        _fan(_scan(5, (400, 560)), 60.0),
        np.zeros((200, 300), np.uint8),  # nothing at all
    ],
)
def test_an_upright_scan_is_left_alone(img):
    assert find_tilt(img) is None


def test_a_small_tilt_is_left_alone():
    assert find_tilt(rotate(_scan(6), TILT_MIN_DEG / 2)) is None


def test_a_scan_on_a_textured_background_is_not_a_turned_frame():
    canvas = np.random.default_rng(0).integers(40, 200, (500, 700)).astype(np.uint8)
    assert find_tilt(canvas) is None  # no flat fill in the corners


def test_the_upright_view_maps_points_and_maps_back_exactly():
    img = _scan(7)
    turned_img = rotate(img, 33.0)
    found = find_tilt(turned_img)
    up, m = upright(turned_img, found)
    lb = Letterbox.fit(up.shape, (128, 192))
    view = TiltedView(lb, m, *turned_img.shape, found[0])
    pts = np.array([[100.0, 80.0], [300.5, 200.25], [250.0, 250.0]])
    assert np.allclose(view.to_original(view.to_input(pts)), pts, atol=1e-9)
    # a pixel of the upright image shows the turned image's pixel at the mapped-back position
    inner = np.array([[up.shape[1] * 0.3, up.shape[0] * 0.4], [up.shape[1] * 0.7, up.shape[0] * 0.6]])
    back = view._affine(inner, inverse=True)
    for (ux, uy), (ox, oy) in zip(inner, back, strict=True):
        assert abs(int(up[int(uy), int(ux)]) - int(turned_img[round(oy), round(ox)])) <= 40
    # a map in the input lands, warped, at the same place of the turned image
    prob = np.zeros((128, 192), np.float32)
    c_in = lb.to_input(np.array([[up.shape[1] / 2, up.shape[0] / 2]]))[0].round().astype(int)
    prob[c_in[1] - 3 : c_in[1] + 4, c_in[0] - 3 : c_in[0] + 4] = 1.0
    mapped = view.map_to_original(prob)
    assert mapped.shape == turned_img.shape
    ys, xs = np.nonzero(mapped > 0.5)
    centre = view.to_original(c_in[None].astype(float))[0]
    assert abs(xs.mean() - centre[0]) < 2 and abs(ys.mean() - centre[1]) < 2


def test_a_turned_and_quarter_turned_view_composes():
    img = _scan(8, (520, 360))  # portrait: measured turned a quarter each way as well
    turned_img = rotate(img, 20.0)
    found = find_tilt(turned_img)
    up, m = upright(turned_img, found)
    t = turned(up, 1)
    view = TiltedView(
        RotatedView(Letterbox.fit(t.shape, (128, 192)), 1, *up.shape), m, *turned_img.shape, 20.0
    )
    pts = np.array([[150.0, 120.0], [260.0, 330.0]])
    assert np.allclose(view.to_original(view.to_input(pts)), pts, atol=1e-9)
    assert view.k == 1


@pytest.mark.slow
@pytest.mark.parametrize("deg", [30.0, 145.0])
def test_a_turned_scan_is_measured_like_the_upright_one(deg):
    """The same synthetic head, the whole scan turned: the same HC, and the ellipse where the head is."""
    rng = np.random.default_rng(9)
    hw = (540, 800)
    e = random_ellipse(hw, rng)
    img = draw_scan(hw, e, rng)
    turned_img = rotate(img, deg)
    # where the head's centre went: the same affine as perturb.rotate
    h, w = hw
    m = cv2.getRotationMatrix2D((w / 2, h / 2), deg, 1.0)
    m[0, 2] += turned_img.shape[1] / 2 - w / 2
    m[1, 2] += turned_img.shape[0] / 2 - h / 2
    _measured_alike(img, turned_img, e, m @ np.array([e.cx_px, e.cy_px, 1.0]))


def _measured_alike(img: np.ndarray, turned_img: np.ndarray, e: Ellipse, centre: np.ndarray) -> None:
    """The turned scan's HC within 2 % of the upright one's, its ellipse centred where the head went."""
    from pathlib import Path

    from fetalbio.engines import load_engine
    from fetalbio.geometry import measure_ellipse
    from fetalbio.io import Scan
    from fetalbio.pipeline import Predictor

    sp = (0.15, 0.15)
    eng = load_engine(None, "segmentation", "litert")
    flat, tilted = Predictor({"segmentation": eng}).predict_scans(
        [Scan(img, sp, Path("a.png"), "cli"), Scan(turned_img, sp, Path("b.png"), "cli")]
    )
    a = measure_ellipse(flat.results["segmentation"].ellipse, sp).hc
    got: Ellipse = tilted.results["segmentation"].ellipse
    assert tilted.view.tilt is not None  # squared back
    assert measure_ellipse(got, sp).hc == pytest.approx(a, rel=0.02)
    assert np.hypot(got.cx_px - centre[0], got.cy_px - centre[1]) < 0.02 * e.semi_major_px * 2


def test_a_tall_screen_with_a_landscape_scan_inside_is_not_turned():
    """Whether to turn is decided by the ultrasound image's region, not by the screen's shape."""
    from pathlib import Path

    from fetalbio.engines import load_engine
    from fetalbio.io import Scan
    from fetalbio.pipeline import Predictor

    img = _scan(10)
    screen = np.full((900, 600), 18, np.uint8)  # a tall screen, the landscape scan in its middle
    screen[250:610, 40:560] = img
    portrait = np.ascontiguousarray(np.rot90(img))
    eng = load_engine(None, "segmentation", "litert")
    tall, turned_ = Predictor({"segmentation": eng}).predict_scans(
        [Scan(screen, (0.15, 0.15), Path("a.png"), "cli"), Scan(portrait, (0.15, 0.15), Path("b.png"), "cli")]
    )
    assert getattr(tall.letterboxes["segmentation"], "k", 0) == 0
    assert turned_.letterboxes["segmentation"].k in (1, 3)  # measured turned back (both ways, averaged)


# --- scans turned inside their own canvas (PIL's rotate, OpenCV's warpAffine: corners cut off) ---


@pytest.mark.parametrize("deg", [12.0, 30.0, -22.5, 41.0, 100.0, 200.0, -75.0])
def test_a_scan_turned_in_place_is_found_with_its_angle_and_the_canvas_size(deg):
    from fetalbio.perturb import rotate_in_place
    from fetalbio.region import find_tilt_in_place

    img = _scan(11)
    cut = rotate_in_place(img, deg)
    assert cut.shape == img.shape and find_tilt(cut) is None  # not a frame inscribed in a grown canvas
    found = find_tilt_in_place(cut)
    assert found is not None
    angle, centre, (fw, fh) = found
    assert abs((angle - _expected(deg) + 45) % 90 - 45) < 1.0
    h, w = img.shape
    assert centre == pytest.approx(((w - 1) / 2, (h - 1) / 2))
    # the turned scan's own size, its long side along the angle unless turned by about a quarter
    quarter = round(deg / 90.0) % 2 == 1
    assert (fw, fh) == ((h, w) if quarter else (w, h))


@pytest.mark.parametrize(
    "img",
    [
        _scan(3),
        _fan(_scan(4, (400, 560))),  # a fan's straight edges lean, but lie on no turned frame
        _fan(_scan(5, (400, 560)), 60.0),
        _fan(_scan(12, (400, 560)), 25.0),
        np.zeros((200, 300), np.uint8),
    ],
)
def test_an_upright_scan_or_fan_is_not_turned_in_place(img):
    from fetalbio.region import find_tilt_in_place

    assert find_tilt_in_place(img) is None


def test_a_small_turn_in_place_is_left_alone():
    from fetalbio.perturb import rotate_in_place
    from fetalbio.region import IN_PLACE_MIN_DEG, find_tilt_in_place

    assert find_tilt_in_place(rotate_in_place(_scan(13), IN_PLACE_MIN_DEG / 2)) is None


def test_the_cut_corners_get_the_fill_and_points_map_back_exactly():
    from fetalbio.perturb import rotate_in_place
    from fetalbio.region import find_tilt_in_place

    img = _scan(14)
    cut = rotate_in_place(img, 27.0)
    found = find_tilt_in_place(cut)
    up, m = upright(cut, found)
    h, w = img.shape
    assert up.shape == (h, w)
    # the corners of the squared-back scan were cut off: canvas fill (0), not smeared content
    for y, x in ((2, 2), (2, w - 3), (h - 3, 2), (h - 3, w - 3)):
        assert up[y, x] == 0
    # its middle is the original scan's middle, back upright
    mid = (slice(h // 3, 2 * h // 3), slice(w // 3, 2 * w // 3))
    assert np.abs(up[mid].astype(int) - img[mid].astype(int)).mean() < 12
    view = TiltedView(Letterbox.fit(up.shape, (128, 192)), m, *cut.shape, found[0])
    pts = np.array([[100.0, 80.0], [300.5, 200.25]])
    assert np.allclose(view.to_original(view.to_input(pts)), pts, atol=1e-9)


@pytest.mark.slow
def test_a_scan_turned_in_place_is_measured_like_the_upright_one():
    """The same synthetic head, the scan turned by 35 degrees inside its own canvas (head not cut)."""

    from fetalbio.perturb import rotate_in_place

    rng = np.random.default_rng(15)
    hw = (540, 800)
    e = Ellipse(400.0, 270.0, 150.0, 115.0, 10.0)  # in the middle: no part of it is cut off
    img = draw_scan(hw, e, rng)
    cut = rotate_in_place(img, 35.0)
    m = cv2.getRotationMatrix2D((hw[1] / 2, hw[0] / 2), 35.0, 1.0)
    _measured_alike(img, cut, e, m @ np.array([e.cx_px, e.cy_px, 1.0]))


def test_the_pipeline_finder_tries_both_kinds_of_turn():
    from fetalbio.perturb import rotate_in_place
    from fetalbio.region import find_any_tilt, find_tilt_in_place

    img = _scan(16)
    grown, cut = rotate(img, 25.0), rotate_in_place(img, 25.0)
    assert find_any_tilt(grown) == find_tilt(grown) is not None
    assert find_any_tilt(cut) == find_tilt_in_place(cut) is not None
    assert find_any_tilt(img) is None


@pytest.mark.parametrize("deg", [30.0, -20.0, 130.0])
def test_a_turned_scan_shown_in_a_capture_is_found_where_it_is(deg):
    from fetalbio.region import find_any_tilt, find_image_region, find_tilt_in_capture

    img = _fan(_scan(17, (400, 560)))
    picture = rotate(img, deg)
    screen = show_on_screen(picture)
    assert find_any_tilt(screen) is None  # the screen itself is not turned
    region = find_image_region(screen)
    assert region is not None
    found = find_tilt_in_capture(screen, region)
    assert found is not None
    angle, (cx, cy), (fw, fh) = found
    assert abs((angle - _expected(deg) + 45) % 90 - 45) < 0.5
    assert sorted((fw, fh)) == pytest.approx(sorted(img.shape), abs=0.03 * img.shape[1])
    ph, pw = picture.shape
    assert (cx, cy) == pytest.approx((150 + (pw - 1) / 2, 90 + (ph - 1) / 2), abs=2.0)


@pytest.mark.parametrize("fill", [20, 80])
def test_an_upright_scan_or_fan_shown_in_a_capture_is_not_turned(fill):
    from fetalbio.region import find_image_region, find_tilt_in_capture

    for img in (_scan(18), _fan(_scan(19, (400, 560))), _fan(_scan(20, (400, 560)), 60.0)):
        screen = show_on_screen(img, fill)
        region = find_image_region(screen)
        assert region is not None and find_tilt_in_capture(screen, region) is None


def test_a_turned_scan_on_a_black_screen_is_not_separated_from_it():
    """Its canvas is the screen's colour: no picture to look inside (measured as it is, docs)."""
    from fetalbio.region import find_image_region, find_tilt_in_capture

    screen = show_on_screen(rotate(_fan(_scan(21, (400, 560))), 30.0), fill=0)
    region = find_image_region(screen)
    assert region is None or find_tilt_in_capture(screen, region) is None


@pytest.mark.slow
def test_a_turned_scan_in_a_capture_is_measured_like_the_upright_one():
    rng = np.random.default_rng(22)
    hw = (540, 800)
    e = Ellipse(400.0, 270.0, 170.0, 125.0, 15.0)
    img = draw_scan(hw, e, rng)
    picture = rotate(img, 30.0)
    h, w = hw
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 30.0, 1.0)
    m[0, 2] += picture.shape[1] / 2 - w / 2
    m[1, 2] += picture.shape[0] / 2 - h / 2
    centre = m @ np.array([e.cx_px, e.cy_px, 1.0]) + np.array([150.0, 90.0])
    _measured_alike(img, show_on_screen(picture), e, centre)
