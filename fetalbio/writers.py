"""Atomic CSV/JSON/PNG writers: a file is written beside its target and renamed over it, so an
interrupted run never leaves a half-written output."""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename it over
    ``path`` (atomic); the file gets the usual permissions (0666 & ~umask). Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); outputs get the usual permissions (0666 & ~umask)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _clean(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to None, paths to str, text (and keys) via
    :func:`safe_text`."""
    if isinstance(value, dict):
        return {safe_text(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        return safe_text(value)
    return value


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (NaN/inf as null, text through :func:`safe_text`), atomically.

    Never raises UnicodeEncodeError for a file name that is not UTF-8 (surrogate escapes)."""
    text = json.dumps(_clean(obj), indent=2) + "\n"
    return write_bytes_atomic(path, text.encode("utf-8", "backslashreplace"))


def _escape_surrogate(ch: str) -> str:
    code = ord(ch)
    # U+DC80..U+DCFF is how os.fsdecode keeps an undecodable byte 0x80..0xFF: show the byte itself
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def safe_text(text: str) -> str:
    """Text that encodes as UTF-8: the undecodable bytes of a file name (surrogate escapes from
    :func:`os.fsdecode`) become ``\\xNN``, e.g. ``'caf\\udce9.png'`` -> ``'caf\\\\xe9.png'`` (shown as
    ``caf\\xe9.png``); any other lone surrogate becomes ``\\uNNNN``. Valid text is returned unchanged."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate outside U+DC80..U+DCFF (not from a file name)
        return "".join(_escape_surrogate(c) if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


#: Columns kept to 4 decimals: pixel coordinates, pixel sizes (0.0893 mm pixels must not lose
#: precision), the ellipse parameters and the confidence.
PRECISE_SUFFIXES: tuple[str, ...] = ("_x", "_y", "_px")
PRECISE_PREFIXES: tuple[str, ...] = ("pixel_size", "ellipse_")
PRECISE_COLUMNS: frozenset[str] = frozenset({"pixel_size_mm", "pixel_size_y_mm", "confidence"})
#: Columns written with 2 decimals: measurements in mm (with their intervals), GA in weeks or days,
#: z-scores, centiles and the cephalic index.
MEASUREMENT_SUFFIXES: tuple[str, ...] = (
    "_mm",
    "_mm_low",
    "_mm_high",
    "_weeks",
    "_days",
    "_zscore",
    "_centile",
)


def first_names(names: Sequence[str], k: int = 3) -> str:
    """The first ``k`` of ``names`` for a one-line message, with ", ..." when there are more."""
    return ", ".join(names[:k]) + (", ..." if len(names) > k else "")


def column_decimals(column: str) -> int:
    """Decimals for a float in ``column``: 4 for coordinates and pixel sizes (names ending ``_x``,
    ``_y``, ``_px``, starting ``pixel_size`` or ``ellipse_``, and ``confidence``); 2 for millimetres,
    weeks, days, z-scores, centiles and ``cephalic_index``; 4 for any other float (training loss,
    learning rate, Dice: not fetal measurements, kept as before)."""
    if column in PRECISE_COLUMNS or column.startswith(PRECISE_PREFIXES) or column.endswith(PRECISE_SUFFIXES):
        return 4
    if column.endswith(MEASUREMENT_SUFFIXES) or column == "cephalic_index":
        return 2
    return 4


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_HUGE = 1e15  # beyond this, fixed-point text would be a wall of digits: written as repr (1e+300)


def _round(value: float, places: int, column: str = "") -> float:
    """``value`` rounded to ``places`` decimals, as the CSV writes it; -0.0 becomes 0.0. A pixel size
    that would round to 0 keeps 4 significant digits instead (a 1e-5 mm pixel is not a 0 mm pixel)."""
    if abs(value) >= _HUGE:
        return value
    rounded = round(value, places) + 0.0
    if rounded == 0.0 and value != 0.0 and column.startswith("pixel_size"):
        return float(f"{value:.4g}")
    return rounded


def format_cell(value: Any, column: str = "", places: int | None = None) -> str:
    """One CSV cell.

    * ``None`` -> empty; NaN/inf -> empty; ``bool`` -> ``true``/``false``; ints unchanged.
    * floats rounded to ``places`` decimals (default :func:`column_decimals`), trailing zeros dropped
      (``2.50`` -> ``2.5``, ``-0.00`` -> ``0``); magnitudes of 1e15 and more as ``repr`` (``1e+300``),
      and a pixel size that would round to 0 with 4 significant digits (``1e-05``).
    * text through :func:`safe_text`; text starting with ``= + - @``, tab or CR gets a leading
      apostrophe, so a spreadsheet shows it instead of running it as a formula (OWASP CSV injection).
      Numbers, also negative ones like ``-1.5``, are never prefixed.
    """
    if value is None:
        return ""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        p = column_decimals(column) if places is None else places
        rounded = _round(value, p, column)
        if abs(rounded) >= _HUGE or 0.0 < abs(rounded) < 10.0**-p:  # 1e+300, a 1e-300 mm pixel size
            return repr(rounded)
        text = f"{rounded:.{p}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    text = safe_text(str(value))
    return "'" + text if text.startswith(_FORMULA_START) else text


def round_row(row: dict[str, Any], decimals: dict[str, int] | None = None) -> dict[str, Any]:
    """``row`` with floats rounded as :func:`write_csv_atomic` writes them (same columns rule, same
    ``decimals`` overrides) and text through :func:`safe_text`, so the JSON carries the same numbers
    as the CSV. Text is not apostrophe-escaped (JSON is not opened as a spreadsheet); NaN/inf stay
    for the JSON writer to turn into null."""
    out = {}
    for k, v in row.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and math.isfinite(v):
            places = (decimals or {}).get(k)
            v = _round(v, column_decimals(k) if places is None else places, k)
        elif isinstance(v, str):
            v = safe_text(v)
        out[safe_text(str(k))] = v
    return out


def write_csv_atomic(
    path: str | Path,
    rows: Iterable[dict[str, Any]],
    columns: Sequence[str],
    decimals: dict[str, int] | None = None,
) -> Path:
    """Write ``rows`` as CSV (header ``columns``, ``\\n`` line ends, UTF-8) atomically.

    Cells are formatted by :func:`format_cell`: floats to :func:`column_decimals` decimals unless
    ``decimals`` gives a column its own number, formula-like text escaped, non-UTF-8 file names
    written with ``\\xNN`` for their undecodable bytes (never a UnicodeEncodeError).
    """
    places = decimals or {}
    lines = [_csv_line([safe_text(str(c)) for c in columns])]
    for row in rows:
        lines.append(_csv_line([format_cell(row.get(c), c, places.get(c)) for c in columns]))
    return write_bytes_atomic(path, "".join(lines).encode("utf-8", "backslashreplace"))


_NEEDS_QUOTES = re.compile(r'[,"\r\n]')


def _csv_line(cells: Sequence[str]) -> str:
    """One RFC 4180 line: a cell holding a comma, a quote, CR or LF is quoted (``"`` doubled).

    ``csv.writer`` with ``\\n`` line ends leaves a bare CR unquoted, and readers then split the row
    there; a lone empty cell is written ``""`` so that the row is not read as a blank line."""
    if len(cells) == 1 and cells[0] == "":
        return '""\n'
    return ",".join('"' + c.replace('"', '""') + '"' if _NEEDS_QUOTES.search(c) else c for c in cells) + "\n"


def write_png_atomic(path: str | Path, image: np.ndarray) -> Path:
    """Encode ``image`` (uint8/uint16, grey or BGR) as PNG and write it atomically."""
    import cv2

    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    return write_bytes_atomic(path, buf.tobytes())
