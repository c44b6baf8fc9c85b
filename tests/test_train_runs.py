"""A training run folder as a researcher meets it (found by an audit): --resume keeps the run's epochs,
a start refused late leaves nothing behind, scans without an annotation are said to be left out, and
config.json names the pixel-size table it found."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from fetalbio.cli import app
from fetalbio.train import TrainConfig, resumed_config

TINY = ["--batch-size", 2, "--image-size", "64x96", "--steps-per-epoch", 1, "--base-filters", 4, "--depth", 2]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_resume_without_epochs_keeps_the_runs(tmp_path):
    """A 30-epoch run resumed without --epochs trained to the default 40 (and rewrote config.json)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(TrainConfig(dataset="d", out=str(run), epochs=30).to_dict()))
    assert resumed_config(run, TrainConfig(dataset="d", out=str(run))).epochs == 30
    assert resumed_config(run, TrainConfig(dataset="d", out=str(run), epochs=50)).epochs == 50
    assert (
        resumed_config(run, TrainConfig(dataset="d", out=str(run), strategy="one-device")).strategy
        == "one-device"
    )
    with pytest.raises(ValueError, match="lr"):
        resumed_config(run, TrainConfig(dataset="d", out=str(run), lr=0.123))


@pytest.mark.slow
def test_a_start_refused_by_init_from_leaves_no_config_nor_split(synthetic_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_dataset, data)
    next(data.glob("*_Annotation.png")).unlink()
    out = tmp_path / "run"
    res = invoke(
        "train-seg", data, "--out", out, "--epochs", 1, "--init-from", tmp_path / "nothere.keras", *TINY
    )
    assert res.exit_code == 2 and "--init-from" in res.output, res.output
    assert "1 scans without an annotation left out" in res.output
    assert not (out / "config.json").exists() and not (out / "splits.json").exists()
    # the same start without the bad option trains, and its config names the table it found
    res = invoke("train-seg", data, "--out", out, "--epochs", 1, *TINY)
    assert res.exit_code == 0, res.output
    config = json.loads((out / "config.json").read_text())
    assert config["pixel_csv"] is None and config["pixel_csv_found"].endswith(".csv")
    assert (out / "splits.json").exists()
