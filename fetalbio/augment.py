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
    # what users' scans look like (issue: robustness); each a probability, 0 = the original training
    p_any_rotation: float = 0.0  # the whole image at any angle (portrait screens, rotated exports)
    p_frame: float = 0.0  # the scan shrunk inside a dark screen with text (full-screen captures)
    p_speckle: float = 0.0  # multiplicative gamma speckle
    p_blur: float = 0.0  # Gaussian blur, sigma 0.5-2 px
    p_jpeg: float = 0.0  # JPEG compression, quality 25-60
    p_burn: float = 0.0  # calipers, crosses and text burnt into the image
    p_saturate: float = 0.0  # gain set high: contrast x1.15-1.5, the brightest greys (skull) clip at white

    def to_dict(self) -> dict:
        return asdict(self)


def random_affine(rng: np.random.Generator, hw: tuple[int, int], cfg: AugmentConfig) -> np.ndarray:
    """A random 2x3 affine matrix about the image centre (rotation, scale, flips, translation)."""
    h, w = hw
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    ang = math.radians(
        rng.uniform(-180.0, 180.0)
        if cfg.p_any_rotation and rng.random() < cfg.p_any_rotation  # no draw at 0: the original stream
        else rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)
    )
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
    if cfg.p_frame and rng.random() < cfg.p_frame:  # (no draw at 0: the original stream)
        img, msk, pts = _frame(rng, img, msk, pts)
    return _artefacts(rng, intensity(rng, img, cfg), cfg), msk, pts


def _frame(rng: np.random.Generator, img: np.ndarray, msk: np.ndarray | None, pts: np.ndarray | None):
    """A full-screen capture: the scan shrunk (0.55-0.85) inside a dark screen with text and a grey bar."""
    h, w = img.shape
    s = rng.uniform(0.55, 0.85)
    tx, ty = rng.uniform(0, (1 - s) * w), rng.uniform(0, (1 - s) * h)
    m = np.array([[s, 0, tx], [0, s, ty]])
    dark = float(img.min())
    out = cv2.warpAffine(
        img, m, (w, h), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT, borderValue=dark
    )
    bright = float(np.percentile(img, 99.5))
    text = np.zeros((h, w), np.uint8)  # OpenCV draws text on 8-bit images only
    for _ in range(int(rng.integers(2, 6))):
        org = (int(rng.uniform(0, 0.5) * w), int(rng.uniform(0.05, 0.95) * h))
        label = "Gn 52 FR 31 MI 0.9"[: int(rng.integers(5, 18))]
        cv2.putText(text, label, org, cv2.FONT_HERSHEY_SIMPLEX, rng.uniform(0.3, 0.5), 255, 1, cv2.LINE_AA)
    out = np.where(text > 0, dark + (bright - dark) * text / 255.0, out)
    if rng.random() < 0.5:
        x0 = int(w * rng.uniform(0.9, 0.97))
        out[:, x0:] = (dark + bright) / 3
    if msk is not None:
        msk = cv2.warpAffine(msk, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    if pts is not None:
        pts = apply_affine_points(m, pts)
    return out.astype(np.float32), msk, pts


def _artefacts(rng: np.random.Generator, img: np.ndarray, cfg: AugmentConfig) -> np.ndarray:
    """Speckle, blur, JPEG and burnt-in marks, each with its probability (normalised scan in and out)."""
    speckle, blur, burn, jpeg = (
        rng.random() < p for p in (cfg.p_speckle, cfg.p_blur, cfg.p_burn, cfg.p_jpeg)
    )
    saturate = bool(cfg.p_saturate) and rng.random() < cfg.p_saturate  # (no draw at 0: the old stream)
    lo, hi = float(img.min()), float(img.max())
    if not (speckle or blur or burn or jpeg or saturate) or hi - lo < 1e-6:
        return img  # unchanged (and the original training's images exactly)
    x = (img - lo) / (hi - lo) * 255.0
    if saturate:
        x = x * rng.uniform(1.15, 1.5) + rng.uniform(0.0, 15.0)  # clipped to 255 below
    if speckle:
        x = x * rng.gamma(4.0, 0.25, x.shape)
    if blur:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 2.0))
    x8 = np.clip(x, 0, 255).astype(np.uint8)
    if burn:
        h, w = x8.shape
        for _ in range(int(rng.integers(1, 4))):
            c = (int(rng.uniform(0.1, 0.9) * w), int(rng.uniform(0.1, 0.9) * h))
            cv2.drawMarker(x8, c, 255, cv2.MARKER_CROSS, int(rng.integers(6, 14)), 1)
        cv2.putText(x8, "HC 171.4mm", (int(0.05 * w), int(0.95 * h)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 255, 1)
    if jpeg:
        ok, buf = cv2.imencode(".jpg", x8, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 61))])
        x8 = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    from fetalbio.preprocess import normalise

    return normalise(x8)
