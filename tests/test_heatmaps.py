"""Tests for fetalbio.heatmaps: rendering, sub-pixel decoding, confidence, the loss and flips."""

from __future__ import annotations

import numpy as np
import pytest

from fetalbio.geometry import canonical_order
from fetalbio.heatmaps import (
    LOW_POINT_CONFIDENCE,
    decode_batch,
    decode_heatmaps,
    heatmap_loss,
    render_heatmaps,
    zero_output_loss,
)

H, W = 64, 96


def head_like(pts: np.ndarray) -> np.ndarray:
    """Random points made head-like in the one way the decoder relies on: the BPD pair (the first) is
    the shorter one, as a head's short axis is the BPD by definition."""
    p = np.array(pts, dtype=np.float64)
    if np.hypot(*(p[0] - p[1])) > np.hypot(*(p[2] - p[3])):
        p = p[[2, 3, 0, 1]]
    return p


def test_render_peak_at_true_subpixel_position():
    pts = np.array([[10.3, 20.7], [50.0, 8.0], [0.25, 63.0], [95.5, 0.4]])
    hm = render_heatmaps(pts, (H, W), 2.5)
    assert hm.shape == (H, W, 4) and hm.dtype == np.float32
    assert hm.max() <= 1.0
    # exact values at pixel centres: exp(-d^2 / (2 sigma^2)), never rounded to the nearest pixel
    ys, xs = np.mgrid[0:H, 0:W]
    for k, (x, y) in enumerate(pts):
        expected = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 2.5**2))
        np.testing.assert_allclose(hm[..., k], expected, atol=1e-6)
    assert hm[8, 50, 1] == pytest.approx(1.0)  # on a pixel centre the peak is exactly 1
    assert hm[20, 10, 0] < 1.0 and hm[21, 10, 0] < 1.0  # between pixel centres: no pixel reaches 1


def test_render_outside_points():
    pts = np.array([[-2.0, 30.0], [W + 50.0, 30.0], [np.nan, 3.0], [40.0, 30.0]])
    hm = render_heatmaps(pts, (H, W), 3.0)
    assert 0.7 < hm[30, 0, 0] < 0.9  # the partial Gaussian of a point 2 px outside
    assert hm[..., 1].max() == 0.0  # far away: zeros
    assert hm[..., 2].max() == 0.0  # missing point: zeros


@pytest.mark.parametrize("sigma", [2.0, 3.0, 4.0])
def test_decode_recovers_subpixel_positions(sigma):
    rng = np.random.default_rng(int(sigma * 10))
    errors = []
    for _ in range(60):
        pts = np.stack([rng.uniform(0, W - 1, 4), rng.uniform(0, H - 1, 4)], axis=1)
        # two of the four near a border (within 1.5 px of it, corners included)
        pts[0] = (rng.uniform(0.0, 1.5), rng.uniform(0, H - 1))
        pts[1] = (rng.uniform(W - 2.5, W - 1), rng.uniform(H - 2.5, H - 1))
        pts = head_like(pts)
        hm = render_heatmaps(pts, (H, W), sigma)
        dec, conf = decode_heatmaps(hm, sigma_px=sigma)
        assert dec.shape == (4, 2) and conf.shape == (4,)
        errors.append(np.abs(dec - pts).max())
        assert conf.min() > 0.8
    assert max(errors) < 0.05


def test_decode_batch_matches_single():
    rng = np.random.default_rng(3)
    pts = np.stack([head_like(p) for p in rng.uniform(5, 55, size=(3, 4, 2))])
    hms = np.stack([render_heatmaps(p, (H, W), 3.0) for p in pts])
    dec, conf = decode_batch(hms)
    assert dec.shape == (3, 4, 2) and conf.shape == (3, 4)
    np.testing.assert_allclose(dec, pts, atol=0.05)
    p1, c1 = decode_heatmaps(hms[1])
    np.testing.assert_array_equal(dec[1], p1)
    np.testing.assert_array_equal(conf[1], c1)


def test_decode_with_noise_is_close():
    rng = np.random.default_rng(4)
    pts = head_like([[20.4, 30.6], [70.2, 30.1], [45.5, 10.9], [45.1, 50.3]])
    hm = 0.9 * render_heatmaps(pts, (H, W), 3.0) + rng.normal(0, 0.02, (H, W, 4)).astype(np.float32)
    dec, conf = decode_heatmaps(hm)
    assert np.hypot(*(dec - pts).T).max() < 0.5
    assert conf.min() > LOW_POINT_CONFIDENCE


def test_confidence_high_for_clean_low_for_empty_flat_wide_or_ambiguous():
    pts = head_like([[20.4, 30.6], [70.2, 30.1], [45.5, 10.9], [45.1, 50.3]])
    _, conf = decode_heatmaps(render_heatmaps(pts, (H, W), 3.0))
    assert np.all(conf > 0.8) and np.all(conf <= 1.0)

    for flat in (np.zeros((H, W, 4), np.float32), np.full((H, W, 4), 0.6, np.float32)):
        _, conf = decode_heatmaps(flat)
        assert np.all(conf < LOW_POINT_CONFIDENCE)

    rng = np.random.default_rng(5)
    _, conf = decode_heatmaps(rng.normal(0, 0.05, (H, W, 4)).astype(np.float32))
    assert np.all(conf < LOW_POINT_CONFIDENCE)  # noise only

    _, conf = decode_heatmaps(render_heatmaps(pts, (H, W), 12.0), sigma_px=3.0)
    assert np.all(conf < LOW_POINT_CONFIDENCE)  # a blob 4x wider than the training sigma

    two = render_heatmaps(pts[:1], (H, W), 3.0) + 0.9 * render_heatmaps(pts[1:2], (H, W), 3.0)
    _, conf = decode_heatmaps(two)
    assert conf[0] < LOW_POINT_CONFIDENCE  # two candidate positions


def _typical_batch(n: int = 2) -> np.ndarray:
    rng = np.random.default_rng(6)
    pts = np.stack([rng.uniform(10, 86, (n, 4)), rng.uniform(10, 54, (n, 4))], axis=-1)
    return np.stack([render_heatmaps(p, (H, W), 3.0) for p in pts])


def test_loss_shape_and_zero_output_is_much_worse_than_near_target():
    y = _typical_batch(2)
    rng = np.random.default_rng(7)
    near = (y + rng.normal(0, 0.01, y.shape)).astype(np.float32)
    zero = np.zeros_like(y)
    l_near = np.asarray(heatmap_loss(y, near))
    l_zero = np.asarray(heatmap_loss(y, zero))
    assert l_near.shape == (2,) and l_zero.shape == (2,)
    assert np.all(l_zero > 10 * l_near)
    assert np.allclose(np.asarray(heatmap_loss(y, y)), 0.0)
    np.testing.assert_allclose(np.asarray(zero_output_loss(y)), l_zero, rtol=1e-6)
    # the foreground weighting makes the all-zero output several times costlier than plain MSE does
    plain_zero = np.mean(y**2, axis=(1, 2, 3))
    assert np.all(l_zero > 5 * plain_zero)


def test_loss_gradient_at_zero_points_to_the_peaks():
    tf = pytest.importorskip("tensorflow")
    y = tf.constant(_typical_batch(1))
    pred = tf.Variable(tf.zeros_like(y))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(heatmap_loss(y, pred))
    g = tape.gradient(loss, pred).numpy()
    yn = y.numpy()
    # descent direction -g: never negative, zero where the target is zero, strongest at each peak
    assert np.all(-g >= 0)
    assert np.all(g[yn == 0] == 0)
    for k in range(4):
        peak = np.unravel_index(np.argmax(yn[0, ..., k]), (H, W))
        steepest = np.unravel_index(np.argmax(-g[0, ..., k]), (H, W))
        assert peak == steepest
    # one gradient step from zero lowers the loss
    step = pred - 1e3 * g
    assert float(tf.reduce_sum(heatmap_loss(y, step))) < float(loss)


def _permutation(before: np.ndarray, after: np.ndarray) -> list[int]:
    """perm with after[i] == before[perm[i]] (each point matched to the nearest)."""
    return [int(np.argmin(np.hypot(*(before - p).T))) for p in after]


@pytest.mark.parametrize("axis", ["horizontal", "vertical"])
@pytest.mark.parametrize("ofd_angle_deg", [10.0, 80.0])
def test_flip_swaps_channel_identities(axis, ofd_angle_deg):
    """Rendering the points of a flipped image == flipping the heatmaps and swapping the channels that
    canonical_order requires (a flip mirrors the 'left/upper point first' rule for one of the axes)."""
    th = np.radians(ofd_angle_deg)
    c = np.array([47.3, 31.6])
    u = np.array([np.cos(th), np.sin(th)])
    v = np.array([-np.sin(th), np.cos(th)])
    pts = canonical_order(np.array([c - 14 * v, c + 14 * v, c - 22 * u, c + 22 * u]))
    sigma = 3.0
    hm = render_heatmaps(pts, (H, W), sigma)

    flipped_raw = pts.copy()
    if axis == "horizontal":
        flipped_raw[:, 0] = (W - 1) - pts[:, 0]  # pixel centre of column c is x = c
        hm_flipped = hm[:, ::-1, :]
    else:
        flipped_raw[:, 1] = (H - 1) - pts[:, 1]
        hm_flipped = hm[::-1, :, :]
    new_pts = canonical_order(flipped_raw)
    perm = _permutation(flipped_raw, new_pts)
    assert sorted(perm) == [0, 1, 2, 3] and set(perm[:2]) == {0, 1}  # swaps stay within a pair

    # exactly one of the two pairs swaps: the one whose order rule is mirrored by this flip
    horizontal_ofd = ofd_angle_deg < 45
    ofd_swaps = horizontal_ofd == (axis == "horizontal")
    assert perm == ([0, 1, 3, 2] if ofd_swaps else [1, 0, 2, 3])

    np.testing.assert_allclose(render_heatmaps(new_pts, (H, W), sigma), hm_flipped[..., perm], atol=1e-6)
    # and decoding the flipped-and-swapped heatmaps gives the canonical flipped points
    dec, _ = decode_heatmaps(np.ascontiguousarray(hm_flipped[..., perm]))
    np.testing.assert_allclose(dec, new_pts, atol=0.05)


def test_collapsed_pair_is_decoded_jointly():
    """Both OFD channels firing at the same end (the failure near the 45-degree switch of the canonical
    order) still give both ends: the pair is decoded from its summed maps, in canonical order."""
    h, w, sigma = 96, 128, 3.0
    bpd = np.array([[40.0, 50.3], [88.6, 49.7]])
    a, b = np.array([63.2, 20.4]), np.array([65.7, 80.1])  # the OFD ends
    hm = render_heatmaps(np.vstack([bpd, [a, a]]), (h, w), sigma)
    hm[..., 3] += 0.6 * render_heatmaps(b[None], (h, w), sigma)[..., 0]  # the other end, weaker
    dec, conf = decode_heatmaps(hm, sigma_px=sigma)
    np.testing.assert_allclose(dec[:2], bpd, atol=0.05)
    got = sorted(map(tuple, dec[2:].round(2)))
    np.testing.assert_allclose(got, sorted(map(tuple, np.round([a, b], 2))), atol=0.05)
    assert dec[2, 1] < dec[3, 1]  # canonical: a near-vertical axis starts at its upper end
    assert conf[2] == conf[3] <= 1.0


def test_collapsed_pair_without_a_second_peak_is_left_alone():
    h, w, sigma = 96, 128, 3.0
    pts = np.array([[40.0, 50.0], [88.0, 50.0], [63.0, 20.0], [63.0, 20.0]])
    dec, _ = decode_heatmaps(render_heatmaps(pts, (h, w), sigma), sigma_px=sigma)
    np.testing.assert_allclose(dec, pts, atol=0.05)


def test_pairs_decoded_the_wrong_way_round_are_swapped():
    """The BPD is the short axis by definition: maps whose 'BPD' pair is the longer one swap pairs."""
    pts = np.array([[10.0, 32.0], [86.0, 32.0], [48.0, 8.0], [48.0, 56.0]])  # 'BPD' 76 px, 'OFD' 48 px
    dec, conf = decode_heatmaps(render_heatmaps(pts, (H, W), 3.0), sigma_px=3.0)
    np.testing.assert_allclose(dec, pts[[2, 3, 0, 1]], atol=0.05)
