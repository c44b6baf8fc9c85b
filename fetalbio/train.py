"""Training: one custom loop (``strategy.run``) for every ``tf.distribute`` strategy.

``model.fit`` fails under MultiWorkerMirroredStrategy in Keras 3.15 (keras-team/keras#20585), so
the loop is written once with ``strategy.run`` + ``tf.nn.compute_average_loss`` and used everywhere.

Run folder (``--out``)::

    config.json      resolved configuration
    splits.json      the subject split (written once, reused on --resume)
    history.csv      one row per completed epoch
    checkpoint/      last completed epoch: weights + optimizer state + state.json (atomic)
    best.keras       the model of the best validation epoch (lowest HC/point error)
    model.json       what inference needs beside the model (method, input size, normalisation)
    metrics.json     validation figures of the best epoch

Batch and learning-rate rule: ``--batch-size`` is the GLOBAL batch; each of R replicas gets
``batch_size // R`` scans (it must divide evenly); the learning rate is ``lr * batch_size / 8``
(linear scaling from the reference batch of 8).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fetalbio import defaults
from fetalbio.augment import AugmentConfig, augment
from fetalbio.datasets import Sample, Truth, find_samples, load_or_make_split, load_truth
from fetalbio.io import read_scan
from fetalbio.preprocess import Letterbox, prepare_input
from fetalbio.writers import write_bytes_atomic, write_csv_atomic, write_json_atomic

REFERENCE_BATCH = 8


@dataclass
class TrainConfig:
    method: str = "segmentation"  # or 'landmarks'
    dataset: str = ""
    out: str = ""
    arch: str = "unet"
    epochs: int = defaults.EPOCHS
    batch_size: int = defaults.BATCH_SIZE
    image_size: tuple[int, int] = defaults.IMAGE_SIZE
    lr: float = defaults.LR
    weight_decay: float = defaults.WEIGHT_DECAY
    warmup_epochs: int = defaults.WARMUP_EPOCHS
    seed: int = defaults.SEED
    val_fraction: float = defaults.VAL_FRACTION
    strategy: str = "auto"
    base_filters: int = defaults.SEG_BASE_FILTERS
    depth: int = defaults.SEG_DEPTH
    heatmap_sigma_px: float = defaults.HEATMAP_SIGMA_PX
    pixel_csv: str | None = None
    landmarks_csv: str | None = None
    max_samples: int | None = None  # for tiny test runs
    steps_per_epoch: int | None = None  # None = the whole training split
    augment: dict = field(default_factory=lambda: AugmentConfig().to_dict())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        return d


@dataclass
class Prepared:
    """One sample ready for training: the letterboxed input and targets in input pixels."""

    sample: Sample
    truth: Truth
    letterbox: Letterbox
    image: np.ndarray  # (H, W) float32, normalised
    mask: np.ndarray  # (H, W) float32 0..1 (area-resampled, so soft at the border)
    points: np.ndarray  # (4, 2) bpd1, bpd2, ofd1, ofd2 in input pixels


def prepare_samples(
    samples: list[Sample], image_size: tuple[int, int], points: dict[str, np.ndarray] | None = None
) -> list[Prepared]:
    """Read and letterbox annotated samples. ``points`` (original px, from a landmark CSV) replace the
    ellipse-derived landmarks as training targets; validation always scores against the annotation."""
    out = []
    for s in samples:
        if s.annotation_path is None:
            continue
        scan = read_scan(s.scan_path)
        truth = load_truth(s.annotation_path)
        image, lb = prepare_input(scan.pixels, image_size)
        mask = lb.image_to_input(truth.mask().astype(np.float32))
        src = points[s.name] if points is not None and s.name in points else truth.landmarks.as_array()
        out.append(Prepared(s, truth, lb, image, mask, lb.to_input(src)))
    return out


# --- strategies ---


def make_strategy(name: str):
    """``auto``: MirroredStrategy when several GPUs are visible, else the default strategy."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "one-device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi-worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy multi-worker needs TF_CONFIG (see README)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}: choose auto, one-device, mirrored or multi-worker")


def is_chief(strategy) -> bool:
    """Only the chief writes checkpoints, models and logs (worker 0 when there is no chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0)


# --- tasks: what differs between segmentation and landmarks ------------------------------------------


def build_model(cfg: TrainConfig):
    from fetalbio.models.unet import UNet

    h, w = cfg.image_size
    if cfg.method == "segmentation":
        return UNet(
            (h, w, 1),
            base_filters=cfg.base_filters,
            depth=cfg.depth,
            out_channels=1,
            out_activation="sigmoid",
        )
    from fetalbio.models import build_landmark_model

    return build_landmark_model(cfg.arch, (h, w, 1), base_filters=cfg.base_filters)


def seg_loss(y_true, y_pred):
    """Per-example BCE + soft Dice: Dice keeps the thin-walled, imbalanced mask from vanishing."""
    import keras
    from keras import ops

    eps = 1e-6
    bce = ops.mean(keras.losses.binary_crossentropy(y_true, y_pred), axis=(1, 2))
    inter = ops.sum(y_true * y_pred, axis=(1, 2, 3))
    denom = ops.sum(y_true, axis=(1, 2, 3)) + ops.sum(y_pred, axis=(1, 2, 3))
    dice = 1.0 - (2.0 * inter + 1.0) / (denom + 1.0 + eps)
    return bce + dice


def make_targets(cfg: TrainConfig, masks: np.ndarray, points: np.ndarray) -> np.ndarray:
    if cfg.method == "segmentation":
        return masks[..., None]
    from fetalbio.heatmaps import render_heatmaps

    return np.stack([render_heatmaps(p, cfg.image_size, cfg.heatmap_sigma_px) for p in points])


def loss_fn(cfg: TrainConfig):
    if cfg.method == "segmentation":
        return seg_loss
    from fetalbio.heatmaps import heatmap_loss

    return heatmap_loss


# --- validation through the same post-processing as predict ----------------------------------------------


def validate(
    cfg: TrainConfig, predict_batch: Callable[[np.ndarray], np.ndarray], val: list[Prepared]
) -> dict:
    """Validation figures in mm through the full post-processing (the same as ``evaluate``)."""
    from fetalbio.evaluate import score_prediction, summarise
    from fetalbio.predict import outputs_to_result

    rows = []
    bs = 16
    for i in range(0, len(val), bs):
        chunk = val[i : i + bs]
        out = predict_batch(np.stack([p.image for p in chunk])[..., None])
        for p, o in zip(chunk, out, strict=True):
            res = outputs_to_result(
                cfg.method, o, p.letterbox, (p.sample.pixel_size_mm,) * 2 if p.sample.pixel_size_mm else None
            )
            rows.append(score_prediction(res, p.truth, p.sample.pixel_size_mm))
    return summarise(rows)


# --- the loop ---


def _save_checkpoint(ckpt_dir: Path, model, optimizer, state: dict) -> None:
    """Weights + optimizer variables + loop state, each file atomic; state.json last (it commits)."""
    import io

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    for name, values in (
        ("weights", model.get_weights()),
        ("optimizer", [v.numpy() for v in optimizer.variables]),
    ):
        buf = io.BytesIO()
        np.savez(buf, *values)
        write_bytes_atomic(ckpt_dir / f"{name}.npz", buf.getvalue())
    write_json_atomic(ckpt_dir / "state.json", state)


def _load_checkpoint(ckpt_dir: Path, model, optimizer) -> dict | None:
    if not (ckpt_dir / "state.json").exists():
        return None
    state = json.loads((ckpt_dir / "state.json").read_text())
    with np.load(ckpt_dir / "weights.npz") as f:
        model.set_weights([f[f"arr_{i}"] for i in range(len(f.files))])
    optimizer.build(model.trainable_variables)
    with np.load(ckpt_dir / "optimizer.npz") as f:
        values = [f[f"arr_{i}"] for i in range(len(f.files))]
    for var, val in zip(optimizer.variables, values, strict=True):
        var.assign(val)
    return state


def train(cfg: TrainConfig, resume: bool = False, console=None, on_epoch: Callable | None = None) -> dict:
    """Train a model as configured; returns the best epoch's validation figures."""
    import keras
    import tensorflow as tf
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = console or Console()
    run = Path(cfg.out)
    strategy = make_strategy(cfg.strategy)
    chief = is_chief(strategy)
    # non-chief workers write to a private temporary place, never over the chief's files
    if not chief:
        import tempfile

        run = Path(tempfile.mkdtemp(prefix="fetalbio-worker-"))
    run.mkdir(parents=True, exist_ok=True)
    if (run / "config.json").exists() and not resume and (run / "checkpoint" / "state.json").exists():
        raise FileExistsError(f"{run}: already holds a run; use --resume to carry on or another --out")
    write_json_atomic(run / "config.json", cfg.to_dict())

    keras.utils.set_random_seed(cfg.seed)
    samples = find_samples(cfg.dataset, cfg.pixel_csv)
    samples = [s for s in samples if s.annotation_path is not None]
    if cfg.max_samples:
        samples = samples[: cfg.max_samples]
    if not samples:
        raise ValueError(f"{cfg.dataset}: no annotated scans found")
    csv_points = None
    if cfg.landmarks_csv:
        # a four-point CSV is checked first: swapped pair names are corrected, suspect rows left out
        from fetalbio.datacheck import usable_landmarks

        csv_points, info = usable_landmarks(Path(cfg.dataset), Path(cfg.landmarks_csv), cfg.pixel_csv)
        console.print(
            f"landmark CSV: {info['n_rows']} rows, {info['n_suspect']} suspect rows left out, "
            f"names swapped: {'yes (corrected)' if info['names_swapped'] else 'no'}; {info['n_used']} used"
        )
        samples = [s for s in samples if s.name in csv_points]
    split = load_or_make_split(run, samples, cfg.val_fraction, cfg.seed)
    by_name = {s.name: s for s in samples}
    with console.status(f"Reading {len(samples)} annotated scans..."):
        train_set = prepare_samples(
            [by_name[n] for n in split["train"] if n in by_name], cfg.image_size, csv_points
        )
        val_set = prepare_samples([by_name[n] for n in split["val"] if n in by_name], cfg.image_size)
    if not train_set:
        raise ValueError("the training split is empty")

    replicas = strategy.num_replicas_in_sync
    if cfg.batch_size % replicas:
        raise ValueError(f"--batch-size {cfg.batch_size} must be a multiple of the {replicas} replicas")
    steps = cfg.steps_per_epoch or max(1, len(train_set) // cfg.batch_size)
    lr = cfg.lr * cfg.batch_size / REFERENCE_BATCH
    total_steps = steps * cfg.epochs
    warmup = min(total_steps // 2, steps * cfg.warmup_epochs)

    with strategy.scope():
        model = build_model(cfg)
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=lr / 10 if warmup else lr,
            decay_steps=max(1, total_steps - warmup),
            alpha=0.02,
            warmup_target=lr if warmup else None,
            warmup_steps=warmup,
        )
        optimizer = keras.optimizers.AdamW(
            learning_rate=schedule, weight_decay=cfg.weight_decay, clipnorm=None
        )
        optimizer.build(model.trainable_variables)
    per_example_loss = loss_fn(cfg)

    state = _load_checkpoint(run / "checkpoint", model, optimizer) if resume else None
    start_epoch = state["epoch"] if state else 0
    history: list[dict] = state["history"] if state else []
    best = state["best"] if state else None
    if state:
        console.print(f"Resuming after epoch {start_epoch} of {cfg.epochs}")

    @tf.function
    def step_fn(x, y):
        with tf.GradientTape() as tape:
            pred = model(x, training=True)
            loss = tf.nn.compute_average_loss(per_example_loss(y, pred), global_batch_size=cfg.batch_size)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    @tf.function
    def train_step(batch):
        losses = strategy.run(step_fn, args=batch)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    predict_fn = tf.function(lambda x: model(x, training=False))

    def predict_batch(x: np.ndarray) -> np.ndarray:
        return np.asarray(predict_fn(tf.constant(x, tf.float32)))

    aug_cfg = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.augment.items()})
    key_metric = "hc_mae_mm" if cfg.method == "segmentation" else "landmark_mre_mm"
    t_start = time.time()
    epoch_times: list[float] = [h["seconds"] for h in history]

    progress = Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("val {task.fields[val]}"),
        TextColumn("run left"),
        TimeRemainingColumn(),
        console=console,
        disable=not chief,
    )
    with progress:
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.time()
            # the epoch's augmentation depends only on (seed, epoch): a resumed run sees the same data
            rng = np.random.default_rng([cfg.seed, epoch])
            order = rng.permutation(len(train_set))
            n = steps * cfg.batch_size
            idx = np.resize(order, n)
            images, masks, points = [], [], []
            for i in idx:
                p = train_set[i]
                im, mk, pt = augment(rng, p.image, p.mask, p.points, aug_cfg)
                images.append(im)
                masks.append(mk)
                points.append(pt)
            x = np.stack(images)[..., None]
            y = make_targets(cfg, np.stack(masks), np.stack(points)).astype(np.float32)
            ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(cfg.batch_size, drop_remainder=True)
            dist = strategy.experimental_distribute_dataset(ds)
            last = history[-1][key_metric] if history else float("nan")
            task = progress.add_task(
                "train",
                total=steps,
                epoch=epoch + 1,
                epochs=cfg.epochs,
                loss=float("nan"),
                val=f"{key_metric} {last:.2f}" if history else "-",
            )
            # total time left is estimated from the mean epoch time so far
            losses = []
            for batch in dist:
                loss = float(train_step(batch))
                losses.append(loss)
                progress.update(task, advance=1, loss=float(np.mean(losses)))
            metrics = validate(cfg, predict_batch, val_set) if val_set else {}
            seconds = time.time() - t0
            epoch_times.append(seconds)
            row = {
                "epoch": epoch + 1,
                "loss": float(np.mean(losses)),
                "lr": float(schedule(optimizer.iterations)),
                "seconds": round(seconds, 1),
                **{k: v for k, v in metrics.items() if isinstance(v, int | float)},
            }
            history.append(row)
            progress.update(task, val=f"{key_metric} {metrics.get(key_metric, float('nan')):.2f}")
            progress.remove_task(task)
            left_min = np.mean(epoch_times) * (cfg.epochs - epoch - 1) / 60
            if chief:
                console.print(
                    f"epoch {epoch + 1}/{cfg.epochs}  loss {row['loss']:.4f}  "
                    + "  ".join(
                        f"{k} {metrics[k]:.3f}"
                        for k in ("dice_mean", "hc_mae_mm", "bpd_mae_mm", "ofd_mae_mm", "landmark_mre_mm")
                        if isinstance(metrics.get(k), float)
                    )
                    + f"  {seconds:.0f}s, about {left_min:.0f} min left"
                )
            score = metrics.get(key_metric, row["loss"])
            improved = best is None or (score is not None and math.isfinite(score) and score < best["score"])
            if improved:
                best = {"epoch": epoch + 1, "score": score, "metrics": metrics}
                save_model(model, run / "best.keras", cfg)
            write_csv_atomic(run / "history.csv", history, list(history[0].keys()))
            _save_checkpoint(
                run / "checkpoint", model, optimizer, {"epoch": epoch + 1, "history": history, "best": best}
            )
            if on_epoch:
                on_epoch(epoch + 1)
    result = {
        "method": cfg.method,
        "best_epoch": best["epoch"] if best else None,
        "val": best["metrics"] if best else {},
        "n_train": len(train_set),
        "n_val": len(val_set),
        "train_seconds": round(sum(epoch_times), 1),
        "wall_seconds_this_session": round(time.time() - t_start, 1),
        "replicas": replicas,
        "strategy": type(strategy).__name__,
    }
    write_json_atomic(run / "metrics.json", result)
    return result


def model_info(cfg: TrainConfig) -> dict:
    """What inference needs beside the model file (also embedded in exported TFLite files)."""
    return {
        "format": "fetalbio-model/1",
        "method": cfg.method,
        "arch": cfg.arch,
        "image_size": list(cfg.image_size),
        "letterbox": "keep aspect ratio, centre padding with 0, INTER_AREA resize",
        "normalisation": "per-scan zero mean, unit SD over the scan's pixels",
        "output": "sigmoid skull probability (H, W, 1)"
        if cfg.method == "segmentation"
        else "4 heatmaps (H, W, 4): bpd1, bpd2, ofd1, ofd2",
        "heatmap_sigma_px": cfg.heatmap_sigma_px,
    }


def save_model(model, path: Path, cfg: TrainConfig) -> None:
    """Save ``.keras`` atomically, with ``model.json`` (inference info) beside it."""
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)
    write_json_atomic(path.with_name("model.json"), model_info(cfg))
