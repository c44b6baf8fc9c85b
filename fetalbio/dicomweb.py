"""A PACS over DICOMweb: find a study's instances (QIDO-RS), retrieve them (WADO-RS), store SRs (STOW-RS).

Credentials come from the environment (``FETALBIO_DICOMWEB_USER`` and ``FETALBIO_DICOMWEB_PASSWORD``, or
``FETALBIO_DICOMWEB_TOKEN`` for a bearer token) or, when neither is set, from a netrc file (``~/.netrc``
or ``$NETRC``, as ``requests`` reads it). They are never printed: messages name the server by its
address without any user or password. TLS certificates are verified (``REQUESTS_CA_BUNDLE`` names a
hospital's own CA bundle). Every failure is one line naming the study or instance and the reason; the
retrieval goes on past an instance that fails.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from fetalbio.defaults import DICOMWEB_BUSY_CODES as BUSY_CODES
from fetalbio.defaults import DICOMWEB_BUSY_TRIES as BUSY_TRIES
from fetalbio.defaults import DICOMWEB_BUSY_WAIT_S as BUSY_WAIT_S

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = ["DicomwebError", "InstanceRef", "Pacs", "Query", "redact"]

# SOP classes that carry no image to measure (PS3.4 B.5): reports, documents, presentation states
_NON_IMAGE_PREFIXES = {
    "1.2.840.10008.5.1.4.1.1.88.": "a structured report",
    "1.2.840.10008.5.1.4.1.1.104.": "an encapsulated document (PDF/CDA)",
    "1.2.840.10008.5.1.4.1.1.11.": "a presentation state",
    "1.2.840.10008.5.1.4.1.1.9.": "a waveform",
    "1.2.840.10008.5.1.4.1.1.66": "a registration/segmentation/fiducials object",
    "1.2.840.10008.5.1.4.1.1.481.": "a radiotherapy object",
}
_TAG = {
    "study": "0020000D",
    "series": "0020000E",
    "sop": "00080018",
    "class": "00080016",
    "modality": "00080060",
}


class DicomwebError(RuntimeError):
    """A DICOMweb failure, one line: what was asked of which server and why it failed."""


def redact(url: str) -> str:
    """``url`` without user and password (for messages)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class Query:
    """Which instances to measure: a study (or studies by QIDO filters) and a modality."""

    studies: tuple[str, ...] = ()  # Study Instance UIDs; empty: search by the filters below
    modality: str | None = "US"  # series modality to keep (None: all)
    study_date: str | None = None  # QIDO date or range, e.g. 20260101-20261231
    patient_id: str | None = None
    accession: str | None = None


@dataclass(frozen=True)
class InstanceRef:
    study: str
    series: str
    sop: str
    sop_class: str = ""

    @property
    def name(self) -> str:
        return f"instance {self.sop} (study {self.study})"


@dataclass
class Fetched:
    """What :meth:`Pacs.fetch` did: local files to measure, instances skipped, instances that failed."""

    paths: list[Path] = field(default_factory=list)
    skipped: list[tuple[InstanceRef, str]] = field(default_factory=list)
    failed: list[tuple[InstanceRef, str]] = field(default_factory=list)


def non_image_reason(sop_class: str) -> str | None:
    """Why an instance of this SOP class is not measured (None: it is an image)."""
    for prefix, what in _NON_IMAGE_PREFIXES.items():
        if sop_class.startswith(prefix):
            return f"not an image: {what}"
    return None


class Pacs:
    """One DICOMweb server (``url``: its DICOMweb root, e.g. ``http://pacs:8042/dicom-web``)."""

    def __init__(self, url: str, timeout_s: float = 30.0):
        if urlsplit(url).scheme not in ("http", "https"):
            raise DicomwebError(f"--dicomweb {redact(url)}: expected an http:// or https:// URL")
        self.url, self.where, self.timeout_s = url, redact(url), timeout_s
        self._client = None

    @property
    def client(self):
        if self._client is None:
            from dicomweb_client.api import DICOMwebClient

            self._client = DICOMwebClient(self._base(), session=self._session(), timeout=self.timeout_s)
            # the library's retry repeats every exception too, so a server that never answers cost 3x
            # --timeout: it is off, and :meth:`_call` retries only a busy server's answers
            self._client.set_http_retry_params(retry=False)
        return self._client

    def _call(self, call):
        """``call()``, tried again when the server says it is busy (HTTP 408, 429, 503, 504: three tries,
        0.5 s then 1 s apart); a timeout, a refused connection or any other error is raised at once."""
        import requests

        for attempt in range(BUSY_TRIES):
            try:
                return call()
            except requests.exceptions.HTTPError as exc:
                code = getattr(exc.response, "status_code", None)
                if code not in BUSY_CODES or attempt == BUSY_TRIES - 1:
                    raise
            time.sleep(BUSY_WAIT_S * 2**attempt)
        raise AssertionError("unreachable")

    def _base(self) -> str:
        return redact(self.url).rstrip("/")

    def _session(self):
        import requests

        s = requests.Session()  # trust_env: netrc, proxies and REQUESTS_CA_BUNDLE from the environment
        user, password = (
            os.environ.get("FETALBIO_DICOMWEB_USER"),
            os.environ.get("FETALBIO_DICOMWEB_PASSWORD"),
        )
        token = os.environ.get("FETALBIO_DICOMWEB_TOKEN")
        parts = urlsplit(self.url)
        if token:
            s.headers["Authorization"] = f"Bearer {token}"
        elif user is not None:
            s.auth = (user, password or "")
        elif parts.username:  # user:password@host in the URL (discouraged: it shows in shell history)
            s.auth = (parts.username, parts.password or "")
        s.verify = True
        return s

    def _explain(self, what: str, exc: Exception) -> DicomwebError:
        """One line: ``<what> on <server>: <reason>``, with no credentials in it."""
        import requests

        if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
            code = exc.response.status_code
            reason = f"HTTP {code} {exc.response.reason or ''}".strip()
            if code in (401, 403):
                reason += (
                    " (access refused: set FETALBIO_DICOMWEB_USER and FETALBIO_DICOMWEB_PASSWORD,"
                    " FETALBIO_DICOMWEB_TOKEN, or a netrc entry for this host)"
                )
        elif isinstance(exc, requests.exceptions.SSLError):
            reason = "TLS certificate not trusted (set REQUESTS_CA_BUNDLE to the hospital's CA bundle)"
        elif isinstance(exc, requests.exceptions.Timeout):
            reason = f"no answer within {self.timeout_s:g} s"
        elif isinstance(exc, requests.exceptions.ConnectionError):
            reason = "cannot connect (is the server up, and the address right?)"
        else:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return DicomwebError(f"{what} on {self.where}: {_scrub(reason, self.url)}")

    # --- QIDO-RS ---
    def find(self, query: Query) -> list[InstanceRef]:
        """The instances of the query's studies (series of its modality), in series/instance order."""
        # a study named twice, or a series a PACS lists twice (one study under two patient IDs), is
        # measured and its SR stored once
        studies = list(dict.fromkeys(query.studies)) or self._find_studies(query)
        refs: list[InstanceRef] = []
        for study in studies:
            filters = {"Modality": query.modality} if query.modality else {}
            series = self._qido(
                f"searching study {study}",
                lambda st=study, f=filters: self.client.search_for_series(
                    st, search_filters=f, get_remaining=True
                ),
            )
            for s in series:
                uid = _value(s, "series")
                found = self._qido(
                    f"listing series {uid} of study {study}",
                    lambda st=study, u=uid: self._pages(self.client.search_for_instances, st, u),
                )
                refs += [InstanceRef(study, uid, _value(i, "sop"), _value(i, "class")) for i in found]
        return _first_of_each(refs)

    def _find_studies(self, query: Query) -> list[str]:
        narrowing = {
            k: v
            for k, v in (
                ("StudyDate", query.study_date),
                ("PatientID", query.patient_id),
                ("AccessionNumber", query.accession),
            )
            if v
        }
        if not narrowing:  # a modality alone would measure every ultrasound study in the hospital
            raise DicomwebError("give --study UID or a filter (--study-date, --patient-id, --accession)")
        filters = narrowing | ({"ModalitiesInStudy": query.modality} if query.modality else {})
        found = self._qido(
            "searching studies", lambda: self._pages(self.client.search_for_studies, search_filters=filters)
        )
        return [_value(s, "study") for s in found]

    @staticmethod
    def _pages(search, *args, page: int = 1000, **kwargs) -> list[dict]:
        """Every result of a QIDO search, a page at a time. Stops at a short page, or when the server
        ignores ``offset`` and answers the same page again (Orthanc does for studies): no endless loop."""
        out: list[dict] = []
        seen: set[str] = set()
        while True:
            got = search(*args, limit=page, offset=len(out), **kwargs) or []
            fresh = [r for r in got if _key(r) not in seen]
            seen.update(_key(r) for r in fresh)
            out += fresh
            if len(got) < page or not fresh:
                return out

    def _qido(self, what: str, call) -> list[dict]:
        try:
            return self._call(call) or []
        except Exception as exc:  # noqa: BLE001 - requests/dicomweb-client raise many kinds: say which
            raise self._explain(what, exc) from None

    # --- WADO-RS ---
    def fetch(self, refs: list[InstanceRef], folder: Path) -> Fetched:
        """Retrieve each image instance to ``folder/<study>/<series>/<sop>.dcm`` (atomically; a file
        already there is kept: ``--resume``). Non-image instances are skipped with the reason."""
        out = Fetched()
        for ref in refs:
            why = non_image_reason(ref.sop_class)
            if why:
                out.skipped.append((ref, why))
                continue
            path = folder / ref.study / ref.series / f"{ref.sop}.dcm"
            if not path.exists():
                try:
                    ds = self._call(lambda r=ref: self.client.retrieve_instance(r.study, r.series, r.sop))
                except Exception as exc:  # noqa: BLE001 - one instance fails, the batch goes on
                    out.failed.append((ref, str(self._explain(f"retrieving {ref.name}", exc))))
                    continue
                why = _check_instance(ds, ref)
                if why:
                    (out.failed if why.startswith("malformed") else out.skipped).append((ref, why))
                    continue
                _save(ds, path)
            out.paths.append(path)
        return out

    # --- STOW-RS ---
    def store(self, paths: list[Path]) -> list[tuple[Path, str]]:
        """Store each SR file; returns (file, reason) for those the server did not accept."""
        import pydicom
        import requests

        failed: list[tuple[Path, str]] = []
        unreachable = None
        for p in paths:
            ds = pydicom.dcmread(p)
            if unreachable:  # the server is gone: the rest are not tried (each would wait for it again)
                failed.append(
                    (p, f"storing SR {ds.SOPInstanceUID} on {self.where}: not tried ({unreachable})")
                )
                continue
            try:
                resp = self._call(
                    lambda d=ds: self.client.store_instances([d], study_instance_uid=d.StudyInstanceUID)
                )
            except Exception as exc:  # noqa: BLE001
                failed.append((p, str(self._explain(f"storing SR {ds.SOPInstanceUID}", exc))))
                status = getattr(getattr(exc, "response", None), "status_code", None)
                # a server that is gone, or that refuses these credentials, refuses every SR alike
                if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout) or (
                    status in (401, 403)
                ):
                    unreachable = str(self._explain("", exc)).split(": ", 1)[-1]
                continue
            bad = resp.get("FailedSOPSequence") if resp is not None else None
            if bad:
                reason = bad[0].get("FailureReason", "?")
                failed.append(
                    (p, f"storing SR {ds.SOPInstanceUID} on {self.where}: refused (reason {reason})")
                )
        return failed


def _value(item: dict, key: str) -> str:
    try:
        return str(item[_TAG[key]]["Value"][0])
    except (KeyError, IndexError, TypeError):
        return ""


def _key(item: dict) -> str:
    return "/".join(_value(item, k) for k in ("study", "series", "sop"))


def _scrub(text: str, url: str) -> str:
    parts = urlsplit(url)
    for secret in (
        parts.password,
        os.environ.get("FETALBIO_DICOMWEB_PASSWORD"),
        os.environ.get("FETALBIO_DICOMWEB_TOKEN"),
    ):
        if secret:
            text = text.replace(secret, "***")
    return text


def _check_instance(ds: Dataset, ref: InstanceRef) -> str | None:
    """Why a retrieved instance is not measured: malformed (UIDs differ from the query's) or no pixels."""
    if str(ds.get("SOPInstanceUID", "")) != ref.sop:
        got = ds.get("SOPInstanceUID") or "missing"
        return f"malformed {ref.name}: the server's answer is not that instance (its SOP Instance UID: {got})"
    why = non_image_reason(str(ds.get("SOPClassUID", "")))
    if why:
        return why
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        return "not an image: the instance has no pixel data"
    return None


def _save(ds: Dataset, path: Path) -> None:
    from io import BytesIO

    from fetalbio.writers import write_bytes_atomic

    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    write_bytes_atomic(path, buf.getvalue())


def _first_of_each(refs: list[InstanceRef]) -> list[InstanceRef]:
    """Each instance once (by SOP instance UID), at its first place."""
    seen: set[str] = set()
    return [r for r in refs if not (r.sop in seen or seen.add(r.sop))]
