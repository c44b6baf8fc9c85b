"""fetalbio.robustness.summarise / compare on hand-made records whose answers are known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from fetalbio.robustness import compare, markdown, summarise


def _rec(name: str, kind: str, err_mm: float, method: str = "fused", true_mm: float = 180.0) -> dict:
    r = {"file": name, "kind": kind, "method": method, "status": "ok", "flags": "", "cephalic_index": 78.0}
    for k, t in (("hc", true_mm), ("bpd", 50.0), ("ofd", 64.0)):
        e = err_mm if k == "hc" else 0.0
        r |= {f"{k}_true_mm": t, f"{k}_mm": t + e, f"{k}_mm_low": t + e - 4, f"{k}_mm_high": t + e + 4}
    return r


def _errors(n_subjects: int = 20) -> dict[str, float]:
    rng = np.random.default_rng(0)
    names = [f"{i:03d}_{s}HC.png" for i in range(n_subjects) for s in ("", "2")]
    return dict(zip(names, rng.normal(0, 2.5, len(names)), strict=True))


def test_ratio_to_clean_and_its_interval():
    errs = _errors()
    recs = [_rec(n, "clean", e) for n, e in errs.items()] + [
        _rec(n, "speckle", 1.2 * e) for n, e in errs.items()
    ]
    table = summarise(recs, ["clean", "speckle"], ("fused",))
    clean, speckle = table
    mae = float(np.mean(np.abs(list(errs.values()))))
    assert clean["hc_mae_mm"] == pytest.approx(mae)
    assert clean["hc_mae_ci95"][0] < mae < clean["hc_mae_ci95"][1]
    assert speckle["hc_ratio"] == pytest.approx(1.2)
    # every scan's perturbed error is 1.2x its clean error: every paired draw gives 1.2 exactly
    assert speckle["hc_ratio_ci95"] == pytest.approx((1.2, 1.2))
    assert clean["hc_coverage"] == pytest.approx(np.mean([abs(e) <= 4 for e in errs.values()]))
    md = markdown(table)
    assert "| speckle | fused | 40 |" in md and "1.20 (1.20-1.20)" in md


def test_compare_pairs_scans_measured_by_both():
    errs = _errors()
    old = [_rec(n, "clean", e) for n, e in errs.items()]
    new = [_rec(n, "clean", abs(e) + 0.3) for n, e in list(errs.items())[:-1]]  # one scan fewer
    (row,) = compare(new, old, ["clean"], ("fused",))
    assert row["n"] == 39
    assert row["diff_mm"] == pytest.approx(0.3) and row["diff_ci95"] == pytest.approx((0.3, 0.3))
    shared = list(errs.values())[:-1]
    assert row["hc_mae_old_mm"] == pytest.approx(np.mean(np.abs(shared)))
