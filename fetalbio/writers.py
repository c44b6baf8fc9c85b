"""Atomic CSV/JSON/PNG writers: a file is written beside its target and renamed over it, so an
interrupted run never leaves a half-written output."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
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
    """JSON-safe: numpy scalars to Python, NaN/inf to None, paths to str."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
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
    text = json.dumps(_clean(obj), indent=2) + "\n"
    return write_bytes_atomic(path, text.encode("utf-8", "backslashreplace"))


def safe_text(text: str) -> str:
    """Text as printable UTF-8: bytes of a file name that are not UTF-8 (surrogate escapes) become \\xNN."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def decimals(column: str) -> int:
    """Decimals written for a column: 2 for millimetres, weeks and indices; 4 for pixel sizes and pixel
    coordinates (sub-pixel positions and 0.0893 mm pixels must not lose precision)."""
    if column.startswith("pixel_size"):
        return 4
    if column.endswith(("_mm", "_weeks", "_zscore", "_centile")) or column == "cephalic_index":
        return 2
    return 4


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def format_cell(value: Any, column: str = "") -> str:
    """One CSV cell: numbers rounded (:func:`decimals`), text made safe for spreadsheets (a leading
    ``= + - @`` would run as a formula: it gets an apostrophe, the OWASP rule)."""
    if value is None:
        return ""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.{decimals(column)}f}".rstrip("0").rstrip(".")
    text = safe_text(str(value))
    if not isinstance(value, int) and text.startswith(_FORMULA_START):
        return "'" + text
    return text


def round_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row with floats rounded as in the CSV (the JSON carries the same numbers) and safe text."""
    out = {}
    for k, v in row.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and math.isfinite(v):
            v = round(v, decimals(k))
        elif isinstance(v, str):
            v = safe_text(v)
        out[k] = v
    return out


def write_csv_atomic(path: str | Path, rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([format_cell(row.get(c), c) for c in columns])
    return write_bytes_atomic(path, buf.getvalue().encode())


def write_png_atomic(path: str | Path, image: np.ndarray) -> Path:
    import cv2

    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    return write_bytes_atomic(path, buf.tobytes())
