"""How well ``fetalbio.region.find_tilt`` and ``find_tilt_in_place`` find turned frames on real scans
(the figures in their docstrings).

    python tools/tilt_check.py [DATA_ROOT]   # ~1 min: every HC18 scan as given, every 4th also turned

Every HC18 training and test scan as given, and darkened (gamma 1.6), must come out untilted by both
finders; every 4th is also
turned by a seeded random angle on a grown canvas (plain, then JPEG quality 30, inside a capture,
speckled in turn) and, with another seeded angle, inside its own canvas (plain, JPEG 30, speckled in
turn), and the found angle is compared with the true one (modulo a quarter turn). Every 4th is also
shown in a capture (a dark or a light screen), upright and darkened (``find_tilt_in_capture`` must not
find a turn) and turned by a seeded angle. Prints false finds, misses and the angle errors of each.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from fetalbio.datasets import default_data_root
from fetalbio.perturb import perturb, rotate, rotate_in_place
from fetalbio.region import (
    IN_PLACE_MIN_DEG,
    TILT_MIN_DEG,
    find_any_tilt,
    find_region,
    find_tilt,
    find_tilt_in_capture,
    find_tilt_in_place,
)

VARIANTS = ("plain", "jpeg30", "capture", "speckle")


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else default_data_root() / "hc18"
    files = sorted((root / "training_set").glob("*HC.png")) + sorted((root / "test_set").glob("*HC.png"))
    rng = np.random.default_rng(0)
    false, miss, turned, errs, in_place = 0, 0, 0, [], []
    for i, f in enumerate(files):
        im = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        dark = perturb("gamma16", im, 0.1)[0]  # a dark fan's edges are the in-place finder's hardest case
        for name, px in ((f.name, im), (f"{f.name} (gamma 1.6)", dark)):
            if find_tilt(px) is not None or find_tilt_in_place(px) is not None:
                false += 1
                print(f"false find: {name}")
        if i % 4:
            continue
        deg, variant = float(rng.uniform(0, 360)), VARIANTS[i // 4 % 4]
        src = perturb("capture", im, 0.1)[0] if variant == "capture" else im
        px = rotate(src, deg)
        if variant in ("jpeg30", "speckle"):
            px = perturb(variant, px, 0.1)[0]
        true = (-deg + 45) % 90 - 45  # the frame's side direction, image axes (y down)
        found = find_tilt(px)
        in_place.append(_in_place(im, float(rng.uniform(-180, 180)), VARIANTS[i // 4 % 4], f.name))
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
        f"{len(files)} scans as given and darkened (gamma 1.6): {false} false finds; {turned} turned copies: {miss} missed, "
        f"angle error median {q[0]:.2f}, 90th percentile {q[1]:.2f}, max {q[2]:.2f} deg"
    )
    tried = [e for e in in_place if e is not False]
    found_err = [e for e in tried if e is not None]
    q = np.percentile(found_err, [50, 90, 100])
    print(
        f"{len(tried)} turned in place by {IN_PLACE_MIN_DEG:g} degrees or more: {len(tried) - len(found_err)} "
        f"missed (left as they are), angle error median {q[0]:.2f}, 90th percentile {q[1]:.2f}, "
        f"max {q[2]:.2f} deg"
    )
    _captures(files[::4])
    return 0


def _captures(files: list[Path]) -> None:
    """``find_tilt_in_capture`` on these scans shown upright in a capture (dark and light screens: must
    not be found) and shown turned by a seeded angle (found, with the angle error)."""
    rng = np.random.default_rng(1)
    false, shown, errs = 0, 0, []
    for i, f in enumerate(files):
        im = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        screen = ("capture", "capture_light")[i % 2]
        for name, kind in ((f.name, screen), (f"{f.name} (gamma 1.6)", f"gamma16+{screen}")):
            px = perturb(kind, im, 0.1, seed=i)[0]
            region = find_region(px)
            if region is not None and find_tilt_in_capture(px, region) is not None:
                false += 1
                print(f"false find in a capture: {name} ({screen})")
        deg = float(rng.uniform(0, 360))
        true = (-deg + 45) % 90 - 45
        px = perturb(screen, rotate(im, deg), 0.1, seed=i)[0]
        region = find_region(px)
        if abs(true) < TILT_MIN_DEG or region is None or find_any_tilt(px) is not None:
            continue
        shown += 1
        found = find_tilt_in_capture(px, region)
        if found is not None:
            errs.append(abs((found[0] - true + 45) % 90 - 45))
    q = np.percentile(errs, [50, 90, 100]) if errs else [np.nan] * 3
    print(
        f"{len(files)} scans in a capture, upright and darkened: {false} false finds; {shown} shown turned: "
        f"{len(errs)} found (the rest measured as they are), angle error median {q[0]:.2f}, 90th "
        f"percentile {q[1]:.2f}, max {q[2]:.2f} deg"
    )


def _in_place(im: np.ndarray, deg: float, variant: str, name: str) -> float | None | bool:
    """The angle error (deg) of the frame found in ``im`` turned inside its own canvas; None: missed;
    False: turned by less than the finder looks for."""
    true = (-deg + 45) % 90 - 45
    if abs(true) < IN_PLACE_MIN_DEG:
        return False
    px = rotate_in_place(im, deg)
    if variant in ("jpeg30", "speckle"):
        px = perturb(variant, px, 0.1)[0]
    found = find_tilt(px) or find_tilt_in_place(px)
    if found is None:
        print(f"missed in place: {name} ({variant}, {true:.1f} deg)")
        return None
    return abs((found[0] - true + 45) % 90 - 45)


if __name__ == "__main__":
    sys.exit(main())
