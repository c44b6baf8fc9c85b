"""How sure a figure measured on a validation split is: subject-clustered bootstrap intervals.

A mean absolute error measured on ~170 scans is itself an estimate. Its sampling spread decides
whether a difference between two models, or between a result and a target, means anything. HC18 has
several scans of one subject (``NNN_HC.png``, ``NNN_2HC.png``): their errors are not independent
(the same head, often the same annotator's habit), so the bootstrap resamples subjects, not scans.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

N_BOOT = 2000
LEVEL = 0.95


def _cluster_means(
    columns: Sequence[np.ndarray], groups: Sequence[str] | None, n_boot: int, seed: int
) -> list[np.ndarray]:
    """For each column (N,), its mean in each of ``n_boot`` draws of whole clusters (n_boot,)."""
    n = len(columns[0])
    keys = np.arange(n) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    if len(keys) != n or any(len(c) != n for c in columns):
        raise ValueError(f"{n} values but {len(keys)} groups")
    n_groups = int(keys.max()) + 1
    counts = np.bincount(keys, minlength=n_groups).astype(np.float64)
    draws = np.random.default_rng(seed).integers(0, n_groups, size=(n_boot, n_groups))
    drawn = counts[draws].sum(axis=1)
    # per cluster the sum of its values; a draw's mean is over the drawn clusters' values (clusters
    # differ in size: a ratio estimator)
    return [np.bincount(keys, weights=c, minlength=n_groups)[draws].sum(axis=1) / drawn for c in columns]


def _percentiles(samples: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(samples, [tail, 1.0 - tail])
    return float(lo), float(hi)


def bootstrap_mean_ci(
    values: Sequence[float],
    groups: Sequence[str] | None = None,
    level: float = LEVEL,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (N,), any unit, in that unit.

    ``groups`` (N,) names the cluster of each value (the subject); whole clusters are drawn with
    replacement, so values of one subject move together. Without groups every value is its own
    cluster. Seeded: the same input gives the same interval. NaN where there are no values.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return _percentiles(_cluster_means([v], groups, n_boot, seed)[0], level)


def bootstrap_ratio_ci(
    numer: Sequence[float],
    denom: Sequence[float],
    groups: Sequence[str] | None = None,
    level: float = LEVEL,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> tuple[float, float]:
    """Interval of mean(numer) / mean(denom) for PAIRED values (N,): element i of both is one scan
    (e.g. its error perturbed and clean), drawn together, so what the two share cancels. Unitless."""
    a, b = np.asarray(numer, dtype=np.float64), np.asarray(denom, dtype=np.float64)
    if a.size == 0:
        return float("nan"), float("nan")
    if a.size != b.size:
        raise ValueError(f"{a.size} numerators but {b.size} denominators")
    ma, mb = _cluster_means([a, b], groups, n_boot, seed)
    return _percentiles(ma / mb, level)


def mae_ci(
    errors: Sequence[float], groups: Sequence[str] | None = None, level: float = LEVEL, seed: int = 0
) -> tuple[float, float]:
    """Bootstrap interval (same unit as ``errors``) of the mean absolute error of signed ``errors``."""
    return bootstrap_mean_ci(np.abs(np.asarray(errors, dtype=np.float64)), groups, level, seed=seed)
