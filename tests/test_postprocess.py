import numpy as np
import pytest

from fetalbio.geometry import Ellipse, draw_ellipse_mask
from fetalbio.postprocess import clean_mask, dice, hausdorff_mm, segment_to_ellipse


def test_clean_mask_keeps_largest_component_and_fills_holes():
    e = Ellipse(200, 150, 100, 70, 10)
    mask = draw_ellipse_mask((300, 400), e).astype(np.float32)
    mask[140:160, 190:210] = 0  # a hole
    mask[5:15, 5:15] = 1  # a speck
    cleaned = clean_mask(mask)
    assert cleaned[150, 200] == 1 and cleaned[10, 10] == 0


def test_segment_to_ellipse_exact_on_drawn_mask():
    e = Ellipse(200.5, 150.25, 120.0, 90.0, 30.0)
    res = segment_to_ellipse(draw_ellipse_mask((300, 400), e).astype(np.float32))
    assert res.error is None and res.flags == []
    f = res.fit.ellipse
    assert f.semi_major_px == pytest.approx(120.0, rel=1e-3)
    assert f.semi_minor_px == pytest.approx(90.0, rel=1e-3)


def test_flags():
    empty = segment_to_ellipse(np.zeros((200, 300), np.float32))
    assert empty.error and "no_head" in empty.flags
    edge = segment_to_ellipse(draw_ellipse_mask((200, 300), Ellipse(280, 100, 80, 60, 0)).astype(np.float32))
    assert "edge" in edge.flags
    unsure = draw_ellipse_mask((200, 300), Ellipse(150, 100, 80, 60, 0)).astype(np.float32) * 0.55
    assert "low_confidence" in segment_to_ellipse(unsure).flags
    square = np.zeros((200, 300), np.float32)
    square[40:160, 90:210] = 1.0
    assert "poor_fit" in segment_to_ellipse(square).flags


def test_dice_and_hausdorff():
    a = np.zeros((50, 50), np.uint8)
    a[10:20, 10:20] = 1
    b = np.zeros_like(a)
    b[10:20, 15:25] = 1
    assert dice(a, a) == 1.0
    assert dice(a, b) == pytest.approx(0.5)
    assert hausdorff_mm(a, b, (0.5, 0.5)) == pytest.approx(2.5)


def test_collapsed_landmark_output_is_an_error_not_a_crash():
    from pathlib import Path

    from fetalbio import methods
    from fetalbio.io import Scan
    from fetalbio.modelinfo import ModelInfo
    from fetalbio.predict import measurement_row
    from fetalbio.preprocess import Letterbox

    lb = Letterbox.fit((270, 400), (64, 96))
    res = methods.get("landmarks").decode(np.zeros((64, 96, 4), np.float32), lb, ModelInfo("landmarks"))
    assert res.error and "no head" in res.error
    scan = Scan(np.zeros((270, 400), np.uint8), (0.2, 0.2), Path("x.png"), "cli")
    row = measurement_row("x.png", res, scan)
    assert row["status"] == "error" and row.get("hc_mm") is None


def test_a_bite_out_of_the_skull_does_not_shrink_the_ellipse():
    # the net misses a piece of the skull (acoustic shadow): the mask has a concave bite
    e = Ellipse(200.0, 150.0, 120.0, 90.0, 0.0)
    mask = draw_ellipse_mask((300, 400), e).astype(np.float32)
    mask[120:180, 290:330] = 0.0
    res = segment_to_ellipse(mask)
    assert res.fit.ellipse.semi_major_px == pytest.approx(120.0, rel=3e-3)
    assert res.fit.ellipse.semi_minor_px == pytest.approx(90.0, rel=3e-3)


def test_low_confidence_threshold_can_come_from_the_model():
    from fetalbio import methods
    from fetalbio.heatmaps import render_heatmaps
    from fetalbio.modelinfo import ModelInfo
    from fetalbio.preprocess import Letterbox

    lb = Letterbox.fit((270, 400), (64, 96))
    pts = np.array([[48, 12], [48, 52], [20, 32], [76, 32]], float)
    weak = render_heatmaps(pts, (64, 96), 2.0) * 0.2  # an honest but timid net: low peaks
    landmarks = methods.get("landmarks")
    default = ModelInfo("landmarks", heatmap_sigma_px=2.0)
    calibrated = ModelInfo("landmarks", heatmap_sigma_px=2.0, low_point_confidence=0.05)
    assert "low_confidence" in landmarks.decode(weak, lb, default).flags
    assert "low_confidence" not in landmarks.decode(weak, lb, calibrated).flags


def _perfect_output(view, e: Ellipse, in_hw=(256, 384)) -> np.ndarray:
    """What a perfect segmentation model outputs for head ``e`` (original pixels) seen through ``view``."""
    ys, xs = np.mgrid[0 : in_hw[0], 0 : in_hw[1]].astype(float)
    p = view.to_original(np.stack([xs.ravel(), ys.ravel()], 1)).reshape(*in_hw, 2)
    u = (p[..., 0] - e.cx_px) * np.cos(np.radians(e.angle_deg)) + (p[..., 1] - e.cy_px) * np.sin(
        np.radians(e.angle_deg)
    )
    v = -(p[..., 0] - e.cx_px) * np.sin(np.radians(e.angle_deg)) + (p[..., 1] - e.cy_px) * np.cos(
        np.radians(e.angle_deg)
    )
    return ((u / e.semi_major_px) ** 2 + (v / e.semi_minor_px) ** 2 <= 1).astype(np.float32)[..., None]


@pytest.mark.parametrize("where", ["image border", "capture region", "turned frame"])
def test_a_head_cut_by_the_border_of_what_the_model_saw_is_flagged_and_not_fitted_to_the_cut(where):
    # a 500 x 700 scan whose head (semi-axes 160 / 130 px) reaches 60 px past its right side; inside a
    # capture the scan is a region of a larger screen, zero-padded around it: the straight cut must be
    # left out of the fit there as at the image's own border (it shortened the head by 21 px, HC -8 mm)
    from fetalbio import methods
    from fetalbio.modelinfo import ModelInfo
    from fetalbio.preprocess import Letterbox, TiltedView, footprint

    dx, dy = (100, 50) if where == "capture region" else (0, 0)
    head = Ellipse(600.0 + dx, 250.0 + dy, 160.0, 130.0, 0.0)
    if where == "image border":
        view = Letterbox.fit((500, 700), (256, 384))
    elif where == "capture region":
        view = Letterbox.fit((600, 900), (256, 384), region=(dy, dx, 500, 700))
    else:  # the scan's frame turned by 20 degrees in a 900 x 900 canvas: the upright view squares it back
        import cv2

        m = cv2.getRotationMatrix2D((450.0, 450.0), 20.0, 1.0)
        m[0, 2] += 349.5 - 450.0
        m[1, 2] += 249.5 - 450.0
        view = TiltedView(Letterbox.fit((500, 700), (256, 384)), tuple(m.ravel()), 900, 900, 20.0)
        c = cv2.invertAffineTransform(m) @ np.array([600.0, 250.0, 1.0])
        head = Ellipse(float(c[0]), float(c[1]), 160.0, 130.0, -20.0)
    seen = footprint(view)
    assert (seen is None) == (where == "image border")
    res = methods.get("segmentation").decode(_perfect_output(view, head), view, ModelInfo("segmentation"))
    assert "edge" in res.flags
    assert res.ellipse.semi_major_px == pytest.approx(160.0, abs=1.5)
    assert res.ellipse.semi_minor_px == pytest.approx(130.0, abs=1.5)


def test_a_head_inside_a_capture_region_is_not_flagged_edge():
    from fetalbio import methods
    from fetalbio.modelinfo import ModelInfo
    from fetalbio.preprocess import Letterbox

    view = Letterbox.fit((600, 900), (256, 384), region=(50, 100, 500, 700))
    head = Ellipse(450.0, 300.0, 160.0, 130.0, 0.0)  # well inside the region
    res = methods.get("segmentation").decode(_perfect_output(view, head), view, ModelInfo("segmentation"))
    assert "edge" not in res.flags
    assert res.ellipse.semi_major_px == pytest.approx(160.0, abs=1.0)


def test_a_landmark_outside_the_capture_region_is_flagged_edge():
    from fetalbio import methods
    from fetalbio.heatmaps import render_heatmaps
    from fetalbio.modelinfo import ModelInfo
    from fetalbio.preprocess import Letterbox

    view = Letterbox.fit((600, 900), (256, 384), region=(50, 100, 500, 700))
    info = ModelInfo("landmarks", heatmap_sigma_px=2.0)
    lm = methods.get("landmarks")

    def flags(ofd_right_x: float) -> list[str]:
        pts = np.array([[450, 170], [450, 430], [290, 300], [ofd_right_x, 300]], float)  # original pixels
        return lm.decode(render_heatmaps(view.to_input(pts), (256, 384), 2.0), view, info).flags

    assert "edge" not in flags(610.0)
    assert "edge" in flags(850.0)  # inside the screen, past the scan's right side (x = 799)
