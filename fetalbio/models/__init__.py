"""Model builders, one per file, and the architecture registry (name -> builder).

Importing this package is cheap: a builder imports its module (and so Keras) only when called. Every
builder takes ``(image_shape, base_filters, out_channels, out_activation, **kwargs)`` and returns a
Keras model mapping an ``(H, W, 1)`` normalised scan to ``(H, W, out_channels)`` maps.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

# BatchNorm moving averages: 0.9 rather than Keras' 0.99, because an HC18 epoch is only ~80 steps
# and inference-mode outputs lag far behind training-mode ones with 0.99 on such short runs.
BN_MOMENTUM = 0.9


def batch_norm(name: str):
    """BatchNorm with BN_MOMENTUM, synchronized across replicas where the backend supports it.

    Keras synchronizes BatchNorm on the TensorFlow backend only (``tf.distribute`` replicas); on JAX
    (single-device GPU training, tools/train_packed.py) it is the plain layer. The weights are the same,
    so a model trained on either backend loads on the other.
    """
    import keras

    return keras.layers.BatchNormalization(
        synchronized=keras.backend.backend() == "tensorflow", momentum=BN_MOMENTUM, name=name
    )


def _unet(image_shape, base_filters, out_channels, out_activation, **kwargs):
    from fetalbio.models.unet import UNet

    kwargs.setdefault("depth", 4)
    return UNet(
        image_shape,
        base_filters=base_filters,
        out_channels=out_channels,
        out_activation=out_activation,
        **kwargs,
    )


def _hrnet(image_shape, base_filters, out_channels, out_activation, **kwargs):
    from fetalbio.models.hrnet import HRNetLite

    if out_activation != "linear":
        raise ValueError("the hrnet builder has a linear output only")
    return HRNetLite(image_shape, base_filters=base_filters, out_channels=out_channels, **kwargs)


def _resnet(image_shape, base_filters, out_channels, out_activation, **kwargs):
    from fetalbio.models.resnet_head import ResNetHeatmap

    if out_activation != "linear":
        raise ValueError("the resnet builder has a linear output only")
    return ResNetHeatmap(image_shape, base_filters=base_filters, out_channels=out_channels, **kwargs)


# name -> builder. A new architecture is one builder file plus one line here.
ARCHS: dict[str, Callable[..., Any]] = {"unet": _unet, "hrnet": _hrnet, "resnet": _resnet}
# the modules whose classes Keras must know to load a saved model
MODULES = ("fetalbio.models.unet", "fetalbio.models.hrnet", "fetalbio.models.resnet_head")


def build(
    arch: str,
    image_shape: tuple[int, int, int] = (256, 384, 1),
    base_filters: int = 16,
    out_channels: int = 4,
    out_activation: str = "linear",
    **kwargs: Any,
):
    """Build architecture ``arch``: (H, W, 1) scan -> (H, W, out_channels) maps."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}: choose one of {', '.join(ARCHS)}")
    return ARCHS[arch](image_shape, base_filters, out_channels, out_activation, **kwargs)


def build_landmark_model(
    arch: str, image_shape: tuple[int, int, int] = (256, 384, 1), base_filters: int = 16, **kwargs: Any
):
    """A landmark heatmap model: (H, W, 1) -> (H, W, 4) linear heatmaps (bpd1, bpd2, ofd1, ofd2)."""
    return build(arch, image_shape, base_filters, out_channels=4, out_activation="linear", **kwargs)


def register_keras_classes() -> None:
    """Import every builder module, so that Keras can deserialise the classes of a saved model."""
    for mod in MODULES:
        importlib.import_module(mod)
