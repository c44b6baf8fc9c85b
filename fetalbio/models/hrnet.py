"""HRNetLite: a small multi-resolution network for landmark heatmaps (after HRNet, Sun et al., CVPR 2019).

Layout (``b = base_filters``, widths of the branches ``2b, 4b, 8b``)::

    image (H, W, 1)
      stem0  3x3 conv, b                      full resolution  --------------------------- skip --+
      stem1  3x3 conv stride 2, b             1/2              ---------------- skip --+           |
      stem2  3x3 conv stride 2, 2b            1/4                                      |           |
      stage1 ``blocks`` basic blocks, 2b      1/4                                      |           |
      stage2 1/4 + 1/8 branches; ``modules[0]`` exchange units                         |           |
      stage3 1/4 + 1/8 + 1/16 branches; ``modules[1]`` exchange units                  |           |
      head   all branches upsampled to 1/4, concatenated, 1x1 conv (head_filters)     |           |
             bilinear x2 -> concat -> 3x3 conv (b) <------------------------------------+           |
             bilinear x2 -> concat -> 3x3 conv (b) <------------------------------------------------+
             1x1 conv -> 4 heatmaps (H, W, 4), float32, linear

An exchange unit runs ``blocks`` basic residual blocks on every branch, then fuses: each output
branch is the ReLU of the sum of all branches brought to its resolution (higher-resolution inputs by
strided 3x3 convs, lower-resolution inputs by a 1x1 conv and nearest upsampling), as in HRNet.

Only Conv2D, BatchNormalization, ReLU, UpSampling2D, Add and Concatenate: converts to TFLite.
H and W must be divisible by 16.
"""

from __future__ import annotations

import keras
from keras import layers

from fetalbio.models import batch_norm


def heatmap_output(x, out_channels: int):
    """The linear 1x1 heatmap layer (float32 under mixed precision), zero-initialised so that
    training starts at an all-zero output and the first gradients point at the peaks."""
    return layers.Conv2D(
        out_channels, 1, activation="linear", dtype="float32", kernel_initializer="zeros", name="heatmaps"
    )(x)


def conv_bn(x, filters: int, kernel: int, name: str, strides: int = 1, relu: bool = True):
    """Conv (no bias) + synchronized BatchNorm (+ ReLU)."""
    conv = layers.Conv2D(
        filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"
    )
    x = conv(x)
    x = batch_norm(f"{name}_bn")(x)
    if relu:
        x = layers.ReLU(name=f"{name}_relu")(x)
    return x


def basic_block(x, filters: int, name: str):
    """ResNet basic block (two 3x3 convs) with identity shortcut, or a 1x1 projection if widths differ."""
    shortcut = x
    if x.shape[-1] != filters:
        shortcut = conv_bn(x, filters, 1, f"{name}_proj", relu=False)
    y = conv_bn(x, filters, 3, f"{name}_a")
    y = conv_bn(y, filters, 3, f"{name}_b", relu=False)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def fuse(branches: list, widths: list[int], name: str) -> list:
    """HRNet exchange: output i = ReLU(sum_j branch j resampled to branch i's resolution and width)."""
    outs = []
    for i, wi in enumerate(widths):
        terms = []
        for j, xj in enumerate(branches):
            if j == i:
                terms.append(xj)
            elif j > i:  # lower resolution: 1x1 conv to width i, nearest upsampling by 2**(j - i)
                y = conv_bn(xj, wi, 1, f"{name}_{j}to{i}", relu=False)
                up = layers.UpSampling2D(2 ** (j - i), interpolation="nearest", name=f"{name}_{j}to{i}_up")
                terms.append(up(y))
            else:  # higher resolution: (i - j) strided 3x3 convs, the last one to width i without ReLU
                y = xj
                for k in range(i - j):
                    last = k == i - j - 1
                    width = wi if last else widths[j]
                    y = conv_bn(y, width, 3, f"{name}_{j}to{i}_d{k}", strides=2, relu=not last)
                terms.append(y)
        s = layers.Add(name=f"{name}_sum{i}")(terms)
        outs.append(layers.ReLU(name=f"{name}_out{i}")(s))
    return outs


@keras.saving.register_keras_serializable(package="fetalbio")
class HRNetLite(keras.Model):
    """A small HRNet mapping an (H, W, 1) normalised scan to (H, W, out_channels) heatmaps.

    Args:
        image_shape: (H, W, C); H and W divisible by 16.
        base_filters: b; the branches at 1/4, 1/8, 1/16 have 2b, 4b, 8b filters, the full- and
            half-resolution stem and head b.
        blocks: basic blocks per branch in the first stage and in each exchange unit.
        modules: exchange units in the two-branch and in the three-branch stage.
        head_filters: width of the 1x1 conv that mixes the concatenated branches (default 4b).
        out_channels: number of heatmaps (4: bpd1, bpd2, ofd1, ofd2).
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (256, 384, 1),
        base_filters: int = 16,
        blocks: int = 1,
        modules: tuple[int, int] = (1, 3),
        head_filters: int | None = None,
        out_channels: int = 4,
        **kwargs,
    ):
        h, w = int(image_shape[0]), int(image_shape[1])
        if h % 16 or w % 16:
            raise ValueError(f"image size {h}x{w} must be divisible by 16 for HRNetLite")
        modules = tuple(int(m) for m in modules)
        if len(modules) != 2 or min(modules) < 1:
            raise ValueError(f"modules must be two positive counts, got {modules}")
        b = int(base_filters)
        hf = int(head_filters) if head_filters else 4 * b
        widths = [2 * b, 4 * b, 8 * b]

        inputs = keras.Input(shape=tuple(image_shape), name="image")
        full = conv_bn(inputs, b, 3, "stem0")
        half = conv_bn(full, b, 3, "stem1", strides=2)
        x = conv_bn(half, widths[0], 3, "stem2", strides=2)
        for k in range(blocks):
            x = basic_block(x, widths[0], f"stage1_b{k}")

        branches = [x, conv_bn(x, widths[1], 3, "trans2", strides=2)]
        for m in range(modules[0]):
            branches = [
                _run_blocks(xb, widths[i], blocks, f"stage2_m{m}_br{i}") for i, xb in enumerate(branches)
            ]
            branches = fuse(branches, widths[:2], f"stage2_m{m}_fuse")

        branches = [*branches, conv_bn(branches[-1], widths[2], 3, "trans3", strides=2)]
        for m in range(modules[1]):
            branches = [
                _run_blocks(xb, widths[i], blocks, f"stage3_m{m}_br{i}") for i, xb in enumerate(branches)
            ]
            branches = fuse(branches, widths, f"stage3_m{m}_fuse")

        # HRNetV2 representation: every branch at 1/4, concatenated
        ups = [branches[0]] + [
            layers.UpSampling2D(2**i, interpolation="bilinear", name=f"head_up{i}")(xb)
            for i, xb in enumerate(branches)
            if i > 0
        ]
        y = layers.Concatenate(name="head_cat")(ups)
        y = conv_bn(y, hf, 1, "head_mix")
        y = layers.UpSampling2D(2, interpolation="bilinear", name="head_to_half")(y)
        y = layers.Concatenate(name="head_cat_half")([y, half])
        y = conv_bn(y, b, 3, "head_half")
        y = layers.UpSampling2D(2, interpolation="bilinear", name="head_to_full")(y)
        y = layers.Concatenate(name="head_cat_full")([y, full])
        y = conv_bn(y, b, 3, "head_full")
        outputs = heatmap_output(y, out_channels)

        kwargs.setdefault("name", "hrnet_lite")
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.image_shape = tuple(int(v) for v in image_shape)
        self.base_filters = b
        self.blocks = int(blocks)
        self.modules_per_stage = modules
        self.head_filters = head_filters
        self.out_channels = int(out_channels)

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "image_shape": list(self.image_shape),
            "base_filters": self.base_filters,
            "blocks": self.blocks,
            "modules": list(self.modules_per_stage),
            "head_filters": self.head_filters,
            "out_channels": self.out_channels,
        }

    @classmethod
    def from_config(cls, config: dict) -> HRNetLite:
        return cls(**config)


def _run_blocks(x, filters: int, n: int, name: str):
    for k in range(n):
        x = basic_block(x, filters, f"{name}_b{k}")
    return x
