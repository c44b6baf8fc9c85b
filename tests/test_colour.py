"""A machine's coloured overlay (calipers, traces, text) is taken out when a colour scan becomes grey."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fetalbio.colour import OVERLAY_MAX_FRAC, colour_to_grey, overlay_mask
from fetalbio.geometry import Ellipse, draw_ellipse_mask
from fetalbio.perturb import perturb
from fetalbio.synthetic import draw_scan, random_ellipse

SEPIA = np.array([1.0, 0.85, 0.65])


def _scan(seed: int = 0, hw=(360, 520)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return draw_scan(hw, random_ellipse(hw, rng), rng)


def _marks(rgb: np.ndarray) -> np.ndarray:
    """Draw a yellow cross, a green line and cyan text (RGB order); returns the pixels they changed."""
    before = rgb.copy()
    cv2.drawMarker(rgb, (200, 150), (255, 255, 0), cv2.MARKER_CROSS, 16, 2)
    cv2.line(rgb, (60, 60), (400, 260), (0, 255, 0), 2)
    cv2.putText(rgb, "HC 171.4mm", (10, 340), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 255), 2)
    return (rgb != before).any(axis=2)


def test_a_grey_image_stored_in_colour_converts_exactly():
    g = _scan(1)
    out, share = colour_to_grey(cv2.cvtColor(g, cv2.COLOR_GRAY2BGR), bgr=True)
    assert share == 0.0 and np.array_equal(out, g)


def test_coloured_marks_are_found_and_filled_in_from_around_them():
    g = _scan(2)
    rgb = cv2.cvtColor(g, cv2.COLOR_GRAY2RGB)
    drawn = _marks(rgb)
    mask = overlay_mask(rgb)
    # the marks and nothing else (a few faint pixels of the text's smoothed rim stay: near grey)
    assert not mask[~drawn].any() and mask[drawn].mean() > 0.95
    out, share = colour_to_grey(rgb, bgr=False)
    assert share == pytest.approx(mask.mean())
    assert np.array_equal(out[~mask], cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[~mask])  # only the marks change
    plain = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    err_plain = np.abs(plain[drawn].astype(int) - g[drawn]).mean()
    err_filled = np.abs(out[drawn].astype(int) - g[drawn]).mean()
    assert err_filled < 0.25 * err_plain


def test_channel_order_does_not_matter():
    rgb = cv2.cvtColor(_scan(3), cv2.COLOR_GRAY2RGB)
    _marks(rgb)
    a, _ = colour_to_grey(rgb, bgr=False)
    b, _ = colour_to_grey(np.ascontiguousarray(rgb[:, :, ::-1]), bgr=True)
    assert np.array_equal(a, b)


def test_a_tinted_scan_is_not_an_overlay_but_marks_on_it_are():
    g = _scan(4)
    sepia = np.clip(g[..., None] * SEPIA, 0, 255).astype(np.uint8)
    assert not overlay_mask(sepia).any()
    out, share = colour_to_grey(sepia, bgr=False)
    assert share == 0.0 and np.array_equal(out, cv2.cvtColor(sepia, cv2.COLOR_RGB2GRAY))
    drawn = _marks(sepia)
    mask = overlay_mask(sepia)
    assert not mask[~drawn].any() and mask[drawn].mean() > 0.95


def test_a_solid_coloured_area_is_converted_as_it_is_and_marks_beside_it_are_taken_out():
    """Colour Doppler or a screen's coloured panel is no mark on the echo: left to the grey conversion,
    while the calipers next to it still go."""
    g = _scan(5)
    rgb = cv2.cvtColor(g, cv2.COLOR_GRAY2RGB)
    rgb[100:220, 150:330] = (200, 40, 40)  # a red box of 12 % of the image
    drawn = _marks(rgb)
    plain = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    out, share = colour_to_grey(rgb, bgr=False)
    assert 0 < share < 0.05
    assert np.array_equal(out[100:220, 150:330], plain[100:220, 150:330])
    marks = drawn.copy()
    marks[99:221, 149:331] = False  # the marks away from the box
    assert (
        np.abs(out[marks].astype(int) - g[marks]).mean()
        < 0.25 * np.abs(plain[marks].astype(int) - g[marks]).mean()
    )


def test_a_coloured_picture_is_converted_as_it_is():
    """Thin coloured structure everywhere (a colour image, not an overlay): more than OVERLAY_MAX_FRAC."""
    g = _scan(9)
    rgb = cv2.cvtColor(g, cv2.COLOR_GRAY2RGB)
    rgb[::6, :, 0] = 255  # red lines every 6 rows: 17 % of the pixels, all thin
    assert overlay_mask(rgb).mean() > OVERLAY_MAX_FRAC
    out, share = colour_to_grey(rgb, bgr=False)
    assert share == 0.0 and np.array_equal(out, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def test_sixteen_bit_and_alpha():
    g = _scan(6)
    rgba = cv2.cvtColor(g, cv2.COLOR_GRAY2RGBA)
    drawn = _marks(rgba[:, :, :3].copy())
    rgba[drawn, :3] = (255, 255, 0)  # full colour only: no rim
    rgba16 = rgba.astype(np.uint16) * 257
    out, share = colour_to_grey(rgba16, bgr=False)
    assert out.dtype == np.uint16 and share == pytest.approx(drawn.mean())
    assert np.array_equal(out[~drawn], g[~drawn].astype(np.uint16) * 257)


def test_a_png_with_calipers_is_read_without_them(tmp_path):
    from fetalbio.io import read_scan

    g = _scan(7)
    rgb = cv2.cvtColor(g, cv2.COLOR_GRAY2RGB)
    drawn = _marks(rgb)
    path = tmp_path / "calipers.png"
    cv2.imwrite(str(path), rgb[:, :, ::-1])
    scan = read_scan(path, pixel_size_mm=0.2)
    plain = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    assert np.array_equal(scan.pixels[~drawn], g[~drawn])
    err = np.abs(scan.pixels[drawn].astype(int) - g[drawn]).mean()
    assert err < 0.25 * np.abs(plain[drawn].astype(int) - g[drawn]).mean()


def test_the_overlay_perturbation_draws_on_the_head_in_colour():
    hw = (360, 520)
    e = Ellipse(260.0, 180.0, 150.0, 110.0, 20.0)
    g = draw_scan(hw, e, np.random.default_rng(8))
    with pytest.raises(ValueError, match="ellipse"):
        perturb("colour_overlay", g, 0.2)
    with pytest.raises(ValueError, match="alone"):
        perturb("rotate30+colour_overlay", g, 0.2, ellipse=e)
    rgb, px = perturb("colour_overlay", g, 0.2, seed=1, ellipse=e)
    assert rgb.shape == (*hw, 3) and px == 0.2
    drawn = (rgb != g[..., None]).any(axis=2)
    # the green trace runs along the outline: within 3 px of the drawn ellipse's own boundary
    trace = (rgb == (0, 255, 0)).all(axis=2)
    inside, box = draw_ellipse_mask(hw, e), np.ones((7, 7), np.uint8)
    near = cv2.dilate(inside, box).astype(bool) & ~cv2.erode(inside, box).astype(bool)
    assert trace.sum() > 500 and near[trace].all()
    mask = overlay_mask(rgb)  # the smoothed text's rim is partly near grey
    assert not mask[~drawn].any() and mask[drawn].mean() > 0.9


def test_a_head_with_a_traced_ring_is_measured_like_the_clean_one():
    from fetalbio.engines import load_engine
    from fetalbio.geometry import measure_ellipse
    from fetalbio.io import Scan
    from fetalbio.modelinfo import default_model_path
    from fetalbio.pipeline import Predictor

    if not default_model_path("segmentation", "litert").exists():
        pytest.skip("no shipped int8 segmentation model")
    hw = (540, 800)
    e = Ellipse(400.0, 270.0, 190.0, 140.0, 10.0)
    g = draw_scan(hw, e, np.random.default_rng(9))
    rgb = cv2.cvtColor(g, cv2.COLOR_GRAY2RGB)
    ring = Ellipse(e.cx_px, e.cy_px, 1.15 * e.semi_major_px, 1.15 * e.semi_minor_px, e.angle_deg)
    rgb = perturb("colour_overlay", g, 0.15, seed=2, ellipse=ring)[0]  # a trace drawn 15 % too large
    sp = (0.15, 0.15)
    pred = Predictor({"segmentation": load_engine(None, "segmentation", "litert")})
    clean, traced = pred.predict_scans(
        [Scan(g, sp, Path("a.png"), "cli"), Scan(colour_to_grey(rgb, bgr=False)[0], sp, Path("b.png"), "cli")]
    )
    a = measure_ellipse(clean.results["segmentation"].ellipse, sp).hc
    b = measure_ellipse(traced.results["segmentation"].ellipse, sp).hc
    assert b == pytest.approx(a, rel=0.01)
