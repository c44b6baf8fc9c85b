"""The perturbations users' scans show (fetalbio.perturb): exact where they are exact, and composable."""

from __future__ import annotations

import numpy as np
import pytest

from fetalbio.perturb import KINDS, perturb


@pytest.fixture
def img() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (120, 160)).astype(np.uint8)


def test_flips_mirror_the_pixels_and_keep_the_pixel_size(img):
    out, px = perturb("flip_lr", img, 0.2)
    assert np.array_equal(out, img[:, ::-1]) and px == 0.2
    out, px = perturb("flip_ud", img, 0.2)
    assert np.array_equal(out, img[::-1, :]) and px == 0.2


def test_resampling_keeps_the_size_in_mm(img):
    for kind, factor in (("smaller", 0.5), ("larger", 2.0)):
        out, px = perturb(kind, img, 0.2)
        assert out.shape == (round(120 * factor), round(160 * factor))
        assert px == pytest.approx(0.2 / factor)  # the same field of view in mm


def test_kinds_compose_left_to_right(img):
    out, px = perturb("smaller+flip_lr", img, 0.2, seed=4)
    small, px_small = perturb("smaller", img, 0.2, seed=4)
    assert np.array_equal(out, small[:, ::-1]) and px == px_small
    rotated, _ = perturb("rotate30", img, 0.2, seed=7)
    both, _ = perturb("rotate30+flip_lr", img, 0.2, seed=7)
    assert np.array_equal(both, rotated[:, ::-1])


def test_clean_is_untouched_and_unknown_kinds_are_refused(img):
    out, px = perturb("clean", img, 0.3)
    assert out is img and px == 0.3
    with pytest.raises(ValueError, match="unknown perturbation 'tilt'"):
        perturb("tilt", img, 0.3)
    with pytest.raises(ValueError, match="unknown perturbation 'nope'"):
        perturb("flip_lr+nope", img, 0.3)
    assert {"capture", "rotate30", "portrait", "speckle", "jpeg30"} <= set(KINDS)


def test_stress_kinds_keep_the_scan_where_they_say_and_are_kept_apart_from_the_tuned_ones(img):
    from fetalbio.perturb import STRESS_KINDS

    assert not set(STRESS_KINDS) & set(KINDS)  # never used for tuning, so never in the tuned list
    out, px = perturb("capture_light", img, 0.2)
    assert np.array_equal(out[60:180, 30:190], img) and px == 0.2  # pasted unchanged at (60, 30)
    assert out[0, 0] == 150 and out[-1, -1] == 80  # title bar, mid-grey screen
    scan = np.random.default_rng(1).integers(0, 256, (540, 800)).astype(np.uint8)  # HC18's size
    out, _ = perturb("capture_black", scan, 0.2)
    y0, x0 = (out.shape[0] - 540) // 2 + 10, (out.shape[1] - 800) // 3
    assert np.array_equal(out[y0 : y0 + 540, x0 : x0 + 800], scan) and out[-1, 0] == 0
    out, px = perturb("tiny", img, 0.2)
    assert out.shape == (45, 60) and px == pytest.approx(0.2 * 160 / 60)
    out, _ = perturb("rotate_in_place15", img, 0.2)
    assert out.shape == img.shape and out[0, 0] == 0  # same canvas, a corner cut off
    out, _ = perturb("gamma16", np.full((4, 4), 128, np.uint8), 0.2)
    assert out[0, 0] == int(255 * (128 / 255) ** 1.6)
