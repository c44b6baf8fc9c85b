"""Drawing helpers for the data-check tests: synthetic scans, HC18-style annotations and their CSVs.

Everything is drawn with OpenCV into small images (no real data): a scan is speckle with a bright
elliptical skull ring, an annotation is the ellipse's 1-px outline (drawn with sub-pixel precision,
so the fitted ellipse reproduces the known axes to a small fraction of a pixel).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from fetalbio.biometry import ramanujan_perimeter
from fetalbio.geometry import Ellipse, ellipse_to_landmarks

SHAPE_HW = (200, 260)
PIXEL_SIZE_MM = 0.15
_SHIFT = 4  # OpenCV sub-pixel bits: coordinates are multiplied by 2**4


def write_png(path: Path, img: np.ndarray) -> Path:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    buf.tofile(str(path))
    return path


def outline(shape_hw: tuple[int, int], e: Ellipse) -> np.ndarray:
    """HC18-style annotation: the 1-px outline of ``e``, 0/255 uint8."""
    img = np.zeros(shape_hw, np.uint8)
    pts = e.points(max(360, int(4 * math.pi * e.semi_major_px)))
    cv2.polylines(img, [np.round(pts * 2**_SHIFT).astype(np.int32)], True, 255, 1, cv2.LINE_8, _SHIFT)
    return img


def scan(shape_hw: tuple[int, int], e: Ellipse, seed: int) -> np.ndarray:
    """A speckled (H, W) uint8 scan with a bright skull ring on ``e``."""
    rng = np.random.default_rng(seed)
    img = np.clip(rng.rayleigh(40.0, shape_hw), 0, 255).astype(np.uint8)
    (cx, cy), (w, h), ang = e.to_cv2()
    centre = (round(cx * 2**_SHIFT), round(cy * 2**_SHIFT))
    axes = (round(w / 2 * 2**_SHIFT), round(h / 2 * 2**_SHIFT))
    cv2.ellipse(img, centre, axes, ang, 0, 360, 230, 4, cv2.LINE_AA, _SHIFT)
    return img


def ellipse(i: int, shape_hw: tuple[int, int] = SHAPE_HW) -> Ellipse:
    """A head-like ellipse for image number ``i`` (deterministic), well inside the scan."""
    rng = np.random.default_rng(100 + i)
    h, w = shape_hw
    a = rng.uniform(0.34, 0.42) * h
    b = a * rng.uniform(0.72, 0.85)
    cx, cy = w / 2 + rng.uniform(-6, 6), h / 2 + rng.uniform(-5, 5)
    return Ellipse.from_axes(cx, cy, a, b, rng.uniform(0, 180))


def hc_mm(e: Ellipse, pixel_size_mm: float = PIXEL_SIZE_MM) -> float:
    """The HC (mm) of ``e`` as HC18's CSV gives it (Ramanujan perimeter, 2 decimals)."""
    return round(ramanujan_perimeter(e.semi_major_px, e.semi_minor_px) * pixel_size_mm, 2)


def write_sample(folder: Path, name: str, e: Ellipse, seed: int, annotation: bool = True) -> None:
    """Write ``name`` (a scan) and, if asked, ``<stem>_Annotation.png`` for ellipse ``e``."""
    write_png(folder / name, scan(SHAPE_HW, e, seed))
    if annotation:
        write_png(folder / name.replace(".png", "_Annotation.png"), outline(SHAPE_HW, e))


def write_pixel_csv(path: Path, rows: list[tuple[str, float, float]]) -> Path:
    """HC18's pixel CSV (CRLF) from ``(file name, pixel size mm, HC mm)`` rows."""
    lines = ["filename,pixel size(mm),head circumference (mm)"]
    lines += [f"{n},{ps},{hc:.2f}" for n, ps, hc in rows]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return path


def true_points(e: Ellipse) -> np.ndarray:
    """(4, 2) end points of the axes of ``e``: bpd1, bpd2 (minor axis), ofd1, ofd2 (major axis)."""
    return ellipse_to_landmarks(e).as_array()


def point_on_ellipse(e: Ellipse, direction_deg: float) -> np.ndarray:
    """The point of ``e`` on the ray from its centre in ``direction_deg`` (image angle, +x towards +y)."""
    phi = math.radians(direction_deg - e.angle_deg)  # angle from the major axis
    r = 1.0 / math.hypot(math.cos(phi) / e.semi_major_px, math.sin(phi) / e.semi_minor_px)
    t = math.radians(direction_deg)
    return np.array([e.cx_px + r * math.cos(t), e.cy_px + r * math.sin(t)])


def write_landmarks_csv(path: Path, rows: dict[str, np.ndarray], file_bpd_is: dict[str, str]) -> Path:
    """A role-challenge CSV from anatomical points ``{name: (4, 2) bpd1, bpd2, ofd1, ofd2}``.

    ``file_bpd_is[name]`` is 'ofd' to write the OFD pair in the file's 'bpd' columns (the swapped
    names of the real file) or 'bpd' to write it correctly. Coordinates are rounded to integers.
    """
    lines = ["image_name,ofd_1_x,ofd_1_y,ofd_2_x,ofd_2_y,bpd_1_x,bpd_1_y,bpd_2_x,bpd_2_y"]
    for name, pts in rows.items():
        p = np.rint(np.asarray(pts, dtype=np.float64)).astype(int)
        bpd, ofd = (p[2:], p[:2]) if file_bpd_is[name] == "ofd" else (p[:2], p[2:])
        lines.append(",".join([name, *map(str, ofd.ravel()), *map(str, bpd.ravel())]))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_swapped_landmark_csv(dataset: Path, path: Path, shift: tuple[float, float] = (0, 70)) -> Path:
    """A role-challenge-style CSV from the annotations: pair names swapped, the first row corrupted."""
    from fetalbio.datasets import find_samples, load_truth

    lines = ["image_name,ofd_1_x,ofd_1_y,ofd_2_x,ofd_2_y,bpd_1_x,bpd_1_y,bpd_2_x,bpd_2_y"]
    for i, s in enumerate(find_samples(dataset)):
        p = load_truth(s.annotation_path).landmarks.as_array().round(2)
        if i == 0:
            p[2] += shift
        lines.append(",".join([s.name, *(str(v) for v in p.reshape(-1))]))
    path.write_text("\n".join(lines) + "\n")
    return path
