"""Pack an annotated dataset into one compact .npz for training away from the data (e.g. on a GPU host).

    python tools/pack_landmarks.py ../shared/data/hc18/training_set --split fetalbio/shipped/landmarks/splits.json \
        --size 256 384 --out .gpu/hc18_256x384.npz

What travels is the letterboxed scan as uint8 (the resized original grey levels, rounded; stored as
lossless WebP, 25 MB for HC18's 798 scans at 256x384 against 42 MB for zlib) with each scan's
own mean and SD, so the receiver rebuilds exactly the input of ``preprocess.prepare_input`` (normalising
commutes with the linear resize; the rounding changes an input by at most 0.5 / SD, ~0.01) and the
four landmarks in input pixels, plus what maps them back to the original pixels and millimetres.
The file is a training cache for a run of this project: never commit it (the data's licence and the
project's rule keep copies of the scans out of the repository).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fetalbio.datasets import find_samples, load_truth
from fetalbio.io import read_scan
from fetalbio.pack import pack_scan, save_pack


def main() -> None:
    """Pack the split's annotated scans of a dataset (format: :mod:`fetalbio.pack`)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--split", type=Path, required=True, help="a splits.json (train / val scan names)")
    ap.add_argument("--size", type=int, nargs=2, default=(256, 384), metavar=("H", "W"))
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    split = json.loads(args.split.read_text())
    which = {n: 0 for n in split["train"]} | {n: 1 for n in split["val"]}
    samples = [s for s in find_samples(args.dataset) if s.annotation_path is not None and s.name in which]
    size_hw = (args.size[0], args.size[1])
    scans, pts_orig = [], np.zeros((len(samples), 4, 2), np.float64)
    for i, s in enumerate(samples):
        assert s.annotation_path is not None
        pixels = read_scan(s.scan_path).pixels
        pts_orig[i] = load_truth(s.annotation_path).landmarks.as_array()
        scans.append(pack_scan(pixels, pts_orig[i], size_hw))
    save_pack(
        args.out,
        scans,
        names=[s.name for s in samples],
        is_val=[which[s.name] for s in samples],
        points_orig=pts_orig,
        spacing_mm=np.array([s.pixel_size_mm or np.nan for s in samples], np.float64),
    )
    print(f"{args.out}: {len(samples)} scans, {args.out.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
