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

import cv2
import numpy as np

from fetalbio.datasets import find_samples, load_truth
from fetalbio.io import read_scan
from fetalbio.preprocess import Letterbox


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--split", type=Path, required=True, help="a splits.json (train / val scan names)")
    ap.add_argument("--size", type=int, nargs=2, default=(256, 384), metavar=("H", "W"))
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    split = json.loads(args.split.read_text())
    which = {n: 0 for n in split["train"]} | {n: 1 for n in split["val"]}
    samples = [s for s in find_samples(args.dataset) if s.annotation_path is not None and s.name in which]
    h, w = args.size
    images = np.zeros((len(samples), h, w), np.uint8)
    mean_sd = np.zeros((len(samples), 2), np.float32)
    lbs = np.zeros((len(samples), 8), np.int32)
    pts_in = np.zeros((len(samples), 4, 2), np.float64)
    pts_orig = np.zeros((len(samples), 4, 2), np.float64)
    spacing = np.zeros(len(samples), np.float64)
    for i, s in enumerate(samples):
        px = read_scan(s.scan_path).pixels.astype(np.float32)
        lb = Letterbox.fit(px.shape[:2], (h, w))
        mean, sd = float(px.mean()), float(px.std())
        # the pad holds the scan's mean: it normalises to 0, as prepare_input's padding does
        raw = lb.image_to_input(px, fill=mean)
        images[i] = np.clip(np.rint(raw), 0, 255).astype(np.uint8)
        mean_sd[i] = (mean, sd if sd > 1e-6 else 1.0)
        lbs[i] = [lb.orig_h, lb.orig_w, lb.in_h, lb.in_w, lb.new_h, lb.new_w, lb.pad_y, lb.pad_x]
        lm = load_truth(s.annotation_path).landmarks.as_array()
        pts_orig[i] = lm
        pts_in[i] = lb.to_input(lm)
        spacing[i] = s.pixel_size_mm or np.nan
    args.out.parent.mkdir(parents=True, exist_ok=True)
    blobs = [cv2.imencode(".webp", im, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].ravel() for im in images]
    np.savez(
        args.out,
        names=np.array([s.name for s in samples]),
        is_val=np.array([which[s.name] for s in samples], np.uint8),
        webp=np.concatenate(blobs),
        webp_offsets=np.cumsum([0] + [len(b) for b in blobs]),
        mean_sd=mean_sd,
        letterbox=lbs,
        points_in=pts_in,
        points_orig=pts_orig,
        spacing_mm=spacing,
    )
    print(f"{args.out}: {len(samples)} scans, {args.out.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
