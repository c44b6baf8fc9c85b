"""Train a landmark heatmap model from a pack (tools/pack_landmarks.py) on any Keras backend.

Written for a GPU host that has JAX but no TensorFlow (``KERAS_BACKEND=jax``); it also runs here on the
CPU with either backend (that is how it is tested). The product's own trainer (``fetalbio
train-landmarks``, fetalbio/train.py) stays the ``tf.distribute`` one; this script reuses its parts:
the model builders, the joint augmentation (OpenCV affine matrices, canonical order re-applied), the
foreground-weighted heatmap loss and the sub-pixel decoder, so a model trained here is the same kind of
model, and its ``.keras`` file loads in TensorFlow.

    KERAS_BACKEND=jax python tools/train_packed.py --pack .gpu/hc18_256x384.npz --arch unet \
        --budget-s 300 --out OUTDIR

* The heatmap targets are rendered inside the loss from the (B, 4, 2) points (the same Gaussians as
  ``heatmaps.render_heatmaps``), so the CPU workers only warp scans.
* Training runs for a wall-clock budget rather than a number of epochs: the learning rate follows a
  cosine of the elapsed share of the budget (after a 2-epoch warm-up), so the run ends annealed whatever
  the host's speed.
* Every ``--val-every`` epochs and at the end: validation in mm on the pack's validation scans
  (decoded with the product's decoder, mapped back to original pixels, order-invariant point error).
* Writes ``OUTDIR/<name>.keras`` (the final model, no optimizer) and ``OUTDIR/<name>.json``
  (configuration, history, figures, and decoded points of a few validation scans for checking the
  model after it is loaded elsewhere).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fetalbio import pack as packfmt
from fetalbio.augment import AugmentConfig, augment
from fetalbio.geometry import pair_errors_mm
from fetalbio.heatmaps import decode_heatmaps
from fetalbio.pack import heatmap_points_loss, to_original

# the pack, in the main process and in each augmentation worker
_DATA: dict = {}


def load_pack(path: Path) -> None:
    _DATA.update(packfmt.load_pack(path))
    _DATA["aug"] = AugmentConfig()


def _init_worker(path: Path) -> None:
    cv2.setNumThreads(1)  # the workers are the parallelism
    load_pack(path)


def normalised(i: int) -> np.ndarray:
    """The model input of scan i (see :func:`fetalbio.pack.normalised`)."""
    return packfmt.normalised(_DATA, i)


def augment_batch(args: tuple[int, int, list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(seed, epoch, indices) -> images (B, H, W, 1) float16 and points (B, 4, 2) float32."""
    seed, epoch, idx = args
    rng = np.random.default_rng([seed, epoch, idx[0]])
    cfg = _DATA["aug"]
    ims, pts = [], []
    for i in idx:
        im, _, pt = augment(rng, normalised(i), None, _DATA["points_in"][i], cfg)
        ims.append(im)
        pts.append(pt)
    return np.stack(ims)[..., None].astype(np.float16), np.stack(pts).astype(np.float32)


def validate(model, val_idx: np.ndarray, x_val: np.ndarray, sigma_px: float) -> tuple[dict, np.ndarray]:
    """Validation figures (mm) of the model on the pack's validation scans, and the decoded points."""
    out = np.asarray(model.predict(x_val, batch_size=32, verbose=0))
    d = _DATA
    pt_err, bpd_err, ofd_err, decoded = [], [], [], []
    for k, i in enumerate(val_idx):
        p_in, _ = decode_heatmaps(out[k], sigma_px)
        decoded.append(p_in)
        pred = to_original(p_in, d["letterbox"][i])
        true = d["points_orig"][i]
        sp = float(d["spacing_mm"][i])
        pt_err.append(pair_errors_mm(pred, true, (sp, sp)))
        for j, acc in ((0, bpd_err), (2, ofd_err)):
            acc.append(float(np.hypot(*(pred[j] - pred[j + 1])) - np.hypot(*(true[j] - true[j + 1]))) * sp)
    pe = np.array(pt_err)
    figures = {
        "landmark_mre_mm": float(pe.mean()),
        "bpd_mae_mm": float(np.mean(np.abs(bpd_err))),
        "ofd_mae_mm": float(np.mean(np.abs(ofd_err))),
        "bpd_bias_mm": float(np.mean(bpd_err)),
        "ofd_bias_mm": float(np.mean(ofd_err)),
        "share_all_points_within_2mm": float(np.mean(pe.max(axis=1) <= 2.0)),
        "share_all_points_within_4mm": float(np.mean(pe.max(axis=1) <= 4.0)),
    }
    return figures, np.array(decoded)


def jax_device() -> str:
    """The device JAX trained on ('cuda:0'), or '' on another backend."""
    import keras

    if keras.backend.backend() != "jax":
        return ""
    import jax

    return str(jax.devices()[0])


def parse_args() -> argparse.Namespace:
    """The command line (times in seconds, sigma in input pixels)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--pack", type=Path, required=True)
    ap.add_argument("--arch", default="unet", choices=("unet", "hrnet", "resnet"))
    ap.add_argument("--name", default=None, help="output file stem (default: the arch)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--budget-s", type=float, default=300.0, help="training wall-clock budget")
    ap.add_argument(
        "--deadline-s",
        type=float,
        default=None,
        help="seconds from the start of this process by which training must end (the budget shrinks to fit)",
    )
    ap.add_argument("--max-epochs", type=int, default=100000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--sigma", type=float, default=3.0)
    ap.add_argument("--base-filters", type=int, default=16)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--val-every", type=int, default=5)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument(
        "--init-from", type=Path, default=None, help="a .keras model of the same arch to start from"
    )
    ap.add_argument("--limit", type=int, default=None, help="use only the first N training scans (tests)")
    ap.add_argument("--val-limit", type=int, default=None, help="validate on the first N only (tests)")
    return ap.parse_args()


def build_model(args: argparse.Namespace, name: str, hw: tuple[int, int]) -> tuple[Any, Any]:
    """The seeded model (from ``--init-from`` when given), compiled with the points loss; and its optimizer."""
    import keras

    from fetalbio.models import build_landmark_model

    keras.utils.set_random_seed(args.seed)
    model = build_landmark_model(args.arch, (*hw, 1), base_filters=args.base_filters)
    if args.init_from:
        import fetalbio.models.hrnet  # noqa: F401  (registers the classes a .keras file names)
        import fetalbio.models.resnet_head  # noqa: F401
        import fetalbio.models.unet  # noqa: F401

        if args.init_from.suffix == ".npz":  # weights only (float16 travels in half the space)
            with np.load(args.init_from) as f:
                start = [f[f"arr_{i}"].astype(np.float32) for i in range(len(f.files))]
        else:
            start = keras.models.load_model(args.init_from, compile=False).get_weights()
        model.set_weights(start)
        print(f"{name}: starting from {args.init_from}", flush=True)
    optimizer = keras.optimizers.AdamW(learning_rate=args.lr / 10, weight_decay=args.weight_decay)
    model.compile(optimizer=optimizer, loss=heatmap_points_loss(args.sigma, hw))
    return model, optimizer


def save_model(args: argparse.Namespace, name: str, hw: tuple[int, int], trained: Any) -> None:
    """The model without its optimizer (a third of the size), written atomically."""
    from fetalbio.models import build_landmark_model

    plain = build_landmark_model(args.arch, (*hw, 1), base_filters=args.base_filters)
    plain.set_weights(trained.get_weights())
    tmp = args.out / f".{name}.tmp.keras"
    plain.save(tmp)
    os.replace(tmp, args.out / f"{name}.keras")


def train(run: dict, model: Any, optimizer: Any, pool: Any, state: dict) -> int:
    """Train for the budget (s) or ``--max-epochs``; ``state`` gathers history and epoch times. Epochs done.

    ``run`` holds ``args``, ``name``, ``hw``, ``train_idx``, ``val_idx``, ``x_val`` and ``t_start``.
    """
    args, name, train_idx = run["args"], run["name"], run["train_idx"]
    steps = max(1, len(train_idx) // args.batch_size)

    def epoch_tasks(epoch: int) -> list:
        order = np.random.default_rng([args.seed, epoch]).permutation(train_idx)
        tasks = [
            (args.seed, epoch, order[s * args.batch_size : (s + 1) * args.batch_size].tolist())
            for s in range(steps)
        ]
        return [pool.apply_async(augment_batch, (t,)) for t in tasks]

    warmup_epochs = 2

    def lr_at(epoch: int) -> float:
        if epoch < warmup_epochs:
            return args.lr * (0.1 + 0.9 * epoch / warmup_epochs)
        frac = min(1.0, (time.time() - state["t0"]) / state["budget_s"])
        return args.lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * frac)))

    pending = epoch_tasks(0)
    epoch = 0
    t_compile = time.time()
    while epoch < args.max_epochs:
        if state["t0"] is None and epoch == 1:
            state["t0"] = time.time()  # the budget counts from the end of the first (compiling) epoch
            if args.deadline_s:
                # keep ~20 s for the last epoch, validation and saving
                budget = min(args.budget_s, args.deadline_s - (state["t0"] - run["t_start"]) - 20.0)
                state["budget_s"] = max(budget, 1.0)
        lr = lr_at(epoch) if state["t0"] is not None else args.lr / 10
        optimizer.learning_rate = lr
        t_epoch = time.time()
        batches = [r.get() for r in pending]
        pending = epoch_tasks(epoch + 1)  # the next epoch is warped while this one trains
        losses = []
        for xb, yb in batches:
            losses.append(model.train_on_batch(xb.astype(np.float32), yb))
        loss = float(np.mean([float(v) for v in losses]))
        seconds = time.time() - t_epoch
        if epoch == 0:
            print(f"{name}: first epoch (with compilation) {time.time() - t_compile:.1f}s", flush=True)
        else:
            state["epoch_s"].append(seconds)
        epoch += 1
        done = state["t0"] is not None and time.time() - state["t0"] >= state["budget_s"]
        done = done or epoch >= args.max_epochs
        row = {"epoch": epoch, "loss": loss, "lr": lr, "seconds": round(seconds, 2)}
        if epoch % args.val_every == 0 or done:
            figures, _ = validate(model, run["val_idx"], run["x_val"], args.sigma)
            row.update(figures)
            print(
                f"{name}: epoch {epoch} loss {loss:.5f} lr {lr:.2e} point {figures['landmark_mre_mm']:.2f} "
                f"BPD {figures['bpd_mae_mm']:.2f} OFD {figures['ofd_mae_mm']:.2f} mm "
                f"({seconds:.1f}s/epoch, {len(train_idx) / max(seconds, 1e-9):.0f} scans/s)",
                flush=True,
            )
        state["history"].append(row)
        if "landmark_mre_mm" in row and not done:
            save_model(args, name, run["hw"], model)  # a run stopped from outside leaves its latest model
        if done:
            break
    return epoch


def write_result(run: dict, model: Any, optimizer: Any, state: dict, epoch: int) -> None:
    """Validate the final model, save it and write ``OUTDIR/<name>.json`` (times in s, errors in mm)."""
    import keras

    args, name, hw, train_idx, val_idx = run["args"], run["name"], run["hw"], run["train_idx"], run["val_idx"]
    figures, decoded = validate(model, val_idx, run["x_val"], args.sigma)
    save_model(args, name, hw, model)
    train_s = sum(state["epoch_s"])
    result = {
        "name": name,
        "arch": args.arch,
        "backend": keras.backend.backend(),
        "device": jax_device(),
        "image_size": list(hw),
        "heatmap_sigma_px": args.sigma,
        "base_filters": args.base_filters,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "seed": args.seed,
        "init_from": str(args.init_from) if args.init_from else None,
        "epochs": epoch,
        "steps": int(optimizer.iterations),
        "train_seconds": round(train_s, 1),
        "budget_s": round(state["budget_s"], 1),
        "scans_per_s": round(len(train_idx) * len(state["epoch_s"]) / max(train_s, 1e-9), 1),
        "params": int(model.count_params()),
        "n_train": int(len(train_idx)),
        "n_val": int(len(val_idx)),
        "val": figures,
        "history": state["history"],
        "check_names": [str(_DATA["names"][i]) for i in val_idx[:8]],
        "check_points_in": decoded[:8].tolist(),
        "augment": _DATA["aug"].to_dict(),
    }
    tmp = args.out / f".{name}.tmp.json"
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, args.out / f"{name}.json")
    print(f"{name}: done, {epoch} epochs in {train_s:.0f}s; " + json.dumps(figures), flush=True)


def main() -> None:
    """Train from a pack for a time budget; write the model and its figures (see the module docstring)."""
    args = parse_args()
    name = args.name or args.arch
    args.out.mkdir(parents=True, exist_ok=True)

    t_start = t_load = time.time()
    load_pack(args.pack)
    train_idx = np.flatnonzero(_DATA["is_val"] == 0)[: args.limit]
    val_idx = np.flatnonzero(_DATA["is_val"] == 1)[: args.val_limit]
    hw = (int(_DATA["images"].shape[1]), int(_DATA["images"].shape[2]))
    print(
        f"{name}: {len(train_idx)} train / {len(val_idx)} val scans at {hw}, loaded in {time.time() - t_load:.1f}s",
        flush=True,
    )

    # spawned, not forked: a fork can copy a lock held by one of OpenCV's threads and hang the worker
    pool = mp.get_context("spawn").Pool(args.workers, initializer=_init_worker, initargs=(args.pack,))
    model, optimizer = build_model(args, name, hw)
    x_val = np.stack([normalised(i) for i in val_idx])[..., None]
    run = {
        "args": args,
        "name": name,
        "hw": hw,
        "train_idx": train_idx,
        "val_idx": val_idx,
        "x_val": x_val,
        "t_start": t_start,
    }
    state: dict = {"t0": None, "epoch_s": [], "history": [], "budget_s": args.budget_s}
    epoch = train(run, model, optimizer, pool, state)
    pool.terminate()
    write_result(run, model, optimizer, state, epoch)


if __name__ == "__main__":
    main()
