"""Letterboxing to the model's input size, its exact inverse, and intensity normalisation.

A scan of any size is resized (aspect ratio kept) into an ``(H, W)`` input and padded; the
:class:`Letterbox` records the transform so that every point and probability map is mapped back to
the scan's ORIGINAL pixels before anything is measured.

Pixel-centre convention (as OpenCV's ``resize``): ``x_in = (x + 0.5) * sx - 0.5 + pad_x``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Letterbox:
    """The transform from original pixels (``orig_h``, ``orig_w``) to a model input (``in_h``, ``in_w``)."""

    orig_h: int
    orig_w: int
    in_h: int
    in_w: int
    new_h: int  # size of the resized scan inside the input
    new_w: int
    pad_y: int
    pad_x: int
    # the region of the full image that was letterboxed (a capture's ultrasound image); 0 / None = all
    off_y: int = 0
    off_x: int = 0
    full_h: int | None = None
    full_w: int | None = None

    @property
    def sx(self) -> float:
        return self.new_w / self.orig_w

    @property
    def sy(self) -> float:
        return self.new_h / self.orig_h

    @classmethod
    def fit(
        cls,
        orig_hw: tuple[int, int],
        input_hw: tuple[int, int],
        region: tuple[int, int, int, int] | None = None,
    ) -> Letterbox:
        """The letterbox of an (H, W) image, or of its ``region`` (y0, x0, h, w) only, into ``input_hw``."""
        full_h, full_w = orig_hw
        y0, x0, h, w = region if region is not None else (0, 0, full_h, full_w)
        ih, iw = input_hw
        scale = min(ih / h, iw / w)
        nh, nw = max(1, min(ih, round(h * scale))), max(1, min(iw, round(w * scale)))
        if region is None:
            return cls(h, w, ih, iw, nh, nw, (ih - nh) // 2, (iw - nw) // 2)
        return cls(h, w, ih, iw, nh, nw, (ih - nh) // 2, (iw - nw) // 2, y0, x0, full_h, full_w)

    def to_input(self, pts_xy: np.ndarray) -> np.ndarray:
        """Map (N, 2) original-pixel points to input pixels."""
        p = np.asarray(pts_xy, dtype=np.float64) - np.array([self.off_x, self.off_y])
        return np.stack(
            [(p[..., 0] + 0.5) * self.sx - 0.5 + self.pad_x, (p[..., 1] + 0.5) * self.sy - 0.5 + self.pad_y],
            axis=-1,
        )

    def to_original(self, pts_xy: np.ndarray) -> np.ndarray:
        """Map (N, 2) input-pixel points back to original pixels (exact inverse of :meth:`to_input`)."""
        p = np.asarray(pts_xy, dtype=np.float64)
        return np.stack(
            [
                (p[..., 0] - self.pad_x + 0.5) / self.sx - 0.5 + self.off_x,
                (p[..., 1] - self.pad_y + 0.5) / self.sy - 0.5 + self.off_y,
            ],
            axis=-1,
        )

    def map_to_original(self, arr: np.ndarray) -> np.ndarray:
        """Resize an input-space map ((in_h, in_w) or (in_h, in_w, C), float) to the original pixels."""
        crop = arr[self.pad_y : self.pad_y + self.new_h, self.pad_x : self.pad_x + self.new_w]
        out = cv2.resize(
            np.ascontiguousarray(crop), (self.orig_w, self.orig_h), interpolation=cv2.INTER_LINEAR
        )
        if self.full_h is None:
            return out
        full = np.zeros((self.full_h, self.full_w, *out.shape[2:]), out.dtype)  # nothing outside the region
        full[self.off_y : self.off_y + self.orig_h, self.off_x : self.off_x + self.orig_w] = out
        return full

    def image_to_input(
        self, img: np.ndarray, fill: float = 0.0, interpolation: int = cv2.INTER_AREA
    ) -> np.ndarray:
        """Resize and pad an original-space image ((H, W), any dtype -> float32)."""
        if self.full_h is not None and img.shape[:2] == (self.full_h, self.full_w):
            img = img[self.off_y : self.off_y + self.orig_h, self.off_x : self.off_x + self.orig_w]
        small = cv2.resize(img.astype(np.float32), (self.new_w, self.new_h), interpolation=interpolation)
        out = np.full((self.in_h, self.in_w), fill, np.float32)
        out[self.pad_y : self.pad_y + self.new_h, self.pad_x : self.pad_x + self.new_w] = small
        return out

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


# Impulse ("salt and pepper") noise: isolated pixels at the bottom AND at the top of the grey range, far
# from their 3x3 median. Ultrasound has almost none (HC18's 1133 scans as given: at most 0.07 % of
# pixels); 0.5 % salt and pepper marks 0.27-0.33 %. Both kinds are required: speckle clipped at white
# makes isolated white pixels only (up to 2.4 %, black under 0.04 %), Gaussian noise clipped at black
# isolated black ones only (up to 0.6 %), and neither is what a median should take out.
IMPULSE_MIN_FRAC = 0.00075  # of the pixels, for the black and for the white impulses each
IMPULSE_DEPTH = 40 / 255  # of the grey range: how far from its 3x3 median an impulse lies
IMPULSE_EDGE = 5 / 255  # of the grey range: how close to black or white an impulse is


def remove_impulse_noise(pixels: np.ndarray) -> tuple[np.ndarray, float]:
    """(pixels with salt-and-pepper impulses replaced by their 3x3 median, the share of pixels that
    were impulses). ``pixels`` (H, W) uint8 or uint16; returned unchanged (the same array) unless both
    the black and the white impulses exceed :data:`IMPULSE_MIN_FRAC` of the pixels. Geometry is
    untouched: every coordinate stays valid."""
    top = float(np.iinfo(pixels.dtype).max)
    img = pixels if pixels.dtype == np.uint8 else pixels.astype(np.float32)  # medianBlur: 8-bit or float
    med = cv2.medianBlur(img, 3)
    diff = img.astype(np.float32) - med
    depth, edge = IMPULSE_DEPTH * top, IMPULSE_EDGE * top
    pepper, salt = (img <= edge) & (diff < -depth), (img >= top - edge) & (diff > depth)
    share = float(pepper.mean() + salt.mean())
    if min(pepper.mean(), salt.mean()) <= IMPULSE_MIN_FRAC:
        return pixels, share
    imp = pepper | salt
    out = pixels.copy()
    out[imp] = med[imp].astype(pixels.dtype)
    return out, share


def normalise(img: np.ndarray) -> np.ndarray:
    """Per-scan intensity normalisation of an (H, W) image to zero mean and unit SD (float32).

    16-bit and 8-bit scans end up on the same scale; a flat image gives zeros rather than NaNs.
    """
    x = img.astype(np.float32)
    sd = float(x.std())
    return (x - float(x.mean())) / (sd if sd > 1e-6 else 1.0)


def prepare_input(
    pixels: np.ndarray, input_hw: tuple[int, int], region: tuple[int, int, int, int] | None = None
) -> tuple[np.ndarray, Letterbox]:
    """Scan pixels (H, W) -> normalised, letterboxed model input (in_h, in_w) float32, and the transform.

    ``region`` (y0, x0, h, w): letterbox only that part (the ultrasound image of a capture); everything
    maps back to the full image's pixels. Normalisation uses the (region's) own pixels; the padding is
    0 (their mean).
    """
    lb = Letterbox.fit(pixels.shape[:2], input_hw, region)
    if region is not None:
        y0, x0, h, w = region
        pixels = pixels[y0 : y0 + h, x0 : x0 + w]
    return lb.image_to_input(normalise(pixels)), lb


@dataclass(frozen=True)
class RotatedView:
    """A letterbox of the image turned by ``k`` quarter turns counter-clockwise (``np.rot90``), with the
    exact way back to the unturned image's pixels (points and maps). Quarter turns permute pixels, so
    nothing is interpolated."""

    inner: Letterbox
    k: int  # 1 or 3 (90 or 270 degrees counter-clockwise)
    orig_h: int  # the unturned image
    orig_w: int

    def _unturn(self, p: np.ndarray) -> np.ndarray:
        x, y = p[..., 0], p[..., 1]
        if self.k == 1:  # turned (x', y') = (y, W - 1 - x)
            return np.stack([self.orig_w - 1 - y, x], axis=-1)
        return np.stack([y, self.orig_h - 1 - x], axis=-1)  # k == 3: (x', y') = (H - 1 - y, x)

    def _turn(self, p: np.ndarray) -> np.ndarray:
        x, y = p[..., 0], p[..., 1]
        if self.k == 1:
            return np.stack([y, self.orig_w - 1 - x], axis=-1)
        return np.stack([self.orig_h - 1 - y, x], axis=-1)

    def to_input(self, pts_xy: np.ndarray) -> np.ndarray:
        return self.inner.to_input(self._turn(np.asarray(pts_xy, np.float64)))

    def to_original(self, pts_xy: np.ndarray) -> np.ndarray:
        return self._unturn(self.inner.to_original(pts_xy))

    def map_to_original(self, arr: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.rot90(self.inner.map_to_original(arr), -self.k))


def turned(pixels: np.ndarray, k: int) -> np.ndarray:
    """The image turned by ``k`` quarter turns counter-clockwise (contiguous)."""
    return np.ascontiguousarray(np.rot90(pixels, k))


def turned_region(region: tuple[int, int, int, int], k: int, h: int, w: int) -> tuple[int, int, int, int]:
    """``region`` (y0, x0, h, w) of an (h, w) image, in the image turned by ``k`` (0-3) quarter turns
    counter-clockwise: the same pixels (``turned(img, k)[turned_region(r)] == turned(img[r], k)``)."""
    y0, x0, rh, rw = region
    for _ in range(k % 4):  # one turn: (x', y') = (y, w - 1 - x)
        y0, x0, rh, rw, h, w = w - x0 - rw, y0, rw, rh, w, h
    return y0, x0, rh, rw


@dataclass(frozen=True)
class TiltedView:
    """A view of a turned scan squared back to the axes (:func:`upright`), with the exact way back to
    the turned image's own pixels: points through the inverse of the affine ``m``, maps warped by it.

    ``inner`` letterboxes (and may turn by quarter turns) the upright image; ``m`` (2x3, row-major) maps
    the original pixels (``orig_h``, ``orig_w``) to the upright image's, pixel centres at integers.
    """

    inner: Letterbox | RotatedView
    m: tuple[float, float, float, float, float, float]
    orig_h: int
    orig_w: int
    tilt_deg: float

    @property
    def k(self) -> int:  # the view's quarter turns (views of one scan are told apart by them)
        return getattr(self.inner, "k", 0)

    def _affine(self, p: np.ndarray, inverse: bool) -> np.ndarray:
        m = np.array(self.m, np.float64).reshape(2, 3)
        if inverse:
            m = cv2.invertAffineTransform(m)
        return np.asarray(p, np.float64) @ m[:, :2].T + m[:, 2]

    def to_input(self, pts_xy: np.ndarray) -> np.ndarray:
        return self.inner.to_input(self._affine(pts_xy, inverse=False))

    def to_original(self, pts_xy: np.ndarray) -> np.ndarray:
        return self._affine(self.inner.to_original(pts_xy), inverse=True)

    def map_to_original(self, arr: np.ndarray) -> np.ndarray:
        up = self.inner.map_to_original(arr)  # in the upright image's pixels
        m = np.array(self.m, np.float64).reshape(2, 3)
        # dst (original) pixel x samples the upright map at m @ x: m is the inverse map of this warp
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        return cv2.warpAffine(up, m, (self.orig_w, self.orig_h), flags=flags, borderValue=0)


def footprint(view: Letterbox | RotatedView | TiltedView) -> np.ndarray | None:
    """The original pixels a view's model input saw ((H, W) bool), or None when it saw the whole image.

    A capture's region or a turned scan's frame ends inside the image; there the map the model made is
    zero-padded (:meth:`Letterbox.map_to_original`), so a head cut by that end must be recognised by the
    footprint's border, as a head cut by the image's own border is by the image's."""
    inner = view
    while not isinstance(inner, Letterbox):
        inner = inner.inner
    if inner.full_h is None and not isinstance(view, TiltedView):
        return None  # the whole image (a quarter turn of it included)
    seen = view.map_to_original(np.ones((inner.in_h, inner.in_w), np.float32)) > 0.5
    return None if seen.all() else seen


def square_pixels(
    pixels: np.ndarray, spacing_mm: tuple[float, float] | None
) -> tuple[np.ndarray, tuple[float, ...]] | None:
    """A scan whose pixels are not square (``spacing_mm`` (x, y) differ by more than
    :data:`fetalbio.defaults.ANISOTROPY_TOL`) resampled so that they are: (the resampled image, the 2x3
    affine from ``pixels``' coordinates to its coordinates, as 6 floats, pixel centres at integers);
    None when the pixels are square or the spacing is unknown.

    The models learned heads in square pixels: a head squeezed 1.5:1 was measured with its BPD and OFD
    points swapped. The finer axis is kept (the coarser one is stretched), unless that would pass
    :data:`fetalbio.defaults.MAX_SQUARED_PIXELS`; everything maps back through the exact inverse."""
    from fetalbio import defaults

    if spacing_mm is None:
        return None
    sx, sy = spacing_mm
    if max(sx, sy) <= (1 + defaults.ANISOTROPY_TOL) * min(sx, sy):
        return None
    h, w = pixels.shape[:2]
    s = min(sx, sy)
    if (w * sx / s) * (h * sy / s) > defaults.MAX_SQUARED_PIXELS:
        s = max(sx, sy)  # shrink the finer axis instead
    w2, h2 = max(1, round(w * sx / s)), max(1, round(h * sy / s))
    fx, fy = w2 / w, h2 / h  # cv2.resize's own factors: x' = (x + 0.5) fx - 0.5
    out = cv2.resize(pixels, (w2, h2), interpolation=cv2.INTER_LINEAR if fx * fy >= 1 else cv2.INTER_AREA)
    return out, (fx, 0.0, 0.5 * fx - 0.5, 0.0, fy, 0.5 * fy - 0.5)


def compose_affine(outer: tuple[float, ...], inner: tuple[float, ...]) -> tuple[float, ...]:
    """The 2x3 affine ``outer`` after ``inner`` (both 6 floats, row-major), as 6 floats."""
    a = np.vstack([np.array(outer, np.float64).reshape(2, 3), [0, 0, 1]])
    b = np.vstack([np.array(inner, np.float64).reshape(2, 3), [0, 0, 1]])
    return tuple(float(v) for v in (a @ b)[:2].ravel())


def upright(
    pixels: np.ndarray, tilt: tuple[float, tuple[float, float], tuple[float, float]]
) -> tuple[np.ndarray, tuple[float, ...]]:
    """A turned scan squared back to the axes: ``tilt`` = (angle_deg, centre_xy_px, size_wh_px) of its
    rectangle (:func:`fetalbio.region.find_tilt`) -> (the upright image cropped to that rectangle, the
    2x3 affine from ``pixels``' coordinates to the upright image's, as 6 floats). Where the rectangle
    reaches outside ``pixels`` (a scan turned inside its own canvas), the canvas's corner fill."""
    angle, (cx, cy), (sw, sh) = tilt
    w, h = max(8, round(sw)), max(8, round(sh))
    m = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)  # turns the side at ``angle`` to the x axis
    m[0, 2] += (w - 1) / 2 - cx
    m[1, 2] += (h - 1) / 2 - cy
    # a frame inscribed in its canvas samples inside it (replicate only smooths the last pixel); one
    # turned inside its own canvas reaches outside it, where its cut corners get the canvas's flat fill
    inv = cv2.invertAffineTransform(m)
    ends = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], np.float64) @ inv.T
    ph, pw = pixels.shape[:2]
    if (ends < -1.0).any() or (ends[:, 0] > pw).any() or (ends[:, 1] > ph).any():
        fill = np.median(pixels[[0, 0, -1, -1], [0, -1, 0, -1]], axis=0)
        out = cv2.warpAffine(
            pixels,
            m,
            (w, h),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=np.atleast_1d(fill).tolist(),
        )
    else:
        out = cv2.warpAffine(pixels, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out, tuple(float(v) for v in m.ravel())
