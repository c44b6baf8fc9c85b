"""The training pack: a small, portable copy of a letterboxed dataset for training elsewhere (a GPU host
without TensorFlow, at most 64 MB travels): scans as lossless WebP with their points, letterboxes,
spacings and normalisation. Written by ``tools/pack_landmarks.py`` (:func:`pack_scan`,
:func:`save_pack`), read by ``tools/train_packed.py`` and ``tools/import_packed_run.py``
(:func:`load_pack`). Never committed: it holds copies of the scans.

Arrays of a pack (``np.savez``; N scans, input H x W pixels):

* ``names`` (N,) str, ``is_val`` (N,) uint8 (1 = validation scan);
* ``webp`` (bytes,) uint8 and ``webp_offsets`` (N + 1,): scan i is ``webp[off[i]:off[i + 1]]``, a
  lossless WebP of the (H, W) uint8 letterboxed scan (the pad holds the scan's mean);
* ``mean_sd`` (N, 2) float32: the scan's own grey mean and SD (SD 1 for a flat scan);
* ``letterbox`` (N, 8) int32: :data:`LETTERBOX_FIELDS` of its :class:`~fetalbio.preprocess.Letterbox`;
* ``points_in`` / ``points_orig`` (N, 4, 2) float64: landmarks bpd1, bpd2, ofd1, ofd2 as (x, y) in input
  / original pixels;
* ``spacing_mm`` (N,) float64: pixel size in mm (NaN when unknown).

Nothing here imports Keras at module level (:func:`heatmap_points_loss` imports it when called).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import ArrayLike

from fetalbio.heatmaps import FOREGROUND_WEIGHT
from fetalbio.preprocess import Letterbox
from fetalbio.writers import write_bytes_atomic

#: the 8 integers a pack keeps of a letterbox (``letterbox`` rows), in :class:`Letterbox` field order
LETTERBOX_FIELDS = ("orig_h", "orig_w", "in_h", "in_w", "new_h", "new_w", "pad_y", "pad_x")


@dataclass(frozen=True, eq=False)
class PackedScan:
    """One scan as a pack stores it (see the module docstring for units)."""

    image: np.ndarray  # (H, W) uint8 letterboxed scan
    mean_sd: tuple[float, float]  # grey mean and SD of the original scan
    letterbox: np.ndarray  # (8,) int32, LETTERBOX_FIELDS
    points_in: np.ndarray  # (4, 2) float64, input pixels


def pack_scan(pixels: np.ndarray, landmarks_px: np.ndarray, size_hw: tuple[int, int]) -> PackedScan:
    """Letterbox one scan to ``size_hw`` (H, W) pixels for a pack.

    Args:
        pixels: the (h, w) grey scan in original pixels (any numeric dtype).
        landmarks_px: (4, 2) points (x, y) in original pixels.
        size_hw: the model input size (H, W) in pixels.
    """
    px = pixels.astype(np.float32)
    lb = Letterbox.fit(px.shape[:2], size_hw)
    mean, sd = float(px.mean()), float(px.std())
    # the pad holds the scan's mean: it normalises to 0, as prepare_input's padding does
    raw = lb.image_to_input(px, fill=mean)
    return PackedScan(
        image=np.clip(np.rint(raw), 0, 255).astype(np.uint8),
        mean_sd=(mean, sd if sd > 1e-6 else 1.0),
        letterbox=np.array([getattr(lb, f) for f in LETTERBOX_FIELDS], np.int32),
        points_in=lb.to_input(landmarks_px),
    )


def save_pack(
    path: Path,
    scans: list[PackedScan],
    *,
    names: list[str],
    is_val: list[int],
    points_orig: ArrayLike,
    spacing_mm: ArrayLike,
) -> None:
    """Write a pack (``np.savez``): the scans as lossless WebP, with their points and spacing (mm).

    Args:
        path: the ``.npz`` file (its folder is created).
        scans: from :func:`pack_scan`, all of one input size.
        names: scan file names; ``is_val``: 1 for a validation scan, 0 for a training one.
        points_orig: (N, 4, 2) landmarks in original pixels; ``spacing_mm``: (N,) mm per pixel or NaN.
    """
    h, w = scans[0].image.shape if scans else (0, 0)
    images = np.zeros((len(scans), h, w), np.uint8)
    for i, s in enumerate(scans):
        images[i] = s.image
    path.parent.mkdir(parents=True, exist_ok=True)
    blobs = [cv2.imencode(".webp", im, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].ravel() for im in images]
    buf = io.BytesIO()  # written whole or not at all: a pack cut short would load as a smaller one
    np.savez(
        buf,
        names=np.array(names),
        is_val=np.array(is_val, np.uint8),
        webp=np.concatenate(blobs),
        webp_offsets=np.cumsum([0] + [len(b) for b in blobs]),
        mean_sd=np.array([s.mean_sd for s in scans], np.float32).reshape(len(scans), 2),
        letterbox=np.array([s.letterbox for s in scans], np.int32).reshape(len(scans), 8),
        points_in=np.array([s.points_in for s in scans], np.float64).reshape(len(scans), 4, 2),
        points_orig=np.asarray(points_orig, np.float64),
        spacing_mm=np.asarray(spacing_mm, np.float64),
    )
    write_bytes_atomic(path, buf.getvalue())


def load_images(pack: Any) -> np.ndarray:
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


def heatmap_points_loss(
    sigma_px: float, hw: tuple[int, int], foreground_weight: float = FOREGROUND_WEIGHT
) -> Callable[[Any, Any], Any]:
    """The loss of ``heatmaps.heatmap_loss`` with its target rendered from (B, 4, 2) points on the device."""
    from keras import ops

    h, w = hw
    inv = 1.0 / (2.0 * sigma_px**2)

    def loss(points: Any, y_pred: Any) -> Any:
        """(B,) weighted mean squared heatmap error of (B, H, W, 4) predictions for (B, 4, 2) points."""
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
