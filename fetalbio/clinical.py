"""Clinical context for a batch: a known gestational age per scan (``--ga-csv``) turns each HC, BPD and
OFD into an INTERGROWTH-21st z-score and centile (Papageorghiou et al., Lancet 2014; the equations are
in :mod:`fetalbio.biometry`)."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from pathlib import Path

from fetalbio.biometry import INTERGROWTH_GA_RANGE_WEEKS, centile, zscore
from fetalbio.io import ScanError, read_csv_file

GA_COLUMNS = [
    "ga_given_weeks",
    "hc_zscore",
    "hc_centile",
    "bpd_zscore",
    "bpd_centile",
    "ofd_zscore",
    "ofd_centile",
]


def _key(name: str) -> str:
    return "".join(name.split()).lower()


def _parse(path: Path, lines: Iterable[str]) -> dict[str, float]:
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise ScanError(path, "empty CSV file")
    cols = [_key(h) for h in header]
    if "filename" not in cols:
        raise ScanError(path, "missing column 'filename' (with ga_weeks or ga_days)")
    unit = next((u for u in ("ga_weeks", "ga_days") if u in cols), None)
    if unit is None:
        raise ScanError(path, "missing column 'ga_weeks' or 'ga_days'")
    i_name, i_ga = cols.index("filename"), cols.index(unit)
    lo, hi = INTERGROWTH_GA_RANGE_WEEKS
    out: dict[str, float] = {}
    for row in reader:
        if not any(c.strip() for c in row):
            continue
        line = reader.line_num
        if len(row) <= max(i_name, i_ga):
            raise ScanError(path, f"row {line}: too few columns")
        name = row[i_name].strip().replace("\\", "/").rsplit("/", 1)[-1]
        try:
            ga = float(row[i_ga]) / (7.0 if unit == "ga_days" else 1.0)
        except ValueError:
            raise ScanError(path, f"row {line} ({name}): GA {row[i_ga]!r} is not a number") from None
        if not (math.isfinite(ga) and lo <= ga <= hi):
            raise ScanError(
                path,
                f"row {line} ({name}): GA {ga:g} weeks is outside the INTERGROWTH-21st fetal "
                f"growth standards ({lo:g}-{hi:g} weeks)",
            )
        out[name] = ga
    return out


def read_ga_csv(path: str | Path) -> dict[str, float]:
    """``{file name: gestational age in weeks}`` from a CSV: ``filename`` and ``ga_weeks`` or ``ga_days``."""
    return read_csv_file(path, _parse)


def add_ga_columns(rows: list[dict], ga_weeks: dict[str, float]) -> int:
    """Add the GA and z-scores/centiles to every measured (mm) row whose file has a GA; returns how many."""
    n = 0
    for r in rows:
        ga = ga_weeks.get(Path(str(r.get("file", ""))).name)
        if ga is None or r.get("status") == "error" or r.get("unit") != "mm":
            continue
        r["ga_given_weeks"] = ga
        for k in ("hc", "bpd", "ofd"):
            v = r.get(f"{k}_mm")
            if v is None or not v > 0:
                continue
            r[f"{k}_zscore"] = zscore(k, v, ga)
            r[f"{k}_centile"] = centile(k, v, ga)
        n += 1
    return n
