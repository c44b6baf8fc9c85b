"""What `predict` measures and says about its inputs: earlier runs' outputs among the scans, pixel-size
tables that are ambiguous, cine frames that do not exist, one line per failed file, the exit code
counted as the summary counts (found by a new user's audit of the CLI)."""

from __future__ import annotations

import csv
import subprocess
import sys

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from fetalbio.cli import app
from fetalbio.geometry import Ellipse
from fetalbio.synthetic import draw_scan

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _head(path, seed=0):
    cv2.imwrite(str(path), draw_scan((540, 800), Ellipse(400, 270, 230, 185, 5), np.random.default_rng(seed)))


def _noise(path, seed=0):
    """Uniform noise: the segmentation model finds no head in it, the landmark model points somewhere."""
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 256, (540, 800), dtype=np.uint8))


def test_exit_code_counts_failed_scans_as_the_summary_does(tmp_path):
    """With --method all a scan that one method cannot measure is a review (the other rows keep their
    numbers): the summary said "0 failed" and the command exited 1."""
    _noise(tmp_path / "noise.png")
    (tmp_path / "empty.png").write_bytes(b"")
    res = invoke(
        "predict", tmp_path / "noise.png", "--out", tmp_path / "a", "--method", "all", "--pixel-size", 0.12
    )
    rows = list(csv.DictReader(open(tmp_path / "a" / "measurements.csv")))
    assert {r["method"]: r["status"] for r in rows}["segmentation"] == "error"  # the case itself
    assert "0 failed" in res.output and res.exit_code == 0, res.output
    # the failed method is named once, not the file's every row
    assert res.output.count("segmentation: no head found") == 1
    args = ["--out", tmp_path / "b", "--method", "all", "--pixel-size", 0.12]
    res = invoke("predict", tmp_path / "noise.png", tmp_path / "empty.png", *args)
    assert "1 failed" in res.output and res.exit_code == 1, res.output
    assert res.output.count("empty file (0 bytes)") == 1  # one line for the file, not one per method


def test_an_earlier_run_inside_the_input_folder_is_not_measured(tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    _head(scans / "a.png")
    first = invoke("predict", scans, "--out", scans / "run1", "--pixel-size", 0.12)
    assert first.exit_code == 0, first.output
    assert list((scans / "run1" / "overlays").glob("*.png"))  # pictures that look like scans
    res = invoke("predict", scans, "--out", tmp_path / "run2", "--pixel-size", 0.12)
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(tmp_path / "run2" / "measurements.csv")))
    assert {r["file"] for r in rows} == {str(scans / "a.png")}
    assert "run1 left out: a fetalbio run folder's outputs" in res.output
    # an overlay named on its own is measured: the user asked for it
    overlay = next((scans / "run1" / "overlays").glob("*.png"))
    assert invoke("predict", overlay, "--out", tmp_path / "run3", "--pixel-size", 0.12).exit_code == 0


def test_scans_inside_out_are_said_to_be_there(tmp_path):
    _head(tmp_path / "a.png")
    res = invoke("predict", tmp_path, "--out", tmp_path, "--overwrite", "--pixel-size", 0.12)
    assert res.exit_code == 2
    assert "the 1 found are inside --out" in res.output, res.output
    assert (tmp_path / "a.png").exists()  # refused before the folder was touched


def test_two_pixel_size_tables_in_a_folder_are_refused(tmp_path):
    """The alphabetically first table was used and the other never named: HC 210 mm for a 59 mm head."""
    _head(tmp_path / "a.png")
    (tmp_path / "pixel_size.csv").write_text("filename,pixel size(mm)\na.png,0.0834\n")
    (tmp_path / "archive_pixel_size.csv").write_text("filename,pixel size(mm)\na.png,0.30\n")
    res = invoke("predict", tmp_path, "--out", tmp_path / "out")
    assert res.exit_code == 2
    assert "several pixel-size tables (archive_pixel_size.csv, pixel_size.csv)" in res.output
    assert "--pixel-csv" in res.output and not (tmp_path / "out").exists()
    res = invoke("predict", tmp_path, "--out", tmp_path / "out", "--pixel-csv", tmp_path / "pixel_size.csv")
    assert res.exit_code == 0, res.output
    row = next(csv.DictReader(open(tmp_path / "out" / "measurements.csv")))
    assert float(row["pixel_size_mm"]) == pytest.approx(0.0834)


def test_frames_a_cine_lacks_are_said(tmp_path):
    pytest.importorskip("pydicom")
    from _dicom import make_dicom

    rng = np.random.default_rng(0)
    cine = np.stack([draw_scan((270, 400), Ellipse(200, 135, 115, 92, 5), rng) for _ in range(3)])
    path = make_dicom(tmp_path / "cine.dcm", cine, frames=3)
    res = invoke("predict", path, "--out", tmp_path / "out", "--frames", "1,2,9", "--pixel-size", 0.12)
    assert res.exit_code == 0, res.output
    assert "has 3 frames (0-2): --frames 9 not measured there" in res.output
    res = invoke("predict", path, "--out", tmp_path / "out2", "--frames", "1,2", "--pixel-size", 0.12)
    assert "not measured there" not in res.output


def test_the_summary_line_is_one_line_when_piped(tmp_path):
    """Rich wrapped the summary at 80 columns in a log, cutting the output path in two."""
    _head(tmp_path / "a.png")
    out = tmp_path / ("a_long_folder_name_for_the_results_of_this_run_" * 2)
    done = subprocess.run(
        [sys.executable, "-m", "fetalbio.cli", "predict", str(tmp_path / "a.png"), "--out", str(out), "-q"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if "scans:" in x)
    assert str(out / "measurements.csv") in line


def test_two_folders_with_the_same_file_names(tmp_path, monkeypatch):
    """Each folder's scan gets its own GA from a table naming the folders; the table on the terminal
    tells the two rows apart; a bare name given to both is warned about."""
    monkeypatch.setenv("COLUMNS", "200")
    for site, seed in (("siteA", 1), ("siteB", 2)):
        (tmp_path / site).mkdir()
        _head(tmp_path / site / "scan1.png", seed)
    (tmp_path / "ga.csv").write_text("filename,ga_weeks\nsiteA/scan1.png,24\nsiteB/scan1.png,30\n")
    args = ["--pixel-size", 0.12, "--ga-csv"]
    res = invoke(
        "predict",
        tmp_path / "siteA",
        tmp_path / "siteB",
        "--out",
        tmp_path / "o1",
        *args,
        tmp_path / "ga.csv",
    )
    assert res.exit_code == 0, res.output
    rows = {r["file"]: r for r in csv.DictReader(open(tmp_path / "o1" / "measurements.csv"))}
    assert [float(rows[str(tmp_path / s / "scan1.png")]["ga_given_weeks"]) for s in ("siteA", "siteB")] == [
        24,
        30,
    ]
    assert "siteA/scan1.png" in res.output and "siteB/scan1.png" in res.output
    (tmp_path / "bare.csv").write_text("filename,ga_weeks\nscan1.png,24\n")
    res = invoke(
        "predict",
        tmp_path / "siteA",
        tmp_path / "siteB",
        "--out",
        tmp_path / "o2",
        *args,
        tmp_path / "bare.csv",
    )
    assert "the GA table's scan1.png was given to 2 scans" in res.output


def test_pixel_size_tables_in_subfolders_are_used(tmp_path):
    """Two sites' folders, each with its own table naming the same file: given their parent folder, the
    scans were measured in pixels and neither table was mentioned."""
    for site, size in (("siteA", 0.10), ("siteB", 0.20)):
        (tmp_path / "sites" / site / "day1").mkdir(parents=True)
        _head(tmp_path / "sites" / site / "day1" / "scan1.png")
        (tmp_path / "sites" / site / "pixel_size.csv").write_text(
            f"filename,pixel size(mm)\nscan1.png,{size}\n"
        )
    res = invoke("predict", tmp_path / "sites", "--out", tmp_path / "out")
    assert res.exit_code == 0, res.output
    rows = {r["file"]: r for r in csv.DictReader(open(tmp_path / "out" / "measurements.csv"))}
    got = [
        float(rows[str(tmp_path / "sites" / s / "day1" / "scan1.png")]["pixel_size_mm"])
        for s in ("siteA", "siteB")
    ]
    assert got == [0.10, 0.20]
    assert res.output.count("pixel sizes from") == 2


@pytest.mark.slow
def test_a_training_start_refused_for_a_bad_annotation_leaves_no_split(synthetic_dataset, tmp_path):
    """The split was written before the annotations were read: the next start reused it."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synthetic_dataset, data)
    ann = sorted(data.glob("*_Annotation.png"))[-1]
    cv2.imwrite(str(ann), cv2.resize(cv2.imread(str(ann), cv2.IMREAD_GRAYSCALE), (200, 135)))
    out = tmp_path / "run"
    res = invoke("train-seg", data, "--out", out, "--epochs", 1, "--steps-per-epoch", 1)
    assert res.exit_code == 2 and "not its image" in res.output, res.output
    assert not (out / "splits.json").exists()


def test_a_run_refused_for_a_damaged_model_leaves_no_folder(tmp_path):
    _head(tmp_path / "a.png")
    (tmp_path / "bad.tflite").write_bytes(b"not a model")
    out = tmp_path / "out"
    args = ["--method", "segmentation", "--model", tmp_path / "bad.tflite", "--pixel-size", 0.12]
    res = invoke("predict", tmp_path / "a.png", "--out", out, *args)
    assert res.exit_code == 2 and "may be damaged" in res.output, res.output
    assert not out.exists()
    out.mkdir()  # a folder the user made stays
    assert invoke("predict", tmp_path / "a.png", "--out", out, *args).exit_code == 2 and out.is_dir()


def test_overwrite_keeps_a_file_the_user_put_among_the_overlays(tmp_path):
    _head(tmp_path / "a.png")
    _head(tmp_path / "b.png", 1)
    out = tmp_path / "out"
    assert (
        invoke(
            "predict", tmp_path / "a.png", tmp_path / "b.png", "--out", out, "--pixel-size", 0.12
        ).exit_code
        == 0
    )
    (out / "overlays" / "my notes.png").write_bytes(b"mine")
    res = invoke("predict", tmp_path / "a.png", "--out", out, "--overwrite", "--pixel-size", 0.12)
    assert res.exit_code == 0, res.output
    assert (out / "overlays" / "my notes.png").read_bytes() == b"mine"
    # the previous run's overlay of b.png is gone: only this run's outputs and the user's file are left
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["a.png_fused.png", "my notes.png"]
