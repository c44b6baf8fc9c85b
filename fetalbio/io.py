"""Reading ultrasound scans (PNG/JPEG/BMP/TIFF/DICOM) and their pixel spacing.

Everything that can go wrong with an input file is raised as :class:`ScanError`, whose ``str`` is a
single line ``'<path>: <reason>'`` so that a batch run can report bad files and carry on.

Conventions
-----------
* Pixels are returned as a 2-D grey array of shape ``(H, W)`` (rows, columns), dtype ``uint8`` or
  ``uint16``.  Colour is converted to grey (ITU-R BT.601 luma, as ``cv2.cvtColor`` does), with a
  machine's coloured overlay (calipers, traces, text) filled in from around it (:mod:`fetalbio.colour`).
* Pixel spacing is ``(x, y)`` in millimetres per pixel: ``x`` along columns (width), ``y`` along rows
  (height).  DICOM stores ``PixelSpacing`` the other way round (``[row, column]`` = ``[y, x]``).
* Spacing is never guessed: when no source gives it, ``Scan.spacing_mm`` is ``None``.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import math
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar

import cv2
import numpy as np

from fetalbio.colour import colour_to_grey
from fetalbio.defaults import MAX_PIXEL_SIZE_MM, MAX_SCAN_PIXELS, MAX_SCAN_SIDE_PX, MIN_PIXEL_SIZE_MM

T = TypeVar("T")

__all__ = [
    "SCAN_SUFFIXES",
    "SPACING_SOURCES",
    "DICOM_SUFFIXES",
    "Scan",
    "ScanError",
    "annotation_path",
    "check_comma_separated",
    "find_scans",
    "is_annotation",
    "read_csv_file",
    "read_pixel_csv",
    "read_scan",
]

SCAN_SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".dcm", ".dicom"}  # WebP: browsers' saves
)
DICOM_SUFFIXES: frozenset[str] = frozenset({".dcm", ".dicom"})
SPACING_SOURCES: frozenset[str] = frozenset(
    {"cli", "csv", "dicom-region", "dicom-pixelspacing", "dicom-imagerpixelspacing", "none"}
)

# HC18 ground-truth ellipses sit next to the scans: NAME.png -> NAME_Annotation.png
_ANNOTATION_TAG = "_Annotation"
_ANNOTATION_SUFFIX = (_ANNOTATION_TAG + ".png").lower()
_DICOM_MAGIC_OFFSET = 128
_DICOM_MAGIC = b"DICM"
_CM_UNITS = 3  # DICOM PhysicalUnits{X,Y}Direction code for centimetres
_TISSUE_2D = 1  # DICOM RegionSpatialFormat code for a 2-D (B-mode) tissue region
_MAX_REASON_CHARS = 300


class ScanError(Exception):
    """A scan (or pixel-size CSV) that cannot be used.

    ``str(err)`` is one line: ``'<path>: <reason>'``.  The reason is flattened to a single line so
    that messages from third-party libraries cannot break a batch report.
    """

    path: Path
    reason: str

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = _one_line(reason)
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self) -> tuple[type[ScanError], tuple[Path, str]]:
        # Default pickling would call __init__(message) and fail; batch runs may use process pools.
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True, eq=False)  # eq=False: ndarray fields cannot be compared/hashed field-wise
class Scan:
    """One grey ultrasound frame and its pixel spacing.

    Attributes:
        pixels: ``(H, W)`` grey image, ``uint8`` or ``uint16`` with the stored values (16-bit data is
            not rescaled to 8 bits; colour is converted to grey; MONOCHROME1 DICOM is inverted so that
            bright = strong echo).
        spacing_mm: ``(x, y)`` millimetres per pixel (x along columns, y along rows), or ``None``
            when no source gave it.
        source: the file that was read.
        spacing_source: where ``spacing_mm`` came from, one of :data:`SPACING_SOURCES`.
        frame: frame index read from a multi-frame DICOM (0 otherwise).
    """

    pixels: np.ndarray
    spacing_mm: tuple[float, float] | None
    source: Path
    spacing_source: str
    frame: int = 0

    def __post_init__(self) -> None:
        if self.pixels.ndim != 2 or self.pixels.dtype not in (np.uint8, np.uint16):
            raise ValueError(
                f"pixels must be a 2-D uint8/uint16 array, got {self.pixels.dtype} {self.pixels.shape}"
            )
        if self.spacing_source not in SPACING_SOURCES:
            raise ValueError(f"unknown spacing_source {self.spacing_source!r}")
        if (self.spacing_mm is None) != (self.spacing_source == "none"):
            raise ValueError("spacing_mm is None exactly when spacing_source == 'none'")

    @property
    def height(self) -> int:
        """Number of rows (pixels)."""
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        """Number of columns (pixels)."""
        return int(self.pixels.shape[1])


# --------------------------------------------------------------------------------------------------
# Pixel-size CSV (HC18)
# --------------------------------------------------------------------------------------------------


def _norm_header(name: str) -> str:
    # HC18 writes 'pixel size(mm)'; tolerate case and spacing variants such as 'Pixel size (mm)'.
    return "".join(name.split()).lower()


def read_pixel_csv(path: Path) -> dict[str, float]:
    """Read an HC18-style pixel-size table.

    The header must contain ``filename`` and ``pixel size(mm)`` (case and spaces ignored); further
    columns (e.g. ``head circumference (mm)``) are ignored.  CRLF line ends and a UTF-8 BOM are
    accepted; blank lines are skipped.

    Args:
        path: the CSV file.

    Returns:
        ``{file name (basename): isotropic pixel size in mm}``.

    Raises:
        ScanError: missing/unreadable file, missing column, or a row whose file name is empty or
            whose pixel size is not a finite positive number (the reason names the row's line).
    """
    return read_csv_file(path, _parse_pixel_csv)


def read_csv_file(path: str | Path, parse: Callable[[Path, TextIO], T]) -> T:
    """Open a CSV file and hand it to ``parse(path, fh)``; every failure becomes a one-line ScanError."""
    path = Path(path)
    if not path.exists():
        raise ScanError(path, "does not exist")
    if path.is_dir():
        raise ScanError(path, "is a directory, expected a CSV file")
    try:
        # newline='' lets csv handle CRLF itself; utf-8-sig drops a BOM written by spreadsheet apps.
        with path.open(newline="", encoding="utf-8-sig") as fh:
            return parse(path, fh)
    except ScanError:
        raise
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ScanError(path, f"cannot read CSV: {_describe(exc)}") from exc


def check_comma_separated(path: Path, header: Sequence[str] | None, expected: str) -> None:
    """ScanError when a CSV header is one cell holding ``;`` or a tab: the file uses another delimiter.

    ``expected`` names the columns for the message, e.g. ``'filename,pixel size(mm)'``; an empty or
    ordinary header passes (missing columns are the parser's to report).
    """
    if not header or len(header) != 1:
        return
    sep = next((s for s in (";", "\t") if s in header[0]), None)
    if sep:
        name = "semicolon" if sep == ";" else "tab"
        raise ScanError(path, f"the CSV is {name}-separated; expected commas ({expected})")


def _parse_pixel_csv(path: Path, lines: Iterable[str]) -> dict[str, float]:
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise ScanError(path, "empty CSV file")
    columns = [_norm_header(h) for h in header]
    check_comma_separated(path, header, "filename,pixel size(mm)")
    try:
        name_col = columns.index("filename")
    except ValueError:
        raise ScanError(path, "missing column 'filename'") from None
    try:
        size_col = columns.index("pixelsize(mm)")
    except ValueError:
        raise ScanError(path, "missing column 'pixel size(mm)'") from None

    sizes: dict[str, float] = {}
    for row in reader:
        line = reader.line_num  # physical line in the file, header = 1
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(name_col, size_col):
            raise ScanError(path, f"row {line}: expected at least {max(name_col, size_col) + 1} columns")
        raw_name, raw_size = row[name_col].strip(), row[size_col].strip()
        # Tables made on Windows may carry folders with backslashes; only the basename is the key.
        name = raw_name.replace("\\", "/").rsplit("/", 1)[-1]
        if not name:
            raise ScanError(path, f"row {line}: empty filename")
        try:
            size = float(raw_size)
        except ValueError:
            raise ScanError(path, f"row {line} ({name}): pixel size {raw_size!r} is not a number") from None
        if not math.isfinite(size) or size <= 0:
            raise ScanError(path, f"row {line} ({name}): pixel size {raw_size!r} must be positive")
        if name in sizes and sizes[name] != size:
            raise ScanError(path, f"row {line}: {name} listed twice with different pixel sizes")
        sizes[name] = size
    return sizes


# --------------------------------------------------------------------------------------------------
# read_scan
# --------------------------------------------------------------------------------------------------


def read_scan(
    path: str | Path,
    *,
    pixel_size_mm: float | tuple[float, float] | None = None,
    pixel_csv: dict[str, float] | None = None,
    frame: int = 0,
    min_size_px: int = 32,
) -> Scan:
    """Read one scan as a grey ``(H, W)`` image with its pixel spacing.

    Formats: PNG, JPEG, BMP, TIFF (via OpenCV; 8/16-bit, grey/RGB/RGBA) and DICOM (by suffix
    ``.dcm``/``.dicom`` or by the ``DICM`` magic at byte 128, whatever the suffix).  8/16-bit data
    keeps its stored values (signed data is shifted by half its range); wider integers that fit in
    0..65535 become ``uint16`` unchanged; other wide integers and float images are rescaled linearly
    from their min..max to ``0..65535`` ``uint16``; NaN/inf pixels are rejected.  No DICOM
    rescale/VOI windowing is applied.

    Pixel spacing ``(x, y)`` in mm, first source that applies:

    1. ``pixel_size_mm`` (a float is isotropic) -> ``'cli'``
    2. ``pixel_csv[basename]`` -> ``'csv'``
    3. DICOM ultrasound region calibrated in cm (PhysicalDeltaX/Y * 10) -> ``'dicom-region'``
    4. DICOM PixelSpacing ``[y, x]`` -> ``'dicom-pixelspacing'``
    5. DICOM ImagerPixelSpacing ``[y, x]`` -> ``'dicom-imagerpixelspacing'``
    6. otherwise ``None`` / ``'none'``

    Args:
        path: the scan file.
        pixel_size_mm: spacing from the command line (mm per pixel); float or ``(x, y)``.
        pixel_csv: table from :func:`read_pixel_csv`, keyed by file basename.
        frame: 0-based frame of a multi-frame DICOM; other formats have only frame 0.
        min_size_px: smallest accepted width and height in pixels.

    Raises:
        ScanError: missing/empty/undecodable file, DICOM without pixel data, frame out of range,
            image smaller than ``min_size_px``, blank image, or non-finite/non-positive spacing.
    """
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        raise ScanError(path, "is a directory, not an image")
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(_DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC))
    except OSError as exc:
        raise ScanError(path, f"cannot read file: {_describe(exc)}") from exc
    if size == 0:
        raise ScanError(path, "empty file (0 bytes)")
    if isinstance(frame, bool) or not isinstance(frame, int | np.integer) or frame < 0:
        raise ScanError(path, f"frame must be a non-negative integer, got {frame!r}")
    frame = int(frame)

    dataset: Any = None
    is_dicom = path.suffix.lower() in DICOM_SUFFIXES or head[_DICOM_MAGIC_OFFSET:] == _DICOM_MAGIC
    if is_dicom:
        grey, dataset = _read_dicom(path, frame)
    else:
        _check_raster_size(path, head + _read_more(path, _HEAD_BYTES))
        grey = _read_raster(path) if frame == 0 else _read_raster_page(path, frame)

    height, width = grey.shape
    if height < min_size_px or width < min_size_px:
        raise ScanError(path, f"too small: {width}x{height} px (minimum {min_size_px} px)")
    first = grey.flat[0]
    if np.all(grey == first):
        value = f"{first:g}" if np.issubdtype(grey.dtype, np.floating) else str(int(first))
        raise ScanError(path, f"blank image (all pixels = {value})")
    pixels = np.ascontiguousarray(_to_uint(path, grey))

    spacing, spacing_source = _resolve_spacing(path, pixel_size_mm, pixel_csv, dataset, frame)
    return Scan(pixels=pixels, spacing_mm=spacing, source=path, spacing_source=spacing_source, frame=frame)


# ---- rasters (OpenCV) ----------------------------------------------------------------------------


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")  # little- and big-endian
_HEAD_BYTES = 64 * 1024  # what header parsing reads of a file

_CV2_QUIET_LOCK = threading.Lock()
_cv2_quiet = {"depth": 0, "previous": None}  # readers run in threads: the level is saved by the first in


@contextlib.contextmanager
def _quiet_cv2() -> Iterator[None]:
    # OpenCV prints libpng/libjpeg complaints to stderr; the failure is reported as a ScanError instead.
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    if log is None or not hasattr(log, "getLogLevel"):
        yield
        return
    with _CV2_QUIET_LOCK:
        if _cv2_quiet["depth"] == 0:
            _cv2_quiet["previous"] = log.getLogLevel()
            log.setLogLevel(log.LOG_LEVEL_SILENT)
        _cv2_quiet["depth"] += 1
    try:
        yield
    finally:
        with _CV2_QUIET_LOCK:  # ... and restored by the last out (not by whichever thread ends first)
            _cv2_quiet["depth"] -= 1
            if _cv2_quiet["depth"] == 0:
                log.setLogLevel(_cv2_quiet["previous"])


def _read_raster(path: Path) -> np.ndarray:
    """Decode a PNG/JPEG/BMP/TIFF to a grey ``(H, W)`` array (dtype as decoded)."""
    try:
        # np.fromfile + imdecode instead of imread: imread cannot open non-ASCII paths on Windows.
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ScanError(path, f"cannot read file: {_describe(exc)}") from exc
    if buf[:8].tobytes() == _PNG_MAGIC and buf.tobytes().rfind(b"IEND") < 0:
        # said here: libpng would print its own complaint straight to the terminal
        raise ScanError(path, "cannot decode: a PNG without its end chunk (cut short)")
    # JPEG (by its content: a JPEG saved under another name too): decoded in colour so that OpenCV applies
    # the EXIF orientation (camera-style exports); PNG and WebP orientation: _exif_orientation below
    flags = cv2.IMREAD_COLOR if buf[:2].tobytes() == b"\xff\xd8" else cv2.IMREAD_UNCHANGED
    try:
        with _quiet_cv2():
            img = cv2.imdecode(buf, flags)
    except Exception as exc:  # cv2.error and friends: never let a library traceback escape
        if "CV_IO_MAX_IMAGE_PIXELS" in str(exc):
            raise ScanError(
                path, f"image too large to decode (over {MAX_SCAN_PIXELS / 1e6:.0f} megapixels)"
            ) from exc
        raise ScanError(path, f"not an image or cannot decode: {_describe(exc)}") from exc
    if img is None or img.size == 0:
        raise ScanError(path, "not an image or cannot decode")
    try:
        grey = _white_is_zero(_colour_to_grey(img, bgr=True), buf)
    except Exception as exc:
        raise ScanError(path, f"unsupported image layout {img.dtype} {img.shape}: {_describe(exc)}") from exc
    return _oriented(grey, _exif_orientation(buf[:_HEAD_BYTES].tobytes()))


# EXIF orientation (TIFF/EXIF tag 274) -> the stored image turned as a viewer shows it
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.T,
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].T,
    8: lambda a: np.rot90(a, 1),
}


def _oriented(grey: np.ndarray, orientation: int) -> np.ndarray:
    turn = _ORIENT.get(orientation)
    return grey if turn is None else np.ascontiguousarray(turn(grey))


def _exif_orientation(head: bytes) -> int:
    """The EXIF orientation (1-8; 1 = as stored) of a PNG (``eXIf`` chunk) or WebP (``EXIF`` chunk): a
    browser turns such a file by it, OpenCV does not. JPEG and TIFF are turned by OpenCV itself."""
    exif = b""
    if head[:8] == _PNG_MAGIC:
        i = 8
        while i + 8 <= len(head) and not exif:
            n, kind = int.from_bytes(head[i : i + 4], "big"), head[i + 4 : i + 8]
            if kind in (b"IDAT", b"IEND"):
                break
            exif = head[i + 8 : i + 8 + n] if kind == b"eXIf" else b""
            i += 12 + n
    elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        i = 12
        while i + 8 <= len(head) and not exif:
            n, kind = int.from_bytes(head[i + 4 : i + 8], "little"), head[i : i + 4]
            exif = head[i + 8 : i + 8 + n] if kind == b"EXIF" else b""
            i += 8 + n + (n & 1)
    exif = exif[6:] if exif.startswith(b"Exif\x00\x00") else exif
    if exif[:4] not in _TIFF_MAGIC:
        return 1
    return _tiff_tags(exif, None, (274,)).get(274, 1)


def _white_is_zero(grey: np.ndarray, buf: np.ndarray) -> np.ndarray:
    """A grey TIFF whose PhotometricInterpretation is 0 (WhiteIsZero) inverted, so that bright = strong
    echo as in every other file: OpenCV inverts an 8-bit one itself, but returns the stored values of a
    16-bit or float one (measured with OpenCV 5.0; tests/test_io.py holds both)."""
    if grey.ndim != 2 or grey.dtype == np.uint8 or buf[:4].tobytes() not in _TIFF_MAGIC:
        return grey
    if _tiff_tags(buf.tobytes(), None).get(262) != 0:  # the whole file: the directory often comes last
        return grey
    if np.issubdtype(grey.dtype, np.integer):
        return np.iinfo(grey.dtype).max - grey
    return float(grey.max()) + float(grey.min()) - grey


def _read_raster_page(path: Path, page: int) -> np.ndarray:
    """Page ``page`` (0-based) of a multi-page TIFF, an animated PNG or an animated WebP, grey (H, W)."""
    buf = np.fromfile(path, dtype=np.uint8)
    head = buf[:_HEAD_BYTES].tobytes()
    try:
        with _quiet_cv2():
            if buf[:4].tobytes() in _TIFF_MAGIC:
                ok, pages = cv2.imdecodemulti(buf, cv2.IMREAD_UNCHANGED, None, (page, page + 1))
            else:  # APNG, animated WebP: the frame as shown (composed over the ones before it)
                ok, anim = cv2.imdecodeanimation(buf, page, 1)
                pages = anim.frames if ok else []
    except Exception as exc:  # noqa: BLE001 - cv2.error and friends
        raise ScanError(path, f"cannot decode frame {page}: {_describe(exc)}") from exc
    if not ok or not len(pages) or pages[0] is None or pages[0].size == 0:
        n = _raster_pages(path, head)  # counted only when it is needed for the message
        if page >= n:
            raise ScanError(path, f"frame {page} out of range (image has {n} frame{'s' if n > 1 else ''})")
        raise ScanError(path, f"cannot decode frame {page}")
    first = raster_size(head, path)
    if first is not None and pages[0].shape[1::-1] != tuple(first):  # a TIFF's thumbnail or preview page
        raise ScanError(
            path,
            f"frame {page} is not a frame of the cine ({pages[0].shape[1]}x{pages[0].shape[0]} px, "
            f"the first is {first[0]}x{first[1]})",
        )
    try:
        grey = _white_is_zero(_colour_to_grey(pages[0], bgr=True), buf)
    except Exception as exc:
        raise ScanError(path, f"unsupported image layout in frame {page}: {_describe(exc)}") from exc
    return _oriented(grey, _exif_orientation(head))


def _raster_pages(path: Path, head: bytes) -> int:
    """Pages of a TIFF, frames of an animated PNG (acTL chunk) or WebP (ANIM chunk); 1 for the rest."""
    tiff = head[:4] in _TIFF_MAGIC
    apng = head[:8] == _PNG_MAGIC and b"acTL" in head.split(b"IDAT", 1)[0]
    webp = head[:4] == b"RIFF" and head[8:12] == b"WEBP" and b"ANIM" in head[12:4096]
    if not (tiff or apng or webp):
        return 1
    try:
        with _quiet_cv2():
            return max(1, int(cv2.imcount(str(path))))
    except Exception:  # noqa: BLE001 - a damaged file: reading page 0 says why
        return 1


def _colour_to_grey(img: np.ndarray, *, bgr: bool) -> np.ndarray:
    """Return ``(H, W)`` grey from ``(H, W)``, ``(H, W, 1|2|3|4)``; channel order BGR(A) or RGB(A)."""
    if img.ndim == 2:
        return img
    if img.ndim != 3:
        raise ValueError(f"expected 2 or 3 dimensions, got {img.ndim}")
    channels = img.shape[2]
    if channels in (1, 2):  # grey, grey + alpha: alpha is transparency, not echo
        return img[:, :, 0]
    if channels not in (3, 4):
        raise ValueError(f"{channels} channels")
    return colour_to_grey(img, bgr=bgr)[0]  # a machine's coloured calipers and traces taken out


def _to_uint(path: Path, grey: np.ndarray) -> np.ndarray:
    """Return ``grey`` as ``uint8``/``uint16``.

    8/16-bit unsigned data is kept as is; signed 8/16-bit is shifted by half its range (order kept);
    wider integers are kept when they fit in 0..65535, otherwise they and floats are rescaled
    linearly from min..max to 0..65535.
    """
    if grey.dtype in (np.uint8, np.uint16):
        return grey
    if grey.dtype == np.bool_:
        return grey.astype(np.uint8)
    if grey.dtype == np.int8:
        return (grey.astype(np.int16) + 128).astype(np.uint8)
    if grey.dtype == np.int16:
        return (grey.astype(np.int32) + 32768).astype(np.uint16)
    if np.issubdtype(grey.dtype, np.integer):
        lo, hi = int(grey.min()), int(grey.max())
        if lo >= 0 and hi <= np.iinfo(np.uint16).max:
            return grey.astype(np.uint16)
    elif np.issubdtype(grey.dtype, np.floating):
        if not np.all(np.isfinite(grey)):
            raise ScanError(path, "float image with NaN or infinite pixels")
    else:
        raise ScanError(path, f"unsupported pixel type {grey.dtype}")
    work = grey.astype(np.float64)
    lo_f, hi_f = float(work.min()), float(work.max())
    scale = 65535.0 / (hi_f - lo_f) if hi_f > lo_f else 0.0
    return np.rint((work - lo_f) * scale).astype(np.uint16)


# ---- DICOM ---------------------------------------------------------------------------------------


def _read_dicom(path: Path, frame: int) -> tuple[np.ndarray, Any]:
    """Decode one DICOM frame to grey ``(H, W)``; returns ``(grey, dataset)``."""
    import pydicom  # imported lazily: only DICOM inputs pay for it
    from pydicom.errors import InvalidDicomError

    forced = False
    try:
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:
            # Old files may lack the 128-byte preamble; only reached for .dcm/.dicom suffixes.
            forced = True
            ds = pydicom.dcmread(path, force=True)
    except Exception as exc:
        raise ScanError(path, f"not a readable DICOM file: {_describe(exc)}") from exc

    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        if forced:
            raise ScanError(path, "not a readable DICOM file")
        if _truncated(path, ds):
            raise ScanError(path, "DICOM file is truncated (it ends before its pixel data)")
        if len(ds) == 0:  # pydicom read the file meta header and nothing after it: compressed data cut short
            raise ScanError(path, "DICOM file is damaged or cut short (nothing readable after its header)")
        kind = str(ds.get("Modality", "")) or "non-image"
        raise ScanError(path, f"DICOM without pixel data (a {kind} object, not an image)")
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows * cols > MAX_SCAN_PIXELS or max(rows, cols) > MAX_SCAN_SIDE_PX:
        raise ScanError(
            path,
            f"image too large: {cols}x{rows} px (limit {MAX_SCAN_SIDE_PX} px a side, "
            f"{MAX_SCAN_PIXELS / 1e6:.0f} megapixels)",
        )

    try:
        n_frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        n_frames = 1
    if frame >= n_frames:
        plural = "frame" if n_frames == 1 else "frames"
        raise ScanError(path, f"frame {frame} out of range (DICOM has {n_frames} {plural})")

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    try:
        arr, props = _decode_dicom_frame(ds, frame)
        photometric = str(props.get("photometric_interpretation") or photometric).strip().upper()
        grey = _dicom_to_grey(ds, arr, photometric)
    except ScanError:
        raise
    except Exception as exc:
        raise ScanError(
            path, f"cannot decode DICOM pixel data ({photometric}): {_dicom_reason(ds, exc)}"
        ) from exc
    if grey.ndim != 2:
        raise ScanError(path, f"unexpected DICOM pixel array shape {grey.shape}")
    return grey, ds


def _decode_dicom_frame(ds: Any, frame: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode only ``frame``; ``props`` gives the photometric interpretation *after* decoding."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    file_meta = getattr(ds, "file_meta", None)
    tsyntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if tsyntax is None:  # forced reads of preamble-less files: fall back to how it was parsed
        implicit = (getattr(ds, "original_encoding", None) or (True, True))[0]
        tsyntax = ImplicitVRLittleEndian if implicit in (True, None) else ExplicitVRLittleEndian
        ds.file_meta = file_meta if file_meta is not None else _empty_file_meta()
        ds.file_meta.TransferSyntaxUID = tsyntax
    # The decoder (not Dataset.pixel_array) because it reports the colour space of what it returns:
    # YBR_FULL(_422) is converted to RGB when raw=False, and JPEG plugins may already have done so.
    arr, props = get_decoder(tsyntax).as_array(ds, index=frame, raw=False)
    return arr, dict(props)


def _empty_file_meta() -> Any:
    from pydicom.dataset import FileMetaDataset

    return FileMetaDataset()


def _dicom_to_grey(ds: Any, arr: np.ndarray, photometric: str) -> np.ndarray:
    """Turn one decoded frame into grey ``(H, W)`` with bright = echo."""
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        # Palette indices only mean something through the LUT: grey of the looked-up RGB.
        return _colour_to_grey(apply_color_lut(arr, ds), bgr=False)
    if photometric in ("RGB", "YBR_ICT", "YBR_RCT"):
        # YBR_ICT/RCT only occur in JPEG 2000, whose decoders hand back RGB.
        return _colour_to_grey(arr, bgr=False)
    if photometric.startswith("YBR"):
        # A YCbCr variant pydicom left unconverted: the Y plane *is* the luma we want.
        return arr[..., 0] if arr.ndim == 3 else arr
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"unsupported photometric interpretation {photometric}")

    grey = arr[..., 0] if arr.ndim == 3 else arr
    if not np.issubdtype(grey.dtype, np.integer):
        if photometric == "MONOCHROME1" and np.all(np.isfinite(grey)):
            grey = grey.max() + grey.min() - grey  # invert within the data range
        return grey

    bits = min(int(ds.get("BitsStored") or grey.dtype.itemsize * 8), grey.dtype.itemsize * 8)
    top = (1 << bits) - 1
    if np.issubdtype(grey.dtype, np.signedinteger):  # pydicom decodes PixelRepresentation=1 as signed
        # Two's complement: shift by half the stored range so values stay ordered and non-negative.
        grey = grey.astype(np.int64) + (1 << (bits - 1))
    if photometric == "MONOCHROME1":
        # MONOCHROME1 shows the minimum as white; invert within the stored bit depth.
        grey = top - np.clip(grey.astype(np.int64), 0, top)
    if grey.dtype == np.int64:
        grey = np.clip(grey, 0, top)
        if bits <= 8:
            return grey.astype(np.uint8)
        if bits <= 16:
            return grey.astype(np.uint16)
    return grey  # wider data is rescaled to uint16 by _to_uint


# ---- spacing -------------------------------------------------------------------------------------


def _resolve_spacing(
    path: Path,
    pixel_size_mm: float | tuple[float, float] | None,
    pixel_csv: dict[str, float] | None,
    ds: Any,
    frame: int,
) -> tuple[tuple[float, float] | None, str]:
    """Apply the spacing precedence; returns ``((x_mm, y_mm) | None, spacing_source)``."""
    if pixel_size_mm is not None:
        return _checked(path, pixel_size_mm, "pixel size from the command line"), "cli"
    # a folder's own table is keyed by the scan's path, one the user names by file name
    key = str(path) if pixel_csv is not None and str(path) in pixel_csv else path.name
    if pixel_csv is not None and key in pixel_csv:
        return _checked(path, pixel_csv[key], "pixel size from the CSV"), "csv"
    if ds is None:
        return None, "none"

    region = _pick_region(ds)
    if region is not None:
        dx, dy = region.get("PhysicalDeltaX"), region.get("PhysicalDeltaY")
        if dx is None or dy is None:
            raise ScanError(path, "DICOM ultrasound region without PhysicalDeltaX/Y")
        # Region deltas are in cm per pixel (units code 3); the rest of fetalbio works in mm.
        return _checked(path, (float(dx) * 10.0, float(dy) * 10.0), "DICOM region spacing"), "dicom-region"

    for keyword, source in (
        ("PixelSpacing", "dicom-pixelspacing"),
        ("ImagerPixelSpacing", "dicom-imagerpixelspacing"),
    ):
        value = _find_spacing_tag(ds, keyword, frame)
        if value is None:
            continue
        try:
            row_mm, col_mm = (float(v) for v in value)
        except (TypeError, ValueError):
            raise ScanError(path, f"DICOM {keyword} {value!r} is not two numbers") from None
        # DICOM order is [row spacing (y), column spacing (x)].
        return _checked(path, (col_mm, row_mm), f"DICOM {keyword}"), source
    return None, "none"


def _checked(path: Path, value: float | tuple[float, float] | Any, what: str) -> tuple[float, float]:
    """Validate a spacing: a number (isotropic) or an ``(x, y)`` pair, finite and > 0 mm."""
    try:
        if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
            x = y = float(value)
        else:
            x, y = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ScanError(path, f"{what} {value!r} is not a number or an (x, y) pair") from None
    if not (math.isfinite(x) and math.isfinite(y) and x > 0 and y > 0):
        raise ScanError(path, f"{what} ({x:g}, {y:g}) mm must be finite and positive")
    if max(x, y) > MAX_PIXEL_SIZE_MM or min(x, y) < MIN_PIXEL_SIZE_MM:
        raise ScanError(
            path,
            f"{what} ({x:g}, {y:g}) mm is not an ultrasound pixel size "
            f"({MIN_PIXEL_SIZE_MM:g}-{MAX_PIXEL_SIZE_MM:g} mm)",
        )
    return (x, y)


def _pick_region(ds: Any) -> Any:
    """The ultrasound region to take spacing from, or ``None``.

    Only regions calibrated in cm on both axes count.  Among those, a 2-D tissue region with the
    largest pixel box wins (a screen can hold a B-mode image next to Doppler or M-mode strips);
    failing that, the first cm region.
    """
    regions = ds.get("SequenceOfUltrasoundRegions") or []
    in_cm = [
        r
        for r in regions
        if r.get("PhysicalUnitsXDirection") == _CM_UNITS and r.get("PhysicalUnitsYDirection") == _CM_UNITS
    ]
    if not in_cm:
        return None
    tissue = [r for r in in_cm if r.get("RegionSpatialFormat") == _TISSUE_2D]
    if not tissue:
        return in_cm[0]
    return max(tissue, key=_region_area)  # max() keeps the first of equal areas


def _region_area(region: Any) -> int:
    try:
        width = int(region.RegionLocationMaxX1) - int(region.RegionLocationMinX0) + 1
        height = int(region.RegionLocationMaxY1) - int(region.RegionLocationMinY0) + 1
    except (AttributeError, TypeError, ValueError):
        return 0
    return max(width, 0) * max(height, 0)


def _find_spacing_tag(ds: Any, keyword: str, frame: int) -> Any:
    """``keyword`` from the top level, or from the enhanced multi-frame functional groups."""
    value = ds.get(keyword)
    if value is not None and value != "":
        return value
    if keyword != "PixelSpacing":
        return None
    # Enhanced multi-frame objects keep PixelSpacing in Pixel Measures functional groups.
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    groups = [per_frame[frame]] if frame < len(per_frame) else []
    groups += list(ds.get("SharedFunctionalGroupsSequence") or [])
    for group in groups:
        for measures in group.get("PixelMeasuresSequence") or []:
            value = measures.get("PixelSpacing")
            if value is not None and value != "":
                return value
    return None


# --------------------------------------------------------------------------------------------------
# find_scans
# --------------------------------------------------------------------------------------------------


def is_annotation(path: str | Path) -> bool:
    """Whether a file is an HC18 ground-truth outline (``NAME_Annotation.png``, any case), not a scan."""
    return Path(path).name.lower().endswith(_ANNOTATION_SUFFIX)


def annotation_path(scan_path: str | Path) -> Path:
    """The annotation file of a scan: ``NAME.png`` -> ``NAME_Annotation.png`` beside it."""
    p = Path(scan_path)
    return p.with_name(p.stem + _ANNOTATION_TAG + p.suffix)


def find_scans(inputs: Iterable[str | Path]) -> tuple[list[Path], list[ScanError]]:
    """Expand files and folders into the scans to measure.

    Folders are searched recursively in sorted (deterministic) order for :data:`SCAN_SUFFIXES`
    (case-insensitive), skipping hidden files and folders.  Files ending in ``_Annotation.png``
    (case-insensitive) are HC18 ground truth, not scans, and are skipped everywhere, also when named
    directly (a shell glob like ``*.png`` names them).  Any other explicitly named file is kept
    whatever its suffix; :func:`read_scan` decides whether it is readable.  A file reached twice is
    listed once, at its first position.

    Inputs are de-duplicated by their path as given (normalised), not by the file they point to:
    two links to one file are two scans, each with its own row.

    Returns:
        ``(scans, errors)``: paths in input order, and a ``ScanError`` for each input that does not
        exist, is a broken link or a link loop, or is a folder that cannot be read.
    """
    if isinstance(inputs, str | Path):  # a lone path would otherwise be iterated character by character
        inputs = [inputs]
    scans: list[Path] = []
    errors: list[ScanError] = []
    seen: set[str] = set()

    def add(candidate: Path) -> None:
        key = os.path.normpath(candidate)
        if key not in seen:
            seen.add(key)
            scans.append(candidate)

    for item in inputs:
        path = Path(item)
        try:
            _check_exists(path)
        except ScanError as exc:
            errors.append(exc)
            continue
        if path.is_dir():
            for found in _walk_scans(path, errors):
                add(found)
        elif _special(path):
            errors.append(ScanError(path, _SPECIAL))
        elif not is_annotation(path):
            add(path)
    return scans, errors


def _walk_scans(root: Path, errors: list[ScanError] | None = None) -> Iterator[Path]:
    """Scan files under ``root`` (recursive, sorted, hidden entries and annotations skipped); folders that
    cannot be read are added to ``errors``. Linked folders are not followed (no loops)."""

    def unreadable(exc: OSError) -> None:
        if errors is not None:
            errors.append(ScanError(Path(exc.filename or root), f"cannot read folder: {exc.strerror or exc}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        # Pruning in place stops os.walk from descending into hidden folders; sorting makes it stable.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            candidate = Path(dirpath) / name
            if (
                not name.startswith(".")
                and candidate.suffix.lower() in SCAN_SUFFIXES
                and not is_annotation(candidate)
            ):
                if _special(candidate):
                    if errors is not None:
                        errors.append(ScanError(candidate, _SPECIAL))
                    continue
                yield candidate


_SPECIAL = "not a regular file (a pipe, socket or device): not read"


def _special(path: Path) -> bool:
    """A FIFO, socket or device: opening a FIFO blocks until someone writes to it, so it is never read."""
    try:
        mode = path.stat().st_mode
        return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)
    except OSError:
        return False  # a broken link: read_scan says so


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= _MAX_REASON_CHARS else flat[: _MAX_REASON_CHARS - 3] + "..."


def _describe(exc: BaseException) -> str:
    """``'Type: first line of message'`` for wrapping library errors into one-line reasons."""
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__


def _check_exists(path: Path) -> None:
    """ScanError for a missing file, a broken link or a link loop (each said as it is)."""
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ScanError(path, "symbolic link loop (the link points back to itself)") from None
        if path.is_symlink():
            raise ScanError(path, "broken symbolic link (its target does not exist)") from None
        if exc.errno == errno.ENAMETOOLONG:
            raise ScanError(path, "file name too long for this system") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise ScanError(path, "permission denied") from None
        raise ScanError(path, "does not exist") from None


def _read_more(path: Path, n: int) -> bytes:
    try:
        with path.open("rb") as fh:
            fh.seek(_DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC))
            return fh.read(n)
    except OSError:
        return b""


def raster_size(head: bytes, path: Path | None = None) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, BMP, WebP or TIFF header without decoding; None when not found.

    ``head``: the file's first bytes; ``path``: the file, for a TIFF whose first directory lies beyond them.
    """
    import struct

    if head[:8] == _PNG_MAGIC and len(head) >= 33 and head[12:16] == b"IHDR":
        import zlib

        # only a header whose checksum holds is believed: a damaged one is left to the decoder
        if zlib.crc32(head[12:29]) == struct.unpack(">I", head[29:33])[0]:
            return struct.unpack(">II", head[16:24])
        return None
    if head[:2] == b"BM" and len(head) >= 26:
        w, h = struct.unpack("<ii", head[18:26])
        return abs(w), abs(h)
    if head[:2] == b"\xff\xd8":
        return _jpeg_size(head)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 30:
        return _webp_size(head)
    if head[:4] in _TIFF_MAGIC:
        return _tiff_size(head, path)
    return None


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    import struct

    i = 2
    while i + 9 < len(head):
        if head[i] != 0xFF:
            i += 1
            continue
        marker = head[i + 1]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            h, w = struct.unpack(">HH", head[i + 5 : i + 9])
            return w, h
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        i += 2 + struct.unpack(">H", head[i + 2 : i + 4])[0]
    return None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    """The canvas of a WebP file (Google's container spec: lossy VP8, lossless VP8L, extended VP8X)."""
    chunk = head[12:16]
    if chunk == b"VP8X":
        return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(head[26:28], "little") & 0x3FFF, int.from_bytes(head[28:30], "little") & 0x3FFF
    if chunk == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    return None


def _tiff_size(head: bytes, path: Path | None) -> tuple[int, int] | None:
    """The first page's ImageWidth and ImageLength (TIFF 6.0 tags 256 and 257) from its directory."""
    found = _tiff_tags(head, path)
    return (found[256], found[257]) if 256 in found and 257 in found else None


def _tiff_tags(head: bytes, path: Path | None, wanted: tuple[int, ...] = (256, 257, 262)) -> dict[int, int]:
    """Single-value integer tags of a TIFF's first directory (256 width, 257 length, 262 photometric
    interpretation); ``head``: the file's first bytes, ``path``: the file, for a directory beyond them."""
    import struct

    if len(head) < 8:
        return {}
    end = "<" if head[:2] == b"II" else ">"
    (offset,) = struct.unpack(end + "I", head[4:8])
    ifd = head[offset : offset + 2 + 12 * 64] if offset + 2 <= len(head) else b""
    if len(ifd) < 2 and path is not None:  # the directory after the pixel data, as many writers put it
        try:
            with path.open("rb") as fh:
                fh.seek(offset)
                ifd = fh.read(2 + 12 * 64)
        except OSError:
            return {}
    found: dict[int, int] = {}
    if len(ifd) < 2:
        return found
    for k in range(min(struct.unpack(end + "H", ifd[:2])[0], (len(ifd) - 2) // 12)):
        tag, typ, _count = struct.unpack(end + "HHI", ifd[2 + 12 * k : 10 + 12 * k])
        if tag in wanted and typ in (3, 4):  # SHORT or LONG (each entry is 12 bytes: always whole here)
            raw = ifd[10 + 12 * k : 14 + 12 * k]
            found[tag] = struct.unpack(end + ("H" if typ == 3 else "I"), raw[: 2 if typ == 3 else 4])[0]
    return found


def _check_raster_size(path: Path, head: bytes) -> None:
    """Refuse, from its header, an image too large to decode safely (limits in defaults.py)."""
    size = raster_size(head, path)
    if size is None:
        return
    w, h = size
    if w * h > MAX_SCAN_PIXELS or max(w, h) > MAX_SCAN_SIDE_PX:
        raise ScanError(
            path,
            f"image too large: {w}x{h} px (limit {MAX_SCAN_SIDE_PX} px a side, "
            f"{MAX_SCAN_PIXELS / 1e6:.0f} megapixels)",
        )


def _truncated(path: Path, ds: Any) -> bool:
    """A DICOM image whose file ends early: it names rows and columns but has no pixel data."""
    return "Rows" in ds and "Columns" in ds


def _dicom_reason(ds: Any, exc: BaseException) -> str:
    """A reason a user can act on for pixel data pydicom cannot decode."""
    text = str(exc)
    if "less than expected" in text or "truncated" in text.lower():
        return "the file is truncated (less pixel data than its rows x columns x frames)"
    if "plugins" in text or "decoder" in text.lower() or "handler" in text.lower():
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(ts, "name", None) or str(ts)
        return f"compressed as {name}, which needs a decoder that is not installed (e.g. pylibjpeg)"
    if "could not broadcast" in text or "cannot reshape" in text:  # the frame decoded to another size
        rows, cols = ds.get("Rows"), ds.get("Columns")
        return f"the image does not have the {cols}x{rows} px (Columns x Rows) its header says"
    return _describe(exc)


def count_frames(path: Path) -> int:
    """Frames in a file: NumberOfFrames of a DICOM (header only), the pages of a multi-page TIFF or the
    frames of an animated PNG or WebP; 1 for anything else or a file that cannot be read here (reading
    it later says why)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(_HEAD_BYTES)
    except OSError:
        return 1
    if (
        path.suffix.lower() not in DICOM_SUFFIXES
        and head[_DICOM_MAGIC_OFFSET:][: len(_DICOM_MAGIC)] != _DICOM_MAGIC
    ):
        return _raster_pages(path, head)
    try:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except Exception:  # noqa: BLE001 - any damage: read_scan reports it on frame 0
        return 1
