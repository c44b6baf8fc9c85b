"""Salt-and-pepper noise is found and removed before the models see a scan (remove_impulse_noise)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fetalbio.preprocess import IMPULSE_MIN_FRAC, remove_impulse_noise
from fetalbio.synthetic import draw_scan, random_ellipse


def _scan(seed: int, hw=(360, 520)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return draw_scan(hw, random_ellipse(hw, rng), rng)


def _salt_pepper(img: np.ndarray, amount: float, seed: int = 0) -> np.ndarray:
    u = np.random.default_rng(seed).random(img.shape)
    out = img.copy()
    out[u < amount / 2] = 0
    out[u > 1 - amount / 2] = img.dtype.type(np.iinfo(img.dtype).max)
    return out


def test_a_clean_scan_is_returned_as_it_is():
    img = _scan(1)
    out, share = remove_impulse_noise(img)
    assert out is img and share <= IMPULSE_MIN_FRAC


@pytest.mark.parametrize("amount", [0.01, 0.05, 0.2])
def test_salt_and_pepper_is_found_and_only_those_pixels_change(amount):
    img = _scan(2)
    noisy = _salt_pepper(img, amount)
    hit = noisy != img
    out, share = remove_impulse_noise(noisy)
    # most impulses are found; those left are within 40 grey levels of their neighbourhood (pepper on
    # the dark background, salt on the bright skull)
    assert 0.5 * hit.mean() <= share <= hit.mean() + 1e-9
    # elsewhere only the scan's own isolated black or white pixels (fewer than IMPULSE_MIN_FRAC: the
    # clean scan was left alone) take their neighbourhood's median
    assert (out[~hit] != img[~hit]).mean() <= IMPULSE_MIN_FRAC
    before = np.abs(noisy.astype(int) - img).mean()
    after = np.abs(out.astype(int) - img).mean()
    assert after < 0.15 * before


def test_sixteen_bit_scans_are_cleaned_on_their_own_range():
    img = (_scan(3).astype(np.uint16) * 257).astype(np.uint16)
    noisy = _salt_pepper(img, 0.05)
    out, share = remove_impulse_noise(noisy)
    assert out.dtype == np.uint16 and share > 0.03
    assert np.abs(out.astype(int) - img).mean() < 0.15 * np.abs(noisy.astype(int) - img).mean()


def test_a_noisy_scan_is_measured_like_the_clean_one():
    from fetalbio.engines import load_engine
    from fetalbio.geometry import measure_ellipse
    from fetalbio.io import Scan
    from fetalbio.modelinfo import default_model_path
    from fetalbio.pipeline import Predictor

    if not default_model_path("segmentation", "litert").exists():
        pytest.skip("no shipped int8 segmentation model")
    img = _scan(4, (540, 800))
    sp = (0.15, 0.15)
    pred = Predictor({"segmentation": load_engine(None, "segmentation", "litert")})
    clean, noisy = pred.predict_scans(
        [Scan(img, sp, Path("a.png"), "cli"), Scan(_salt_pepper(img, 0.1), sp, Path("b.png"), "cli")]
    )
    a = measure_ellipse(clean.results["segmentation"].ellipse, sp).hc
    b = measure_ellipse(noisy.results["segmentation"].ellipse, sp).hc
    assert b == pytest.approx(a, rel=0.01)


def test_white_only_or_black_only_specks_are_left_alone():
    """Speckle clipped at white makes isolated white pixels, Gaussian noise clipped at black isolated
    black ones: noise of another kind, which a median would not take out either way."""
    img = _scan(5)
    u = np.random.default_rng(1).random(img.shape)
    salt_only, pepper_only = img.copy(), img.copy()
    salt_only[u < 0.02] = 255
    pepper_only[u < 0.02] = 0
    for noisy in (salt_only, pepper_only):
        out, share = remove_impulse_noise(noisy)
        assert out is noisy and share > 0.005
