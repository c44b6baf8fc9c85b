"""U-Net (Ronneberger et al., MICCAI 2015) for the skull mask, and for heatmaps with 4 outputs."""

from __future__ import annotations

import keras
from keras import layers

from fetalbio.models import batch_norm


def conv_block(x, filters: int, name: str, dropout: float = 0.0):
    """Two 3x3 conv + BatchNorm + ReLU. BatchNorm is synchronized so replicas agree on its statistics."""
    for i in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
        x = batch_norm(f"{name}_bn{i}")(x)
        x = layers.ReLU(name=f"{name}_relu{i}")(x)
    if dropout > 0:
        x = layers.SpatialDropout2D(dropout, name=f"{name}_drop")(x)
    return x


@keras.saving.register_keras_serializable(package="fetalbio")
class UNet(keras.Model):
    """A U-Net mapping an (H, W, 1) normalised scan to (H, W, out_channels) maps.

    Args:
        image_shape: (H, W, 1); H and W divisible by 2**depth.
        base_filters: filters of the first level, doubled at each level down.
        depth: number of down-sampling steps.
        out_channels: 1 for the skull probability, 4 for landmark heatmaps.
        out_activation: 'sigmoid' (probabilities) or 'linear' (heatmaps).
        dropout: spatial dropout at the bottleneck.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (256, 384, 1),
        base_filters: int = 16,
        depth: int = 4,
        out_channels: int = 1,
        out_activation: str = "sigmoid",
        dropout: float = 0.1,
        **kwargs,
    ):
        h, w = image_shape[0], image_shape[1]
        if h % (2**depth) or w % (2**depth):
            raise ValueError(f"image size {h}x{w} must be divisible by 2**depth = {2**depth}")
        inputs = keras.Input(shape=tuple(image_shape), name="image")
        x = inputs
        skips = []
        for level in range(depth):
            x = conv_block(x, base_filters * 2**level, f"enc{level}")
            skips.append(x)
            x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
        x = conv_block(x, base_filters * 2**depth, "bottleneck", dropout=dropout)
        for level in reversed(range(depth)):
            f = base_filters * 2**level
            x = layers.Conv2DTranspose(f, 2, strides=2, name=f"up{level}")(x)
            x = layers.Concatenate(name=f"cat{level}")([x, skips[level]])
            x = conv_block(x, f, f"dec{level}")
        # heatmap heads start at an all-zero output, so the loss starts at the zero-output level and the
        # first gradients point at the peaks instead of at random background noise
        init = "zeros" if out_activation == "linear" else "glorot_uniform"
        outputs = layers.Conv2D(
            out_channels, 1, activation=out_activation, dtype="float32", kernel_initializer=init, name="head"
        )(x)
        kwargs.setdefault("name", "unet")
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.image_shape = tuple(int(v) for v in image_shape)
        self.base_filters = base_filters
        self.depth = depth
        self.out_channels = out_channels
        self.out_activation = out_activation
        self.dropout = dropout

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "image_shape": list(self.image_shape),
            "base_filters": self.base_filters,
            "depth": self.depth,
            "out_channels": self.out_channels,
            "out_activation": self.out_activation,
            "dropout": self.dropout,
        }

    @classmethod
    def from_config(cls, config: dict) -> UNet:
        return cls(**config)
