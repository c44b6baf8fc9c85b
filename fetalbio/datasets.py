"""Annotated datasets (HC18 layout), ground truth from annotation outlines, and subject splits.

A dataset is a folder of scans ``NAME.png`` with annotations ``NAME_Annotation.png`` (HC18's ellipse
outlines) and a pixel-size CSV (``filename,pixel size(mm)[,head circumference (mm)]``) found in the
folder, beside it, or given explicitly.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np

from fetalbio.geometry import (
    Ellipse,
    EllipseFit,
    Landmarks,
    draw_ellipse_mask,
    ellipse_to_landmarks,
    fit_ellipse_mask,
    fit_ellipse_outline,
)
from fetalbio.io import (
    ScanError,
    annotation_path,
    check_comma_separated,
    is_annotation,
    read_csv_file,
    read_pixel_csv,
)

LANDMARK_COLUMNS = ("bpd_1_x", "bpd_1_y", "bpd_2_x", "bpd_2_y", "ofd_1_x", "ofd_1_y", "ofd_2_x", "ofd_2_y")
_NAME_COLUMNS = ("image_name", "filename")
_SUBJECT_RE = re.compile(r"^(\d{3})_")


def default_data_root() -> Path:
    """Where the shared data lives: ``$FETALBIO_DATA`` or ``../shared/data`` beside the checkout."""
    env = os.environ.get("FETALBIO_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def subject_of(name: str) -> str:
    """The subject of a scan name: HC18's leading 3-digit number (``010_2HC.png`` -> ``010``).

    Names without it are their own subject (the stem without a trailing ``_<n>HC``).
    """
    base = Path(name).name
    m = _SUBJECT_RE.match(base)
    if m:
        return m.group(1)
    return re.sub(r"_\d*HC$", "", Path(base).stem)


@dataclass(frozen=True)
class Sample:
    """One annotated scan of a dataset."""

    name: str  # file name of the scan, e.g. '010_2HC.png'
    subject: str
    scan_path: Path
    annotation_path: Path | None
    pixel_size_mm: float | None
    hc_csv_mm: float | None  # the dataset's reference HC, when its CSV has one


@dataclass(frozen=True)
class Truth:
    """Ground truth of one sample, in original pixels."""

    ellipse: Ellipse
    fit_residual_px: float
    landmarks: Landmarks
    shape_hw: tuple[int, int]

    def mask(self) -> np.ndarray:
        """Filled skull mask (H, W) uint8 0/1, rasterised from the fitted ellipse."""
        return draw_ellipse_mask(self.shape_hw, self.ellipse)


def find_pixel_csv(folder: Path) -> Path | None:
    """A folder's pixel-size CSV: any ``*pixel_size*.csv`` in it, else one beside it named for it (HC18
    keeps ``training_set_pixel_size_and_HC.csv`` beside ``training_set/``) or plainly ``pixel_size*.csv``.
    Beside it, another folder's table (``training_set_...`` beside ``test_set/``) is not this one's.

    Raises:
        ScanError: two tables match equally (``pixel_size.csv`` and ``old_pixel_size.csv``): which one
            holds this folder's sizes is the user's to say (``--pixel-csv``), never a guess by name.
    """
    from fetalbio.io import ScanError

    for where, patterns in (
        (folder, (f"{folder.name}_pixel_size*.csv", "*pixel_size*.csv")),
        (folder.parent, (f"{folder.name}_pixel_size*.csv", "pixel_size*.csv")),
    ):
        for pattern in patterns:
            hits = sorted(where.glob(pattern))
            if len(hits) > 1:
                names = ", ".join(h.name for h in hits)
                raise ScanError(folder, f"several pixel-size tables ({names}): name one with --pixel-csv")
            if hits:
                return hits[0]
    return None


def read_hc_column(path: Path) -> dict[str, float]:
    """``{file name: reference HC in mm}`` from an HC18 CSV's optional ``head circumference (mm)`` column.

    Empty when the column is absent; rows whose value is not a number are skipped.

    Raises:
        ScanError: missing/unreadable file, or a header separated by ``;`` or tabs instead of commas.
    """
    return read_csv_file(path, _parse_hc_column)


def _parse_hc_column(path: Path, fh: TextIO) -> dict[str, float]:
    """The HC column (mm) of an open CSV (read through :func:`fetalbio.io.read_csv_file`)."""
    reader = csv.DictReader(fh)
    check_comma_separated(path, reader.fieldnames, "filename,pixel size(mm),head circumference (mm)")
    cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
    col = next((v for k, v in cols.items() if k.startswith("head circumference")), None)
    if col is None:
        return {}
    out = {}
    for row in reader:
        try:
            out[Path(row[cols["filename"]].strip()).name] = float(row[col])
        except (ValueError, KeyError, TypeError):
            continue
    return out


def check_dataset_folder(folder: Path) -> None:
    """Raises ScanError (one line) unless ``folder`` is a folder: a file, or nothing, is said as such."""
    if not folder.is_dir():
        reason = (
            "is a file, expected a dataset folder" if folder.exists() else "dataset folder does not exist"
        )
        raise ScanError(folder, reason)


def find_samples(folder: str | Path, pixel_csv: str | Path | None = None) -> list[Sample]:
    """All scans of an annotated folder (sorted by name), with their annotation and spacing if known."""
    folder = Path(folder)
    check_dataset_folder(folder)
    csv_path = Path(pixel_csv) if pixel_csv else find_pixel_csv(folder)
    spacing = read_pixel_csv(csv_path) if csv_path else {}
    hcs = read_hc_column(csv_path) if csv_path else {}
    samples = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() != ".png" or is_annotation(p) or p.name.startswith("."):
            continue
        ann = annotation_path(p)
        samples.append(
            Sample(
                name=p.name,
                subject=subject_of(p.name),
                scan_path=p,
                annotation_path=ann if ann.exists() else None,
                pixel_size_mm=spacing.get(p.name),
                hc_csv_mm=hcs.get(p.name),
            )
        )
    return samples


def read_grey(path: Path) -> np.ndarray:
    """Read an 8-bit grey PNG (annotations, HC18 scans); ScanError when unreadable."""
    try:
        img = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_GRAYSCALE)
    except (OSError, cv2.error) as exc:
        raise ScanError(path, f"cannot read ({exc.__class__.__name__})") from None
    if img is None:
        raise ScanError(path, "not a readable image")
    return img


FILLED_MASK_DEPTH_PX = 8.0  # an annotation whose pixels lie deeper than this inside it is a filled mask


def load_truth(annotation_path: Path, scan_shape_hw: tuple[int, int] | None = None) -> Truth:
    """Fit the ellipse of an annotation outline; landmarks are its axes' end points. With
    ``scan_shape_hw``, an outline of another size than its scan (another image's, or resized) is refused:
    its ellipse would be in other pixels."""
    outline = read_grey(annotation_path)
    if scan_shape_hw is not None and tuple(outline.shape[:2]) != tuple(scan_shape_hw[:2]):
        (h, w), (sh, sw) = outline.shape[:2], scan_shape_hw[:2]
        raise ScanError(annotation_path, f"annotation is {w}x{h} px, its scan {sw}x{sh}: not its image")
    on = outline > 127
    if not on.any():
        raise ScanError(annotation_path, "annotation is empty (no outline pixels)")
    # a head drawn filled (a segmentation mask) rather than outlined (HC18: lines at most 2 px deep): its
    # ellipse is that of its boundary; fitted to every pixel it read 30 mm of HC short
    if cv2.distanceTransform(on.astype(np.uint8), cv2.DIST_L2, 5).max() > FILLED_MASK_DEPTH_PX:
        fit: EllipseFit = fit_ellipse_mask(on)
    else:
        fit = fit_ellipse_outline(on)
    return Truth(fit.ellipse, fit.residual_px, ellipse_to_landmarks(fit.ellipse), outline.shape[:2])


# --- splits ---


def make_split(samples: list[Sample], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """Split by subject (never by image), seeded: ``{'train': [names], 'val': [names], 'seed': ...}``."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError("val_fraction must be in [0, 1)")
    subjects = sorted({s.subject for s in samples})
    rng = random.Random(seed)
    rng.shuffle(subjects)
    n_val = round(len(subjects) * val_fraction)
    if val_fraction > 0 and n_val == 0 and len(subjects) > 1:
        n_val = 1
    val_subjects = set(subjects[:n_val])
    return {
        "seed": seed,
        "val_fraction": val_fraction,
        "train": [s.name for s in samples if s.subject not in val_subjects],
        "val": [s.name for s in samples if s.subject in val_subjects],
    }


def split_path(run_dir: Path) -> Path:
    return Path(run_dir) / "splits.json"


def load_or_make_split(run_dir: Path, samples: list[Sample], val_fraction: float, seed: int) -> dict:
    """The run folder's split (a resumed run trains on the same one), or a new one, not written yet: the
    caller saves it (:func:`save_split`) once nothing can refuse the start."""
    path = split_path(run_dir)
    if path.exists():
        return json.loads(path.read_text())
    return make_split(samples, val_fraction, seed)


def save_split(run_dir: Path, split: dict) -> None:
    """Write a run's split, unless it has one (a resumed run keeps its own)."""
    from fetalbio.writers import write_json_atomic

    if not split_path(run_dir).exists():
        write_json_atomic(split_path(run_dir), split)


# --- landmark CSVs (role-challenge format) ---


def read_landmarks_csv(path: str | Path) -> dict[str, np.ndarray]:
    """Read a four-point landmark CSV (role-challenge format).

    Columns: ``image_name`` (or ``filename``) and ``ofd_1_x, ofd_1_y, ofd_2_x, ofd_2_y, bpd_1_x,
    bpd_1_y, bpd_2_x, bpd_2_y`` in any order (header case and spaces ignored), pixels of the original
    scan (x right, y down). CRLF line ends, a UTF-8 BOM and blank lines are accepted.

    Returns:
        ``{image file name (basename): (4, 2) float64}`` in the order bpd1, bpd2, ofd1, ofd2 **as named
        in the file** (the names are not trusted or corrected here; see :func:`names_swapped_share`).

    Raises:
        ScanError: missing/unreadable file, a header separated by ``;`` or tabs instead of commas,
            missing column, empty image name, a value that is not a finite number, or an image listed
            twice with different points (the reason names the line and the image).
    """
    return read_csv_file(path, lambda p, fh: _parse_landmarks(p, csv.reader(fh)))


def _parse_landmarks(path: Path, reader: Any) -> dict[str, np.ndarray]:
    """``{name: (4, 2) px}`` from a ``csv.reader`` over a landmark CSV (see :func:`read_landmarks_csv`)."""
    header = next(reader, None)
    if header is None:
        raise ScanError(path, "empty CSV file")
    check_comma_separated(path, header, "image_name," + ",".join(LANDMARK_COLUMNS))
    columns = ["".join(h.split()).lower() for h in header]
    name_col = next((columns.index(c) for c in _NAME_COLUMNS if c in columns), None)
    if name_col is None:
        raise ScanError(path, "missing column 'image_name'")
    missing = [c for c in LANDMARK_COLUMNS if c not in columns]
    if missing:
        raise ScanError(path, f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    value_cols = [columns.index(c) for c in LANDMARK_COLUMNS]
    out: dict[str, np.ndarray] = {}
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(name_col, *value_cols):
            raise ScanError(path, f"row {line}: expected {len(header)} columns, got {len(row)}")
        name = row[name_col].strip().replace("\\", "/").rsplit("/", 1)[-1]
        if not name:
            raise ScanError(path, f"row {line}: empty image name")
        values = []
        for col_name, col in zip(LANDMARK_COLUMNS, value_cols, strict=True):
            raw = row[col].strip()
            try:
                v = float(raw)
            except ValueError:
                raise ScanError(path, f"row {line} ({name}): {col_name} {raw!r} is not a number") from None
            if not math.isfinite(v):
                raise ScanError(path, f"row {line} ({name}): {col_name} {raw!r} is not finite")
            values.append(v)
        pts = np.array(values, dtype=np.float64).reshape(4, 2)
        if name in out and not np.array_equal(out[name], pts):
            raise ScanError(path, f"row {line}: {name} listed twice with different points")
        out[name] = pts
    return out
