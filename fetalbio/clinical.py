"""Clinical context for a batch: a known gestational age (GA) per scan (``--ga-csv``) turns each HC, BPD
and OFD into an INTERGROWTH-21st z-score and centile.

Standards: Papageorghiou AT, Ohuma EO, Altman DG, et al. "International standards for fetal growth
based on serial ultrasound measurements: the Fetal Growth Longitudinal Study of the INTERGROWTH-21st
Project." Lancet 2014;384:869-879. The equations (HC, BPD, OFD; GA 14-40 weeks) are in
:mod:`fetalbio.biometry`. GA is in exact weeks (20.5 = 20 weeks 3.5 days), lengths in mm, z-scores in
SD units, centiles in percent (0-100). None of these numbers is a diagnosis.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fetalbio.biometry import INTERGROWTH_GA_RANGE_WEEKS, centile, zscore
from fetalbio.io import ScanError, check_comma_separated, read_csv_file

__all__ = ["GA_COLUMNS", "MEASURED_STATUSES", "add_ga_columns", "read_ga_csv"]

#: Columns :func:`add_ga_columns` fills: the given GA (weeks), then z-score (SD) and centile (%) of each
#: measure against the INTERGROWTH-21st fetal growth standards.
GA_COLUMNS: list[str] = [
    "ga_given_weeks",
    "hc_zscore",
    "hc_centile",
    "bpd_zscore",
    "bpd_centile",
    "ofd_zscore",
    "ofd_centile",
]

#: Row statuses that carry a measurement (an ``error`` row has none).
MEASURED_STATUSES: frozenset[str] = frozenset({"ok", "review"})

GA_MAX_WEEKS = 45.0  # a GA above this is no pregnancy (days in a weeks column, a typo): the CSV is refused
_MEASURES = ("hc", "bpd", "ofd")  # all three have INTERGROWTH-21st standards (biometry.zscore)
_WEEKS_PLUS_DAYS = re.compile(r"^(\d{1,2})\s*\+\s*([0-6])$")  # "20+3" = 20 weeks 3 days


def _norm_header(name: str) -> str:
    """Header name without case, spaces or punctuation: 'GA (days)', 'ga_days', 'GA days' -> 'gadays'."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _parts(name: str) -> tuple[str, ...]:
    """A file name as written (``/`` or ``\\`` folders, ``./`` dropped) as its path components."""
    return tuple(p for p in name.strip().replace("\\", "/").split("/") if p not in ("", "."))


def _key(name: str) -> str:
    """The key a GA table row is stored under: its file name as written, folders normalised."""
    return "/".join(_parts(name))


def _parse_ga(raw: str, unit: str) -> float:
    """GA in weeks from a cell: a number of ``unit`` (``'weeks'`` or ``'days'``), or weeks+days
    ``'20+3'`` in a weeks column. Raises ValueError for anything else."""
    text = raw.strip()
    m = _WEEKS_PLUS_DAYS.match(text) if unit == "weeks" else None
    if m:
        return int(m.group(1)) + int(m.group(2)) / 7.0
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value / 7.0 if unit == "days" else value


def _columns(path: Path, header: list[str]) -> tuple[int, int, str]:
    """``(filename column, GA column, 'weeks' or 'days')`` from the header, or a ScanError."""
    check_comma_separated(path, header, "filename,ga_weeks")
    cols = [_norm_header(h) for h in header]
    if "filename" not in cols:
        raise ScanError(path, "missing column 'filename' (expected filename and ga_weeks or ga_days)")
    has = [u for u in ("weeks", "days") if f"ga{u}" in cols]
    if not has:
        raise ScanError(path, "missing column 'ga_weeks' or 'ga_days'")
    if len(has) == 2:
        raise ScanError(path, "has both 'ga_weeks' and 'ga_days': give one GA column")
    return cols.index("filename"), cols.index(f"ga{has[0]}"), has[0]


def _parse(path: Path, lines: Iterable[str]) -> dict[str, float]:
    """Rows of a GA CSV -> ``{base name: GA in weeks}``; every fault is a one-line ScanError."""
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise ScanError(path, "empty CSV file")
    i_name, i_ga, unit = _columns(path, header)
    out: dict[str, float] = {}
    for row in reader:
        if not any(c.strip() for c in row):
            continue
        line = reader.line_num
        if len(row) <= max(i_name, i_ga):
            raise ScanError(path, f"row {line}: expected at least {max(i_name, i_ga) + 1} columns")
        name, raw = _key(row[i_name]), row[i_ga].strip()
        if not name:
            raise ScanError(path, f"row {line}: empty filename")
        if not raw:
            continue  # GA not known for this scan: its z-score columns stay empty
        try:
            ga = _parse_ga(raw, unit)
        except ValueError:
            raise ScanError(path, f"row {line} ({name}): GA {raw!r} is not a number of {unit}") from None
        if not 0.0 < ga <= GA_MAX_WEEKS:  # a GA in 14-40 weeks gets z-scores; one outside, a note
            in_weeks = "" if unit == "weeks" and "+" not in raw else f" ({ga:.4g} weeks)"
            raise ScanError(
                path,
                f"row {line} ({name}): GA {raw} {unit}{in_weeks} is no gestational age "
                f"(above 0, at most {GA_MAX_WEEKS:g} weeks)",
            )
        if name in out and not math.isclose(out[name], ga, abs_tol=1e-9):
            raise ScanError(path, f"row {line}: {name} listed twice with different GAs")
        out[name] = ga
    return out


def read_ga_csv(path: str | Path) -> dict[str, float]:
    """``{file name as written: gestational age in weeks}`` from a CSV.

    Columns: ``filename`` and one of ``ga_weeks`` (exact weeks, e.g. ``20.5``, or weeks+days ``20+3``)
    or ``ga_days`` (days, divided by 7); header names ignore case, spaces and punctuation (``GA (days)``
    works), further columns are ignored, a UTF-8 BOM and CRLF are accepted, blank lines and rows with an
    empty GA cell are skipped. A name may carry folders (``/`` or ``\\``): ``siteA/scan1.png`` and
    ``siteB/scan1.png`` are two scans (:func:`add_ga_columns` matches each scan to the row whose name
    shares most trailing folders with its path); the same name twice with different GAs is refused.

    Raises:
        ScanError: one line naming the file: missing/unreadable file, a missing column, a GA that is
            not a number, a GA not in 0-45 weeks (a GA outside the INTERGROWTH-21st standards' 14-40
            weeks is kept: its row gets no z-scores and says why in ``ga_note``), or a file listed twice
            with different GAs.
    """
    return read_csv_file(path, _parse)


def _z_and_centile(measure: str, value: Any, ga_weeks: float) -> tuple[float | None, float | None]:
    """INTERGROWTH-21st ``(z-score, centile)`` of ``value`` mm, or ``(None, None)`` when not defined."""
    try:
        v = float(value)
        if not math.isfinite(v) or v <= 0.0:
            return None, None
        return zscore(measure, v, ga_weeks), centile(measure, v, ga_weeks)  # type: ignore[arg-type]
    except (TypeError, ValueError, ArithmeticError):
        return None, None


def match_ga(
    file: str, index: dict[str, list[tuple[tuple[str, ...], float]]]
) -> tuple[float | None, str, str]:
    """(GA in weeks, or None; why not; the table's name that gave it) of a scan path from ``index``
    (``{base name: [(name's parts, GA)]}``): of the rows naming its base name, the one sharing most
    trailing folders with its path; two that match equally well with different GAs give none (which one
    is meant is not known)."""
    parts = _parts(file)
    cands = index.get(parts[-1] if parts else "", [])
    if not cands:
        return None, "", ""

    def shared(k: tuple[str, ...]) -> int:
        n = 0
        while n < min(len(k), len(parts)) and k[-1 - n] == parts[-1 - n]:
            n += 1
        # a folder the path lacks: a worse match than a bare name (a lone candidate still applies: a
        # table written on another machine names C:\\scans\\a.png)
        return n if n == len(k) else n - len(k)

    best = max(shared(k) for k, _ in cands)
    tied = [(k, ga) for k, ga in cands if shared(k) == best]
    if len({ga for _, ga in tied}) > 1:
        names = " and ".join("/".join(k) for k, _ in tied)
        return None, f"no GA: the GA table's {names} match this file equally (give its folder)", ""
    return tied[0][1], "", "/".join(tied[0][0])


def add_ga_columns(rows: list[dict], ga_weeks: dict[str, float]) -> list[str]:
    """Fill :data:`GA_COLUMNS` in place for every measured row whose file has a GA; return warnings.

    A row qualifies when its ``status`` is ``ok`` or ``review`` and its ``file`` matches a name of
    ``ga_weeks`` (as returned by :func:`read_ga_csv`; :func:`match_ga`). It gets ``ga_given_weeks``
    and, when measured in mm, for each of ``hc_mm``, ``bpd_mm``, ``ofd_mm`` that is a finite positive
    number, ``<measure>_zscore`` (SD) and ``<measure>_centile`` (0-100) from the INTERGROWTH-21st
    standards (Papageorghiou et al., Lancet 2014). A row measured in pixels, a GA outside their 14-40
    weeks, or a file two names match equally, adds no z-score and says why in ``ga_note``; a GA not
    finite adds nothing. An HC z-score beyond :data:`fetalbio.defaults.REVIEW_GA_ZSCORE` sends the row
    to review (a GA or pixel size that is not this scan's, or a head a person must see). Other rows are
    left untouched. Never raises.

    Returns one line for each name given to several scans of the run (``scan1.png`` in two folders:
    the table should name their folders) and one for the names that match no scan.
    """
    from fetalbio import defaults

    index: dict[str, list[tuple[tuple[str, ...], float]]] = {}
    for name, ga in ga_weeks.items():
        if (parts := _parts(name)) and isinstance(ga, int | float) and math.isfinite(ga):
            index.setdefault(parts[-1], []).append((parts, float(ga)))
    used: dict[str, set[str]] = {}
    lo, hi = INTERGROWTH_GA_RANGE_WEEKS
    for row in rows:
        if row.get("status") not in MEASURED_STATUSES:
            continue
        file = str(row.get("file", ""))
        ga, why, name = match_ga(file, index)
        if ga is None:
            if why:
                row["ga_note"] = "; ".join(filter(None, [row.get("ga_note") or "", why]))
            continue
        used.setdefault(name, set()).add(file)
        row["ga_given_weeks"] = ga
        note = ""
        if row.get("unit") != "mm":
            note = "no z-scores: measured in pixels (no pixel size)"
        elif not lo <= ga <= hi:  # 41 weeks is common: the row keeps its GA and says why it has no z-score
            note = f"no z-scores: GA {ga:.1f} weeks is outside the INTERGROWTH-21st standards ({lo:g}-{hi:g})"
        if note:
            row["ga_note"] = "; ".join(filter(None, [row.get("ga_note") or "", note]))
            continue
        for m in _MEASURES:
            z, c = _z_and_centile(m, row.get(f"{m}_mm"), ga)
            if z is not None:
                row[f"{m}_zscore"], row[f"{m}_centile"] = z, c
        z = row.get("hc_zscore")
        if z is not None and abs(z) > defaults.REVIEW_GA_ZSCORE:
            reason = f"HC far from its GA (z {z:.1f} at {ga:.1f} weeks): check the GA and the pixel size"
            row["review_reasons"] = "; ".join(filter(None, [row.get("review_reasons") or "", reason]))
            row["status"] = "review"
    return _ga_warnings(used, ga_weeks)


def _ga_warnings(used: dict[str, set[str]], ga_weeks: dict[str, float]) -> list[str]:
    from fetalbio.writers import first_names

    out = [
        f"the GA table's {name} was given to {len(files)} scans ({first_names(sorted(files), 2)}"
        f"): name their folders (siteA/{name.rsplit('/', 1)[-1]}) to "
        "give each its own"
        for name, files in used.items()
        if len(files) > 1
    ]
    unused = sorted(k for k in ga_weeks if k not in used)
    if unused:
        out.append(
            f"{len(unused)} rows of the GA table name no measured scan of this run ({first_names(unused)})"
        )
    return out
