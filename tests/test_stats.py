"""Subject-clustered bootstrap intervals (fetalbio.stats) on synthetic errors with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fetalbio.stats import bootstrap_mean_ci, bootstrap_ratio_ci, mae_ci


def test_interval_covers_the_true_mae_about_95_percent_of_the_time():
    # |N(0, sigma)| has mean sigma * sqrt(2 / pi): the MAE a model with that error spread would have
    sigma, n, repeats = 2.5, 120, 200
    true_mae = sigma * math.sqrt(2 / math.pi)
    rng = np.random.default_rng(7)
    covered = 0
    for i in range(repeats):
        lo, hi = mae_ci(rng.normal(0.0, sigma, n), seed=i)
        covered += lo <= true_mae <= hi
    assert 0.89 <= covered / repeats <= 0.99


def test_width_shrinks_with_more_scans():
    rng = np.random.default_rng(1)
    small = mae_ci(rng.normal(0, 2, 50))
    large = mae_ci(rng.normal(0, 2, 800))
    # the spread of a mean falls as 1 / sqrt(n): 16x the scans, about a quarter of the width
    ratio = (large[1] - large[0]) / (small[1] - small[0])
    assert 0.15 < ratio < 0.4


def test_scans_of_one_subject_move_together():
    # each subject scanned twice with the same error: 100 subjects carry the information of 100 scans,
    # not 200, so the clustered interval is about sqrt(2) wider than one that treats scans as independent
    rng = np.random.default_rng(3)
    per_subject = rng.normal(0, 2, 100)
    values = np.repeat(per_subject, 2)
    groups = np.repeat([f"{i:03d}" for i in range(100)], 2)
    lo_g, hi_g = mae_ci(values, groups)
    lo_i, hi_i = mae_ci(values)
    assert 1.25 < (hi_g - lo_g) / (hi_i - lo_i) < 1.65
    assert lo_g < np.abs(values).mean() < hi_g


def test_constant_errors_give_a_point_and_the_same_seed_the_same_interval():
    assert mae_ci([-1.5, 1.5, 1.5, -1.5]) == pytest.approx((1.5, 1.5))
    rng = np.random.default_rng(0)
    v = rng.normal(0, 1, 60)
    assert mae_ci(v, seed=4) == mae_ci(v, seed=4)


def test_empty_and_mismatched_input():
    assert all(math.isnan(x) for x in bootstrap_mean_ci([]))
    with pytest.raises(ValueError, match="3 values but 2 groups"):
        bootstrap_mean_ci([1.0, 2.0, 3.0], ["a", "b"])


def _row(name: str, hc_diff: float) -> dict:
    r = {"file": name, "status": "ok", "unit": "mm", "hc_diff_mm": hc_diff, "bpd_diff_mm": 0.5}
    r |= {"ofd_diff_mm": -0.5, "point_err_max_mm": 1.0} | {
        f"{n}_err_mm": 1.0 for n in ("bpd1", "bpd2", "ofd1", "ofd2")
    }
    return r


def test_evaluate_summary_brackets_each_mae_by_subject():
    """fetalbio evaluate: each MAE has its interval; an HC18 subject's two scans are one draw."""
    from fetalbio.evaluate import summarise

    rng = np.random.default_rng(5)
    errs = rng.normal(0, 2, 40)
    rows = [_row(f"{i:03d}_HC.png", e) for i, e in enumerate(errs)]
    rows += [_row(f"{i:03d}_2HC.png", e) for i, e in enumerate(errs)]  # the same subjects again
    s = summarise(rows)
    assert s["hc_mae_mm_ci95_low"] < s["hc_mae_mm"] < s["hc_mae_mm_ci95_high"]
    assert s["bpd_mae_mm_ci95_low"] == pytest.approx(0.5) and s["bpd_mae_mm_ci95_high"] == pytest.approx(0.5)
    # 40 subjects, not 80 scans: as wide as the interval of the 40 subjects alone
    lo, hi = mae_ci(errs)
    assert s["hc_mae_mm_ci95_high"] - s["hc_mae_mm_ci95_low"] == pytest.approx(hi - lo, rel=0.15)


def test_ratio_of_paired_errors_cancels_what_the_pair_shares():
    """Perturbed vs clean errors of the same scans: the paired ratio interval is much narrower than
    the ratio of two independent MAEs would be, and it brackets the known ratio 1.1."""
    rng = np.random.default_rng(11)
    clean = np.abs(rng.normal(0, 2, 150))
    perturbed = 1.1 * clean + np.abs(rng.normal(0, 0.05, 150))
    lo, hi = bootstrap_ratio_ci(perturbed, clean)
    true = perturbed.mean() / clean.mean()
    assert lo < true < hi and 1.08 < lo and hi < 1.16
    a_lo, a_hi = mae_ci(perturbed)
    b_lo, b_hi = mae_ci(clean)
    assert hi - lo < 0.25 * (a_hi / b_lo - a_lo / b_hi)  # the unpaired bounds
    with pytest.raises(ValueError, match="2 numerators but 3"):
        bootstrap_ratio_ci([1.0, 2.0], [1.0, 2.0, 3.0])


def test_rows_without_a_name_are_each_their_own_subject():
    from fetalbio.evaluate import summarise

    rng = np.random.default_rng(2)
    rows = [_row("", e) for e in rng.normal(0, 2, 60)]
    s = summarise(rows)
    assert s["hc_mae_mm_ci95_high"] - s["hc_mae_mm_ci95_low"] > 0.3  # not one cluster of everything
