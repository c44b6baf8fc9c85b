"""ResNetHeatmap: a residual encoder with a deconvolution head (SimpleBaseline, Xiao et al., ECCV 2018).

Layout (``b = base_filters``)::

    image (H, W, 1)
      stem    3x3 conv b (full res), 3x3 conv stride 2 b (1/2)
      stages  basic residual blocks, widths 2b, 4b, 8b, 16b at 1/4, 1/8, 1/16, 1/32
              (``blocks`` per stage; the first block of each stage has stride 2 and a 1x1 projection)
      head    per level up to full resolution: 4x4 Conv2DTranspose stride 2 + BN + ReLU, then
              (``skips``) + a 1x1 projection of the encoder feature of that resolution, then a 3x3
              conv + BN + ReLU (which also smooths deconvolution checkerboards)
              1x1 conv -> 4 heatmaps (H, W, 4), float32, linear

SimpleBaseline itself has no skips and stops at 1/4; here the head goes back to FULL input
resolution so that decoding is in input pixels, and the additive skips (FPN-like, cheap) give it the
fine detail it needs for sub-pixel peaks. ``skips=False`` gives the plain deconvolution head.

Only Conv2D, Conv2DTranspose, BatchNormalization, ReLU and Add: converts to TFLite.
H and W must be divisible by 2**len(blocks) (32 by default).
"""

from __future__ import annotations

import keras
from keras import layers

from fetalbio.models import batch_norm
from fetalbio.models.hrnet import conv_bn, heatmap_output


def res_block(x, filters: int, strides: int, name: str):
    """Basic residual block; a strided / width-changing block gets a 1x1 projection shortcut."""
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = conv_bn(x, filters, 1, f"{name}_proj", strides=strides, relu=False)
    y = conv_bn(x, filters, 3, f"{name}_a", strides=strides)
    y = conv_bn(y, filters, 3, f"{name}_b", relu=False)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


@keras.saving.register_keras_serializable(package="fetalbio")
class ResNetHeatmap(keras.Model):
    """A residual encoder + upsampling head mapping (H, W, 1) to (H, W, out_channels) heatmaps.

    Args:
        image_shape: (H, W, C); H and W divisible by 2**(len(blocks) + 1).
        base_filters: b; the stem has b filters, encoder stage i has b * 2**(i + 1).
        blocks: basic blocks per encoder stage (each stage halves the resolution, starting from 1/2).
        skips: add 1x1-projected encoder features at each resolution of the head.
        out_channels: number of heatmaps (4: bpd1, bpd2, ofd1, ofd2).
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (256, 384, 1),
        base_filters: int = 16,
        blocks: tuple[int, ...] = (2, 2, 2, 1),
        skips: bool = True,
        out_channels: int = 4,
        **kwargs,
    ):
        blocks = tuple(int(n) for n in blocks)
        if not blocks or min(blocks) < 1:
            raise ValueError(f"blocks must be positive counts, got {blocks}")
        h, w = int(image_shape[0]), int(image_shape[1])
        factor = 2 ** (len(blocks) + 1)
        if h % factor or w % factor:
            raise ValueError(f"image size {h}x{w} must be divisible by {factor} for ResNetHeatmap")
        b = int(base_filters)

        inputs = keras.Input(shape=tuple(image_shape), name="image")
        feats = [conv_bn(inputs, b, 3, "stem0")]  # full resolution
        feats.append(conv_bn(feats[0], b, 3, "stem1", strides=2))  # 1/2
        x = feats[-1]
        for s, n in enumerate(blocks):
            f = b * 2 ** (s + 1)
            for k in range(n):
                x = res_block(x, f, 2 if k == 0 else 1, f"enc{s}_b{k}")
            feats.append(x)

        # feats[i] is at 1/2**i; decode from the deepest back to full resolution
        for level in reversed(range(len(feats) - 1)):
            f = b * 2 ** max(level - 1, 0)  # the encoder's width at this resolution
            up = layers.Conv2DTranspose(
                f, 4, strides=2, padding="same", use_bias=False, name=f"dec{level}_up"
            )
            x = up(x)
            x = batch_norm(f"dec{level}_up_bn")(x)
            x = layers.ReLU(name=f"dec{level}_up_relu")(x)
            if skips:
                lateral = conv_bn(feats[level], f, 1, f"dec{level}_skip", relu=False)
                x = layers.Add(name=f"dec{level}_add")([x, lateral])
            x = conv_bn(x, f, 3, f"dec{level}_conv")
        outputs = heatmap_output(x, out_channels)

        kwargs.setdefault("name", "resnet_heatmap")
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.image_shape = tuple(int(v) for v in image_shape)
        self.base_filters = b
        self.blocks = blocks
        self.skips = bool(skips)
        self.out_channels = int(out_channels)

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "image_shape": list(self.image_shape),
            "base_filters": self.base_filters,
            "blocks": list(self.blocks),
            "skips": self.skips,
            "out_channels": self.out_channels,
        }

    @classmethod
    def from_config(cls, config: dict) -> ResNetHeatmap:
        return cls(**config)
