"""Check an annotated dataset (HC18 layout) and, optionally, a four-point landmark CSV, before training.

:func:`check_dataset` reads every scan once (:func:`fetalbio.io.read_scan`) and every annotation once
(:func:`fetalbio.datasets.load_truth`), on a few threads, and returns a :class:`DataCheckReport`: one
row per scan and a summary. :func:`print_report` shows it as rich tables, :func:`usable_landmarks`
keeps the landmark rows that passed, with their names corrected, for training from a landmark CSV.

Units: lengths ending in ``_mm`` are millimetres, ``_px`` pixels of the original scan, angles
``_deg`` degrees; shares and ``_rel`` values are fractions (0..1).

Image checks (``status``/``problems`` of a row)
-----------------------------------------------
Errors (the image cannot be used): ``missing annotation``, ``unreadable scan: <reason>``,
``unreadable annotation: <reason>``, ``empty annotation``, ``no ellipse in annotation: <reason>``,
``size mismatch: scan WxH, annotation WxH``.
Warnings: ``no CSV row`` (pixel size unknown), ``HC differs from CSV by X mm`` (the HC of the ellipse
fitted to the annotation outline, :func:`fetalbio.geometry.measure_ellipse` at the CSV pixel size,
differs from the CSV's HC by more than :data:`HC_TOLERANCE_MM`). On HC18's 798 training images the
fitted HC reproduces the CSV to 0.009 mm on average (max 0.07 mm), so 0.5 mm only catches real faults.
``outline X mm inside|outside the skull echo's outer edge (HC about Y mm short|long)``: the HC is
measured around the outer edge of the skull's echo; :func:`fetalbio.echo.echo_placement` finds that
edge along normals to the annotated ellipse (``echo_edge_mm``: its median distance, > 0 = outside the
outline) and a distance above :data:`ECHO_TOLERANCE_MM` is reported. On HC18's 798 training images
the median is 0.20 mm and the SD 0.38 mm (the HC's own spread from where the outline was drawn: about
2.4 mm); 14 outlines are more than 1 mm off the edge.
Folder-level counts: CSV rows without a scan, scans without a CSV row, and extra files (an
annotation without its scan, or any other file that is neither a scan nor an annotation; ``.csv``,
``.txt``, ``.json`` and ``.md`` files are metadata and not counted).

Landmark checks (``lm_status``/``lm_reasons``)
----------------------------------------------
The landmark CSV (role-challenge format, see :func:`fetalbio.datasets.read_landmarks_csv`) names
two pairs 'bpd' and 'ofd'. First the file as a whole: when the majority of its rows have the 'bpd'
pair LONGER than the 'ofd' pair, the names are swapped (``landmarks_names_swapped``) and every row is
read with the pairs exchanged. Then each row of an image in the folder is flagged ``suspect`` with
one short reason per failed check:

* ``bpd_longer``: BPD is still longer than OFD after the file-wide decision;
* ``not_perpendicular``: the angle between the two axes differs from 90 deg by more than
  :data:`LM_MAX_ANGLE_DEV_DEG` (20 deg);
* ``midpoints_apart``: the midpoints of the two pairs are more than :data:`LM_MAX_MIDPOINT_OFFSET`
  (15 %) of the OFD length apart;
* ``off_skull``: a point's radial distance to the annotation ellipse (along the ray from the
  ellipse centre) exceeds both :data:`LM_OFF_SKULL_REL` (15 %) of the semi-minor axis and
  :data:`LM_OFF_SKULL_MIN_MM` (3 mm) (only the relative limit when the pixel size is unknown; not
  checked without a readable annotation);
* ``duplicate``: the row's four points are identical to another image's row;
* ``zero_length``: a pair's two points coincide (no other geometry is checked then).

Rows for images without a scan in the folder (HC18 withholds some) are counted as
``landmarks_rows_without_scan``, not checked and not errors; scans without a landmark row get
``lm_status == 'missing'``. Each checked row also gets its point errors (mm, order-invariant within a
pair, :func:`fetalbio.geometry.pair_errors_mm`) against the annotation ellipse's own landmarks
(:func:`fetalbio.geometry.ellipse_to_landmarks`); these are reported, not used to flag.

How the landmark thresholds were chosen, and how well they work
----------------------------------------------------------------
On the role-challenge CSV (622 rows; 495 of its images are in ``hc18/training_set``) the good rows
have their points on the outer edge of the skull: 5-12 % of the semi-minor axis (1-3 mm) off the
annotation's centre-line ellipse, which is why :data:`LM_OFF_SKULL_REL` is 15 % and not less; their
midpoints are up to about 12 % of the OFD apart and their axes up to about 15 deg from perpendicular.
The distributions have a valley, not a gap, so the limits trade a few good rows for the faulty ones.

To measure this independently of the checks, a row is called *truly faulty* when its largest point
error against the annotation-derived landmarks, order-invariant within and between the pairs (so
independent of the swap decision), exceeds T mm. Measured with this module on the 495 rows
(``landmarks_names_swapped`` is True, 83.9 % of all 622 rows have the 'bpd' pair longer), 204 rows
(41.2 %) are flagged:

============  ===============  =========  ======  ===================
T (mm)        truly faulty      precision  recall  good rows flagged
============  ===============  =========  ======  ===================
8             199 (40.2 %)      0.853      0.874   30 of 296 (10 %)
10            181 (36.6 %)      0.828      0.934   35 of 314 (11 %)
15            141 (28.5 %)      0.681      0.986   65 of 354 (18 %)
============  ===============  =========  ======  ===================

An absolute limit in mm is hard on small heads; relative to the head, with *truly faulty* = largest
point error above 20 % of the annotation's BPD (212 rows, 42.8 %), precision is 0.922, recall 0.887,
and 16 of 283 good rows (6 %) are flagged.

Most 'good rows flagged' at T = 10 mm have errors of 5-10 mm with a visibly wrong point (off the
skull on a small head, where 10 mm is a large part of the head) or a tilted axis; five are the rows
of 198_HC/198_2HC and 392_HC/_2HC/_3HC, which carry identical points for different images and are
flagged ``duplicate`` by design. The missed rows (T = 10 mm) have both axes shifted or rotated
together by 10-17 mm while each check is just inside its limit.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fetalbio.datasets import (
    Sample,
    Truth,
    check_dataset_folder,
    find_pixel_csv,
    find_samples,
    load_truth,
    read_landmarks_csv,
)
from fetalbio.echo import OFF_EDGE_MM, echo_placement
from fetalbio.geometry import Ellipse, Landmarks, measure_ellipse, pair_errors_mm
from fetalbio.io import ScanError, read_pixel_csv, read_scan

__all__ = [
    "HC_TOLERANCE_MM",
    "LM_MAX_ANGLE_DEV_DEG",
    "LM_MAX_MIDPOINT_OFFSET",
    "LM_OFF_SKULL_MIN_MM",
    "LM_OFF_SKULL_REL",
    "LM_REASONS",
    "DataCheckReport",
    "check_dataset",
    "check_landmark_points",
    "names_swapped_share",
    "print_report",
    "report_table_rows",
    "usable_landmarks",
]

#: Largest accepted |HC of the fitted annotation ellipse - HC in the CSV| (mm).
HC_TOLERANCE_MM = 0.5
ECHO_TOLERANCE_MM = OFF_EDGE_MM  # an outline this far from the skull echo's outer edge: a warning
#: Largest accepted deviation (deg) of the angle between the BPD and OFD axes from 90 deg.
LM_MAX_ANGLE_DEV_DEG = 20.0
#: Largest accepted distance between the midpoints of the two pairs, as a fraction of the OFD length.
LM_MAX_MIDPOINT_OFFSET = 0.15
#: A point is off the skull when its radial distance to the annotation ellipse exceeds this fraction
#: of the ellipse's semi-minor axis ...
LM_OFF_SKULL_REL = 0.15
#: ... and also this many millimetres (when the pixel size is known).
LM_OFF_SKULL_MIN_MM = 3.0
#: The landmark reasons, in the order they are listed.
LM_REASONS = ("zero_length", "bpd_longer", "not_perpendicular", "midpoints_apart", "off_skull", "duplicate")

#: Coordinate columns of a landmark CSV, in the order of the returned arrays (bpd1, bpd2, ofd1, ofd2).
_METADATA_SUFFIXES = frozenset({".csv", ".txt", ".json", ".md"})
_LM_POINT_NAMES = ("bpd1", "bpd2", "ofd1", "ofd2")
_MAX_PROBLEM_ROWS = 15


@dataclass
class DataCheckReport:
    """What :func:`check_dataset` found.

    Attributes:
        rows: one dict per scan (sorted by file name); keys as described in :func:`check_dataset`.
        summary: counts and figures for the whole dataset (JSON-friendly).
        extra_files: names of files in the folder that are neither scans nor annotations of a scan.
        csv_rows_without_scan: file names in the pixel CSV without a scan in the folder.
        landmarks: every landmark-CSV row, names corrected when the file's names are swapped, each
            pair in canonical order (:meth:`fetalbio.geometry.Landmarks.from_array`): ``{file name:
            (4, 2) float64 px, order bpd1, bpd2, ofd1, ofd2}``. Empty without a landmark CSV.
        landmarks_rows_without_scan: landmark-CSV image names without a scan in the folder.
    """

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    extra_files: list[str] = field(default_factory=list)
    csv_rows_without_scan: list[str] = field(default_factory=list)
    landmarks: dict[str, np.ndarray] = field(default_factory=dict)
    landmarks_rows_without_scan: list[str] = field(default_factory=list)


# --- landmark CSV ------------------------------------------------------------------------------------


# --- landmark checks -----------------------------------------------------------------------------------


def _pair_lengths_px(pts: np.ndarray) -> tuple[float, float]:
    """Lengths (px) of the (bpd, ofd) pairs of a (4, 2) array bpd1, bpd2, ofd1, ofd2."""
    return float(np.hypot(*(pts[1] - pts[0]))), float(np.hypot(*(pts[3] - pts[2])))


def names_swapped_share(points: dict[str, np.ndarray]) -> tuple[bool, float]:
    """Decide whether a landmark file has its pair names swapped.

    Returns:
        ``(swapped, share)``: ``share`` is the fraction of rows (with pairs of different lengths)
        whose pair named 'bpd' is longer than the pair named 'ofd'; ``swapped`` is ``share > 0.5``.
    """
    votes = []
    for pts in points.values():
        bpd, ofd = _pair_lengths_px(pts)
        if bpd != ofd:
            votes.append(bpd > ofd)
    share = float(np.mean(votes)) if votes else 0.0
    return share > 0.5, share


def _swap_pairs(pts: np.ndarray) -> np.ndarray:
    return np.asarray(pts, dtype=np.float64)[[2, 3, 0, 1]]


def _radial_distances_px(e: Ellipse, pts: np.ndarray) -> np.ndarray:
    """Distance (px) from each point to ``e`` along the ray from the ellipse centre (absolute)."""
    th = math.radians(e.angle_deg)
    d = np.asarray(pts, dtype=np.float64).reshape(-1, 2) - np.array(e.centre)
    u = d[:, 0] * math.cos(th) + d[:, 1] * math.sin(th)
    v = -d[:, 0] * math.sin(th) + d[:, 1] * math.cos(th)
    r = np.hypot(u / e.semi_major_px, v / e.semi_minor_px)
    dist = np.hypot(u, v)
    # at the centre (r == 0) the ray is undefined: the distance is the semi-minor axis at least
    return np.where(r > 0, np.abs(dist * (1.0 - 1.0 / np.maximum(r, 1e-12))), e.semi_minor_px)


def check_landmark_points(
    pts: np.ndarray, ellipse: Ellipse | None = None, pixel_size_mm: float | None = None
) -> tuple[list[str], dict[str, float | None]]:
    """Geometric checks of one row of landmarks (names already corrected).

    Args:
        pts: (4, 2) px, order bpd1, bpd2, ofd1, ofd2 (order within a pair does not matter).
        ellipse: the annotation ellipse of the image, for the ``off_skull`` check (skipped if None).
        pixel_size_mm: isotropic pixel size; without it the off-skull limit is relative only.

    Returns:
        ``(reasons, metrics)``: the failed checks (a subset of :data:`LM_REASONS` without
        ``duplicate``, in that order) and ``lm_angle_dev_deg`` (deg), ``lm_midpoint_offset_rel``
        (fraction of the OFD length), ``lm_off_skull_max_rel`` (fraction of the semi-minor axis),
        ``lm_off_skull_max_mm`` (None where not computable).
    """
    p = np.asarray(pts, dtype=np.float64).reshape(4, 2)
    metrics: dict[str, float | None] = {
        "lm_angle_dev_deg": None,
        "lm_midpoint_offset_rel": None,
        "lm_off_skull_max_rel": None,
        "lm_off_skull_max_mm": None,
    }
    bpd_len, ofd_len = _pair_lengths_px(p)
    if bpd_len == 0 or ofd_len == 0:
        return ["zero_length"], metrics
    reasons: list[str] = []
    if bpd_len > ofd_len:
        reasons.append("bpd_longer")
    d_bpd, d_ofd = p[1] - p[0], p[3] - p[2]
    cos = min(1.0, abs(float(d_bpd @ d_ofd)) / (bpd_len * ofd_len))
    angle_dev = 90.0 - math.degrees(math.acos(cos))
    metrics["lm_angle_dev_deg"] = angle_dev
    if angle_dev > LM_MAX_ANGLE_DEV_DEG:
        reasons.append("not_perpendicular")
    mid_offset = float(np.hypot(*((p[0] + p[1]) / 2 - (p[2] + p[3]) / 2))) / max(bpd_len, ofd_len)
    metrics["lm_midpoint_offset_rel"] = mid_offset
    if mid_offset > LM_MAX_MIDPOINT_OFFSET:
        reasons.append("midpoints_apart")
    if ellipse is not None:
        worst_px = float(_radial_distances_px(ellipse, p).max())
        metrics["lm_off_skull_max_rel"] = worst_px / ellipse.semi_minor_px
        limit_px = LM_OFF_SKULL_REL * ellipse.semi_minor_px
        if pixel_size_mm is not None:
            metrics["lm_off_skull_max_mm"] = worst_px * pixel_size_mm
            limit_px = max(limit_px, LM_OFF_SKULL_MIN_MM / pixel_size_mm)
        if worst_px > limit_px:
            reasons.append("off_skull")
    return reasons, metrics


def _duplicates(points: dict[str, np.ndarray]) -> set[str]:
    """Names whose four points are identical to another image's row."""
    groups: dict[bytes, list[str]] = {}
    for name, pts in points.items():
        groups.setdefault(np.ascontiguousarray(pts, dtype=np.float64).tobytes(), []).append(name)
    return {n for names in groups.values() if len(names) > 1 for n in names}


def _check_landmarks(
    raw: dict[str, np.ndarray],
    rows: list[dict[str, Any]],
    truths: dict[str, Truth],
    landmarks_csv: Path,
) -> tuple[dict[str, Any], dict[str, np.ndarray], list[str]]:
    """Add the ``lm_*`` columns to ``rows``; return (summary part, corrected points, rows w/o scan)."""
    swapped, share = names_swapped_share(raw)
    fixed = {n: _swap_pairs(p) if swapped else np.asarray(p, dtype=np.float64) for n, p in raw.items()}
    dups = _duplicates(raw)
    scans = {r["file"] for r in rows}
    reason_counts: Counter[str] = Counter()
    err_ok: list[float] = []
    err_suspect: list[float] = []
    for row in rows:
        name = row["file"]
        row.update(
            {
                "lm_status": "missing",
                "lm_reasons": [],
                "lm_angle_dev_deg": None,
                "lm_midpoint_offset_rel": None,
                "lm_off_skull_max_rel": None,
                "lm_off_skull_max_mm": None,
                **{f"lm_err_{p}_mm": None for p in _LM_POINT_NAMES},
                "lm_err_max_mm": None,
            }
        )
        if name not in fixed:
            continue
        truth = truths.get(name)
        ps = row["pixel_size_mm"]
        reasons, metrics = check_landmark_points(fixed[name], truth.ellipse if truth else None, ps)
        if name in dups:
            reasons.append("duplicate")
        row.update({k: _r(v) for k, v in metrics.items()})
        row["lm_reasons"] = reasons
        row["lm_status"] = "suspect" if reasons else "ok"
        reason_counts.update(reasons)
        if truth is not None and ps is not None:
            errs = pair_errors_mm(fixed[name], truth.landmarks.as_array(), (ps, ps))
            for p, e in zip(_LM_POINT_NAMES, errs, strict=True):
                row[f"lm_err_{p}_mm"] = _r(e)
            row["lm_err_max_mm"] = _r(errs.max())
            (err_suspect if reasons else err_ok).append(float(errs.max()))
    checked = [r for r in rows if r["lm_status"] != "missing"]
    n_suspect = sum(r["lm_status"] == "suspect" for r in checked)
    without_scan = sorted(n for n in raw if n not in scans)
    summary = {
        "landmarks_csv": str(landmarks_csv),
        "landmarks_rows": len(raw),
        "landmarks_names_swapped": swapped,
        "landmarks_swapped_share": _r(share),
        "landmarks_rows_checked": len(checked),
        "landmarks_suspect_rows": n_suspect,
        "landmarks_suspect_share": _r(n_suspect / len(checked)) if checked else None,
        "landmarks_rows_without_scan": len(without_scan),
        "landmarks_scans_without_row": len(rows) - len(checked),
        "landmarks_duplicate_rows": len(dups),
        "landmarks_reason_counts": {k: reason_counts[k] for k in LM_REASONS if reason_counts[k]},
        "landmarks_err_max_mm_median_ok": _r(float(np.median(err_ok))) if err_ok else None,
        "landmarks_err_max_mm_median_suspect": _r(float(np.median(err_suspect))) if err_suspect else None,
    }
    canonical = {n: Landmarks.from_array(p).as_array() for n, p in fixed.items()}
    return summary, canonical, without_scan


# --- image checks ----------------------------------------------------------------------------------------


def _r(value: float | None, ndigits: int = 4) -> float | None:
    """Round for the report (None and non-finite values stay None)."""
    if value is None or not math.isfinite(float(value)):
        return None
    return round(float(value), ndigits)


def _check_image(sample: Sample, has_csv: bool) -> tuple[dict[str, Any], Truth | None]:
    """One row of the report for ``sample`` and its annotation truth (None when unusable)."""
    errors: list[str] = []
    warnings: list[str] = []
    row: dict[str, Any] = {
        "file": sample.name,
        "status": "ok",
        "problems": [],
        "width_px": None,
        "height_px": None,
        "pixel_size_mm": sample.pixel_size_mm,
        "hc_csv_mm": sample.hc_csv_mm,
        "hc_fit_mm": None,
        "hc_abs_diff_mm": None,
        "fit_residual_px": None,
        "echo_edge_mm": None,
    }
    scan_hw: tuple[int, int] | None = None
    scan = None
    try:
        scan = read_scan(sample.scan_path)
        scan_hw = (scan.height, scan.width)
        row["width_px"], row["height_px"] = scan.width, scan.height
    except ScanError as exc:
        errors.append(f"unreadable scan: {exc.reason}")

    truth: Truth | None = None
    if sample.annotation_path is None:
        errors.append("missing annotation")
    else:
        try:
            truth = load_truth(sample.annotation_path)
        except ScanError as exc:
            errors.append(
                "empty annotation"
                if "empty" in exc.reason and "no outline" in exc.reason
                else f"unreadable annotation: {exc.reason}"
            )
        except ValueError as exc:  # fewer than 5 outline pixels, degenerate fit
            errors.append(f"no ellipse in annotation: {exc}")
    if truth is not None:
        row["fit_residual_px"] = _r(truth.fit_residual_px)
        if scan_hw is not None and truth.shape_hw != scan_hw:
            (h, w), (ah, aw) = scan_hw, truth.shape_hw
            errors.append(f"size mismatch: scan {w}x{h}, annotation {aw}x{ah}")
        if sample.pixel_size_mm is not None:
            ps = sample.pixel_size_mm
            hc_fit = measure_ellipse(truth.ellipse, (ps, ps)).hc
            row["hc_fit_mm"] = _r(hc_fit)
            if sample.hc_csv_mm is not None:
                diff = abs(hc_fit - sample.hc_csv_mm)
                row["hc_abs_diff_mm"] = _r(diff)
                if diff > HC_TOLERANCE_MM:
                    warnings.append(f"HC differs from CSV by {diff:.2f} mm")
            if scan is not None and truth.shape_hw == scan_hw:
                warnings += _echo_check(row, scan.pixels, truth.ellipse, ps)
    if sample.pixel_size_mm is None:
        warnings.append("no CSV row" if has_csv else "no pixel-size CSV")
    row["problems"] = errors + warnings
    row["status"] = "error" if errors else "warning" if warnings else "ok"
    return row, truth


def _echo_check(row: dict[str, Any], pixels: np.ndarray, e: Ellipse, pixel_mm: float) -> list[str]:
    """Sets ``row['echo_edge_mm']``; a warning when the outline is off the skull echo's outer edge."""
    placement = echo_placement(pixels, e, pixel_mm)
    if placement is None:  # too few normals show a clear echo: nothing to say
        return []
    off = placement.edge_offset_mm
    row["echo_edge_mm"] = _r(off, 2)
    if abs(off) <= ECHO_TOLERANCE_MM:
        return []
    where, hc = ("inside", "short") if off > 0 else ("outside", "long")
    return [
        f"outline {abs(off):.2f} mm {where} the skull echo's outer edge "
        f"(HC about {abs(placement.hc_shift_mm):.1f} mm {hc})"
    ]


def _extra_files(folder: Path, samples: Sequence[Sample], used: set[Path]) -> list[str]:
    """Files that are neither a scan nor the annotation of a scan (metadata files excepted)."""
    known = {s.scan_path.name for s in samples}
    known |= {s.annotation_path.name for s in samples if s.annotation_path is not None}
    extra = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file() or p.name in known or p.resolve() in used:
            continue
        if p.suffix.lower() in _METADATA_SUFFIXES:
            continue
        extra.append(p.name)
    return extra


def check_dataset(
    folder: Path, pixel_csv: Path | None = None, landmarks_csv: Path | None = None
) -> DataCheckReport:
    """Check an annotated dataset folder and, optionally, a landmark CSV for the same images.

    Args:
        folder: ``NAME.png`` scans with ``NAME_Annotation.png`` outlines (HC18 layout).
        pixel_csv: ``filename,pixel size(mm)[,head circumference (mm)]``; found in or beside the
            folder when not given (:func:`fetalbio.datasets.find_pixel_csv`).
        landmarks_csv: a four-point CSV (:func:`fetalbio.datasets.read_landmarks_csv`) to check
            against the annotations.

    Returns:
        A :class:`DataCheckReport`. Each row has ``file``, ``status`` ('ok' | 'warning' | 'error'),
        ``problems`` (list of str), ``width_px``, ``height_px``, ``pixel_size_mm``, ``hc_csv_mm``,
        ``hc_fit_mm``, ``hc_abs_diff_mm``, ``fit_residual_px`` (RMS radial residual of the ellipse fit),
        ``echo_edge_mm`` (:func:`fetalbio.echo.echo_placement`; None without a pixel size or a clear echo)
        and, with a landmark CSV, ``lm_status`` ('ok' | 'suspect' | 'missing'), ``lm_reasons`` (list of
        :data:`LM_REASONS`), ``lm_angle_dev_deg``, ``lm_midpoint_offset_rel``, ``lm_off_skull_max_rel``,
        ``lm_off_skull_max_mm``, ``lm_err_{bpd1,bpd2,ofd1,ofd2,max}_mm``. ``status`` covers the image
        checks only; landmark findings are in ``lm_status``. Values that cannot be computed are None.

    Raises:
        ScanError: the folder does not exist, or the pixel-size or landmark CSV cannot be read.
    """
    t0 = time.perf_counter()
    folder = Path(folder)
    check_dataset_folder(folder)
    csv_path = Path(pixel_csv) if pixel_csv else find_pixel_csv(folder)
    spacing = read_pixel_csv(csv_path) if csv_path else {}  # raises a clear ScanError when bad
    raw_landmarks = read_landmarks_csv(landmarks_csv) if landmarks_csv is not None else None
    samples = find_samples(folder, csv_path)

    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:  # OpenCV decodes without holding the GIL
        results = list(pool.map(lambda s: _check_image(s, csv_path is not None), samples))
    rows = [r for r, _ in results]
    truths = {s.name: t for s, (_, t) in zip(samples, results, strict=True) if t is not None}

    scan_names = {s.name for s in samples}
    csv_without_scan = sorted(n for n in spacing if n not in scan_names)
    used = {p.resolve() for p in (csv_path, landmarks_csv) if p is not None}
    extra = _extra_files(folder, samples, used)
    diffs = [r["hc_abs_diff_mm"] for r in rows if r["hc_abs_diff_mm"] is not None]
    summary: dict[str, Any] = {
        "folder": str(folder),
        "pixel_csv": str(csv_path) if csv_path else None,
        "n_images": len(rows),
        "n_ok": sum(r["status"] == "ok" for r in rows),
        "n_errors": sum(r["status"] == "error" for r in rows),
        "n_warnings": sum(r["status"] == "warning" for r in rows),
        "n_missing_annotation": _count(rows, "missing annotation"),
        "n_unreadable": sum(any(p.startswith("unreadable") for p in r["problems"]) for r in rows),
        "n_empty_annotation": _count(rows, "empty annotation"),
        "n_size_mismatch": _count(rows, "size mismatch"),
        "n_csv_rows_without_scan": len(csv_without_scan),
        "n_scans_without_csv_row": sum(r["pixel_size_mm"] is None for r in rows),
        "n_extra_files": len(extra),
        "n_hc_compared": len(diffs),
        "n_hc_mismatch": _count(rows, "HC differs"),
        "hc_tolerance_mm": HC_TOLERANCE_MM,
        "hc_abs_diff_mm_mean": _r(float(np.mean(diffs))) if diffs else None,
        "hc_abs_diff_mm_max": _r(float(np.max(diffs))) if diffs else None,
        **_echo_summary(rows),
    }
    landmarks: dict[str, np.ndarray] = {}
    lm_without_scan: list[str] = []
    if raw_landmarks is not None:
        lm_summary, landmarks, lm_without_scan = _check_landmarks(raw_landmarks, rows, truths, landmarks_csv)
        summary.update(lm_summary)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return DataCheckReport(rows, summary, extra, csv_without_scan, landmarks, lm_without_scan)


def _echo_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Where the outlines lie on the skull echo, over the dataset (see the module docstring)."""
    edges = [r["echo_edge_mm"] for r in rows if r["echo_edge_mm"] is not None]
    return {
        "n_echo_checked": len(edges),
        "n_outline_off_echo": _count(rows, "outline "),
        "echo_tolerance_mm": ECHO_TOLERANCE_MM,
        "echo_edge_mm_median": _r(float(np.median(edges)), 3) if edges else None,
        "echo_edge_mm_sd": _r(float(np.std(edges)), 3) if edges else None,
    }


def _count(rows: list[dict[str, Any]], prefix: str) -> int:
    return sum(any(p.startswith(prefix) for p in r["problems"]) for r in rows)


def usable_landmarks(
    folder: Path, landmarks_csv: Path, pixel_csv: Path | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The landmark rows fit for training: checked, not suspect, and their image has no error.

    Returns:
        ``(points, info)``: ``points`` maps a scan file name to its (4, 2) float64 px landmarks in the
        order bpd1, bpd2, ofd1, ofd2, names corrected (unswapped) and each pair in canonical order
        (:meth:`fetalbio.geometry.Landmarks.from_array`); ``info`` has ``n_rows`` (CSV rows),
        ``n_used``, ``n_suspect``, ``n_without_scan``, ``n_image_error`` (ok rows left out because
        their scan or annotation has an error) and ``names_swapped``.
    """
    report = check_dataset(folder, pixel_csv=pixel_csv, landmarks_csv=landmarks_csv)
    points: dict[str, np.ndarray] = {}
    n_image_error = 0
    for row in report.rows:
        if row["lm_status"] != "ok":
            continue
        if row["status"] == "error":
            n_image_error += 1
            continue
        points[row["file"]] = report.landmarks[row["file"]].copy()
    s = report.summary
    info = {
        "n_rows": s["landmarks_rows"],
        "n_used": len(points),
        "n_suspect": s["landmarks_suspect_rows"],
        "n_without_scan": s["landmarks_rows_without_scan"],
        "n_image_error": n_image_error,
        "names_swapped": s["landmarks_names_swapped"],
    }
    return points, info


# --- output ------------------------------------------------------------------------------------------------


def report_table_rows(report: DataCheckReport) -> list[dict[str, Any]]:
    """The rows with list cells joined by ``'; '``, for :func:`fetalbio.writers.write_csv_atomic`."""
    return [{k: "; ".join(v) if isinstance(v, list) else v for k, v in r.items()} for r in report.rows]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
    return str(value)


def print_report(report: DataCheckReport, console: Any) -> None:
    """Print a compact summary table and up to 15 problem rows on a ``rich.console.Console``."""
    from rich.table import Table
    from rich.text import Text

    s = report.summary
    table = Table(title=f"data check: {s['folder']}", show_header=False, title_justify="left")
    table.add_column("figure", style="bold")
    table.add_column("value", justify="right")
    figures: list[tuple[str, Any]] = [
        ("images", s["n_images"]),
        ("ok / warnings / errors", f"{s['n_ok']} / {s['n_warnings']} / {s['n_errors']}"),
        ("missing annotation", s["n_missing_annotation"]),
        ("unreadable scan or annotation", s["n_unreadable"]),
        ("empty annotation", s["n_empty_annotation"]),
        ("scan/annotation size mismatch", s["n_size_mismatch"]),
        ("scans without CSV row", s["n_scans_without_csv_row"]),
        ("CSV rows without scan", s["n_csv_rows_without_scan"]),
        ("extra files", s["n_extra_files"]),
        (f"HC fit vs CSV, mean |diff| mm ({s['n_hc_compared']} compared)", s["hc_abs_diff_mm_mean"]),
        ("HC fit vs CSV, max |diff| mm", s["hc_abs_diff_mm_max"]),
        (f"HC differs by > {s['hc_tolerance_mm']} mm", s["n_hc_mismatch"]),
        (
            f"outline to echo's outer edge, median / SD mm ({s['n_echo_checked']})",
            f"{_fmt(s['echo_edge_mm_median'])} / {_fmt(s['echo_edge_mm_sd'])}",
        ),
        (f"outline > {s['echo_tolerance_mm']} mm off the echo's outer edge", s["n_outline_off_echo"]),
    ]
    if "landmarks_rows" in s:
        figures += [
            ("landmark rows", s["landmarks_rows"]),
            (
                "landmark names swapped ('bpd' longer)",
                f"{_fmt(s['landmarks_names_swapped'])} ({100 * s['landmarks_swapped_share']:.1f} %)",
            ),
            (
                "landmark rows checked / without scan",
                f"{s['landmarks_rows_checked']} / {s['landmarks_rows_without_scan']}",
            ),
            (
                "landmark rows suspect",
                f"{s['landmarks_suspect_rows']} ({100 * (s['landmarks_suspect_share'] or 0):.1f} %)",
            ),
            ("suspect reasons", s["landmarks_reason_counts"]),
            ("scans without landmark row", s["landmarks_scans_without_row"]),
            (
                "median max point error mm, ok / suspect",
                f"{_fmt(s['landmarks_err_max_mm_median_ok'])} / "
                f"{_fmt(s['landmarks_err_max_mm_median_suspect'])}",
            ),
        ]
    for label, value in figures:
        table.add_row(label, _fmt(value))
    console.print(table)

    problem_rows = [r for r in report.rows if r["status"] != "ok" or r.get("lm_status") == "suspect"]
    problem_rows.sort(key=lambda r: {"error": 0, "warning": 1}.get(r["status"], 2))
    if problem_rows:
        shown = problem_rows[:_MAX_PROBLEM_ROWS]
        title = f"problems ({len(shown)} of {len(problem_rows)} rows)"
        rows_table = Table(title=title, title_justify="left")
        rows_table.add_column("file")
        rows_table.add_column("status")
        rows_table.add_column("problems", overflow="fold")
        for r in shown:
            notes = list(r["problems"])
            if r.get("lm_status") == "suspect":
                notes.append("landmarks: " + ", ".join(r["lm_reasons"]))
            label = r["status"] if r["status"] != "ok" else "lm suspect"
            style = {"error": "red", "warning": "yellow"}.get(r["status"], "magenta")
            rows_table.add_row(r["file"], Text(label, style=style), "; ".join(notes))
        console.print(rows_table)
    for label, names in (
        ("CSV rows without scan", report.csv_rows_without_scan),
        ("extra files", report.extra_files),
    ):
        if names:
            more = f" (+{len(names) - 5} more)" if len(names) > 5 else ""
            console.print(f"{label}: {', '.join(names[:5])}{more}")
    console.print(f"checked in {s['seconds']:.1f} s")
