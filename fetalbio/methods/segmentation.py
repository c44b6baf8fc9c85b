"""Segmentation: a U-Net segments the skull; morphology cleans the mask; an ellipse is fitted to its
sub-pixel outline. BPD = minor axis, OFD = major axis, HC = Ramanujan perimeter of the ellipse."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from fetalbio import defaults
from fetalbio.biometry import BPD_CONVENTION
from fetalbio.geometry import Ellipse, ellipse_to_landmarks
from fetalbio.methods import register
from fetalbio.methods.base import Method, Result
from fetalbio.postprocess import segment_to_ellipse
from fetalbio.preprocess import footprint

THRESHOLD = defaults.SEG_THRESHOLD  # skull probability; the sub-pixel outline is that level of the map


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


class Segmentation(Method):
    name = "segmentation"
    short_name = "seg"
    out_channels = 1
    default_arch = "unet"
    key_metric = "hc_mae_mm"
    output_description = "sigmoid skull probability (H, W, 1)"

    bpd_convention = BPD_CONVENTION

    def build_model(self, arch: str, image_size: tuple[int, int], base_filters: int, **kwargs: Any):
        from fetalbio.models import build

        return build(arch, (*image_size, 1), base_filters, out_channels=1, out_activation="sigmoid", **kwargs)

    def targets(self, masks, points, image_size, sigma_px) -> np.ndarray:
        return masks[..., None]

    def loss(self):
        return seg_loss

    def decode(self, output, letterbox, info) -> Result:
        prob = letterbox.map_to_original(np.asarray(output, np.float32)[..., 0])
        seen = footprint(letterbox)
        f = min(1.0, defaults.MAX_POSTPROCESS_SIDE_PX / max(prob.shape))
        if f < 1.0:  # a huge scan: post-process at a bounded size (the model saw far fewer pixels anyway)
            size = (round(prob.shape[1] * f), round(prob.shape[0] * f))
            small = cv2.resize(prob, size, interpolation=cv2.INTER_AREA)
            f = small.shape[1] / prob.shape[1]
            prob = small
            if seen is not None:
                seen = cv2.resize(seen.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.5
        seg = segment_to_ellipse(prob, THRESHOLD, seen)
        if seg.fit is None:
            return Result(self.name, mask=seg.mask if f == 1.0 else None, flags=seg.flags, error=seg.error)
        e = seg.fit.ellipse
        if f < 1.0:
            e = Ellipse(
                (e.cx_px + 0.5) / f - 0.5,
                (e.cy_px + 0.5) / f - 0.5,
                e.semi_major_px / f,
                e.semi_minor_px / f,
                e.angle_deg,
            )
            seg.mask = None  # not kept at the full size of a huge scan
        return Result(
            self.name,
            e,
            ellipse_to_landmarks(e),
            seg.mask,
            seg.flags,
            seg.confidence,
            fit_residual_px=seg.fit.residual_px / f,
        )


register(Segmentation())
