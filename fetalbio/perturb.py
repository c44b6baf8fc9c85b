"""Perturbations that make a clean scan look the way users' scans look, with the pixel size kept true.

Each kind maps ``(pixels (H, W) uint8, pixel size mm, rng) -> (pixels, pixel size mm)``: geometry changes
(rotation, flips, rescaling, a capture's UI frame) keep the head's size in millimetres, so the truth of
the clean scan stays the truth. Used by the robustness benchmark (``tools/robustness.py``), the fused
calibration (a mix of clean and perturbed scans) and the tests.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from fetalbio.geometry import Ellipse, ellipse_to_landmarks

Perturbation = Callable[[np.ndarray, float, np.random.Generator], tuple[np.ndarray, float]]


def rotate(img: np.ndarray, deg: float) -> np.ndarray:
    """The whole image turned by ``deg`` (counter-clockwise), the canvas grown to hold it, black fill."""
    h, w = img.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), deg, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(np.ceil(h * sin + w * cos)), int(np.ceil(h * cos + w * sin))
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    return cv2.warpAffine(img, m, (nw, nh), flags=cv2.INTER_LINEAR, borderValue=0)


def capture(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The scan inside a full-screen capture: dark UI with text, a grey side bar and depth ticks."""
    h, w = img.shape
    H, W = int(h * rng.uniform(1.3, 1.6)), int(w * rng.uniform(1.4, 1.8))
    canvas = np.full((H, W), int(rng.integers(10, 30)), np.uint8)
    y0, x0 = int(rng.integers(H // 10, H - h - 5)), int(rng.integers(W // 8, W - w - 5))
    canvas[y0 : y0 + h, x0 : x0 + w] = img
    cv2.rectangle(canvas, (W - W // 12, 0), (W - 1, H - 1), 110, -1)  # the grey control bar
    font = cv2.FONT_HERSHEY_SIMPLEX
    for i, text in enumerate(("ACME US-9 C5-1", "MI 0.9 TIs 0.3", "Gn 52 DR 60", "FR 31Hz", "OB 2nd trim.")):
        cv2.putText(canvas, text, (8, 24 + 26 * i), font, 0.6, 220, 1, cv2.LINE_AA)
    for y in range(y0, y0 + h, max(8, h // 12)):  # depth ticks beside the image
        cv2.line(canvas, (x0 + w + 4, y), (x0 + w + 12, y), 200, 1)
    return canvas


def burn_in(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Calipers (crosses with a dotted line), a text label and a body marker burnt into the image."""
    out = img.copy()
    h, w = out.shape
    p = (int(rng.uniform(0.2, 0.4) * w), int(rng.uniform(0.3, 0.7) * h))
    q = (int(rng.uniform(0.6, 0.8) * w), int(rng.uniform(0.3, 0.7) * h))
    for c in (p, q):
        cv2.drawMarker(out, c, 255, cv2.MARKER_CROSS, 14, 2)
    n = 20
    for t in range(n):
        if t % 2 == 0:
            a = np.array(p) + (np.array(q) - np.array(p)) * t / n
            b = np.array(p) + (np.array(q) - np.array(p)) * (t + 1) / n
            cv2.line(out, tuple(int(v) for v in a), tuple(int(v) for v in b), 255, 1)
    cv2.putText(
        out, "BPD 48.2mm HC 171.4mm", (10, h - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 255, 1, cv2.LINE_AA
    )
    return out


def _rescale(img: np.ndarray, px: float, factor: float) -> tuple[np.ndarray, float]:
    h, w = img.shape
    size = (max(8, round(w * factor)), max(8, round(h * factor)))
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    out = cv2.resize(img, size, interpolation=interp)
    return out, px * w / size[0]  # the same head in fewer/more pixels: the pixel size follows


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)


def _speckle(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noise = rng.gamma(4.0, 1 / 4.0, img.shape)  # multiplicative, mean 1, SD 0.5
    return np.clip(img.astype(np.float32) * noise, 0, 255).astype(np.uint8)


def _gamma(img: np.ndarray, g: float) -> np.ndarray:
    return np.clip(255.0 * (img / 255.0) ** g, 0, 255).astype(np.uint8)


def _contrast(img: np.ndarray, gain: float, offset: float) -> np.ndarray:
    return np.clip(img.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)


KINDS: dict[str, Perturbation] = {
    "capture": lambda im, px, rng: (capture(im, rng), px),
    "rotate30": lambda im, px, rng: (rotate(im, 30.0), px),
    "rotate_any": lambda im, px, rng: (rotate(im, float(rng.uniform(0, 360))), px),
    "portrait": lambda im, px, rng: (rotate(im, 90.0), px),
    "flip_lr": lambda im, px, rng: (np.ascontiguousarray(im[:, ::-1]), px),
    "flip_ud": lambda im, px, rng: (np.ascontiguousarray(im[::-1]), px),
    "smaller": lambda im, px, rng: _rescale(im, px, 0.5),
    "larger": lambda im, px, rng: _rescale(im, px, 2.0),
    "gain_gamma": lambda im, px, rng: (_gamma(_contrast(im, 1.3, 10), 0.7), px),
    "low_contrast": lambda im, px, rng: (_contrast(im, 0.6, 30), px),
    "speckle": lambda im, px, rng: (_speckle(im, rng), px),
    "blur": lambda im, px, rng: (cv2.GaussianBlur(im, (0, 0), 2.0), px),
    "jpeg30": lambda im, px, rng: (_jpeg(im, 30), px),
    "burnt_in": lambda im, px, rng: (burn_in(im, rng), px),
}


def rotate_in_place(img: np.ndarray, deg: float) -> np.ndarray:
    """The whole image turned by ``deg`` inside its own canvas (corners cut off, black fill)."""
    h, w = img.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), deg, 1.0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)


def capture_light(img: np.ndarray) -> np.ndarray:
    """The scan framed by a thin white line inside a mid-grey screen with a light title bar and text."""
    h, w = img.shape
    H, W = h + 60 + max(20, h // 10), w + 30 + max(200, w // 2)  # the scan at (60, 30), text to its right
    canvas = np.full((H, W), 80, np.uint8)
    cv2.rectangle(canvas, (0, 0), (W - 1, 40), 150, -1)
    cv2.putText(canvas, "Patient ID 0000  18/03/2026  OB/GYN", (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.7, 20, 2)
    y0, x0 = 60, 30
    canvas[y0 : y0 + h, x0 : x0 + w] = img
    cv2.rectangle(canvas, (x0 - 2, y0 - 2), (x0 + w + 1, y0 + h + 1), 230, 1)
    for i, text in enumerate(("BPD  --.- mm", "HC   ---.- mm")):
        cv2.putText(canvas, text, (x0 + w + 20, 120 + 30 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 240, 1)
    return canvas


def capture_black(img: np.ndarray) -> np.ndarray:
    """The scan on a black screen (its own black margins merge with it), text and a grey-scale bar."""
    h, w = img.shape
    H, W = int(h * 1.4), int(w * 1.6)
    canvas = np.zeros((H, W), np.uint8)
    y0, x0 = (H - h) // 2 + 10, (W - w) // 3
    canvas[y0 : y0 + h, x0 : x0 + w] = img
    for i, text in enumerate(("GE Voluson", "AB 2-7 / OB", "Frq 5.0 Gn 4", "Tis 0.1")):
        cv2.putText(canvas, text, (6, 20 + 22 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.55, 255, 1, cv2.LINE_AA)
    for k in range(10):
        cv2.rectangle(canvas, (W - 80, 45 + 15 * k), (W - 30, 58 + 15 * k), 25 * k, -1)
    return canvas


# Styles never used to tune anything (no threshold, calibration or training choice saw them): a check
# that the robustness above is not an artefact of the perturbations it was measured on (docs/robustness.md).
STRESS_KINDS: dict[str, Perturbation] = {
    "capture_black": lambda im, px, rng: (capture_black(im), px),
    "capture_light": lambda im, px, rng: (capture_light(im), px),
    "rotate_in_place15": lambda im, px, rng: (rotate_in_place(im, 15.0), px),
    "rotate_in_place_any": lambda im, px, rng: (rotate_in_place(im, float(rng.uniform(-180, 180))), px),
    "noise_gauss20": lambda im, px, rng: (
        np.clip(im.astype(np.float32) + rng.normal(0, 20, im.shape), 0, 255).astype(np.uint8),
        px,
    ),
    "tiny": lambda im, px, rng: _rescale(im, px, 0.375),  # 800 px -> 300 px wide
    "huge": lambda im, px, rng: _rescale(im, px, 2.5),  # 800 px -> 2000 px wide
    "gamma13": lambda im, px, rng: (_gamma(im, 1.3), px),
    "gamma16": lambda im, px, rng: (_gamma(im, 1.6), px),
    "gain07": lambda im, px, rng: (_contrast(im, 0.7, 0), px),
    "jpeg15": lambda im, px, rng: (_jpeg(im, 15), px),
    # added with the impulse-noise step it showed the need for (so no longer untouched; docs)
    "salt_pepper5": lambda im, px, rng: (_salt_pepper(im, 0.05, rng), px),
}


def _salt_pepper(img: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """``amount`` of the pixels set to black or white, half each (scikit-image's ``s&p`` default 0.05)."""
    out = img.copy()
    u = rng.random(img.shape)
    out[u < amount / 2] = 0
    out[u > 1 - amount / 2] = 255
    return out


def colour_overlay(img: np.ndarray, e: Ellipse, rng: np.random.Generator) -> np.ndarray:
    """``(H, W, 3)`` RGB: the scan with a machine's measurement drawn on in colour, as a sonographer's
    export after measuring has it: a dotted green HC trace on the head's outline ``e`` (within 1.5 px),
    yellow caliper crosses at its axes' ends with a number, cyan measurement text."""
    rgb = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    cx, cy = e.cx_px + rng.uniform(-1.5, 1.5), e.cy_px + rng.uniform(-1.5, 1.5)
    axes = (round(e.semi_major_px + rng.uniform(-1.5, 1.5)), round(e.semi_minor_px + rng.uniform(-1.5, 1.5)))
    for start in range(0, 360, 8):  # dots: 4 degrees drawn, 4 left
        arc = cv2.ellipse2Poly((round(cx), round(cy)), axes, round(e.angle_deg), start, start + 4, 1)
        cv2.polylines(rgb, [arc], False, (0, 255, 0), 2)
    for k, (x, y) in enumerate(ellipse_to_landmarks(e).as_array()):
        cv2.drawMarker(rgb, (round(x), round(y)), (255, 255, 0), cv2.MARKER_CROSS, 16, 2)
        label = (round(x) + 8, round(y) - 8)
        cv2.putText(rgb, str(k + 1), label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1)
    h = img.shape[0]
    text = f"BPD {rng.uniform(40, 95):.1f}mm  HC {rng.uniform(150, 340):.1f}mm"
    cv2.putText(rgb, text, (10, h - 14), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 255), 2, cv2.LINE_AA)
    return rgb


def grey_trace(img: np.ndarray, e: Ellipse, rng: np.random.Generator) -> np.ndarray:
    """``(H, W)`` grey: the scan with a machine's measurement drawn in one grey (200-255), as a grey
    machine's capture has it: a solid HC trace 1 or 3 px wide (aliased, as machines draw) 0.92-1.08
    times the head's outline ``e`` (a sonographer's trace is not always on the skull), caliper crosses
    at its axes' ends and the measurement text."""
    out = img.copy()
    grey, k = int(rng.integers(200, 256)), rng.uniform(0.92, 1.08)
    box = ((e.cx_px, e.cy_px), (2 * k * e.semi_major_px, 2 * k * e.semi_minor_px), e.angle_deg)
    cv2.ellipse(out, box, grey, int(rng.integers(1, 3)), cv2.LINE_8)
    for x, y in ellipse_to_landmarks(e).as_array() * k + (1 - k) * np.array([e.cx_px, e.cy_px]):
        cv2.drawMarker(out, (round(x), round(y)), grey, cv2.MARKER_CROSS, 14, 1)
    text = f"BPD {rng.uniform(40, 95):.1f}mm  HC {rng.uniform(150, 340):.1f}mm"
    cv2.putText(out, text, (10, img.shape[0] - 14), cv2.FONT_HERSHEY_SIMPLEX, 0.6, grey, 1)
    return out


# Kinds drawn where the annotated head is; a colour one returns (H, W, 3) RGB, read as a file would be
# (fetalbio.colour.colour_to_grey). Each added with the step it showed the need for (docs).
ANNOTATED_KINDS = {"colour_overlay": colour_overlay, "grey_trace": grey_trace}


def perturb(
    kind: str, img: np.ndarray, pixel_size_mm: float, seed: int = 0, ellipse: Ellipse | None = None
) -> tuple[np.ndarray, float]:
    """Apply perturbation ``kind`` (one of :data:`KINDS`, :data:`STRESS_KINDS` or, given the annotated
    head's ``ellipse`` in the scan's pixels, :data:`ANNOTATED_KINDS`, alone, or ``clean``; ``a+b``
    applies ``a`` then ``b``, e.g. ``rotate30+flip_lr``); returns (pixels, pixel size mm): (H, W) grey,
    or (H, W, 3) RGB for ``colour_overlay``."""
    if "+" in kind:
        if any(part in ANNOTATED_KINDS for part in kind.split("+")):  # drawn in the clean scan's pixels
            raise ValueError(f"perturbation {kind!r}: a kind drawn on the annotated head goes alone")
        for part in kind.split("+"):
            img, pixel_size_mm = perturb(part, img, pixel_size_mm, seed)
        return img, pixel_size_mm
    if kind == "clean":
        return img, pixel_size_mm
    if kind in ANNOTATED_KINDS:
        if ellipse is None:
            raise ValueError(f"perturbation {kind!r} draws on the annotated head: pass its ellipse")
        return ANNOTATED_KINDS[kind](img, ellipse, np.random.default_rng(seed)), pixel_size_mm
    fn = KINDS.get(kind) or STRESS_KINDS.get(kind)
    if fn is None:
        names = ", ".join([*KINDS, *STRESS_KINDS, *ANNOTATED_KINDS])
        raise ValueError(f"unknown perturbation {kind!r}: choose clean or one of {names}")
    return fn(img, pixel_size_mm, np.random.default_rng(seed))
