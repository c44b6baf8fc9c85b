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
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fetalbio import defaults, methods
from fetalbio.augment import AugmentConfig, augment
from fetalbio.datasets import (
    Sample,
    Truth,
    find_samples,
    load_or_make_split,
    load_truth,
    save_split,
    split_path,
)
from fetalbio.distribute import (
    is_chief,
    make_strategy,
    per_replica_batch,
    scaled_lr,
    strategy_name,
    task_name,
)
from fetalbio.io import read_scan
from fetalbio.modelinfo import ModelInfo
from fetalbio.preprocess import Letterbox, prepare_input
from fetalbio.writers import first_names, write_bytes_atomic, write_csv_atomic, write_json_atomic

VAL_BATCH = 16  # scans per validation call (inference only, so larger than the training batch)


@dataclass
class TrainConfig:
    """A training run's whole configuration (written to ``config.json``); defaults from :mod:`defaults`."""

    method: str = methods.PRIMARY[0]  # a registered method (fetalbio.methods)
    dataset: str = ""
    out: str = ""
    arch: str | None = (
        None  # None: the method's default (segmentation: unet, landmarks: defaults.LANDMARK_ARCH)
    )
    epochs: int = defaults.EPOCHS
    batch_size: int = defaults.BATCH_SIZE  # global
    image_size: tuple[int, int] = defaults.IMAGE_SIZE  # (H, W) model input, px
    lr: float = defaults.LR  # for a global batch of 8
    weight_decay: float = defaults.WEIGHT_DECAY
    warmup_epochs: int = defaults.WARMUP_EPOCHS
    seed: int = defaults.SEED
    val_fraction: float = defaults.VAL_FRACTION  # of subjects
    strategy: str = "auto"
    base_filters: int = defaults.SEG_BASE_FILTERS
    depth: int = defaults.SEG_DEPTH  # U-Net depth of the segmentation model
    heatmap_sigma_px: float = defaults.HEATMAP_SIGMA_PX  # landmark targets, input px
    pixel_csv: str | None = None
    landmarks_csv: str | None = None
    init_from: str | None = None  # a .keras model whose same-named, same-shaped layers seed this one
    max_samples: int | None = None  # for tiny test runs
    steps_per_epoch: int | None = None  # None = the whole training split
    augment: dict = field(default_factory=lambda: AugmentConfig().to_dict())

    def __post_init__(self) -> None:
        if self.arch is None:
            self.arch = methods.get(self.method).default_arch

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        return d

    def model_info(self) -> ModelInfo:
        """What inference needs beside the trained weights (written as ``model.json``)."""
        return ModelInfo(
            method=self.method,
            arch=self.arch,
            image_size=tuple(self.image_size),
            output=methods.get(self.method).output_description,
            heatmap_sigma_px=self.heatmap_sigma_px,
        )


@dataclass
class Prepared:
    """One sample ready for training: the letterboxed input and targets in input pixels."""

    sample: Sample
    truth: Truth
    letterbox: Letterbox
    spacing_mm: tuple[float, float] | None  # (x, y) of the original scan
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
        scan = read_scan(s.scan_path, pixel_size_mm=s.pixel_size_mm)
        truth = load_truth(s.annotation_path, scan.pixels.shape[:2])
        image, lb = prepare_input(scan.pixels, image_size)
        mask = lb.image_to_input(truth.mask().astype(np.float32))
        src = points[s.name] if points is not None and s.name in points else truth.landmarks.as_array()
        out.append(Prepared(s, truth, lb, scan.spacing_mm, image, mask, lb.to_input(src)))
    return out


def build_model(cfg: TrainConfig):
    """The method's model for this configuration."""
    return methods.get(cfg.method).build_model(
        cfg.arch, tuple(cfg.image_size), cfg.base_filters, depth=cfg.depth
    )


def init_weights_from(model, source: Path) -> int:
    """Copy weights from ``source`` (a .keras file or run folder) into layers of the same name and shapes.

    Used to start the U-Net landmark model from the trained segmentation U-Net: everything but the
    output head matches, so the heatmap net starts from features that already find the skull.
    """
    import keras

    from fetalbio.modelinfo import resolve_model_path
    from fetalbio.models import register_keras_classes

    register_keras_classes()  # a landmark model's own layers, whichever method is being trained
    try:
        path = resolve_model_path(source)
        if not zipfile.is_zipfile(path):
            raise ValueError("not a Keras model file (a .keras file is a zip archive)")
        src = keras.models.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - Keras raises many kinds; the user needs one line
        raise ValueError(f"--init-from {source}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
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


def epoch_batch(cfg: TrainConfig, train_set: list[Prepared], epoch: int, n: int, aug: AugmentConfig):
    """The epoch's ``n`` augmented training pairs (x (n, H, W, 1), y (n, H, W, C)), float32.

    The order and augmentation depend only on (seed, epoch): a resumed run, and every worker, sees the
    same data.
    """
    rng = np.random.default_rng([cfg.seed, epoch])
    idx = np.resize(rng.permutation(len(train_set)), n)
    images, masks, points = [], [], []
    for i in idx:
        p = train_set[i]
        im, mk, pt = augment(rng, p.image, p.mask, p.points, aug)
        images.append(im)
        masks.append(mk)
        points.append(pt)
    x = np.stack(images)[..., None].astype(np.float32)
    method = methods.get(cfg.method)
    y = method.targets(np.stack(masks), np.stack(points), tuple(cfg.image_size), cfg.heatmap_sigma_px)
    return x, y.astype(np.float32)


# --- validation through the same inference path as predict ----------------------------------------------


def validate(
    cfg: TrainConfig, predict_batch: Callable[[np.ndarray], np.ndarray], val: list[Prepared]
) -> dict:
    """Validation figures in mm, measured as ``predict`` and ``evaluate`` measure a scan (the one
    :class:`~fetalbio.pipeline.Predictor` path: region, turn and noise finders, the second look at small
    heads), each scan read again from its file; scored as ``evaluate`` scores them."""
    from fetalbio.engines import CallableEngine
    from fetalbio.evaluate import score_prediction, summarise
    from fetalbio.io import read_scan
    from fetalbio.pipeline import Predictor

    predictor = Predictor({cfg.method: CallableEngine(predict_batch, cfg.model_info())}, VAL_BATCH)
    rows = []

    def read(p: Prepared):
        return read_scan(p.sample.scan_path, pixel_size_mm=p.sample.pixel_size_mm)

    for batch in predictor.run(val, read):
        for pred in batch:
            p = pred.source
            if pred.error is not None:
                rows.append(
                    {"file": p.sample.name, "method": cfg.method, "status": "error", "error": pred.error}
                )
                continue
            rows.append(
                score_prediction(pred.results[cfg.method], p.truth, pred.scan.spacing_mm, p.sample.name)
            )
    return summarise(rows)


# --- checkpoints ---


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
        ("rng", [np.asarray(v.numpy()) for v in _rng_states(model)]),
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
    if "rng" in files:  # older checkpoints have none: their dropout masks start over
        with np.load(ckpt_dir / files["rng"]) as f:
            for var, i in zip(_rng_states(model), range(len(f.files)), strict=True):
                var.assign(f[f"arr_{i}"])
    return state


def _rng_states(model) -> list:
    """The dropout layers' random-generator states: not weights, so without them a resumed run would draw
    other dropout masks than an uninterrupted one."""
    return [v for v in model.variables if "seed_generator" in v.path]


# --- the loop ---


def train(
    cfg: TrainConfig,
    resume: bool = False,
    console=None,
    on_epoch: Callable[[int], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> dict:
    """Train a model as configured; returns the best epoch's validation figures.

    ``on_epoch(epoch)`` runs after each saved epoch and ``on_step(epoch, step)`` after each training
    step (both 1-based; hooks for progress and tests).
    """
    import shutil
    import tempfile

    from rich.console import Console

    # the strategy first: multi-worker collectives and logical CPUs must be set before any other op
    strategy = make_strategy(cfg.strategy)
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
        loop = _Loop(cfg, strategy, console, chief, shared, run)
        return loop.fit(resume, on_epoch, on_step)
    finally:
        if not chief:
            shutil.rmtree(run, ignore_errors=True)


def load_training_data(cfg: TrainConfig, run: Path, console) -> tuple[list[Prepared], list[Prepared], dict]:
    """The run's (train, val) samples, read and letterboxed, and the subject split (``run``'s own when it
    has one; a new one is written by the caller once the start cannot be refused any more)."""
    found = find_samples(cfg.dataset, cfg.pixel_csv)
    samples = [s for s in found if s.annotation_path is not None]
    if not samples:
        raise ValueError(f"{cfg.dataset}: no annotated scans found")
    if len(samples) < len(found):  # nothing to learn from: said, not silently dropped
        names = [s.name for s in found if s.annotation_path is None]
        console.print(
            f"{len(names)} scans without an annotation left out ({first_names(names)})",
            highlight=False,
        )
    csv_points = None
    if cfg.landmarks_csv:
        # a four-point CSV is checked first: swapped pair names are corrected, suspect rows left out
        from fetalbio.datacheck import usable_landmarks

        csv_points, info = usable_landmarks(Path(cfg.dataset), Path(cfg.landmarks_csv), cfg.pixel_csv)
        console.print(
            f"landmark CSV: {info['n_rows']} rows, {info['n_suspect']} suspect rows left out, "
            f"names swapped: {'yes (corrected)' if info['names_swapped'] else 'no'}; {info['n_used']} used"
        )
        usable = [s for s in samples if s.name in csv_points]
        if not usable:
            raise ValueError(f"{cfg.landmarks_csv}: no usable landmark rows for the {len(samples)} scans")
        samples = usable
    if cfg.max_samples:  # after the CSV's own filter, so that N means N scans trained on
        samples = samples[: cfg.max_samples]
    split = load_or_make_split(run, samples, cfg.val_fraction, cfg.seed)
    by_name = {s.name: s for s in samples}
    with console.status(f"Reading {len(samples)} annotated scans..."):
        train_set = prepare_samples(
            [by_name[n] for n in split["train"] if n in by_name], cfg.image_size, csv_points
        )
        val_set = prepare_samples([by_name[n] for n in split["val"] if n in by_name], cfg.image_size)
    if not train_set:
        raise ValueError("the training split is empty")
    return train_set, val_set, split


# options a resumed run may change: how many epochs in all, and how the devices share the work
RESUME_MAY_CHANGE = ("epochs", "strategy", "out")


def resumed_config(run: Path, cfg: TrainConfig) -> TrainConfig:
    """The configuration a --resume carries on with: the run's own (config.json), with this command's
    --epochs and --strategy. An option left at its default is taken from the run; one given with
    another value than the run's (another method, model size, split, learning rate...) is refused in one
    line: the checkpoint would not fit, or the run would silently mix two settings."""
    import json

    try:
        old = json.loads((run / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{run}: cannot resume: config.json unreadable ({exc})") from None
    new, default = cfg.to_dict(), TrainConfig(method=cfg.method).to_dict()
    changed = [
        f"{k} {old.get(k)!r} -> {v!r}"
        for k, v in new.items()
        if k not in RESUME_MAY_CHANGE
        and v != default.get(k)
        and old.get(k, v) != v
        and not (k == "dataset" and _same_dir(old.get(k), v))
    ]
    if old.get("method", cfg.method) != cfg.method:
        changed.insert(0, f"method {old.get('method')!r} -> {cfg.method!r}")
    if changed:
        raise ValueError(
            f"{run}: cannot resume with other options ({'; '.join(changed)}); "
            "only --epochs and --strategy may change"
        )
    # --epochs / --strategy given on this command replace the run's; left at their defaults, the run's stay
    # (a resume of a 30-epoch run without --epochs trained to the default 40)
    merged = {
        k: v if k in RESUME_MAY_CHANGE and v != default.get(k) else old.get(k, v) for k, v in new.items()
    }
    merged["image_size"] = tuple(merged["image_size"])
    return TrainConfig(**merged)


def _same_dir(a, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, TypeError, RuntimeError):
        return False


class _Loop:
    """One training run: the model and optimizer under the strategy, the epoch loop and its saving."""

    def __init__(self, cfg: TrainConfig, strategy, console, chief: bool, shared: Path, run: Path):
        self.cfg, self.strategy, self.console, self.chief = cfg, strategy, console, chief
        self.shared, self.run = shared, run
        self.replicas = strategy.num_replicas_in_sync
        self.local_batch = per_replica_batch(cfg.batch_size, self.replicas)
        self.method = methods.get(cfg.method)

    def fit(self, resume: bool, on_epoch, on_step) -> dict:
        import keras

        cfg, run = self.cfg, self.run
        run.mkdir(parents=True, exist_ok=True)
        trained = (self.shared / "checkpoint" / "state.json").exists()
        if (run / "config.json").exists() and not resume and trained:
            raise FileExistsError(f"{run}: already holds a run; use --resume to carry on or another --out")
        if resume:  # before anything in the folder changes
            cfg = self.cfg = resumed_config(self.shared, cfg)
        elif self.chief and not trained:
            split_path(run).unlink(missing_ok=True)  # a refused earlier start's split is not this run's
        keras.utils.set_random_seed(cfg.seed)
        self.train_set, self.val_set, split = load_training_data(cfg, run, self.console)
        if not self.val_set and self.chief:
            self.console.print(
                "[yellow]warning:[/] no validation scans (too few subjects for --val-fraction "
                f"{cfg.val_fraction}): the best epoch is chosen by the training loss",
                markup=True,
            )
        self.steps = cfg.steps_per_epoch or max(1, len(self.train_set) // cfg.batch_size)
        self.lr = scaled_lr(cfg.lr, cfg.batch_size)
        if self.replicas > 1 and self.chief:
            self.console.print(
                f"{strategy_name(self.strategy)}: {self.replicas} replicas x {self.local_batch} scans = "
                f"global batch {cfg.batch_size}, learning rate {self.lr:.3g}"
            )
        self._build(resume)
        # written once nothing can refuse the start any more (a bad scan, annotation or --init-from): a
        # refused start leaves neither config.json nor splits.json behind
        write_json_atomic(run / "config.json", _config_record(cfg))
        save_split(run, split)
        state = _load_checkpoint(self.shared / "checkpoint", self.model, self.optimizer) if resume else None
        self.history: list[dict] = state["history"] if state else []
        self.best = state["best"] if state else None
        start = state["epoch"] if state else 0
        if state:
            self.console.print(
                f"Resuming after epoch {start} of {cfg.epochs} "
                f"(optimizer step {int(self.optimizer.iterations.numpy())})"
            )
        self._compile_step()
        t_start = time.time()
        self.epoch_times: list[float] = [h["seconds"] for h in self.history]
        with self._progress() as progress:
            for epoch in range(start, cfg.epochs):
                self._epoch(epoch, progress, on_step)
                if on_epoch:
                    on_epoch(epoch + 1)
        return self._result(t_start)

    def _build(self, resume: bool) -> None:
        """Model and optimizer under the strategy (every worker builds the same), AdamW + cosine decay."""
        import keras

        cfg = self.cfg
        total_steps = self.steps * cfg.epochs
        warmup = min(total_steps // 2, self.steps * cfg.warmup_epochs)
        with self.strategy.scope():
            self.model = build_model(cfg)
            if cfg.init_from and not resume:
                n = init_weights_from(self.model, Path(cfg.init_from))
                if self.chief:
                    self.console.print(
                        f"initialised {n} of {len(self.model.layers)} layers from {cfg.init_from}"
                    )
            self.schedule = keras.optimizers.schedules.CosineDecay(
                initial_learning_rate=self.lr / 10 if warmup else self.lr,
                decay_steps=max(1, total_steps - warmup),
                alpha=0.02,
                warmup_target=self.lr if warmup else None,
                warmup_steps=warmup,
            )
            self.optimizer = keras.optimizers.AdamW(
                learning_rate=self.schedule, weight_decay=cfg.weight_decay, clipnorm=None
            )
            self.optimizer.build(self.model.trainable_variables)

    def _compile_step(self) -> None:
        """The distributed training step, and a plain (undistributed) copy of the model for validation and
        saving: the same on every worker and free of collective ops, so workers cannot disagree on them."""
        import tensorflow as tf

        model, optimizer, strategy = self.model, self.optimizer, self.strategy
        per_example_loss, global_batch = self.method.loss(), self.cfg.batch_size

        def step_fn(x, y):
            with tf.GradientTape() as tape:
                pred = model(x, training=True)
                per_example = per_example_loss(y, pred)
                if per_example.shape.rank != 1:  # a scalar here would be divided by the global batch again
                    raise ValueError(f"the loss must be per example, shape (batch,): got {per_example.shape}")
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            grads = tape.gradient(loss, model.trainable_variables)
            # Keras' optimizer sums the gradients over replicas (and workers) before applying them
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss

        @tf.function
        def train_step(x, y):
            losses = strategy.run(step_fn, args=(x, y))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

        self.train_step = train_step
        self.plain = build_model(self.cfg)
        # batches of several sizes (a batch's views, the second look at small heads): one trace each
        predict_fn = tf.function(lambda x: self.plain(x, training=False), reduce_retracing=True)
        self.predict_batch = lambda x: np.asarray(predict_fn(tf.constant(x, tf.float32)))

    def _distribute(self, x: np.ndarray, y: np.ndarray):
        """One global batch -> replica r gets rows [r * local_batch, (r + 1) * local_batch)."""
        import tensorflow as tf

        lb = self.local_batch

        def value_fn(ctx):
            sl = slice(ctx.replica_id_in_sync_group * lb, (ctx.replica_id_in_sync_group + 1) * lb)
            return tf.constant(x[sl]), tf.constant(y[sl])

        return self.strategy.experimental_distribute_values_from_function(value_fn)

    def _progress(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        return Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("val {task.fields[val]}"),
            TextColumn("run left"),
            TimeRemainingColumn(),
            console=self.console,
            disable=not self.chief,
        )

    def _epoch(self, epoch: int, progress, on_step) -> None:
        """Train one epoch, validate, log, save the best model and the checkpoint."""
        cfg, key = self.cfg, self.method.key_metric
        t0 = time.time()
        aug = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.augment.items()})
        x, y = epoch_batch(cfg, self.train_set, epoch, self.steps * cfg.batch_size, aug)
        last = self.history[-1][key] if self.history and key in self.history[-1] else None
        task = progress.add_task(
            "train",
            total=self.steps,
            epoch=epoch + 1,
            epochs=cfg.epochs,
            loss=float("nan"),
            val=f"{key} {last:.2f}" if last is not None else "-",
        )
        losses = []
        for s in range(self.steps):
            b = slice(s * cfg.batch_size, (s + 1) * cfg.batch_size)
            losses.append(float(self.train_step(*self._distribute(x[b], y[b]))))
            progress.update(task, advance=1, loss=float(np.mean(losses)))
            if on_step:
                on_step(epoch + 1, s + 1)
        self.plain.set_weights(self.model.get_weights())
        metrics = validate(cfg, self.predict_batch, self.val_set) if self.val_set else {}
        progress.update(task, val=f"{key} {metrics.get(key, float('nan')):.2f}")
        progress.remove_task(task)
        self._end_of_epoch(epoch, losses, metrics, time.time() - t0)

    def _end_of_epoch(self, epoch: int, losses: list[float], metrics: dict, seconds: float) -> None:
        """Log the epoch; save best.keras when it improved; commit the checkpoint."""
        cfg = self.cfg
        self.epoch_times.append(seconds)
        iterations = int(self.optimizer.iterations.numpy())
        row = {
            "epoch": epoch + 1,
            "step": iterations,
            "loss": float(np.mean(losses)),
            "lr": float(self.schedule(self.optimizer.iterations)),
            "seconds": round(seconds, 1),
            **{k: v for k, v in metrics.items() if isinstance(v, int | float)},
        }
        self.history.append(row)
        left_min = np.mean(self.epoch_times) * (cfg.epochs - epoch - 1) / 60  # from the mean epoch so far
        shown = ("dice_mean", "hc_mae_mm", "bpd_mae_mm", "ofd_mae_mm", "landmark_mre_mm")
        # validation scans without a pixel size: their figures in pixels, not nan
        shown = [k if _finite(metrics.get(k)) else k.removesuffix("_mm") + "_px" for k in shown]
        self.console.print(
            f"epoch {epoch + 1}/{cfg.epochs}  loss {row['loss']:.4f}  "
            + "  ".join(f"{k} {metrics[k]:.3f}" for k in shown if _finite(metrics.get(k)))
            + f"  {seconds:.0f}s, about {left_min:.0f} min left"
        )
        score = _key_score(metrics, self.method.key_metric, row["loss"], len(self.val_set))
        best = self.best
        if best is None or _better(score, best["score"]):
            self.best = {"epoch": epoch + 1, "score": score, "metrics": metrics}
            save_model(self.plain, self.run / "best.keras", cfg)
        columns = list(dict.fromkeys(k for h in self.history for k in h))
        write_csv_atomic(self.run / "history.csv", self.history, columns, {"lr": 8})  # 4e-5 is not 0
        state = {
            "epoch": epoch + 1,
            "optimizer_iterations": iterations,
            "history": self.history,
            "best": self.best,
        }
        _save_checkpoint(self.run / "checkpoint", self.model, self.optimizer, state)

    def _result(self, t_start: float) -> dict:
        best, cfg = self.best, self.cfg
        result = {
            "method": cfg.method,
            "best_epoch": best["epoch"] if best else None,
            "val": best["metrics"] if best else {},
            "n_train": len(self.train_set),
            "n_val": len(self.val_set),
            "train_seconds": round(sum(self.epoch_times), 1),
            "wall_seconds_this_session": round(time.time() - t_start, 1),
            "replicas": self.replicas,
            "per_replica_batch": self.local_batch,
            "global_batch": cfg.batch_size,
            "learning_rate": self.lr,
            "strategy": strategy_name(self.strategy),
            "task": task_name(self.strategy),
            "optimizer_iterations": int(self.optimizer.iterations.numpy()),
        }
        write_json_atomic(self.run / "metrics.json", result)
        return {**result, "chief": self.chief, "run_folder": str(self.run)}


def save_model(model, path: Path, cfg: TrainConfig) -> None:
    """Save ``.keras`` atomically, with ``model.json`` (inference info) beside it."""
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)
    cfg.model_info().write(path.with_name("model.json"))


def _config_record(cfg: TrainConfig) -> dict:
    """config.json: the configuration, and the pixel-size table found beside the dataset when none was
    given (it set every validation figure in mm)."""
    from fetalbio.datasets import find_pixel_csv

    record = cfg.to_dict()
    if cfg.pixel_csv is None and (found := find_pixel_csv(Path(cfg.dataset))) is not None:
        record["pixel_csv_found"] = str(found)
    return record


def _finite(v) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def _key_score(metrics: dict, key: str, loss: float, n_val: int) -> list[float]:
    """What picks the best epoch, compared in order: [validation scans that failed, ``key`` (mm), else the
    same in pixels when the validation scans have no pixel size (comparable from epoch to epoch: the
    same scans)]. An epoch that measured more of them wins (a mean over fewer scans is not comparable,
    and one that measured none has no figure: it never beats one that has); only without validation
    scans does the training loss decide."""
    if not n_val:
        return [0.0, float(loss)]
    failed = float(metrics.get("n_failed", 0) or 0)
    for k in (key, key.removesuffix("_mm") + "_px"):
        if _finite(v := metrics.get(k)):
            return [failed, float(v)]
    return [float(n_val), math.inf]


def _better(score: list[float], best) -> bool:
    """Whether ``score`` beats the best so far (a run checkpointed by an earlier release stored a lone
    figure: its validation scans all measured)."""
    best = list(best) if isinstance(best, list | tuple) else [0.0, float(best)]
    return tuple(score) < tuple(best)
