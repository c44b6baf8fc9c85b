"""Synthetic head scans with known answers: a skull-like bright elliptical ring on speckle.

Used by the README's first run (the project ships no HC18 images), the tests and the benchmark.
The ring's centre line is the ellipse, so a perfect measurement returns its axes exactly.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from fetalbio.geometry import Ellipse, draw_ellipse_mask
from fetalbio.writers import write_bytes_atomic, write_png_atomic


def draw_scan(
    shape_hw: tuple[int, int], e: Ellipse, rng: np.random.Generator, wall_px: float | None = None
) -> np.ndarray:
    """An (H, W) uint8 ultrasound-like scan of a head whose skull centre line is ``e``."""
    h, w = shape_hw
    wall = wall_px or max(2.0, 0.06 * e.semi_minor_px)
    outer = Ellipse(e.cx_px, e.cy_px, e.semi_major_px + wall / 2, e.semi_minor_px + wall / 2, e.angle_deg)
    inner = Ellipse(e.cx_px, e.cy_px, e.semi_major_px - wall / 2, e.semi_minor_px - wall / 2, e.angle_deg)
    ring = draw_ellipse_mask(shape_hw, outer).astype(np.float32) - draw_ellipse_mask(shape_hw, inner)
    brain = draw_ellipse_mask(shape_hw, inner).astype(np.float32)
    # tissue background fading with depth, a darker brain, a bright skull, then speckle
    depth = np.linspace(0.55, 0.3, h, dtype=np.float32)[:, None]
    base = 0.35 * depth * np.ones((h, w), np.float32) + 0.12 * brain * 0.5 + 0.75 * ring
    base = cv2.GaussianBlur(base, (0, 0), 1.2)
    speckle = rng.rayleigh(0.8, (h, w)).astype(np.float32)
    speckle = cv2.GaussianBlur(speckle, (0, 0), 0.8)
    img = np.clip(base * speckle * 255.0, 0, 255)
    return img.astype(np.uint8)


def random_ellipse(shape_hw: tuple[int, int], rng: np.random.Generator) -> Ellipse:
    """A head-like ellipse well inside the scan (cephalic index 70-90)."""
    h, w = shape_hw
    a = rng.uniform(0.25, 0.4) * min(h, w)
    b = a * rng.uniform(0.7, 0.9)
    cx = w / 2 + rng.uniform(-0.1, 0.1) * w
    cy = h / 2 + rng.uniform(-0.08, 0.08) * h
    return Ellipse.from_axes(cx, cy, a, b, rng.uniform(-30, 30))


def show_on_screen(picture: np.ndarray, fill: int = 20, at: tuple[int, int] = (150, 90)) -> np.ndarray:
    """``picture`` (H, W) uint8 shown on a viewer's screen with its top-left pixel at ``at`` (x, y): a
    flat ``fill`` background with text, depth ticks beside the picture and a grey side bar, as a screen
    capture has them (a capture with a known region: ``(at[1], at[0], H, W)``)."""
    ph, pw = picture.shape
    screen = np.full((ph + 2 * at[1], pw + at[0] + 160), fill, np.uint8)
    screen[at[1] : at[1] + ph, at[0] : at[0] + pw] = picture
    cv2.putText(screen, "ACME US-9  Gn 52", (8, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 220, 1, cv2.LINE_AA)
    cv2.rectangle(screen, (screen.shape[1] - 40, 0), (screen.shape[1] - 1, screen.shape[0] - 1), 110, -1)
    for y in range(at[1], at[1] + ph, 40):
        cv2.line(screen, (at[0] + pw + 4, y), (at[0] + pw + 12, y), 200, 1)
    return screen


def draw_outline(shape_hw: tuple[int, int], e: Ellipse) -> np.ndarray:
    """An HC18-style annotation: the ellipse's outline, 0/255 uint8, about 2 px thick."""
    img = np.zeros(shape_hw, np.uint8)
    pts = e.points(max(360, int(4 * math.pi * e.semi_major_px)))
    cv2.polylines(img, [np.round(pts * 16).astype(np.int32)], True, 255, 1, cv2.LINE_8, 4)
    return img


def write_samples(
    folder: str | Path,
    n: int = 4,
    seed: int = 7,
    shape_hw: tuple[int, int] = (540, 800),
    pixel_size_mm: float = 0.15,
    annotations: bool = False,
) -> list[Path]:
    """Write ``n`` synthetic scans (+ ``pixel_size.csv``, ``truth.csv``, optional annotations)."""
    from fetalbio.biometry import ramanujan_perimeter

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths, csv_rows, truth_rows = (
        [],
        ["filename,pixel size(mm),head circumference (mm)"],
        ["filename,hc_mm,bpd_mm,ofd_mm"],
    )
    for i in range(n):
        e = random_ellipse(shape_hw, rng)
        name = f"{100 + i:03d}_HC.png"
        write_png_atomic(folder / name, draw_scan(shape_hw, e, rng))
        if annotations:
            write_png_atomic(folder / name.replace(".png", "_Annotation.png"), draw_outline(shape_hw, e))
        hc = ramanujan_perimeter(e.semi_major_px, e.semi_minor_px) * pixel_size_mm
        csv_rows.append(f"{name},{pixel_size_mm},{hc:.2f}")
        truth_rows.append(
            f"{name},{hc:.2f},{2 * e.semi_minor_px * pixel_size_mm:.2f},"
            f"{2 * e.semi_major_px * pixel_size_mm:.2f}"
        )
        paths.append(folder / name)
    write_bytes_atomic(folder / "pixel_size.csv", ("\n".join(csv_rows) + "\n").encode())
    write_bytes_atomic(folder / "truth.csv", ("\n".join(truth_rows) + "\n").encode())
    return paths
