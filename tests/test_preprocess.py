import numpy as np
import pytest

from fetalbio.augment import AugmentConfig, apply_affine_points, augment, random_affine
from fetalbio.geometry import (
    Ellipse,
    canonical_order,
    draw_ellipse_mask,
    ellipse_to_landmarks,
    fit_ellipse_mask,
)
from fetalbio.preprocess import Letterbox, normalise, prepare_input


@pytest.mark.parametrize("orig", [(540, 800), (600, 600), (300, 900), (789, 541)])
def test_letterbox_points_round_trip(orig, rng):
    lb = Letterbox.fit(orig, (256, 384))
    assert lb.new_h <= 256 and lb.new_w <= 384
    assert lb.new_h == 256 or lb.new_w == 384
    pts = rng.uniform(0, min(orig), (20, 2))
    np.testing.assert_allclose(lb.to_original(lb.to_input(pts)), pts, atol=1e-9)


def test_letterbox_maps_drawn_ellipse_back_to_original(rng):
    e = Ellipse(410.0, 260.0, 220.0, 160.0, 25.0)
    mask = draw_ellipse_mask((540, 800), e).astype(np.float32)
    lb = Letterbox.fit((540, 800), (256, 384))
    small = lb.image_to_input(mask)
    back = lb.map_to_original(small)
    assert back.shape == (540, 800)
    f = fit_ellipse_mask(back > 0.5, prob=back).ellipse
    # the round trip through a 2x smaller map keeps the axes within a fraction of an original pixel
    assert f.semi_major_px == pytest.approx(220.0, abs=0.5)
    assert f.semi_minor_px == pytest.approx(160.0, abs=0.5)
    assert (f.cx_px, f.cy_px) == pytest.approx((410.0, 260.0), abs=0.3)


def test_normalise_and_prepare():
    img = (np.arange(100 * 120).reshape(100, 120) % 251).astype(np.uint16) * 200
    x = normalise(img)
    assert abs(float(x.mean())) < 1e-4 and float(x.std()) == pytest.approx(1.0, rel=1e-4)
    assert not np.isnan(normalise(np.zeros((10, 10), np.uint8))).any()
    inp, lb = prepare_input(img, (64, 96))
    assert inp.shape == (64, 96) and inp.dtype == np.float32
    assert lb.orig_h == 100 and lb.orig_w == 120


def test_augment_moves_mask_and_points_together(rng):
    e = Ellipse(190.0, 130.0, 90.0, 60.0, 15.0)
    mask = draw_ellipse_mask((256, 384), e).astype(np.float32)
    pts = ellipse_to_landmarks(e).as_array()
    img = mask * 2.0 - 1.0
    for _ in range(10):
        a_img, a_mask, a_pts = augment(rng, img, mask, pts)
        f = fit_ellipse_mask(a_mask > 0.5, prob=a_mask).ellipse
        # the points of the moved mask's ellipse are where the points were moved
        from fetalbio.geometry import pair_errors_mm

        lm = ellipse_to_landmarks(f).as_array()
        assert pair_errors_mm(lm, a_pts, (1.0, 1.0)).max() < 1.0
        assert a_img.shape == img.shape


def test_flips_swap_pairs_only_where_the_order_rule_requires():
    cfg = AugmentConfig(rotation_deg=0, scale_range=(1, 1), translate_frac=0, hflip=1.0, vflip=0.0)
    m = random_affine(np.random.default_rng(0), (100, 200), cfg)
    # horizontal OFD (left first) and vertical BPD (top first)
    pts = np.array([[100, 20], [100, 80], [40, 50], [160, 50]], float)
    moved = canonical_order(apply_affine_points(m, pts))
    # after a horizontal flip the OFD pair swaps (the left end is now the other point); BPD does not
    np.testing.assert_allclose(moved[2], [199 - 160, 50])
    np.testing.assert_allclose(moved[0], [199 - 100, 20])


def test_saturation_clips_the_brightest_greys_like_a_high_gain(rng):
    from fetalbio.augment import _artefacts
    from fetalbio.synthetic import draw_scan, random_ellipse

    raw = draw_scan((200, 300), random_ellipse((200, 300), rng), rng)
    img = normalise(raw)
    out = _artefacts(rng, img, AugmentConfig(p_saturate=1.0))
    at_white = float(np.mean(out >= out.max() - 1e-6))
    assert at_white > 0.01 > float(np.mean(img >= img.max() - 1e-6))  # a plateau at white
    assert abs(float(out.mean())) < 1e-4  # still a normalised scan
    # at p_saturate 0 (the presets before it) no extra random number is drawn: old runs replay exactly
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    assert np.array_equal(_artefacts(a, img, AugmentConfig()), img)
    [b.random() for _ in range(4)]  # speckle, blur, burn, jpeg
    assert a.bit_generator.state == b.bit_generator.state
