"""Turn one model trained by tools/train_packed.py (e.g. on a GPU host) into a run folder of this project.

    python tools/import_packed_run.py GPU_OUT NAME --split models/landmarks/splits.json --out runs/gpu-NAME

GPU_OUT holds ``NAME.keras`` (or its ``.partNN`` pieces) and ``results.tgz`` (``logs/NAME.json``). The run
folder gets what ``fetalbio train-landmarks`` writes (config.json, splits.json, history.csv, best.keras,
model.json, metrics.json), so ``evaluate``, ``export``, tools/compare_landmarks.py and tools/ship_model.py
take it like any other. ``best.keras`` is the FINAL model (no epoch was picked on the validation split).
The validation figures in metrics.json are re-measured here, with TensorFlow, through ``evaluate``; the
model is also checked to decode the same points here as it did where it was trained.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from fetalbio.datasets import default_data_root
from fetalbio.pack import load_pack, normalised
from fetalbio.train import TrainConfig


def copy_outputs(args: argparse.Namespace) -> dict:
    """Unpack the trainer's log (``results.tgz``) and copy its model to ``OUT/best.keras``; the log's dict."""
    src = args.gpu_out
    logs = src / "logs"
    if not logs.exists():
        with tarfile.open(src / "results.tgz") as tf:
            tf.extractall(src, filter="data")
    info = json.loads((logs / f"{args.name}.json").read_text())

    args.out.mkdir(parents=True, exist_ok=True)
    model_path = args.out / "best.keras"
    parts = sorted(src.glob(f"{args.name}.keras.part*"))
    if parts:
        with open(model_path, "wb") as fh:
            for p in parts:
                fh.write(p.read_bytes())
    else:
        shutil.copyfile(src / f"{args.name}.keras", model_path)
    return info


def write_run_files(args: argparse.Namespace, dataset: Path, info: dict) -> None:
    """config.json, splits.json, model.json and history.csv of the run folder, as train-landmarks writes them."""
    cfg = TrainConfig(
        method="landmarks",
        dataset=str(dataset),
        out=str(args.out),
        arch=info["arch"],
        epochs=info["epochs"],
        batch_size=info["batch_size"],
        image_size=tuple(info["image_size"]),
        lr=info["lr"],
        weight_decay=info["weight_decay"],
        warmup_epochs=2,
        seed=info["seed"],
        strategy="single GPU (JAX backend)",
        base_filters=info["base_filters"],
        heatmap_sigma_px=info["heatmap_sigma_px"],
        augment=info["augment"],
    )
    config = cfg.to_dict() | {
        "trained_with": "tools/train_packed.py (time budget, cosine learning rate over the budget)",
        "backend": info["backend"],
        "device": info["device"],
        "budget_s": info.get("budget_s"),
    }
    (args.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    shutil.copyfile(args.split, args.out / "splits.json")
    (args.out / "model.json").write_text(json.dumps(cfg.model_info().to_dict(), indent=2) + "\n")
    rows = info["history"]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(args.out / "history.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, columns)
        w.writeheader()
        w.writerows(rows)


def check_points(args: argparse.Namespace, engine: Any, info: dict) -> float:
    """Max |difference| (input px) between the points decoded here (TensorFlow) and where it trained."""
    from fetalbio.heatmaps import decode_heatmaps

    data = load_pack(args.pack)
    names = [str(n) for n in data["names"]]
    idx = [names.index(n) for n in info["check_names"]]
    x = np.stack([normalised(data, i) for i in idx])[..., None]
    out = engine.predict(x)
    pts = np.array([decode_heatmaps(o, info["heatmap_sigma_px"])[0] for o in out])
    check = float(np.abs(pts - np.array(info["check_points_in"])).max())
    print(
        f"{args.name}: decoded points here vs on {info['device'] or info['backend']}: max |diff| {check:.2e} px"
    )
    return check


def main() -> None:
    """Import one packed-training model as a run folder (see the module docstring)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("gpu_out", type=Path)
    ap.add_argument("name")
    ap.add_argument("--split", type=Path, required=True, help="the splits.json the pack was made with")
    ap.add_argument("--pack", type=Path, required=True, help="the pack it was trained on (for the check)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--dataset", type=Path, default=None)
    args = ap.parse_args()
    dataset = args.dataset or default_data_root() / "hc18" / "training_set"
    info = copy_outputs(args)
    write_run_files(args, dataset, info)

    from fetalbio.engines import KerasEngine
    from fetalbio.evaluate import evaluate_dataset

    engine = KerasEngine(args.out)
    # the same points here (TensorFlow) as where it was trained (JAX)?
    check = check_points(args, engine, info)

    summary, _ = evaluate_dataset(dataset, engine, split_file=args.out / "splits.json")
    metrics = {
        "method": "landmarks",
        "best_epoch": info["epochs"],
        "val": summary,
        "val_where_trained": info["val"],
        "n_train": info["n_train"],
        "n_val": info["n_val"],
        "train_seconds": info["train_seconds"],
        "scans_per_s": info["scans_per_s"],
        "trained_on": f"{info['device']} ({info['backend']} backend)",
        "check_points_max_diff_px": check,
        "global_batch": info["batch_size"],
        "learning_rate": info["lr"],
        "optimizer_iterations": info["steps"],
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(
        f"{args.name}: {info['epochs']} epochs; point {summary['landmark_mre_mm']:.2f}  BPD {summary['bpd_mae_mm']:.2f}  "
        f"OFD {summary['ofd_mae_mm']:.2f}  HC {summary['hc_mae_mm']:.2f} mm"
    )


if __name__ == "__main__":
    main()
