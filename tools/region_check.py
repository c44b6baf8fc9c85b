"""How often ``fetalbio.region.find_region`` crops a scan, and how often its crop cuts the head.

    python tools/region_check.py [--piece-frac F] [DATA_ROOT]   # ~1 min: the 798 HC18 training scans

Each annotated HC18 training scan is tried as given, with Poisson noise, speckle, a darker grey map
(gamma 1.6; low contrast then gamma 1.3) and pasted into a dark capture with text. For each variant it
prints how many scans were cropped, how many crops leave part of the annotated head outside (a crop
that cuts the head makes a gross error: the models never see the rest of it) and how many crops are
the pasted scan exactly (a capture's picture, ``find_picture``). A scan as given should rarely be
cropped and a capture always, to its picture; no crop should cut a head.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from fetalbio import region
from fetalbio.datasets import default_data_root, load_truth
from fetalbio.perturb import perturb


def _variants(im: np.ndarray, i: int) -> dict[str, tuple[np.ndarray, int, int]]:
    """name -> (pixels, y offset, x offset of the scan in them)."""
    rng = np.random.default_rng(i)
    h, w = im.shape
    cap = np.full((h + 300, w + 400), 18, np.uint8)
    cap[150 : 150 + h, 200 : 200 + w] = im
    cv2.putText(cap, "ACME US-9 C5-1  Gn 52", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.7, 220, 2)
    return {
        "as given": (im, 0, 0),
        "poisson": (np.clip(rng.poisson(im.astype(np.float64)), 0, 255).astype(np.uint8), 0, 0),
        "speckle": (perturb("speckle", im, 0.1, seed=i)[0], 0, 0),
        "gamma16": (perturb("gamma16", im, 0.1)[0], 0, 0),
        "low_contrast+gamma13": (perturb("low_contrast+gamma13", im, 0.1)[0], 0, 0),
        "capture": (cap, 150, 200),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", type=Path, default=default_data_root() / "hc18")
    ap.add_argument("--piece-frac", type=float, default=region.PIECE_FRAC)
    args = ap.parse_args()
    region.PIECE_FRAC = args.piece_frac
    files = sorted((args.root / "training_set").glob("*HC.png"))
    counts: dict[str, list[int]] = {}
    for i, f in enumerate(files):
        im = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        pts = load_truth(f.with_name(f.name.replace(".png", "_Annotation.png"))).ellipse.points(72)
        # the head's box within the scan (2 annotated heads reach past its edge: no crop can hold that)
        (x0, y0), (x1, y1) = np.maximum(pts.min(axis=0), 0), np.minimum(pts.max(axis=0), im.shape[::-1])
        for name, (px, oy, ox) in _variants(im, i).items():
            c = counts.setdefault(name, [0, 0, 0])
            found = region.find_region(px)
            if found is None:
                continue
            ry, rx, rh, rw = found
            c[0] += 1
            c[1] += not (rx <= x0 + ox and ry <= y0 + oy and rx + rw >= x1 + ox and ry + rh >= y1 + oy)
            c[2] += (ox or oy) and found == (oy, ox, *im.shape)
    print(f"PIECE_FRAC {region.PIECE_FRAC}, {len(files)} HC18 training scans")
    print("| variant | cropped | crops that cut the head | the pasted scan exactly |\n|---|---:|---:|---:|")
    for name, (cropped, cut, exact) in counts.items():
        print(f"| {name} | {cropped} | {cut} | {exact if name == 'capture' else '-'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
