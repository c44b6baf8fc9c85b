"""Landmarks: a heatmap CNN regresses the two BPD and two OFD end points (four Gaussian heatmaps),
decoded with sub-pixel precision (:mod:`fetalbio.heatmaps`). BPD and OFD are the distances between the
points; HC is the Ramanujan perimeter of the ellipse they span."""

from __future__ import annotations

from typing import Any

import numpy as np

from fetalbio import defaults
from fetalbio.geometry import Landmarks, canonical_order, landmarks_to_ellipse, measure_landmarks
from fetalbio.methods import register
from fetalbio.methods.base import Method, Result
from fetalbio.preprocess import footprint

MIN_AXIS_PX = 4.0  # a BPD or OFD pair closer than this (original px) is not a head


class LandmarkMethod(Method):
    name = "landmarks"
    short_name = "landm."
    out_channels = 4
    default_arch = defaults.LANDMARK_ARCH
    key_metric = "landmark_mre_mm"
    output_description = "4 heatmaps (H, W, 4): bpd1, bpd2, ofd1, ofd2"
    bpd_convention = "distance between the two predicted BPD points"

    def build_model(self, arch: str, image_size: tuple[int, int], base_filters: int, **kwargs: Any):
        from fetalbio.models import build_landmark_model

        kwargs.pop("depth", None)  # the landmark builders keep their own depth
        return build_landmark_model(arch, (*image_size, 1), base_filters=base_filters, **kwargs)

    def targets(self, masks, points, image_size, sigma_px) -> np.ndarray:
        from fetalbio.heatmaps import render_heatmaps

        return np.stack([render_heatmaps(p, image_size, sigma_px) for p in points])

    def loss(self):
        from fetalbio.heatmaps import heatmap_loss

        return heatmap_loss

    def decode(self, output, letterbox, info) -> Result:
        from fetalbio.heatmaps import LOW_POINT_CONFIDENCE, decode_heatmaps

        pts_in, conf = decode_heatmaps(np.asarray(output, np.float32), sigma_px=info.heatmap_sigma_px)
        pts_orig = letterbox.to_original(pts_in)
        if getattr(letterbox, "k", 0) or getattr(letterbox, "tilt_deg", 0):  # a turned view: re-apply
            # the order rule in the scan's own frame
            pts_orig = canonical_order(pts_orig)
        lm = Landmarks.from_array(pts_orig)
        # a model may carry its own threshold (calibrated on its validation split, see model.json)
        limit = LOW_POINT_CONFIDENCE if info.low_point_confidence is None else info.low_point_confidence
        flags = ["low_confidence"] if min(conf) < limit else []
        pts = lm.as_array()
        w = getattr(letterbox, "full_w", None) or letterbox.orig_w
        h = getattr(letterbox, "full_h", None) or letterbox.orig_h
        if (pts < -0.5).any() or (pts[:, 0] > w - 0.5).any() or (pts[:, 1] > h - 0.5).any():
            flags.append("edge")  # a caliper outside the scan: the head is cut, or the points are wrong
        elif (seen := footprint(letterbox)) is not None:  # ... or outside a capture's region, a turned frame
            ix = np.clip(np.round(pts).astype(int), 0, [w - 1, h - 1])
            if not seen[ix[:, 1], ix[:, 0]].all():
                flags.append("edge")
        # a collapsed pair (both points on one spot) is no measurement: an empty or degenerate output
        if min(np.hypot(*(pts[1] - pts[0])), np.hypot(*(pts[3] - pts[2]))) < MIN_AXIS_PX:
            return Result(
                self.name,
                landmarks=lm,
                flags=["no_head", *flags],
                error="no head found (landmarks collapsed)",
            )
        return Result(
            self.name, landmarks_to_ellipse(lm), lm, None, flags, float(np.mean(conf)), list(map(float, conf))
        )

    def mean_geometry(self, ok: list[Result]) -> dict:
        """The views' points averaged (pairs matched end to end), the ellipse through them."""
        from fetalbio.geometry import mean_landmarks

        lm = mean_landmarks([r.landmarks for r in ok])
        pc = [r.point_confidence for r in ok if r.point_confidence is not None]
        point_conf = [float(v) for v in np.mean(pc, axis=0)] if pc else None
        return {"ellipse": landmarks_to_ellipse(lm), "landmarks": lm, "point_confidence": point_conf}

    def measure(self, result, spacing_mm):
        return measure_landmarks(result.landmarks, spacing_mm)


register(LandmarkMethod())
