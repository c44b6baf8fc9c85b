"""Distribution for training: ``tf.distribute`` strategies, who is chief, and the batch/learning-rate rule.

Batch and learning-rate rule: ``--batch-size`` is the GLOBAL batch; each of R replicas (devices x
workers) gets ``batch_size // R`` scans (it must divide evenly, else a ValueError says so); the learning
rate is ``lr * batch_size / 8`` (linear scaling from the reference batch of 8), whatever R is.

``FETALBIO_CPU_REPLICAS=N`` splits the CPU into N logical devices before TensorFlow starts, so
``--strategy mirrored`` (or ``auto``) runs N replicas on a machine without GPUs (tests, debugging).
"""

from __future__ import annotations

import os

REFERENCE_BATCH = 8  # the learning rate given is the rate for a global batch of this size

CPU_REPLICAS_ENV = "FETALBIO_CPU_REPLICAS"


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
