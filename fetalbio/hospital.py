"""A run's way into the hospital's systems: measure a PACS study over DICOMweb, write DICOM SRs, store them.

Typed steps the ``predict`` and ``sr`` commands call (the commands only parse options and print):
:func:`find_remote` asks the server before anything loads (a server that is down fails at once),
:func:`fetch_remote` retrieves into the run folder (``dicomweb/``: kept for ``--resume``),
:func:`finish_srs` writes ``sr/`` and stores it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fetalbio.dicomweb import DicomwebError, InstanceRef, Pacs, Query

__all__ = ["Remote", "SrOptions", "fetch_remote", "finish_srs", "find_remote"]

REMOTE_FOLDER = "dicomweb"  # inside the run folder: the retrieved instances


@dataclass
class Remote:
    """A DICOMweb source: the server, what was asked, and the instances it listed."""

    pacs: Pacs
    query: Query
    refs: list[InstanceRef] = field(default_factory=list)
    skipped: list[tuple[InstanceRef, str]] = field(default_factory=list)

    def info(self) -> dict:
        """For run.json (no credentials: the address is redacted)."""
        return {
            "url": self.pacs.where,
            "studies": sorted({r.study for r in self.refs}) or list(self.query.studies),
            "modality": self.query.modality,
            "instances": len(self.refs),
            "skipped": [{"instance": r.sop, "reason": why} for r, why in self.skipped],
        }


@dataclass(frozen=True)
class SrOptions:
    write: bool = False  # --sr
    store: Pacs | None = None  # --store-sr: the server to store the SRs on


def find_remote(url: str, query: Query, timeout_s: float) -> Remote:
    """List the query's instances. Raises DicomwebError (one line) when the server cannot answer."""
    pacs = Pacs(url, timeout_s)
    refs = pacs.find(query)
    if not refs:
        what = ", ".join(query.studies) or "the filters"
        raise DicomwebError(
            f"no {query.modality or ''} instances found for {what} on {pacs.where}".replace("  ", " ")
        )
    return Remote(pacs, query, refs)


def fetch_remote(remote: Remote, out: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Retrieve the instances into ``out/dicomweb``; returns (files to measure, (instance, reason) of
    those that could not be retrieved: they become error rows)."""
    got = remote.pacs.fetch(remote.refs, out / REMOTE_FOLDER)
    remote.skipped = got.skipped
    return got.paths, [(f"dicomweb:{ref.study}/{ref.series}/{ref.sop}", why) for ref, why in got.failed]


def finish_srs(out: Path, rows: list[dict], run_info: dict, opts: SrOptions) -> tuple[list[str], int]:
    """Write the run's SRs (and store them). Returns (lines to print, number of SRs not stored)."""
    from fetalbio.sr import write_run_srs

    done = write_run_srs(out, rows, run_info)
    lines = [f"{done.summary()} -> {out / 'sr'}"]
    for s in done.skipped:
        if s["kind"] == "cannot report":
            lines.append(f"no SR: {s['note']}")
    if opts.store is None or not done.written:
        return lines, 0
    failed = opts.store.store([out / w["sr_file"] for w in done.written])
    lines.append(f"stored {len(done.written) - len(failed)} of {len(done.written)} SRs on {opts.store.where}")
    tried = [why for _, why in failed if ": not tried (" not in why]
    lines += [f"not stored: {why}" for why in tried]
    if len(failed) > len(tried):  # the server is gone or refuses us: one line for the rest, not one each
        rest = next(why for _, why in failed if ": not tried (" in why)
        lines.append(
            f"not stored: {len(failed) - len(tried)} more SRs not tried ({rest.split(': not tried (', 1)[1]}"
        )
    return lines, len(failed)
