"""Model helpers shared by the export tests: a hand-set "head detector" that finds bright ellipses
without training, scans for it to find, and saving a Keras model as a segmentation run.

TensorFlow/Keras are imported inside the functions, so importing this module stays light.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from fetalbio.synthetic import random_ellipse

IMAGE_SIZE = (64, 96)


def save_run(model, folder: Path) -> Path:
    """Save ``model`` as ``folder/best.keras`` with a segmentation config; return the path."""
    from fetalbio.train import TrainConfig, save_model

    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, folder / "best.keras", TrainConfig(method="segmentation", image_size=IMAGE_SIZE))
    return folder / "best.keras"


def head_detector():
    """Two hand-set conv layers: ~sigmoid(3 * local mean + centre), high inside a bright ellipse."""
    import keras

    inp = keras.Input((*IMAGE_SIZE, 1), name="image")
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    out = keras.layers.Conv2D(1, 1, activation="sigmoid", name="head")(h)
    model = keras.Model(inp, out, name="head_detector")
    k = np.zeros((3, 3, 1, 4), np.float32)
    k[..., 0, 0], k[..., 0, 1], k[..., 0, 3] = 1 / 9, -1 / 9, -1 / 9
    k[1, 1, 0, 2], k[1, 1, 0, 3] = 1.0, 1 + 1 / 9
    model.get_layer("c1").set_weights([k, np.zeros(4, np.float32)])
    w = np.array([3.0, -3.0, 1.0, 0.5], np.float32).reshape(1, 1, 4, 1)
    model.get_layer("head").set_weights([w, np.full(1, -1.4, np.float32)])  # 0.5 at mid-edge
    return model


def write_head_scans(folder: Path, n: int = 6, seed: int = 5, pixel_size_mm: float = 0.2) -> Path:
    """Bright filled ellipses on a noisy background, with pixel_size.csv and HC18-style outlines."""
    from fetalbio.geometry import draw_ellipse_mask
    from fetalbio.synthetic import draw_outline
    from fetalbio.writers import write_bytes_atomic, write_png_atomic

    rng = np.random.default_rng(seed)
    rows = ["filename,pixel size(mm)"]
    for i in range(n):
        e = random_ellipse((270, 400), rng)
        img = 60 + 120 * draw_ellipse_mask((270, 400), e).astype(np.float32) + rng.normal(0, 12, (270, 400))
        img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 1.5)
        name = f"{100 + i:03d}_HC.png"
        write_png_atomic(folder / name, np.clip(img, 0, 255).astype(np.uint8))
        write_png_atomic(folder / name.replace(".png", "_Annotation.png"), draw_outline((270, 400), e))
        rows.append(f"{name},{pixel_size_mm}")
    write_bytes_atomic(folder / "pixel_size.csv", ("\n".join(rows) + "\n").encode())
    return folder
