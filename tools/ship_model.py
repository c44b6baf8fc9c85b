"""Copy a run's model (best or final epoch) into fetalbio/shipped/<method>/ with its model card.

    python tools/ship_model.py runs/seg-v1 --command "fetalbio train-seg ... " [--notes TEXT]

The card states the data, the split, the command, epochs, training time and machine, and the
validation figures (re-measured here with `evaluate` on the run's own validation split).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
from pathlib import Path

from fetalbio.datasets import default_data_root
from fetalbio.engines import KerasEngine
from fetalbio.evaluate import evaluate_dataset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--command", required=True)
    ap.add_argument("--notes", default="")
    ap.add_argument(
        "--model-file", default="best.keras", help="final.keras (tools/final_epoch.py) or best.keras"
    )
    args = ap.parse_args()
    cfg = json.loads((args.run / "config.json").read_text())
    metrics = json.loads((args.run / "metrics.json").read_text())
    split = json.loads((args.run / "splits.json").read_text())
    method = cfg["method"]
    dest = Path("fetalbio/shipped") / method
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.run / args.model_file, dest / "model.keras")
    shutil.copyfile(args.run / "model.json", dest / "model.json")
    shutil.copyfile(args.run / "splits.json", dest / "splits.json")
    import hashlib

    info = json.loads((dest / "model.json").read_text())
    info["model_sha256"] = hashlib.sha256((dest / "model.keras").read_bytes()).hexdigest()
    (dest / "model.json").write_text(json.dumps(info, indent=2) + "\n")  # checked before every use
    eng = KerasEngine(dest / "model.keras")
    s, _ = evaluate_dataset(
        default_data_root() / "hc18" / "training_set", eng, split_file=dest / "splits.json"
    )
    (dest / "validation.json").write_text(json.dumps(s, indent=2) + "\n")
    subjects = lambda names: len({n[:3] for n in names})  # noqa: E731
    rows = [("scans (failed)", f"{s['n_images']} ({s['n_failed']})")]
    if s.get("dice_mean") is not None:
        rows += [
            (
                "Dice (mean): fitted ellipse (HC18 convention) / raw mask",
                f"{s['dice_mean']:.4f} / {s['dice_mask_mean']:.4f}",
            ),
            ("Hausdorff (mean)", f"{s['hausdorff_mm_mean']:.2f} mm"),
        ]
    for m in ("hc", "bpd", "ofd"):
        rows.append(
            (
                f"{m.upper()} abs. error: mean / median / p95",
                f"{s[f'{m}_mae_mm']:.2f} / "
                f"{s[f'{m}_abs_median_mm']:.2f} / {s[f'{m}_abs_p95_mm']:.2f} mm (bias {s[f'{m}_bias_mm']:+.2f})",
            )
        )
    rows += [
        ("point error (mean, order-invariant)", f"{s['landmark_mre_mm']:.2f} mm"),
        (
            "all 4 points within 2 / 4 mm",
            f"{100 * s['share_all_points_within_2mm']:.0f}% / {100 * s['share_all_points_within_4mm']:.0f}%",
        ),
    ]
    trained_on = metrics.get("trained_on") or (
        f"{platform.processor() or platform.machine()} CPU, 2 cores, TensorFlow 2.21 / Keras 3.15, no accelerator"
    )
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    card = f"""# fetalbio {method} model

- **File**: `model.keras` (Keras 3, {eng.model.count_params():,} parameters; inference info in `model.json`).
  Architecture: `{cfg["arch"] if method == "landmarks" else "unet"}`, input {cfg["image_size"][0]}x{
        cfg["image_size"][1]
    }
  (letterboxed, per-scan normalised), base filters {cfg["base_filters"]}.
- **Data**: HC18 training set (van den Heuvel et al. 2018, Zenodo 1327317, CC BY 4.0), the 798 scans
  in `../shared/data/hc18/training_set` (201 further scans are withheld by the project for independent
  evaluation and were never seen).
- **Split**: by subject, seed {split["seed"]}, validation share {split["val_fraction"]} of subjects:
  {len(split["train"])} training scans ({subjects(split["train"])} subjects), {
        len(split["val"])
    } validation scans
  ({subjects(split["val"])} subjects). The split is `splits.json` here.
- **Command**: `{args.command}`
- **Training**: {cfg["epochs"]} epochs ({
        "the final epoch ships" if args.model_file == "final.keras" else f"best epoch {metrics['best_epoch']}"
    }), global batch {cfg["batch_size"]},
  AdamW lr {cfg["lr"]} (cosine), {metrics["train_seconds"] / 60:.0f} min on {trained_on}.
{args.notes}

## Validation figures (the run's validation split, through `fetalbio evaluate`)

| measure | value |
|---|---|
{table}

Re-measure: `fetalbio evaluate ../shared/data/hc18/training_set --method {method} --split fetalbio/shipped/{
        method
    }/splits.json`.
The CI regression test (`tests/test_shipped_models.py`) holds the model to `regression.json`.
"""
    (dest / "MODEL_CARD.md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
