"""Model builders, one per file. Importing this package imports Keras.

(The model modules do; this ``__init__`` itself imports them, and so Keras, only inside
:func:`build_landmark_model`, so ``import fetalbio.models`` alone stays cheap.)
"""

from __future__ import annotations

from typing import Any

ARCHS = ("unet", "hrnet", "resnet")
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


def build_landmark_model(
    arch: str, image_shape: tuple[int, int, int] = (256, 384, 1), base_filters: int = 16, **kwargs: Any
):
    """A landmark heatmap model: (H, W, C) scan -> (H, W, 4) linear heatmaps (bpd1, bpd2, ofd1, ofd2).

    ``arch``: 'unet' (:class:`~fetalbio.models.unet.UNet`, depth 4, linear output), 'hrnet'
    (:class:`~fetalbio.models.hrnet.HRNetLite`) or 'resnet'
    (:class:`~fetalbio.models.resnet_head.ResNetHeatmap`). Extra keyword arguments go to the
    constructor (e.g. ``depth`` for the U-Net, ``blocks`` for the others).
    """
    if arch == "unet":
        from fetalbio.models.unet import UNet

        kwargs.setdefault("depth", 4)
        return UNet(image_shape, base_filters=base_filters, out_channels=4, out_activation="linear", **kwargs)
    if arch == "hrnet":
        from fetalbio.models.hrnet import HRNetLite

        return HRNetLite(image_shape, base_filters=base_filters, out_channels=4, **kwargs)
    if arch == "resnet":
        from fetalbio.models.resnet_head import ResNetHeatmap

        return ResNetHeatmap(image_shape, base_filters=base_filters, out_channels=4, **kwargs)
    raise ValueError(f"unknown landmark architecture {arch!r}: choose one of {', '.join(ARCHS)}")
