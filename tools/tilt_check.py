"""How well ``fetalbio.region.find_tilt`` finds turned frames on real scans (the figures in its docstring).

    python tools/tilt_check.py [DATA_ROOT]   # ~1 min: every HC18 scan as given, every 4th also turned

Every HC18 training and test scan as given must come out untilted; every 4th is also turned by a seeded
random angle (plain, then JPEG quality 30, inside a capture, speckled in turn) and the found angle is
compared with the true one (modulo a quarter turn). Prints false finds, misses and the angle error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from fetalbio.datasets import default_data_root
from fetalbio.perturb import perturb, rotate
from fetalbio.region import TILT_MIN_DEG, find_tilt

VARIANTS = ("plain", "jpeg30", "capture", "speckle")


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else default_data_root() / "hc18"
    files = sorted((root / "training_set").glob("*HC.png")) + sorted((root / "test_set").glob("*HC.png"))
    rng = np.random.default_rng(0)
    false, miss, turned, errs = 0, 0, 0, []
    for i, f in enumerate(files):
        im = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        if find_tilt(im) is not None:
            false += 1
            print(f"false find: {f.name}")
        if i % 4:
            continue
        deg, variant = float(rng.uniform(0, 360)), VARIANTS[i // 4 % 4]
        src = perturb("capture", im, 0.1)[0] if variant == "capture" else im
        px = rotate(src, deg)
        if variant in ("jpeg30", "speckle"):
            px = perturb(variant, px, 0.1)[0]
        true = (-deg + 45) % 90 - 45  # the frame's side direction, image axes (y down)
        found = find_tilt(px)
        if abs(true) < TILT_MIN_DEG:
            continue
        turned += 1
        if found is None:
            miss += 1
            print(f"missed: {f.name} ({variant}, {true:.1f} deg)")
        else:
            errs.append(abs((found[0] - true + 45) % 90 - 45))
    q = np.percentile(errs, [50, 90, 100])
    print(
        f"{len(files)} scans as given: {false} false finds; {turned} turned copies: {miss} missed, "
        f"angle error median {q[0]:.2f}, 90th percentile {q[1]:.2f}, max {q[2]:.2f} deg"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
