"""Batch runs: one run per folder, journal + resume (also after SIGKILL), signals, provenance, names.

Every run here is the real CLI with the shipped int8 LiteRT models on synthetic scans.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fetalbio.cli import app
from fetalbio.synthetic import write_samples

LITERT = ["--engine", "litert"]


def scans(folder: Path, n: int = 4, seed: int = 7) -> Path:
    write_samples(folder, n=n, seed=seed, shape_hw=(270, 400), pixel_size_mm=0.2, annotations=False)
    return folder


def invoke(*args: str):
    return CliRunner().invoke(app, ["predict", *map(str, args)])


def table(out: Path) -> list[dict]:
    with open(out / "measurements.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return scans(tmp_path_factory.mktemp("batch") / "scans")


def test_run_folder_holds_provenance_and_refuses_a_second_run(folder, tmp_path):
    out = tmp_path / "run"
    res = invoke(folder, "--out", out, "--method", "segmentation", *LITERT)
    assert res.exit_code == 0, res.output
    assert "pixel sizes from" in res.output  # the folder's CSV was found and said
    run = json.loads((out / "run.json").read_text())
    assert run["counts"]["n_scans"] == 4 and run["engine"] == "litert"
    sha = run["models"]["segmentation"]["sha256"]
    import hashlib

    assert sha == hashlib.sha256(Path(run["models"]["segmentation"]["file"]).read_bytes()).hexdigest()
    rows = table(out)
    assert {r["engine"] for r in rows} == {"litert"} and all(r["model_id"].endswith(sha[:12]) for r in rows)
    assert all(r["unit"] == "mm" for r in rows)
    again = invoke(folder, "--out", out, "--method", "segmentation", *LITERT)
    assert again.exit_code == 2 and "not empty" in again.output and "--resume" in again.output
    assert len(table(out)) == 4  # untouched
    over = invoke(folder / "100_HC.png", "--out", out, "--method", "segmentation", "--overwrite", *LITERT)
    assert over.exit_code == 0, over.output
    assert len(table(out)) == 1 and len(list((out / "overlays").iterdir())) == 1  # no stale overlays


def test_fused_rows_name_every_model_and_the_calibration_and_save_the_mask(folder, tmp_path):
    import hashlib

    out = tmp_path / "fused"
    res = invoke(folder, "--out", out, "--method", "all", "--save-masks", "--no-overlays", *LITERT)
    assert res.exit_code == 0, res.output
    fused = next(r for r in table(out) if r["method"] == "fused")
    half = float(fused["hc_mm_high"]) - float(fused["hc_mm"])
    assert f"{float(fused['hc_mm']):.1f} ±{half:.1f} mm" in res.output  # the table shows the interval
    run = json.loads((out / "run.json").read_text())
    cal = run["calibrations"]["fused/calibration"]
    from fetalbio.modelinfo import models_dir

    assert cal["sha256"] == hashlib.sha256((models_dir() / "fused" / "model.json").read_bytes()).hexdigest()
    by = {r["method"]: r["model_id"] for r in table(out) if r["file"].endswith("100_HC.png")}
    seg, lm = (run["models"][m]["sha256"][:12] for m in ("segmentation", "landmarks"))
    assert by["segmentation"].endswith(seg) and by["landmarks"].endswith(lm)
    assert by["fused"].split(";") == [by["segmentation"], by["landmarks"], cal["id"]]
    masks = sorted(p.name for p in (out / "masks").iterdir())
    assert len(masks) == 4
    only_fused = tmp_path / "only_fused"  # the default method writes the masks too (its segmentation part's)
    assert invoke(folder, "--out", only_fused, "--save-masks", "--no-overlays", *LITERT).exit_code == 0
    assert sorted(p.name for p in (only_fused / "masks").iterdir()) == masks
    assert (only_fused / "masks" / masks[0]).read_bytes() == (out / "masks" / masks[0]).read_bytes()


def test_out_that_is_a_file_or_read_only(folder, tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    res = invoke(folder, "--out", f, *LITERT)
    assert res.exit_code == 2 and "existing file" in res.output and "Traceback" not in res.output
    under_a_file = invoke(folder, "--out", f / "sub", *LITERT)  # a folder that cannot be made, even as root
    assert under_a_file.exit_code == 2 and "cannot write the output folder" in under_a_file.output
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        res = invoke(folder, "--out", ro / "sub", "--no-overlays", *LITERT)
        assert res.exit_code == 2 and "cannot write" in res.output
    finally:
        ro.chmod(0o700)


def test_same_names_in_different_folders_do_not_collide(tmp_path):
    a, b = scans(tmp_path / "siteA", 1, seed=1), scans(tmp_path / "siteB", 1, seed=2)
    out = tmp_path / "run"
    res = invoke(
        a / "100_HC.png",
        b / "100_HC.png",
        tmp_path,
        "--out",
        out,
        "--pixel-size",
        "0.2",
        "--method",
        "segmentation",
        *LITERT,
    )
    assert res.exit_code == 0, res.output
    rows = table(out)
    overlays = [r["overlay"] for r in rows]
    assert len(rows) == 2 and len(set(overlays)) == 2  # the folder repeats the two files: listed once each
    assert all((out / o).exists() and (out / o).resolve().is_relative_to(out.resolve()) for o in overlays)


def test_long_names_are_capped(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    import cv2
    import numpy as np

    from fetalbio.synthetic import draw_scan, random_ellipse

    rng = np.random.default_rng(0)
    img = draw_scan((270, 400), random_ellipse((270, 400), rng), rng)
    long = d / ("x" * 240 + ".png")
    cv2.imwrite(str(long), img)
    res = invoke(long, "--out", tmp_path / "run", "--pixel-size", "0.2", "--method", "segmentation", *LITERT)
    assert res.exit_code == 0, res.output
    (row,) = table(tmp_path / "run")
    assert len(Path(row["overlay"]).name.encode()) < 200 and (tmp_path / "run" / row["overlay"]).exists()


def _cmd(folder: Path, out: Path, *extra: str) -> list[str]:
    """The real CLI in a fresh process (signals and locks are per process)."""
    return [sys.executable, "-m", "fetalbio.cli", "predict", str(folder), "--out", str(out), *LITERT, *extra]


def _start(folder: Path, out: Path, *extra: str) -> subprocess.Popen:
    cmd = _cmd(folder, out, "--batch-size", "2", "--method", "segmentation", *extra)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_journal(out: Path, lines: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        j = out / "journal.jsonl"
        if j.exists() and len(j.read_text().splitlines()) >= lines:
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.communicate()}")
        time.sleep(0.01)
    raise AssertionError("journal did not grow")


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    folder = scans(tmp_path / "scans", n=60, seed=11)
    ref = tmp_path / "ref"
    assert (
        invoke(folder, "--out", ref, "--batch-size", "2", "--method", "segmentation", *LITERT).exit_code == 0
    )
    out = tmp_path / "run"
    proc = _start(folder, out)
    _wait_for_journal(out, 4, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = len((out / "journal.jsonl").read_text().splitlines())
    assert 4 <= kept < 60 and not (out / "measurements.csv").exists()
    res = invoke(folder, "--out", out, "--resume", "--batch-size", "2", "--method", "segmentation", *LITERT)
    assert res.exit_code == 0, res.output
    assert f"resuming: {kept} scans in the journal" in " ".join(res.output.split())

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "overlay"} for r in rows]

    assert strip(table(out)) == strip(table(ref))


@pytest.mark.slow
def test_sigint_stops_after_the_batch_and_keeps_the_rows(tmp_path):
    folder = scans(tmp_path / "scans", n=60, seed=12)
    out = tmp_path / "run"
    proc = _start(folder, out)
    _wait_for_journal(out, 2, proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "--resume" in stderr
    rows = table(out)
    assert 2 <= len(rows) < 60 and all(r["status"] == "ok" for r in rows)


def test_two_runs_into_one_folder(tmp_path):
    """A second run on a folder another process is writing is refused, with that process's pid; the lock
    is held here by this test process (deterministic), as a running predict holds it."""
    import fcntl

    folder = scans(tmp_path / "scans", n=2, seed=13)
    out = tmp_path / "run"
    out.mkdir()
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, str(os.getpid()).encode())
        second = subprocess.run(_cmd(folder, out, "--resume"), capture_output=True, text=True)
        assert second.returncode == 2 and f"another fetalbio run (pid {os.getpid()})" in second.stderr
        assert not (out / "measurements.csv").exists()
    finally:
        os.close(fd)  # the lock goes with the file descriptor
    again = subprocess.run(_cmd(folder, out, "--resume"), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert len(table(out)) == 2 and not (out / ".lock").exists()


def test_an_interval_clipped_at_zero_is_shown_as_its_range():
    from fetalbio.cli import _with_interval

    assert _with_interval(168.94, 164.5, 173.38) == "168.9 ±4.4 mm"
    assert _with_interval(12.0, 0.0, 40.0) == "12.0 mm (0-40)"


def test_each_input_folder_uses_its_own_pixel_csv(tmp_path):
    """Two sites' folders, the same file name, different pixel sizes: each scan gets its folder's."""
    import shutil

    one = scans(tmp_path / "one", n=1)
    src = next(one.glob("*.png"))
    for site, size in (("siteA", 0.1), ("siteB", 0.2)):
        (tmp_path / site).mkdir()
        shutil.copy(src, tmp_path / site / "scan.png")
        (tmp_path / site / f"{site}_pixel_size.csv").write_text(f"filename,pixel size(mm)\nscan.png,{size}\n")
    out = tmp_path / "run"
    res = invoke(tmp_path / "siteA", tmp_path / "siteB", "--out", out, "--method", "segmentation", *LITERT)
    assert res.exit_code == 0, res.output
    rows = {Path(r["file"]).parent.name: r for r in table(out)}
    assert float(rows["siteA"]["pixel_size_mm"]) == 0.1 and float(rows["siteB"]["pixel_size_mm"]) == 0.2
    assert float(rows["siteB"]["hc_mm"]) == pytest.approx(2 * float(rows["siteA"]["hc_mm"]), rel=1e-3)


def test_a_run_folder_inside_the_input_folder_is_not_measured(tmp_path):
    folder = scans(tmp_path / "scans", n=2)
    out = folder / "run"
    for extra in ([], ["--overwrite"]):  # the second run finds the first one's overlays in its input
        res = invoke(folder, "--out", out, "--method", "segmentation", *LITERT, *extra)
        assert res.exit_code == 0, res.output
        assert len(table(out)) == 2 and all(r["status"] != "error" for r in table(out))


def test_a_fifo_is_an_error_row_not_a_hang(tmp_path):
    folder = scans(tmp_path / "scans", n=1)
    os.mkfifo(folder / "pipe.png")  # opening it would block until a writer came
    out = tmp_path / "run"
    res = invoke(folder, "--out", out, "--method", "segmentation", *LITERT)
    assert res.exit_code == 1
    bad = [r for r in table(out) if r["status"] == "error"]
    assert len(bad) == 1 and bad[0]["file"].endswith("pipe.png") and "not a regular file" in bad[0]["error"]


def test_resume_says_what_it_measures_again_and_what_it_leaves_out(folder, tmp_path):
    out = tmp_path / "run"
    assert invoke(folder, "--out", out, "--method", "segmentation", *LITERT).exit_code == 0
    files = sorted(folder.glob("*.png"))
    res = invoke(files[0], files[1], "--out", out, "--resume", "--method", "landmarks", *LITERT)
    text = " ".join(res.output.split())
    assert res.exit_code == 0, res.output
    assert "2 scans in the journal were measured with other models or options: measured again" in text
    assert "2 scans in the journal are not among these inputs: left out of the table" in text
    same = invoke(folder, "--out", tmp_path / "run2", "--method", "segmentation", *LITERT)
    assert same.exit_code == 0
    again = invoke(folder, "--out", tmp_path / "run2", "--resume", "--method", "segmentation", *LITERT)
    assert again.exit_code == 0 and "warning" not in again.output  # a plain resume says nothing more


def test_model_id_of_a_run_without_known_models_is_empty():
    """Benchmarks and library callers measure without a run folder: no model ids, empty cells."""
    from fetalbio.predict import BatchRun

    run = BatchRun()
    assert run.model_id("segmentation") == "" and run.model_id("fused") == ""
    run = BatchRun(model_ids={"segmentation": "s@1", "landmarks": "l@2"})
    assert run.model_id("fused") == "s@1;l@2"


def test_outputs_that_cannot_be_written_are_one_line_and_resume_finishes(folder, tmp_path):
    out = tmp_path / "r"
    (out / "report.html").mkdir(parents=True)  # a folder where the report goes (as a full disk would fail)
    res = invoke(folder, "--out", out, "--resume", "-q")
    assert res.exit_code == 1, res.output
    assert "report.html: cannot write the results" in res.output and "Traceback" not in res.output
    (out / "report.html").rmdir()
    again = invoke(folder, "--out", out, "--resume", "-q")
    assert again.exit_code == 0, again.output
    assert "resuming: 4 scans in the journal" in again.output  # nothing measured twice
    assert len(table(out)) == 4


def test_a_run_that_opens_the_lock_as_another_run_finishes_locks_the_file_on_disk(tmp_path, monkeypatch):
    # run B opens .lock, run A finishes (removes it) before B locks: B must not hold a lock on the removed
    # file while run C creates and locks a new one (two runs writing one folder)
    from fetalbio import runfolder
    from fetalbio.runfolder import RunFolder, RunFolderError

    out = tmp_path / "run"
    a = RunFolder(out, "new")
    a.open()
    real_open, opened = os.open, []

    def open_then_a_finishes(path, *args, **kwargs):
        fd = real_open(path, *args, **kwargs)
        if str(path).endswith(".lock") and not opened:
            opened.append(path)
            a.close()
        return fd

    monkeypatch.setattr(runfolder.os, "open", open_then_a_finishes)
    b = RunFolder(out, "resume")
    b.open()
    monkeypatch.setattr(runfolder.os, "open", real_open)
    assert os.fstat(b._lock_fd).st_ino == os.stat(out / ".lock").st_ino
    with pytest.raises(RunFolderError, match="another fetalbio run"):
        RunFolder(out, "resume").open()
    b.close()
    assert not (out / ".lock").exists()
