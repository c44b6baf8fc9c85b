"""Compare landmark hypotheses trained on the same split; write docs/landmarks.md and its plot.

    python tools/compare_landmarks.py runs/lm-unet runs/lm-hrnet runs/lm-resnet --dataset DATA --ship runs/lm-x

Each run folder is evaluated on its own validation split (they share one when trained with the same
--seed and --val-fraction) through the same code as ``fetalbio evaluate``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def cpu_ms_per_scan(engine, n: int = 12) -> float:
    x = np.random.default_rng(0).normal(size=(1, *engine.image_size, 1)).astype(np.float32)
    engine.predict(x)
    t = time.perf_counter()
    for _ in range(n):
        engine.predict(x)
    return 1000 * (time.perf_counter() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("docs"))
    ap.add_argument("--ship", type=Path, default=None, help="the run folder that ships (for the text)")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fetalbio.engines import KerasEngine
    from fetalbio.evaluate import evaluate_dataset

    results = []
    for run in args.runs:
        eng = KerasEngine(run)
        summary, rows = evaluate_dataset(args.dataset, eng, split_file=run / "splits.json")
        cfg = json.loads((run / "config.json").read_text())
        metrics = json.loads((run / "metrics.json").read_text())
        errs = [
            r[f"{n}_err_mm"] for r in rows if r["status"] == "ok" for n in ("bpd1", "bpd2", "ofd1", "ofd2")
        ]
        results.append(
            {
                "run": str(run),
                "arch": cfg["arch"],
                "epochs": cfg["epochs"],
                "summary": summary,
                "params": int(eng.model.count_params()),
                "cpu_ms": cpu_ms_per_scan(eng),
                "errs": errs,
                "train_minutes": metrics.get("train_seconds", 0) / 60,
                "best_epoch": metrics.get("best_epoch"),
            }
        )
    args.out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(results)), 4.5))
    ax.boxplot([r["errs"] for r in results], showfliers=False)
    ax.set_xticks(range(1, len(results) + 1), [Path(r["run"]).name for r in results], rotation=30, ha="right")
    ax.grid(axis="y", alpha=0.3)
    ax.set(ylabel="point error (mm, order-invariant)", title="Landmark error on the validation split")
    fig.savefig(args.out / "landmarks_errors.png", dpi=110, bbox_inches="tight")
    lines = [
        "| arch | params | epochs (best) | train min | point error mean (mm) | BPD MAE (mm) | OFD MAE (mm) "
        "| HC MAE (mm) | all 4 within 2 / 4 mm | failed | CPU ms/scan (model) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s = r["summary"]
        lines.append(
            f"| {Path(r['run']).name} ({r['arch']}) | {r['params'] / 1e6:.2f} M | {r['epochs']} ({r['best_epoch']}) | {r['train_minutes']:.0f} "
            f"| {s['landmark_mre_mm']:.2f} | {s['bpd_mae_mm']:.2f} | {s['ofd_mae_mm']:.2f} | {s['hc_mae_mm']:.2f} "
            f"| {100 * s['share_all_points_within_2mm']:.0f}% / {100 * s['share_all_points_within_4mm']:.0f}% "
            f"| {s['n_failed']}/{s['n_images']} | {r['cpu_ms']:.0f} |"
        )
    table = "\n".join(lines)
    (args.out / "landmarks_table.md").write_text(table + "\n")
    (args.out / "landmarks_results.json").write_text(
        json.dumps([{k: v for k, v in r.items() if k != "errs"} for r in results], indent=2)
    )
    print(table)


if __name__ == "__main__":
    main()
