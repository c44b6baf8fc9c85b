"""Finding the ultrasound image inside a full-screen capture (dark UI, text, bars, depth ticks).

The ultrasound image is the one large region of speckle texture; UI is flat with thin text. The local
standard deviation (a 7x7 window) is thresholded, thin structures (text, ticks, calipers) are removed by
an opening, and the bounding box of the largest remaining region is the image. A scan that is already
just the image (its textured box covers most of it) is left whole, so clean scans are untouched.
"""

from __future__ import annotations

import cv2
import numpy as np

WORK_SIDE = 400  # the search runs on a copy at most this many pixels a side (cost independent of size)
TEXTURE_SD = 3.0  # grey levels (of 255): tissue speckle is above, flat UI (bars, background) below
OPEN_FRAC = 0.04  # opening size, as a fraction of the short side: removes text lines and ticks
MIN_AREA_FRAC = 0.08  # a smaller textured region is no scan: keep the whole image
WHOLE_FRAC = 0.6  # a box covering more of the image than this: the image is the scan (HC18: >0.63 in 95 %)
PAD_FRAC = 0.08  # margin kept around the box (of the box size): a missed dark edge of the scan stays in


def _texture(small: np.ndarray) -> np.ndarray:
    x = small.astype(np.float32)
    mean = cv2.blur(x, (7, 7))
    var = cv2.blur(x * x, (7, 7)) - mean * mean
    return np.sqrt(np.maximum(var, 0.0))


def find_image_region(pixels: np.ndarray) -> tuple[int, int, int, int] | None:
    """(y0, x0, h, w) of the ultrasound image in ``pixels`` (H, W, any dtype), in its pixels; None when
    the whole image is the scan (or no clear region is found)."""
    h, w = pixels.shape[:2]
    img = pixels
    if img.dtype != np.uint8:
        img = cv2.normalize(img.astype(np.float32), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    scale = min(1.0, WORK_SIDE / max(h, w))
    small = cv2.resize(
        img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
    )
    textured = (_texture(small) > TEXTURE_SD).astype(np.uint8)
    k = max(3, int(OPEN_FRAC * min(small.shape)) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    textured = cv2.morphologyEx(textured, cv2.MORPH_OPEN, kernel)
    textured = cv2.morphologyEx(textured, cv2.MORPH_CLOSE, kernel)
    n, _, stats, _ = cv2.connectedComponentsWithStats(textured, connectivity=8)
    largest = int(stats[1:, cv2.CC_STAT_AREA].max()) if n > 1 else 0
    # the scan's pieces: large next to the largest (a block of text is not)
    big = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= max(0.01 * small.size, 0.15 * largest)]
    if not big:
        return None
    area = int(sum(stats[i, cv2.CC_STAT_AREA] for i in big))
    x = int(min(stats[i, cv2.CC_STAT_LEFT] for i in big))
    y = int(min(stats[i, cv2.CC_STAT_TOP] for i in big))
    bw = int(max(stats[i, cv2.CC_STAT_LEFT] + stats[i, cv2.CC_STAT_WIDTH] for i in big)) - x
    bh = int(max(stats[i, cv2.CC_STAT_TOP] + stats[i, cv2.CC_STAT_HEIGHT] for i in big)) - y
    if area < MIN_AREA_FRAC * small.size or bw * bh > WHOLE_FRAC * small.size:
        return None
    pad_x, pad_y = PAD_FRAC * bw, PAD_FRAC * bh
    x0 = max(0, int(np.floor((x - pad_x) / scale)))
    y0 = max(0, int(np.floor((y - pad_y) / scale)))
    x1 = min(w, int(np.ceil((x + bw + pad_x) / scale)))
    y1 = min(h, int(np.ceil((y + bh + pad_y) / scale)))
    return y0, x0, y1 - y0, x1 - x0
