"""Grey from a colour scan, with the machine's coloured overlays taken out.

B-mode ultrasound is grey, or grey tinted one colour (sepia, blue). What an ultrasound machine draws on
top of it is coloured: caliper crosses, the dotted ellipse of an HC trace, measurement text. Converted
to grey as they are, a traced ellipse is a bright ring along the skull and the crosses bright marks on
it, and the models measure them (on validation scans with a machine-style overlay drawn on, fused HC
MAE 1.38x the clean scans', docs/robustness.md). Here every pixel whose colour lies off the scan's own
tint is an overlay pixel, and the grey image is filled in there from its surroundings (OpenCV
inpainting), so the models see the echo around the marks, not the marks.

Only thin marks are taken out (:func:`thin_marks`): a solid coloured area (colour Doppler, a screen's
coloured panels and logos) is converted to grey as it is, and so is an image with more marks than
:data:`OVERLAY_MAX_FRAC` of its pixels (a coloured picture, not an overlay).
"""

from __future__ import annotations

import cv2
import numpy as np

OVERLAY_DEVIATION = 30 / 255  # of the grey range: how far off the tint line an overlay pixel lies
OVERLAY_MAX_FRAC = 0.05  # of the pixels, in thin marks: above it the colour is not an overlay
MARK_MAX_PX = 8  # a mark is at most this wide (machines draw 1-3 px lines, bold text); wider is an area
INPAINT_RADIUS_PX = 3  # the neighbourhood OpenCV's Telea inpainting fills from
_TINT_SAMPLE = 4  # every 4th pixel each way estimates the tint (the median of 1/16 of the pixels)


def overlay_mask(rgb: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: the pixels of an ``(H, W, 3)`` uint8/uint16 image (any channel order) whose
    colour lies more than :data:`OVERLAY_DEVIATION` of the grey range off the image's tint line.

    The tint is the median chromaticity of the brighter pixels (grey: equal channels), so a tinted scan
    has no overlay of its own; the distance is Euclidean, from the pixel to its projection on the line.
    """
    top = float(np.iinfo(rgb.dtype).max)
    c0, c1, c2 = cv2.split(rgb)
    # fast exit: a grey image stored in colour (equal channels, or JPEG's small chroma noise)
    chroma = cv2.subtract(cv2.max(cv2.max(c0, c1), c2), cv2.min(cv2.min(c0, c1), c2))
    if float(chroma.max()) <= OVERLAY_DEVIATION * top:
        return np.zeros(rgb.shape[:2], bool)
    sample = rgb[::_TINT_SAMPLE, ::_TINT_SAMPLE].reshape(-1, 3).astype(np.float32)
    total = sample.sum(axis=1)
    bright = sample[total > 0.35 * top]
    tint = np.median(bright / bright.sum(axis=1, keepdims=True), axis=0) if len(bright) else np.ones(3)
    u = (tint / np.linalg.norm(tint)).astype(np.float32).reshape(1, 3)
    x = rgb.astype(np.float32)
    along = cv2.transform(x, u)  # (H, W): the length of each pixel's projection on the tint line
    square = cv2.transform(cv2.multiply(x, x), np.ones((1, 3), np.float32))
    return (square - along * along) > (OVERLAY_DEVIATION * top) ** 2  # squared distance off the line


def colour_to_grey(img: np.ndarray, *, bgr: bool) -> tuple[np.ndarray, float]:
    """(``(H, W)`` grey of an ``(H, W, 3|4)`` colour image, the share of pixels taken as overlay).

    ``bgr``: channel order BGR(A) (OpenCV's) or RGB(A). uint8/uint16 images lose their coloured
    overlay's thin marks (inpainted, see the module); float images, or marks above
    :data:`OVERLAY_MAX_FRAC`, are converted as they are (share 0 then). Alpha is transparency, not
    echo, and is ignored.
    """
    channels = img.shape[2]
    # cvtColor only takes uint8/uint16/float32; other dtypes go through float32 and are rescaled later
    work = img if img.dtype in (np.uint8, np.uint16, np.float32) else img.astype(np.float32)
    if channels == 3:
        code = cv2.COLOR_BGR2GRAY if bgr else cv2.COLOR_RGB2GRAY
    else:
        code = cv2.COLOR_BGRA2GRAY if bgr else cv2.COLOR_RGBA2GRAY
    grey = cv2.cvtColor(work, code)
    if work.dtype == np.float32:
        return grey, 0.0
    mask = thin_marks(overlay_mask(work[:, :, :3]))
    share = float(mask.mean())
    if share == 0.0 or share > OVERLAY_MAX_FRAC:
        return grey, 0.0
    return cv2.inpaint(grey, mask, INPAINT_RADIUS_PX, cv2.INPAINT_TELEA), share


def thin_marks(mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` uint8 0/1: the thin parts of an overlay ``mask`` (bool): lines, crosses, dots, text
    strokes up to :data:`MARK_MAX_PX` wide. Solid coloured areas (a colour Doppler box, a screen's
    coloured panels and logos) are no marks on the echo: they, and a pixel round them, are left to the
    grey conversion."""
    m = mask.astype(np.uint8)
    k = cv2.getStructuringElement(cv2.MORPH_RECT, (MARK_MAX_PX + 1, MARK_MAX_PX + 1))
    solid = cv2.dilate(cv2.morphologyEx(m, cv2.MORPH_OPEN, k), np.ones((3, 3), np.uint8))
    return m & (1 - solid)
