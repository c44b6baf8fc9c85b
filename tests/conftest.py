"""Shared fixtures: synthetic scans drawn by the tests (no real data), and the real-data root."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from fetalbio.datasets import default_data_root  # noqa: E402
from fetalbio.synthetic import write_samples  # noqa: E402

DATA_ROOT = default_data_root()
HC18_TRAIN = DATA_ROOT / "hc18" / "training_set"
REPO = Path(__file__).resolve().parents[1]


def needs_data(path: Path = HC18_TRAIN):
    return pytest.mark.skipif(not path.exists(), reason=f"{path} is absent (set FETALBIO_DATA)")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> Path:
    """Eight annotated synthetic scans (HC18 layout, 270x400 so tests stay fast)."""
    folder = tmp_path_factory.mktemp("synth") / "training_set"
    write_samples(folder, n=8, seed=3, shape_hw=(270, 400), pixel_size_mm=0.2, annotations=True)
    return folder
