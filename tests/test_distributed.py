"""Distributed and crash-safe training, each run in fresh processes through the real CLI.

* mirrored over two logical CPU devices (``FETALBIO_CPU_REPLICAS=2``), killed with SIGKILL in the middle
  of epoch 2 and resumed with ``--resume``;
* multi-worker: two worker processes on 127.0.0.1 (free ports, TF_CONFIG each), bounded in time.

TensorFlow's devices and collectives are fixed when it starts, hence the subprocesses
(``tests/_worker.py`` runs the CLI and reports what train() did). The multi-worker pair starts first
(a module fixture) so that it overlaps the resume test on a small machine; every process is killed if it
runs past its time.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fetalbio.distribute import configure_cpu_replicas, per_replica_batch, scaled_lr

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "_worker.py"
TIMEOUT_S = 240  # per process; a healthy run takes 20-60 s on 2 busy cores
STEPS = 3


def env(**extra: str) -> dict:
    e = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG",) and not k.startswith("FETALBIO_")}
    e.update(TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow", PYTHONPATH=str(REPO), COLUMNS="120")
    e.update(extra)
    return e


def train_args(dataset: Path, out: Path, strategy: str, epochs: int, batch: int) -> list[str]:
    return [
        "train-seg",
        str(dataset),
        "--out",
        str(out),
        "--strategy",
        strategy,
        "--epochs",
        str(epochs),
        "--batch-size",
        str(batch),
        "--image-size",
        "64x96",
        "--steps-per-epoch",
        str(STEPS),
        "--base-filters",
        "4",
        "--depth",
        "2",
        "--val-fraction",
        "0.25",
    ]


def start(report: Path, args: list[str], environ: dict, log: Path) -> subprocess.Popen:
    with open(log, "wb") as f:
        return subprocess.Popen(
            [sys.executable, str(WORKER), str(report), *args],
            cwd=REPO,
            env=environ,
            stdout=f,
            stderr=subprocess.STDOUT,
        )


def finish(procs: list[subprocess.Popen], logs: list[Path], timeout: float = TIMEOUT_S) -> list[str]:
    """Wait for all, killing all at the deadline or as soon as one fails; returns their output."""
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
    outs = [log.read_text(errors="replace") for log in logs]
    if any(p.returncode for p in procs):
        pytest.fail(
            "\n".join(
                f"--- process {i}: exit {p.returncode} (limit {timeout} s)\n{out[-3000:]}"
                for i, (p, out) in enumerate(zip(procs, outs, strict=True))
            )
        )
    return outs


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def history(run: Path) -> list[dict]:
    return list(csv.DictReader(open(run / "history.csv")))


def assert_bn_agree(per_replica: dict, expected_replicas: int, saved: dict | None = None) -> None:
    """Every replica holds the same BN moving statistics (synchronized BN), equal to the saved ones."""
    assert per_replica, "no BatchNorm statistics recorded"
    moved = False
    for path, values in per_replica.items():
        assert len(values) == expected_replicas, path
        for other in values[1:]:
            np.testing.assert_allclose(other, values[0], rtol=1e-5, atol=1e-7, err_msg=path)
        if saved is not None:
            np.testing.assert_allclose(saved[path], values[0], rtol=1e-5, atol=1e-7, err_msg=path)
        moved |= "moving_mean" in path and np.abs(values[0]).max() > 0
    assert moved, "the moving means never left their initial zeros: no training step updated them"


# --- the rules, without TensorFlow ---


def test_batch_and_learning_rate_rules():
    assert per_replica_batch(8, 2) == 4 and per_replica_batch(8, 1) == 8
    expected = r"--batch-size 3 is the global batch .* 2 replicas.*: try --batch-size 2 or 4$"
    with pytest.raises(ValueError, match=expected):
        per_replica_batch(3, 2)
    with pytest.raises(ValueError, match="try --batch-size 4$"):
        per_replica_batch(2, 4)
    assert scaled_lr(2e-3, 8) == pytest.approx(2e-3) and scaled_lr(2e-3, 32) == pytest.approx(8e-3)


def test_cpu_replicas_variable_is_checked(monkeypatch):
    monkeypatch.setenv("FETALBIO_CPU_REPLICAS", "two")
    with pytest.raises(ValueError, match="whole number"):
        configure_cpu_replicas()
    monkeypatch.setenv("FETALBIO_CPU_REPLICAS", "0")
    with pytest.raises(ValueError, match="1 or more"):
        configure_cpu_replicas()


# --- multi-worker: two processes on 127.0.0.1 ---


@pytest.fixture(scope="module")
def multi_worker(synthetic_dataset, tmp_path_factory):
    """Start two workers (worker 0 is the chief); the test waits for them."""
    root = tmp_path_factory.mktemp("multi_worker")
    run = root / "run"
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    procs, logs, reports, tmps = [], [], [], []
    for i in range(2):
        tmps.append(root / f"tmp{i}")
        tmps[-1].mkdir()
        logs.append(root / f"worker{i}.log")
        reports.append(root / f"report{i}.json")
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs.append(
            start(
                reports[-1],
                train_args(synthetic_dataset, run, "multi-worker", 1, 2),
                env(TF_CONFIG=tf_config, TMPDIR=str(tmps[-1])),
                logs[-1],
            )
        )
    yield {"procs": procs, "logs": logs, "reports": reports, "tmps": tmps, "run": run}
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)


# --- mirrored over two logical CPUs, SIGKILL in epoch 2, --resume ---


@pytest.mark.slow
def test_mirrored_sigkill_mid_epoch_then_resume(synthetic_dataset, tmp_path, multi_worker):
    run = tmp_path / "run"
    epochs = 3
    args = train_args(synthetic_dataset, run, "mirrored", epochs, 4)
    first = start(
        tmp_path / "first.json",
        args,
        env(FETALBIO_CPU_REPLICAS="2", FETALBIO_TEST_STEP_DELAY_S="0.8"),
        tmp_path / "first.log",
    )
    state = run / "checkpoint" / "state.json"
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not state.exists():
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.1)
        time.sleep(1.2)  # epoch 2 is in progress: its 3 steps take >= 0.8 s each (the test hook)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    assert first.returncode == -signal.SIGKILL
    killed = json.loads(state.read_text())
    assert killed["epoch"] == 1 and killed["optimizer_iterations"] == STEPS, "not killed inside epoch 2"
    assert [int(r["epoch"]) for r in history(run)] == [1]

    report = tmp_path / "second.json"
    (out,) = finish(
        [start(report, [*args, "--resume"], env(FETALBIO_CPU_REPLICAS="2"), tmp_path / "second.log")],
        [tmp_path / "second.log"],
    )
    assert f"Resuming after epoch 1 of {epochs} (optimizer step {STEPS})" in out
    assert "MirroredStrategy: 2 replicas x 2 scans = global batch 4" in out
    hist = history(run)
    assert [int(r["epoch"]) for r in hist] == [1, 2, 3]  # continuous, no duplicates, the configured count
    # the optimizer state came back: its step counter carried on from epoch 1
    assert [int(r["step"]) for r in hist] == [STEPS, 2 * STEPS, 3 * STEPS]
    final = json.loads(state.read_text())
    assert final["epoch"] == epochs and final["optimizer_iterations"] == epochs * STEPS
    files = sorted(p.name for p in state.parent.iterdir())
    assert files == ["optimizer-0003.npz", "rng-0003.npz", "state.json", "weights-0003.npz"]  # older removed
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and metrics["strategy"] == "MirroredStrategy"
    # the rule: 2e-3 for a batch of 8, so 1e-3 for the global batch of 4
    assert metrics["per_replica_batch"] == 2 and metrics["learning_rate"] == pytest.approx(1e-3)

    rep = json.loads(report.read_text())
    # synchronized BN: both replicas hold the same moving statistics, and the checkpoint holds them
    assert_bn_agree(rep["bn_final"], 2, rep["bn_checkpoint"])
    if rep["bn_at_save"] is not None:  # best.keras was written by this (resumed) process
        assert_bn_agree(rep["bn_at_save"], 2, {k: v[0] for k, v in rep["loaded"]["bn"].items()})
    assert rep["loaded"]["pred_shape"] == [2, 64, 96, 1] and rep["loaded"]["pred_finite"]


@pytest.mark.slow
def test_multi_worker_two_processes(multi_worker):
    outs = finish(multi_worker["procs"], multi_worker["logs"])
    run = multi_worker["run"]
    chief, other = (json.loads(r.read_text()) for r in multi_worker["reports"])
    assert chief["result"]["chief"] and not other["result"]["chief"]
    assert chief["result"]["run_folder"] == str(run)
    # the other worker wrote only under its own TMPDIR, and cleaned up after itself
    assert other["result"]["run_folder"].startswith(str(multi_worker["tmps"][1]))
    assert not list(multi_worker["tmps"][1].iterdir())
    for name in ("config.json", "splits.json", "history.csv", "best.keras", "model.json", "metrics.json"):
        assert (run / name).exists(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and metrics["strategy"] == "MultiWorkerMirroredStrategy"
    assert metrics["task"] == "worker:0" and metrics["per_replica_batch"] == 1
    assert [int(r["epoch"]) for r in history(run)] == [1] and metrics["optimizer_iterations"] == STEPS
    # both workers finished the epoch with the same weights; the saved model holds them
    assert other["result"]["optimizer_iterations"] == STEPS
    assert_bn_agree(
        {k: [v[0], other["bn_at_save"][k][0]] for k, v in chief["bn_at_save"].items()},
        2,
        {k: v[0] for k, v in chief["loaded"]["bn"].items()},
    )
    assert chief["loaded"]["pred_shape"] == [2, 64, 96, 1] and chief["loaded"]["pred_finite"]
    # only the chief shows progress
    assert "epoch 1/1" in outs[0] and "epoch 1/1" not in outs[1]


def test_batch_not_divisible_by_replicas_fails_clearly(synthetic_dataset, tmp_path):
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "fetalbio.cli",
            *train_args(synthetic_dataset, tmp_path / "r", "mirrored", 1, 3),
        ],
        cwd=REPO,
        env=env(FETALBIO_CPU_REPLICAS="2"),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert "--batch-size 3 is the global batch" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "r").exists()
