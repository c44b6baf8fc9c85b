"""Joint augmentation of a model input, its mask and its landmarks (numpy + OpenCV).

One random affine matrix moves the scan, the mask and the points together (OpenCV's ``warpAffine``
for the pixels, the same 2x3 matrix for the points), so they never disagree; landmark pairs are put
back in canonical order afterwards (a flip swaps a pair exactly when the order rule requires it).
Intensity changes (brightness, contrast, gamma, speckle-like noise) touch the scan only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from fetalbio.geometry import canonical_order


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random transforms (each field's comment says why)."""

    rotation_deg: float = 25.0  # +/- degrees: heads lie at any angle in HC18; the order rule re-applies
    scale_range: tuple[float, float] = (0.85, 1.15)  # head sizes vary ~3x over pregnancy
    translate_frac: float = 0.08  # of the input size: heads are not always centred
    hflip: float = 0.5  # probability; left-right is arbitrary in an axial view
    vflip: float = 0.5  # probability; probes are held either way up
    brightness: float = 0.2  # added, in SDs of the normalised scan: gain differs between machines
    contrast: tuple[float, float] = (0.8, 1.25)  # multiplicative, same reason
    gamma: tuple[float, float] = (0.8, 1.25)  # machines' grey maps differ
    noise_sd: float = 0.08  # Gaussian, in SDs: speckle and electronic noise
    p_intensity: float = 0.8  # probability of the intensity changes (some scans stay as acquired)

    def to_dict(self) -> dict:
        return asdict(self)


def random_affine(rng: np.random.Generator, hw: tuple[int, int], cfg: AugmentConfig) -> np.ndarray:
    """A random 2x3 affine matrix about the image centre (rotation, scale, flips, translation)."""
    h, w = hw
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    ang = math.radians(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
    s = rng.uniform(*cfg.scale_range)
    fx = -1.0 if rng.random() < cfg.hflip else 1.0
    fy = -1.0 if rng.random() < cfg.vflip else 1.0
    tx = rng.uniform(-cfg.translate_frac, cfg.translate_frac) * w
    ty = rng.uniform(-cfg.translate_frac, cfg.translate_frac) * h
    rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]]) * s
    lin = rot @ np.diag([fx, fy])
    offset = np.array([cx + tx, cy + ty]) - lin @ np.array([cx, cy])
    return np.concatenate([lin, offset[:, None]], axis=1)


def apply_affine_points(m: np.ndarray, pts_xy: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (N, 2) points."""
    p = np.asarray(pts_xy, dtype=np.float64)
    return p @ m[:, :2].T + m[:, 2]


def intensity(rng: np.random.Generator, img: np.ndarray, cfg: AugmentConfig) -> np.ndarray:
    """Brightness, contrast, gamma and multiplicative noise on a normalised scan (float32)."""
    if rng.random() >= cfg.p_intensity:
        return img
    x = img
    # gamma acts on a 0..1 version of the scan, then the scan's range is restored
    lo, hi = float(x.min()), float(x.max())
    if hi - lo > 1e-6:
        x = ((x - lo) / (hi - lo)) ** rng.uniform(*cfg.gamma) * (hi - lo) + lo
    x = x * rng.uniform(*cfg.contrast) + rng.uniform(-cfg.brightness, cfg.brightness)
    if cfg.noise_sd > 0:
        x = x + rng.normal(0.0, cfg.noise_sd, x.shape).astype(np.float32) * (1.0 + np.abs(x)) * 0.5
    return x.astype(np.float32)


def augment(
    rng: np.random.Generator,
    image: np.ndarray,
    mask: np.ndarray | None = None,
    points: np.ndarray | None = None,
    cfg: AugmentConfig | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Augment an (H, W) float32 input with its (H, W) mask and (4, 2) points, all in input pixels."""
    cfg = cfg or AugmentConfig()
    h, w = image.shape[:2]
    m = random_affine(rng, (h, w), cfg)
    img = cv2.warpAffine(
        image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    msk = None
    if mask is not None:
        msk = cv2.warpAffine(
            mask.astype(np.float32), m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )
    pts = None if points is None else canonical_order(apply_affine_points(m, points))
    return intensity(rng, img, cfg), msk, pts
