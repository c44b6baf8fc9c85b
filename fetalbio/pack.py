"""The training pack: a small, portable copy of a letterboxed dataset for training elsewhere (a GPU host
without TensorFlow, at most 64 MB travels): scans as lossless WebP with their points, letterboxes,
spacings and normalisation. Written by ``tools/pack_landmarks.py``, read by ``tools/train_packed.py`` and
``tools/import_packed_run.py``. Never committed: it holds copies of the scans."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from fetalbio.heatmaps import FOREGROUND_WEIGHT
from fetalbio.preprocess import Letterbox


def load_images(pack) -> np.ndarray:
    """The (N, H, W) uint8 letterboxed scans of a loaded pack (``np.load(path)``)."""
    blob, off = pack["webp"], pack["webp_offsets"]
    return np.stack(
        [cv2.imdecode(blob[off[i] : off[i + 1]], cv2.IMREAD_GRAYSCALE) for i in range(len(off) - 1)]
    )


def load_pack(path: Path) -> dict:
    """Every array of a pack, the scans decoded (``images``)."""
    with np.load(path) as pack:
        data = {k: pack[k] for k in pack.files if k not in ("webp", "webp_offsets")}
        data["images"] = load_images(pack)
    return data


def normalised(data: dict, i: int) -> np.ndarray:
    """The model input of scan i: (u8 - mean) / sd inside the scan, 0 in the padding."""
    mean, sd = data["mean_sd"][i]
    x = (data["images"][i].astype(np.float32) - mean) / sd
    _, _, _, _, nh, nw, py, px = data["letterbox"][i]
    out = np.zeros_like(x)
    out[py : py + nh, px : px + nw] = x[py : py + nh, px : px + nw]
    return out


def heatmap_points_loss(sigma_px: float, hw: tuple[int, int], foreground_weight: float = FOREGROUND_WEIGHT):
    """The loss of ``heatmaps.heatmap_loss`` with its target rendered from (B, 4, 2) points on the device."""
    from keras import ops

    h, w = hw
    inv = 1.0 / (2.0 * sigma_px**2)

    def loss(points, y_pred):
        points = ops.cast(points, "float32")
        xs = ops.arange(w, dtype="float32")
        ys = ops.arange(h, dtype="float32")
        gx = ops.exp(-ops.square(xs[None, None, :] - points[..., 0:1]) * inv)  # (B, 4, W)
        gy = ops.exp(-ops.square(ys[None, None, :] - points[..., 1:2]) * inv)  # (B, 4, H)
        target = ops.transpose(gy[..., :, None] * gx[..., None, :], (0, 2, 3, 1))  # (B, H, W, 4)
        y_pred = ops.cast(y_pred, "float32")
        weight = 1.0 + foreground_weight * target
        return ops.mean(weight * ops.square(y_pred - target), axis=(1, 2, 3))

    return loss


def to_original(points_in: np.ndarray, lb: np.ndarray) -> np.ndarray:
    """Input px -> original px; lb is the pack's 8 integers, the fields of a :class:`Letterbox`."""
    return Letterbox(*(int(v) for v in lb)).to_original(points_in)
