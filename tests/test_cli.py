"""The real CLI, end to end, on synthetic scans (Typer's CliRunner)."""

import csv
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from fetalbio.cli import app

runner = CliRunner()
COMMANDS = ["train-seg", "train-landmarks", "predict", "evaluate", "export", "data", "data check"]


# a model small enough to train in seconds
TINY = ["--batch-size", 2, "--image-size", "64x96", "--steps-per-epoch", 2, "--base-filters", 4]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_help_lists_every_command():
    res = invoke("--help")
    assert res.exit_code == 0
    for name in ("train-landmarks", "train-seg", "predict", "evaluate", "export", "data"):
        assert name in res.output


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command):
    res = invoke(*command.split(), "--help")
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output


def test_help_does_not_import_tensorflow():
    code = (
        "import sys; from fetalbio.cli import main; sys.argv=['fetalbio','--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'heavy import'"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.fixture(scope="session")
def tiny_run(synthetic_dataset, tmp_path_factory):
    """A segmentation model trained for a few steps through the real CLI."""
    out = tmp_path_factory.mktemp("runs") / "seg"
    res = invoke(
        "train-seg",
        synthetic_dataset,
        "--out",
        out,
        "--epochs",
        2,
        *TINY,
        "--val-fraction",
        0.25,
    )
    assert res.exit_code == 0, res.output
    return out


@pytest.mark.slow
def test_train_writes_the_run_folder(tiny_run):
    for name in ("config.json", "splits.json", "history.csv", "best.keras", "model.json", "metrics.json"):
        assert (tiny_run / name).exists(), name
    hist = list(csv.DictReader(open(tiny_run / "history.csv")))
    assert [int(r["epoch"]) for r in hist] == [1, 2]
    split = json.loads((tiny_run / "splits.json").read_text())
    subjects = lambda names: {n[:3] for n in names}  # noqa: E731
    assert split["val"] and not subjects(split["train"]) & subjects(split["val"])
    cfg = json.loads((tiny_run / "config.json").read_text())
    assert cfg["image_size"] == [64, 96] and cfg["method"] == "segmentation"


@pytest.mark.slow
def test_train_refuses_to_overwrite_and_resume_needs_a_run(tiny_run, synthetic_dataset, tmp_path):
    res = invoke("train-seg", synthetic_dataset, "--out", tiny_run, "--epochs", 1, "--image-size", "64x96")
    assert res.exit_code != 0 and "--resume" in res.output
    res = invoke("train-seg", synthetic_dataset, "--out", tmp_path / "nothing", "--resume")
    assert res.exit_code != 0 and "nothing to resume" in res.output


@pytest.mark.slow
def test_resume_carries_on(tiny_run, synthetic_dataset, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    cfg = json.loads((run / "config.json").read_text())
    res = invoke(
        "train-seg",
        synthetic_dataset,
        "--out",
        run,
        "--epochs",
        3,
        *TINY,
        "--val-fraction",
        cfg["val_fraction"],
        "--resume",
    )
    assert res.exit_code == 0, res.output
    assert "Resuming after epoch 2" in res.output
    hist = list(csv.DictReader(open(run / "history.csv")))
    assert [int(r["epoch"]) for r in hist] == [1, 2, 3]


@pytest.mark.slow
def test_resume_keeps_the_runs_options_and_refuses_other_ones(tiny_run, synthetic_dataset, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    before = (run / "config.json").read_text()
    for other in (["--lr", 0.01], ["--seed", 9], ["--image-size", "128x192"]):
        res = invoke("train-seg", synthetic_dataset, "--out", run, "--epochs", 3, "--resume", *other)
        assert res.exit_code == 2 and "cannot resume with other options" in " ".join(res.output.split()), (
            res.output
        )
        assert (run / "config.json").read_text() == before  # the run folder is untouched
    res = invoke("train-landmarks", synthetic_dataset, "--out", run, "--epochs", 3, "--resume")
    assert res.exit_code == 2 and "method 'segmentation' -> 'landmarks'" in " ".join(res.output.split())
    # options left at their defaults are the run's own (tiny size, batch, filters), --epochs is this command's
    res = invoke("train-seg", synthetic_dataset, "--out", run, "--epochs", 3, "--resume")
    assert res.exit_code == 0, res.output
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["epochs"] == 3 and cfg["image_size"] == [64, 96] and cfg["base_filters"] == 4


@pytest.mark.slow
def test_training_refuses_what_it_cannot_use(synthetic_dataset, tmp_path):
    import shutil

    odd = tmp_path / "odd"
    shutil.copytree(synthetic_dataset, odd)
    ann = sorted(odd.glob("*_Annotation.png"))[0]
    cv2.imwrite(str(ann), cv2.resize(cv2.imread(str(ann), 0), (200, 135), interpolation=cv2.INTER_NEAREST))
    res = invoke("train-seg", odd, "--out", tmp_path / "a", "--epochs", 1, *TINY)
    assert res.exit_code == 2 and "annotation is 200x135 px, its scan 400x270" in " ".join(res.output.split())
    notes = tmp_path / "notes.keras"
    notes.write_text("no model")
    for init, reason in ((tmp_path / "nope.keras", "does not exist"), (notes, "not a Keras model file")):
        res = invoke(
            "train-seg", synthetic_dataset, "--out", tmp_path / "b", "--epochs", 1, *TINY, "--init-from", init
        )
        assert res.exit_code == 2 and reason in res.output and "Traceback" not in res.output, res.output
    res = invoke("train-seg", synthetic_dataset, "--out", tmp_path / "c", "--lr", 0)
    assert res.exit_code == 2 and "a learning rate above 0" in res.output


@pytest.mark.slow
def test_training_without_validation_scans_says_so(synthetic_dataset, tmp_path):
    res = invoke(
        "train-seg", synthetic_dataset, "--out", tmp_path / "r", "--epochs", 1, *TINY, "--val-fraction", 0
    )
    assert res.exit_code == 0, res.output
    assert "no validation scans" in " ".join(res.output.split())


def test_data_check_of_a_folder_without_scans_fails(tmp_path):
    res = invoke("data", "check", tmp_path)
    assert res.exit_code == 1 and "no scans found" in res.output


def write_bad_scans(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("this is not an image\n")
    cv2.imwrite(str(folder / "tiny.png"), np.full((10, 12), 90, np.uint8))
    cv2.imwrite(str(folder / "blank.png"), np.zeros((200, 300), np.uint8))
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "deep16.png"), (rng.random((200, 300)) * 60000).astype(np.uint16))
    cv2.imwrite(str(folder / "colour.png"), (rng.random((200, 300, 3)) * 255).astype(np.uint8))


@pytest.mark.slow
def test_predict_goes_on_past_bad_scans(tiny_run, synthetic_dataset, tmp_path):
    bad = tmp_path / "bad"
    write_bad_scans(bad)
    out = tmp_path / "out"
    res = invoke(
        "predict",
        synthetic_dataset,
        bad,
        tmp_path / "missing.png",
        "--out",
        out,
        "--method",
        "segmentation",
        "--model",
        tiny_run,
        "--pixel-size",
        0.2,
    )
    assert res.exit_code == 1  # some scans failed
    assert "Traceback" not in res.output
    rows = {r["file"].split("/")[-1]: r for r in csv.DictReader(open(out / "measurements.csv"))}
    # annotations are not scans
    assert not any("Annotation" in f for f in rows)
    # each failed scan says which file it is and why, in the CSV and on the terminal
    reasons = {
        "corrupt.png": "cannot decode",
        "empty.png": "empty file (0 bytes)",
        "notes.png": "not an image or cannot decode",
        "tiny.png": "too small: 12x10 px",
        "blank.png": "blank image",
        "missing.png": "does not exist",
    }
    for name, reason in reasons.items():
        assert rows[name]["status"] == "error", name
        assert reason in rows[name]["error"], (name, rows[name]["error"])
        # the terminal wraps long lines: compare without whitespace
        assert "".join(f"{name}: {reason}".split()) in "".join(res.output.split()), (name, res.output)
    # 16-bit and colour scans are read; whatever the tiny model finds, it is not a read error
    for name in ("deep16.png", "colour.png"):
        assert "read" not in rows[name]["error"] and "decode" not in rows[name]["error"]
    data = json.loads((out / "measurements.json").read_text())
    assert len(data["rows"]) == len(rows)
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_predict_without_inputs_or_model_fails_cleanly(tmp_path):
    res = invoke("predict", tmp_path, "--out", tmp_path / "o")
    assert res.exit_code == 2 and "no scans found" in res.output
    cv2.imwrite(str(tmp_path / "a.png"), np.full((64, 64), 50, np.uint8))
    res = invoke(
        "predict", tmp_path / "a.png", "--model", tmp_path / "nope.keras", "--method", "segmentation"
    )
    assert res.exit_code == 2 and "does not exist" in res.output


@pytest.mark.slow
def test_evaluate_json(tiny_run, synthetic_dataset, tmp_path):
    out = tmp_path / "eval.json"
    res = invoke(
        "evaluate", synthetic_dataset, "--model", tiny_run, "--json", out, "--report", tmp_path / "rep"
    )
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    for key in (
        "n_images",
        "n_failed",
        "dice_mean",
        "hausdorff_mm_mean",
        "hc_mae_mm",
        "bpd_mae_mm",
        "ofd_mae_mm",
        "landmark_mre_mm",
    ):
        assert key in data["summary"]
    assert data["summary"]["n_images"] == 8 and len(data["rows"]) == 8
    assert data["models"]["segmentation"].startswith(f"{tiny_run.name}/")  # the model scored, not the shipped
    # the drawn annotations lie on the drawn skull ring: each checked, none off the echo's outer edge
    s = data["summary"]
    assert s["n_truth_echo_checked"] == sum(r["status"] == "ok" for r in data["rows"]) > 0
    assert s["n_truth_off_echo"] == 0
    assert (tmp_path / "rep" / "summary.json").exists()


def test_data_check_cli(synthetic_dataset, tmp_path):
    from _draw import write_swapped_landmark_csv

    # a landmark CSV whose pair names are swapped (the role-challenge fault), one row moved off the head
    lm = write_swapped_landmark_csv(synthetic_dataset, tmp_path / "landmarks.csv", shift=(60, 0))
    out = tmp_path / "check.json"
    res = invoke("data", "check", synthetic_dataset, "--landmarks", lm, "--json", out)
    assert res.exit_code == 0, res.output
    summary = json.loads(out.read_text())["summary"]
    assert summary["n_images"] == 8 and summary["n_errors"] == 0
    assert summary["hc_abs_diff_mm_max"] < 0.2
    assert summary["landmarks_names_swapped"] is True
    assert summary["landmarks_suspect_rows"] == 1
    res = invoke("data", "check", tmp_path / "nowhere")
    assert res.exit_code == 2 and "does not exist" in res.output and "Traceback" not in res.output


def test_atomic_writes_have_ordinary_permissions(tmp_path):
    import os

    from fetalbio.writers import write_json_atomic

    p = write_json_atomic(tmp_path / "x.json", {"a": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert (p.stat().st_mode & 0o777) == (0o666 & ~umask)
    assert json.loads(p.read_text()) == {"a": 1}


@pytest.mark.slow
def test_ctrl_c_in_training_says_what_is_kept_and_resume_carries_on(synthetic_dataset, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fetalbio.cli", "train-seg", str(synthetic_dataset), "--out", str(out)]
    tiny = [str(a) for a in TINY]
    proc = subprocess.Popen(
        [*cmd, "--epochs", "200", *tiny], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 240
    while not (out / "checkpoint" / "state.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "keeps the last finished epoch" in err and "--resume" in err and "Traceback" not in err
    done = json.loads((out / "checkpoint" / "state.json").read_text())["epoch"]
    res = subprocess.run(
        [*cmd, "--epochs", str(done + 1), "--resume"], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    assert f"Resuming after epoch {done}" in res.stdout


@pytest.mark.slow
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(synthetic_dataset, tmp_path):
    """Interrupted after epoch 2 of 3 and resumed: the same final weights as a run never stopped (the
    dropout layers' random states travel in the checkpoint with the weights and the optimizer)."""
    import numpy as np

    from fetalbio.train import TrainConfig, train

    def cfg(out):
        return TrainConfig(method="segmentation", dataset=str(synthetic_dataset), out=str(out), epochs=3,
                           batch_size=2, image_size=(64, 96), steps_per_epoch=2, base_filters=4)  # fmt: skip

    def stop_after_2(epoch):
        if epoch == 2:
            raise KeyboardInterrupt

    train(cfg(tmp_path / "whole"))
    with pytest.raises(KeyboardInterrupt):
        train(cfg(tmp_path / "cut"), on_epoch=stop_after_2)
    train(cfg(tmp_path / "cut"), resume=True)
    weights = [np.load(tmp_path / r / "checkpoint" / "weights-0003.npz") for r in ("whole", "cut")]
    assert len(weights[0].files) == len(weights[1].files)
    for k in weights[0].files:
        np.testing.assert_allclose(weights[0][k], weights[1][k], rtol=0, atol=1e-6)


def test_brackets_in_paths_and_messages_are_printed_as_they_are(tmp_path):
    # rich markup ate "[left]" and raised a traceback on "[/oops]" (a path is not markup)
    res = CliRunner().invoke(
        app,
        [
            "predict",
            "scans[left]/a.png",
            "missing[/oops]/x.png",
            "--out",
            str(tmp_path / "r"),
            "--pixel-size",
            "0.1",
        ],
    )
    assert res.exit_code == 2, res.output
    assert "scans[left]/a.png: does not exist" in res.output
    assert "missing[/oops]/x.png: does not exist" in res.output
