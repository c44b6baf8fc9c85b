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

Batch and learning-rate rule: ``--batch-size`` is the GLOBAL batch; each of R replicas (devices x
workers) gets ``batch_size // R`` scans (it must divide evenly, else a ValueError says so); the learning
rate is ``lr * batch_size / 8`` (linear scaling from the reference batch of 8), whatever R is. Each step
takes the next ``batch_size`` scans of the epoch's (seed, epoch)-determined order and gives replica r the
r-th slice, so a run sees the same data with 1, 2 or 8 replicas; the loss is averaged over the global
batch (``tf.nn.compute_average_loss``) and Keras' optimizer sums the replicas' gradients.

Strategies (``make_strategy``): ``one-device``, ``mirrored`` (all visible GPUs, else the logical CPUs),
``multi-worker`` (MultiWorkerMirroredStrategy from ``TF_CONFIG``; worker 0, or the ``chief`` task, is
the chief) and ``auto`` (mirrored when several GPUs, or several logical CPUs, are visible).
Environment:

* ``FETALBIO_CPU_REPLICAS=N`` splits the CPU into N logical devices before TensorFlow starts, so
  ``--strategy mirrored`` (or ``auto``) runs N replicas on a machine without GPUs (tests, debugging).
* ``FETALBIO_TEST_STEP_DELAY_S=S`` (test hook, not for users) sleeps S seconds after every training
  step, so a test can kill a run in the middle of an epoch.

Multi-worker: every worker runs the same command (same ``--out``); only the chief writes the run folder,
the others write to a temporary folder that is removed at the end. ``--resume`` reads the chief's
``checkpoint/`` on every worker, so the run folder must be on a file system all workers see.
Synchronized BatchNorm keeps the moving statistics equal on every replica; the saved model holds them.

Crash safety: a checkpoint is committed by ``checkpoint/state.json`` (written last, atomically), which
names that epoch's weight and optimizer files; a run killed at any moment resumes from the last
committed epoch with the optimizer state (``optimizer_iterations`` in state.json and ``step`` in
history.csv count the optimizer steps done).
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
    init_from: str | None = None  # a .keras model whose same-named, same-shaped layers seed this one
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

CPU_REPLICAS_ENV = "FETALBIO_CPU_REPLICAS"
STEP_DELAY_ENV = "FETALBIO_TEST_STEP_DELAY_S"  # test hook: seconds to sleep after each step


def configure_cpu_replicas() -> int:
    """Split the CPU into ``$FETALBIO_CPU_REPLICAS`` logical devices; returns the number (0 = unset).

    Must run before TensorFlow initialises its devices (before the first op), hence in a fresh process.
    """
    text = os.environ.get(CPU_REPLICAS_ENV, "").strip()
    if not text:
        return 0
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"{CPU_REPLICAS_ENV}={text!r}: expected a whole number of CPU devices") from None
    if n < 1:
        raise ValueError(f"{CPU_REPLICAS_ENV}={n}: expected 1 or more")
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    current = tf.config.get_logical_device_configuration(cpus[0])
    if current is not None and len(current) == n:
        return n
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
        )
    except RuntimeError:
        raise ValueError(
            f"{CPU_REPLICAS_ENV}={n}: TensorFlow had already started; set it before the process starts"
        ) from None
    return n


def make_strategy(name: str):
    """``auto``: MirroredStrategy when several GPUs (or logical CPUs) are visible, else the default."""
    import tensorflow as tf

    configure_cpu_replicas()
    if name == "multi-worker":
        # created before any other op: collective ops are configured at start-up
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy multi-worker needs TF_CONFIG (see README)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    if name == "auto":
        if len(gpus) > 1 or (not gpus and len(cpus) > 1):
            return tf.distribute.MirroredStrategy(devices=gpus if gpus else cpus)
        return tf.distribute.get_strategy()
    if name == "one-device":
        return tf.distribute.OneDeviceStrategy(gpus[0] if gpus else cpus[0])
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=gpus or cpus)
    raise ValueError(f"unknown strategy {name!r}: choose auto, one-device, mirrored or multi-worker")


def is_chief(strategy) -> bool:
    """Only the chief writes checkpoints, models and logs (worker 0 when there is no chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0)


def task_name(strategy) -> str:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return "local"
    return f"{resolver.task_type}:{resolver.task_id}"


def strategy_name(strategy) -> str:
    name = type(strategy).__name__
    return {
        "CollectiveAllReduceStrategy": "MultiWorkerMirroredStrategy",
        "_DefaultDistributionStrategy": "default",
    }.get(name, name)


def per_replica_batch(global_batch: int, replicas: int) -> int:
    """The batch rule: the global batch is split evenly over the replicas."""
    if global_batch < replicas or global_batch % replicas:
        lower = global_batch // replicas * replicas
        tries = " or ".join(str(b) for b in (lower, lower + replicas) if b)
        raise ValueError(
            f"--batch-size {global_batch} is the global batch and must be a multiple of the {replicas} "
            f"replicas (devices x workers), each replica taking batch-size / {replicas}: "
            f"try --batch-size {tries}"
        )
    return global_batch // replicas


def scaled_lr(lr: float, global_batch: int) -> float:
    """The learning-rate rule: linear in the global batch, ``lr`` being the rate for a batch of 8."""
    return lr * global_batch / REFERENCE_BATCH


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


def init_weights_from(model, source: Path) -> int:
    """Copy weights from ``source`` (a .keras file or run folder) into layers of the same name and shapes.

    Used to start the U-Net landmark model from the trained segmentation U-Net: everything but the
    output head matches, so the heatmap net starts from features that already find the skull.
    """
    import keras

    from fetalbio.engines import resolve_model_path

    src = keras.models.load_model(resolve_model_path(source), compile=False)
    by_name = {layer.name: layer for layer in src.layers}
    copied = 0
    for layer in model.layers:
        other = by_name.get(layer.name)
        if other is None or not layer.weights:
            continue
        theirs = other.get_weights()
        if [w.shape for w in theirs] == [tuple(w.shape) for w in layer.weights]:
            layer.set_weights(theirs)
            copied += 1
    if copied == 0:
        raise ValueError(f"{source}: no layer matches the model being trained (--init-from)")
    return copied


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
            spacing = (p.sample.pixel_size_mm,) * 2 if p.sample.pixel_size_mm else None
            res = outputs_to_result(cfg.method, o, p.letterbox, spacing, sigma_px=cfg.heatmap_sigma_px)
            rows.append(score_prediction(res, p.truth, p.sample.pixel_size_mm))
    return summarise(rows)


# --- the loop ---


def _save_checkpoint(ckpt_dir: Path, model, optimizer, state: dict) -> None:
    """Weights + optimizer variables + loop state. The npz files are named after the epoch and written
    first; ``state.json`` (atomic, last) names them and so commits the checkpoint: a crash at any moment
    leaves the previous checkpoint whole. Files of older epochs are removed after the commit."""
    import io

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    epoch = state["epoch"]
    files = {}
    for name, values in (
        ("weights", model.get_weights()),
        ("optimizer", [np.asarray(v.numpy()) for v in optimizer.variables]),
    ):
        buf = io.BytesIO()
        np.savez(buf, *values)
        files[name] = f"{name}-{epoch:04d}.npz"
        write_bytes_atomic(ckpt_dir / files[name], buf.getvalue())
    write_json_atomic(ckpt_dir / "state.json", {**state, "files": files})
    for old in [*ckpt_dir.glob("*.npz"), *ckpt_dir.glob(".*.tmp")]:  # older epochs, writes cut short
        if old.name not in files.values():
            old.unlink(missing_ok=True)


def _load_checkpoint(ckpt_dir: Path, model, optimizer) -> dict | None:
    if not (ckpt_dir / "state.json").exists():
        return None
    state = json.loads((ckpt_dir / "state.json").read_text())
    files = state.get("files", {"weights": "weights.npz", "optimizer": "optimizer.npz"})
    with np.load(ckpt_dir / files["weights"]) as f:
        model.set_weights([f[f"arr_{i}"] for i in range(len(f.files))])
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    with np.load(ckpt_dir / files["optimizer"]) as f:
        values = [f[f"arr_{i}"] for i in range(len(f.files))]
    for var, val in zip(optimizer.variables, values, strict=True):
        var.assign(val)
    return state


def _step_delay() -> float:
    """The test hook ``FETALBIO_TEST_STEP_DELAY_S`` (seconds slept after each step; 0 when unset)."""
    text = os.environ.get(STEP_DELAY_ENV, "").strip()
    return float(text) if text else 0.0


def train(cfg: TrainConfig, resume: bool = False, console=None, on_epoch: Callable | None = None) -> dict:
    """Train a model as configured; returns the best epoch's validation figures."""
    import shutil
    import tempfile

    from rich.console import Console

    # the strategy first: multi-worker collectives and logical CPUs must be set before any other op
    strategy = make_strategy(cfg.strategy)
    replicas = strategy.num_replicas_in_sync
    local_batch = per_replica_batch(cfg.batch_size, replicas)
    chief = is_chief(strategy)
    console = console or Console()
    shared = Path(cfg.out)  # the run folder: the chief writes it, every worker may read it (--resume)
    run = shared
    if not chief:
        # other workers write to a private temporary place, never over the chief's files; they print nothing
        console = Console(quiet=True)
        run = Path(tempfile.mkdtemp(prefix=f"fetalbio-{task_name(strategy).replace(':', '')}-"))
        if (shared / "splits.json").exists():
            shutil.copy(shared / "splits.json", run / "splits.json")
    try:
        return _train(cfg, resume, console, on_epoch, strategy, replicas, local_batch, chief, shared, run)
    finally:
        if not chief:
            shutil.rmtree(run, ignore_errors=True)


def _train(cfg, resume, console, on_epoch, strategy, replicas, local_batch, chief, shared, run) -> dict:
    import keras
    import tensorflow as tf
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

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

    steps = cfg.steps_per_epoch or max(1, len(train_set) // cfg.batch_size)
    lr = scaled_lr(cfg.lr, cfg.batch_size)
    total_steps = steps * cfg.epochs
    warmup = min(total_steps // 2, steps * cfg.warmup_epochs)
    if replicas > 1 and chief:
        console.print(
            f"{strategy_name(strategy)}: {replicas} replicas x {local_batch} scans = global batch "
            f"{cfg.batch_size}, learning rate {lr:.3g}"
        )

    with strategy.scope():
        model = build_model(cfg)
        if cfg.init_from and not resume:
            n = init_weights_from(model, Path(cfg.init_from))
            if chief:
                console.print(f"initialised {n} of {len(model.layers)} layers from {cfg.init_from}")
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

    # every worker restores the chief's checkpoint, so all start from the same epoch and weights
    state = _load_checkpoint(shared / "checkpoint", model, optimizer) if resume else None
    start_epoch = state["epoch"] if state else 0
    history: list[dict] = state["history"] if state else []
    best = state["best"] if state else None
    if state:
        console.print(
            f"Resuming after epoch {start_epoch} of {cfg.epochs} "
            f"(optimizer step {int(optimizer.iterations.numpy())})"
        )

    def step_fn(x, y):
        with tf.GradientTape() as tape:
            pred = model(x, training=True)
            per_example = per_example_loss(y, pred)
            if per_example.shape.rank != 1:  # a scalar here would be divided by the global batch again
                raise ValueError(f"the loss must be per example, shape (batch,): got {per_example.shape}")
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=cfg.batch_size)
        grads = tape.gradient(loss, model.trainable_variables)
        # Keras' optimizer sums the gradients over replicas (and workers) before applying them
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    @tf.function
    def train_step(x, y):
        losses = strategy.run(step_fn, args=(x, y))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    def distribute(x: np.ndarray, y: np.ndarray):
        """One global batch -> replica r gets rows [r * local_batch, (r + 1) * local_batch)."""

        def value_fn(ctx):
            r = ctx.replica_id_in_sync_group
            sl = slice(r * local_batch, (r + 1) * local_batch)
            return tf.constant(x[sl]), tf.constant(y[sl])

        return strategy.experimental_distribute_values_from_function(value_fn)

    # validation and saving use a plain (undistributed) copy of the model: the same on every worker and
    # free of collective ops, so workers cannot disagree on them
    plain = build_model(cfg)
    predict_fn = tf.function(lambda x: plain(x, training=False))

    def predict_batch(x: np.ndarray) -> np.ndarray:
        return np.asarray(predict_fn(tf.constant(x, tf.float32)))

    aug_cfg = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.augment.items()})
    key_metric = "hc_mae_mm" if cfg.method == "segmentation" else "landmark_mre_mm"
    delay = _step_delay()
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
            # the epoch's augmentation depends only on (seed, epoch): a resumed run, and every worker,
            # sees the same data
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
            x = np.stack(images)[..., None].astype(np.float32)
            y = make_targets(cfg, np.stack(masks), np.stack(points)).astype(np.float32)
            last = history[-1][key_metric] if history and key_metric in history[-1] else None
            task = progress.add_task(
                "train",
                total=steps,
                epoch=epoch + 1,
                epochs=cfg.epochs,
                loss=float("nan"),
                val=f"{key_metric} {last:.2f}" if last is not None else "-",
            )
            # total time left is estimated from the mean epoch time so far
            losses = []
            for s in range(steps):
                b = slice(s * cfg.batch_size, (s + 1) * cfg.batch_size)
                loss = float(train_step(*distribute(x[b], y[b])))
                losses.append(loss)
                progress.update(task, advance=1, loss=float(np.mean(losses)))
                if delay:
                    time.sleep(delay)
            plain.set_weights(model.get_weights())
            metrics = validate(cfg, predict_batch, val_set) if val_set else {}
            seconds = time.time() - t0
            epoch_times.append(seconds)
            iterations = int(optimizer.iterations.numpy())
            row = {
                "epoch": epoch + 1,
                "step": iterations,
                "loss": float(np.mean(losses)),
                "lr": float(schedule(optimizer.iterations)),
                "seconds": round(seconds, 1),
                **{k: v for k, v in metrics.items() if isinstance(v, int | float)},
            }
            history.append(row)
            progress.update(task, val=f"{key_metric} {metrics.get(key_metric, float('nan')):.2f}")
            progress.remove_task(task)
            left_min = np.mean(epoch_times) * (cfg.epochs - epoch - 1) / 60
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
                save_model(plain, run / "best.keras", cfg)
            columns = list(dict.fromkeys(k for h in history for k in h))
            write_csv_atomic(run / "history.csv", history, columns)
            _save_checkpoint(
                run / "checkpoint",
                model,
                optimizer,
                {"epoch": epoch + 1, "optimizer_iterations": iterations, "history": history, "best": best},
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
        "per_replica_batch": local_batch,
        "global_batch": cfg.batch_size,
        "learning_rate": lr,
        "strategy": strategy_name(strategy),
        "task": task_name(strategy),
        "optimizer_iterations": int(optimizer.iterations.numpy()),
    }
    write_json_atomic(run / "metrics.json", result)
    return {**result, "chief": chief, "run_folder": str(run)}


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
