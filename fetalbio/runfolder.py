"""A ``predict`` run folder: one run per folder (a lock), a journal that survives SIGKILL, resume, names.

Layout of ``--out DIR``::

    run.json            provenance: version, command, times, engine, threads, model sha256s, options, counts
    journal.jsonl       one line per measured scan, appended and fsynced as each batch finishes
    measurements.csv    rebuilt from the journal, atomically, at the end (and on --resume)
    measurements.json   the same rows
    report.html         the review report
    overlays/, masks/   named by the input's path relative to its input root
    sr/                 --sr: one DICOM SR per measured DICOM input (<SOP instance UID>.dcm) + index.csv
    dicomweb/           --dicomweb: the retrieved instances (<study>/<series>/<instance>.dcm)
    .lock               held (flock) while a run writes here

A journal line is ``{"key": [path as given, content sha256], "options": options hash, "rows": [...]}``.
``--resume`` keeps the lines whose options hash is the current one and skips their scans.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from fetalbio.writers import safe_text

JOURNAL = "journal.jsonl"
OUTPUTS = ("run.json", JOURNAL, "measurements.csv", "measurements.json", "report.html", "overlays", "masks")
IMAGE_FOLDERS = ("overlays", "masks")  # --overwrite removes only what a run writes there


def _remove_images(folder: Path) -> None:
    """A previous run's overlays (``<stem>_<method>.png``) and masks (``<stem>_mask.png``) in ``folder``,
    then the folder if nothing else is left: a file the user put there stays."""
    from fetalbio import methods

    ends = tuple(f"_{m}.png" for m in (*methods.names(), "mask"))
    for p in folder.iterdir():
        if p.is_file() and p.name.endswith(ends):
            p.unlink()
    if not any(folder.iterdir()):
        folder.rmdir()


OUTPUTS += ("sr", "dicomweb")  # --sr, --dicomweb
MAX_NAME_BYTES = 150  # overlay/mask file names: well under the 255-byte limit of common file systems


class RunFolderError(Exception):
    """A run folder that cannot be used; str() is one line naming the folder."""


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def options_hash(options: dict[str, Any]) -> str:
    """A short hash of everything that changes a result (models' sha256, methods, spacing options)."""
    return hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:16]


class RunFolder:
    """Opens ``out`` for one run: ``mode`` is 'new' (refuses a non-empty folder), 'resume' or 'overwrite'."""

    def __init__(self, out: Path, mode: str = "new"):
        self.out = Path(out)
        self.mode = mode
        self._lock_fd: int | None = None

    def open(self) -> None:
        """Create the folder, take the lock, and clear it (overwrite) or check it (new)."""
        out = self.out
        if out.exists() and not out.is_dir():
            raise RunFolderError(f"{out}: --out names an existing file, not a folder")
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise RunFolderError(f"{out}: cannot write the output folder ({exc.strerror or exc})") from None
        self._lock()
        present = [p.name for p in out.iterdir() if p.name != ".lock"]
        if self.mode == "overwrite":
            for name in OUTPUTS:
                p = out / name
                if name in IMAGE_FOLDERS and p.is_dir():
                    _remove_images(p)
                else:
                    shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        elif self.mode == "new" and present:
            self.close()
            raise RunFolderError(
                f"{out}: the folder is not empty ({len(present)} entries, e.g. {present[0]}); "
                "use --resume to finish that run, --overwrite to replace it, or another --out"
            )

    def _lock(self) -> None:
        import fcntl

        path = self.out / ".lock"
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                other = os.read(fd, 64).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise RunFolderError(
                    f"{self.out}: another fetalbio run (pid {other}) is writing to this folder; wait for it "
                    "or use another --out"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            # the run that held it removed this .lock as we opened it: lock the one on disk now, or two
            # runs would each hold a lock file of their own and write one folder
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd is not None:
            (self.out / ".lock").unlink(missing_ok=True)  # removed while still held (see _lock)
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    # --- the journal ---

    def done(self, options: str) -> dict[tuple[str, str], list[dict]]:
        """Scans already measured with these options: {(path as given, sha256): rows}."""
        return {key: rows for key, opts, rows in self._journal() if opts == options}

    def journal_paths(self, options: str) -> tuple[set[str], set[str]]:
        """(paths measured with these options, paths measured only with others) in the journal."""
        same, other = set(), set()
        for (path, _), opts, _ in self._journal():
            (same if opts == options else other).add(path)
        return same, other - same

    def _journal(self) -> list[tuple[tuple[str, str], str, list[dict]]]:
        path = self.out / JOURNAL
        if not path.exists():
            return []
        out = []
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by SIGKILL: that scan is measured again
                out.append((tuple(rec["key"]), rec.get("options"), rec["rows"]))
        return out

    def append(self, records: Iterable[tuple[tuple[str, str], list[dict]]], options: str) -> None:
        """Append one line per scan and fsync, so that a SIGKILL loses at most the batch in flight."""
        text = "".join(
            json.dumps({"key": list(key), "options": options, "rows": rows}, default=_json_default) + "\n"
            for key, rows in records
        )
        if not text:
            return
        with open(self.out / JOURNAL, "a", encoding="utf-8", errors="backslashreplace") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# --- names of per-scan outputs ---


class OutputNames:
    """Collision-free, length-capped file stems for each scan's overlays and masks.

    A stem is the input's path relative to the input root it was found under (its name, for a file given
    directly), suffix kept (``a.png`` and ``a.tif`` differ), separators as ``__``. Too long a stem is cut
    to :data:`MAX_NAME_BYTES` and a stem already taken by another input (``siteA/scan1.png`` and
    ``siteB/scan1.png`` given as files) gets a hash of the full path appended. Never leaves ``--out``.
    """

    def __init__(self, roots: Sequence[Path]):
        self.roots = [Path(r) for r in roots if Path(r).is_dir()]
        self._taken: dict[str, str] = {}

    def stem(self, path: Path) -> str:
        path = Path(path)
        rel = next((_relative(path, r) for r in self.roots if _relative(path, r) is not None), None)
        text = safe_text(str(rel or path.name))
        text = re.sub(r"[/\\]+", "__", text)
        text = re.sub(r"[\x00-\x1f]", "_", text).lstrip(".") or "scan"
        full = str(path)
        if len(text.encode()) > MAX_NAME_BYTES or self._taken.get(text, full) != full:
            digest = hashlib.sha256(full.encode("utf-8", "surrogateescape")).hexdigest()[:10]
            text = text.encode()[: MAX_NAME_BYTES - 11].decode(errors="ignore") + "-" + digest
        self._taken[text] = full
        return text


def _relative(path: Path, root: Path) -> Path | None:
    try:
        rel = path.relative_to(root)
    except ValueError:
        return None
    return rel if str(rel) != "." else None
