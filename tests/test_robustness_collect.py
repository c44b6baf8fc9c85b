"""fetalbio.robustness.collect: a scan's random perturbation depends on its seed, not on which other
scans are measured with it (cross-fitting measures each half alone with the whole run's seeds)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _draw import PIXEL_SIZE_MM, SHAPE_HW, ellipse, outline, scan, write_png

from fetalbio.datasets import Sample
from fetalbio.engines import load_engine
from fetalbio.modelinfo import default_model_path
from fetalbio.robustness import collect

pytestmark = pytest.mark.skipif(
    not default_model_path("segmentation", "litert").exists(), reason="no shipped int8 segmentation model"
)


def _samples(folder: Path) -> list[Sample]:
    out = []
    for i in range(2):
        name, e = f"10{i}_HC.png", ellipse(i)
        write_png(folder / name, scan(SHAPE_HW, e, seed=i))
        ann = write_png(folder / name.replace(".png", "_Annotation.png"), outline(SHAPE_HW, e))
        out.append(Sample(name, f"10{i}", folder / name, ann, PIXEL_SIZE_MM, None))
    return out


def test_a_subset_with_the_runs_seeds_draws_the_same_noise(tmp_path: Path) -> None:
    a, b = _samples(tmp_path)
    engines = {"segmentation": load_engine(None, "segmentation", "litert")}

    def hc(recs: list[dict], name: str) -> float:
        (r,) = [r for r in recs if r["file"] == name and r["kind"] == "speckle"]
        return r["hc_mm"]

    whole = collect([a, b], ["speckle"], engines, ("segmentation",))
    alone_seeded = collect([b], ["speckle"], engines, ("segmentation",), seeds={a.name: 0, b.name: 1})
    alone_unseeded = collect([b], ["speckle"], engines, ("segmentation",))  # seed 0: other noise
    assert hc(alone_seeded, b.name) == hc(whole, b.name)
    assert hc(alone_unseeded, b.name) != hc(whole, b.name)
