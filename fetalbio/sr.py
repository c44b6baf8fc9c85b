"""DICOM Comprehensive SR of a measured row: an OB-GYN Ultrasound Procedure Report (DICOM PS3.16 TID 5000).

One SR instance per measured DICOM input (status ``ok`` or ``review``), in the source's study, with the
source's patient and study identity copied (never invented). The content tree, with the PS3.16 table
each row comes from::

    CONTAINER (125000, DCM, "OB-GYN Ultrasound Procedure Report")       TID 5000 row 1 (CID 12024)
     > HAS CONCEPT MOD  CODE Language = English                          TID 5000 row 2 (TID 1204)
     > HAS OBS CONTEXT  Observer Type = Device, Device Observer UID,     TID 5000 row 3 (TID 1001, 1002,
                        Name, Manufacturer, Model Name                   TID 1004 device observer)
     > CONTAINS CONTAINER (111028, DCM, "Image Library")                 TID 5000 rows 5-6
        >> CONTAINS IMAGE  the source instance (and frame)
     > CONTAINS CONTAINER (125001, DCM, "Fetal Biometry Ratios")         TID 5000 row 8, TID 5004
        >> CONTAINS NUM (11823-2, LN, "Cephalic Index") {ratio}          CID 12004
     > CONTAINS CONTAINER (125002, DCM, "Fetal Biometry")                TID 5000 row 9, TID 5005
        >> CONTAINS CONTAINER (125005, DCM, "Biometry Group")            TID 5008 row 1, one per measure
           >>> CONTAINS NUM BPD (11820-8) / HC (11984-2) / OFD (11851-3), mm   TID 5008 row 2 -> TID 300,
                                                                         concept names from CID 12005
               >>>> HAS CONCEPT MOD  Algorithm Name / Version / Parameters     TID 300 -> TID 4019
               >>>> HAS PROPERTIES NUM (371884006, SCT, "+/-, range of measurement uncertainty")
                    (half the 90 % prediction interval), TEXT Comment (the interval)  TID 300 -> TID 310
               >>>> INFERRED FROM SCOORD (121112, DCM, "Source of Measurement")     TID 300 -> TID 320
                    POLYLINE (BPD, OFD caliper end points) or ELLIPSE (HC)
                    >>>>> SELECTED FROM IMAGE  the source instance (and frame)
           >>> CONTAINS NUM (18185-9, LN, "Gestational Age"), d         TID 5008 row 3
               >>>> INFERRED FROM CODE (121420, DCM, "Equation") = (11932-1, LN, "HC, Hadlock 1984") or
                    (11902-4, LN, "BPD, Hadlock 1984")                   TID 5008 row 4, CID 12013
     > CONTAINS TEXT (121106, DCM, "Comment")  review status and reasons (TID 5000 is extensible)

What is left out, and why: the INTERGROWTH-21st GA from HC and the z-scores/centiles (``--ga-csv``) have
no equation/table code in CID 12013/12015, so a reader could not tell which standard they follow; they
stay in the CSV. The verification flag is always UNVERIFIED (DICOM's VERIFIED needs a named person who
verified it); a ``review`` row is also PRELIMINARY and says why in its comment, an ``ok`` row is FINAL.

Coordinates: fetalbio's pixel centres are integers (OpenCV); SCOORD's (column, row) puts the top-left
corner of the top-left pixel at 0.0 (PS3.3 C.18.6.1.1), so every coordinate is written plus 0.5 px.
An outline that leaves the image (a head cut by the border) has no SCOORD (its values stay).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = ["SrError", "SrProvenance", "build_sr", "read_sr", "read_source_header", "sr_uids", "write_sr"]

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
MEASURED = ("ok", "review")

# (code value, scheme, meaning); the scheme's tables are named beside each
REPORT = ("125000", "DCM", "OB-GYN Ultrasound Procedure Report")  # CID 12024
IMAGE_LIBRARY = ("111028", "DCM", "Image Library")  # TID 5000 row 5
RATIOS = ("125001", "DCM", "Fetal Biometry Ratios")  # TID 5004 row 1
BIOMETRY = ("125002", "DCM", "Fetal Biometry")  # TID 5005 row 1
GROUP = ("125005", "DCM", "Biometry Group")  # TID 5008 row 1
MEASURES = {  # CID 12005 "Fetal Biometry Measurement" (LOINC)
    "bpd": ("11820-8", "LN", "Biparietal Diameter"),
    "hc": ("11984-2", "LN", "Head Circumference"),
    "ofd": ("11851-3", "LN", "Occipital-Frontal Diameter"),
}
CEPHALIC_INDEX = ("11823-2", "LN", "Cephalic Index")  # CID 12004 "Fetal Biometry Ratio"
GESTATIONAL_AGE = ("18185-9", "LN", "Gestational Age")  # TID 5008 row 3
EQUATION = ("121420", "DCM", "Equation")  # CID 228 "Equation or Table"
GA_EQUATIONS = {  # CID 12013 "Gestational Age Equation/Table": the row column -> its code
    "ga_hadlock_hc_weeks": ("hc", ("11932-1", "LN", "HC, Hadlock 1984")),
    "ga_hadlock_bpd_weeks": ("bpd", ("11902-4", "LN", "BPD, Hadlock 1984")),
}
UNCERTAINTY = ("371884006", "SCT", "+/-, range of measurement uncertainty")  # TID 310
SOURCE_OF_MEASUREMENT = ("121112", "DCM", "Source of Measurement")  # TID 320
COMMENT = ("121106", "DCM", "Comment")
LANGUAGE = ("en-US", "RFC5646", "English (United States)")  # TID 1204, CID 5000
MM = ("mm", "UCUM", "millimeter")
DAYS = ("d", "UCUM", "day")
RATIO = ("{ratio}", "UCUM", "ratio")  # TID 5004: the index as BPD/OFD (the CSV gives it in percent)
# UIDs: pydicom's registered root, which it lends to anyone, + a hash of what they name (deterministic)
UID_ROOT = "1.2.826.0.1.3680043.8.498."


class SrError(ValueError):
    """An SR that cannot be written for this row (one line: the file and the reason)."""


@dataclass(frozen=True)
class SrProvenance:
    """Who measured: the software, the model(s) and the run's options hash (names the SR's UIDs)."""

    fetalbio_version: str
    models: tuple[tuple[str, str], ...]  # (model id, sha256) of every model the row's method ran on
    engine: str
    options: str

    @classmethod
    def from_run(cls, run_info: dict, method: str, options: str) -> SrProvenance:
        """From a run folder's run.json: the models the method ran on (a combining method: all)."""
        from fetalbio import methods

        used = methods.engines_needed((method,))
        models = run_info.get("models", {})
        return cls(
            str(run_info.get("fetalbio_version", "unknown")),
            tuple((models[m]["id"], models[m]["sha256"]) for m in used if m in models),
            str(run_info.get("engine", "")),
            options,
        )


def _code(c: tuple[str, str, str]):
    from highdicom.sr import CodedConcept

    return CodedConcept(value=c[0], scheme_designator=c[1], meaning=c[2])


def read_source_header(path: Path) -> Dataset:
    """The DICOM header of a source scan (no pixels). Raises SrError naming the file and the reason."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)  # as read_scan: no preamble is fine
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise SrError(f"{path}: not a DICOM file, no SR ({exc})") from None
    if "SOPClassUID" not in ds and "StudyInstanceUID" not in ds:  # force=True parses anything
        raise SrError(f"{path}: not a DICOM file, no SR (no DICOM header found)")
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        if not str(ds.get(keyword, "") or "").strip():
            raise SrError(f"{path}: the source has no {keyword}, so an SR cannot reference it")
    for keyword in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
                    "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName"):  # fmt: skip
        if keyword not in ds:
            setattr(ds, keyword, None)  # type 2: empty means unknown; nothing is invented
    charset = ds.get("SpecificCharacterSet")
    values = [] if charset is None or isinstance(charset, str) else [str(v).strip() for v in charset]
    if len(values) > 1 and not values[0]:  # an empty first value is the default repertoire (PS3.3
        ds.SpecificCharacterSet = ["ISO 2022 IR 6", *values[1:]]  # C.12.1.1.2), which highdicom refuses
    return ds


def sr_uids(source: Dataset, row: dict, prov: SrProvenance) -> tuple[str, str]:
    """(series UID, SOP instance UID) of the SR: derived from the source, frame, method, run options and
    fetalbio version, so a resumed or repeated run writes (and stores) the same instance again, not a
    duplicate, while another release (which may measure otherwise with the same models) writes a new one
    instead of a different document under a UID the PACS already holds."""
    from pydicom.uid import generate_uid

    opts = [prov.options, prov.fetalbio_version]
    series = generate_uid(UID_ROOT, ["series", str(source.StudyInstanceUID), *opts, row["method"]])
    key = [str(source.SOPInstanceUID), str(row.get("frame") or 0), row["method"], *opts]
    return series, generate_uid(UID_ROOT, ["instance", *key])


def _multiframe(source: Dataset) -> bool:
    return int(source.get("NumberOfFrames") or 1) > 1


def _image(source: Dataset, frame: int, relationship: str | None):
    from highdicom.sr import ImageContentItem

    multi = _multiframe(source)
    item = ImageContentItem(
        name=_code(SOURCE_OF_MEASUREMENT),
        referenced_sop_class_uid=source.SOPClassUID,
        referenced_sop_instance_uid=source.SOPInstanceUID,
        referenced_frame_numbers=[frame + 1] if multi else None,  # DICOM frames count from 1
        relationship_type=relationship,
    )
    return item  # its concept name is dropped from the finished document (see _unname_images)


def _graphic(measure: str, row: dict, source: Dataset) -> tuple[str, list[tuple[float, float]]] | None:
    """(graphic type, SCOORD points) of a measure: caliper end points, or the ellipse's axis ends."""
    if measure in ("bpd", "ofd"):
        keys = [(f"{measure}{i}_x", f"{measure}{i}_y") for i in (1, 2)]
        if any(row.get(k) is None for pair in keys for k in pair):
            return None
        pts = [(row[x], row[y]) for x, y in keys]
        kind = "POLYLINE"
    else:
        e = [row.get(k) for k in ("ellipse_cx_px", "ellipse_cy_px", "ellipse_semi_major_px",
                                  "ellipse_semi_minor_px", "ellipse_angle_deg")]  # fmt: skip
        if any(v is None for v in e):
            return None
        cx, cy, a, b, deg = e
        t = math.radians(deg)
        ux, uy = math.cos(t), math.sin(t)  # the major axis's direction (OpenCV: y down)
        pts = [(cx - a * ux, cy - a * uy), (cx + a * ux, cy + a * uy),
               (cx + b * uy, cy - b * ux), (cx - b * uy, cy + b * ux)]  # fmt: skip
        kind = "ELLIPSE"
    pts = [(x + 0.5, y + 0.5) for x, y in pts]
    cols, rows = int(source.Columns), int(source.Rows)
    if not all(0.0 <= x <= cols and 0.0 <= y <= rows for x, y in pts):
        return None
    return kind, pts


def _measurement(measure: str, row: dict, source: Dataset, prov: SrProvenance, frame: int) -> list:
    """TID 300 for one measure: the NUM and its algorithm, interval and source coordinates."""
    from highdicom.sr import (
        AlgorithmIdentification,
        ContentSequence,
        NumContentItem,
        ScoordContentItem,
        TextContentItem,
    )

    num = NumContentItem(
        name=_code(MEASURES[measure]),
        value=row[f"{measure}_mm"],
        unit=_code(MM),
        relationship_type="CONTAINS",
    )
    children = list(
        AlgorithmIdentification(
            name=f"fetalbio {row['method']}",
            version=prov.fetalbio_version,
            parameters=[*(f"model {i} sha256 {sha}" for i, sha in prov.models), f"engine {prov.engine}"],
        )
    )
    lo, hi = row.get(f"{measure}_mm_low"), row.get(f"{measure}_mm_high")
    if lo is not None and hi is not None:
        half = round((hi - lo) / 2.0, 2)
        children.append(
            NumContentItem(_code(UNCERTAINTY), half, _code(MM), relationship_type="HAS PROPERTIES")
        )
        text = f"90 % prediction interval {lo:.2f}-{hi:.2f} mm (split-conformal, see the model card)"
        children.append(TextContentItem(_code(COMMENT), text, relationship_type="HAS PROPERTIES"))
    graphic = _graphic(measure, row, source)
    if graphic is not None:
        kind, pts = graphic
        scoord = ScoordContentItem(
            name=_code(SOURCE_OF_MEASUREMENT),
            graphic_type=kind,
            graphic_data=_points(pts),
            pixel_origin_interpretation="FRAME" if _multiframe(source) else None,
            relationship_type="INFERRED FROM",
        )
        scoord.ContentSequence = ContentSequence([_image(source, frame, "SELECTED FROM")])
        children.append(scoord)
    num.ContentSequence = ContentSequence(children)
    return [num]


def _points(pts: list[tuple[float, float]]):
    import numpy as np

    return np.array([[round(x, 4), round(y, 4)] for x, y in pts], dtype=np.float64)


def _group(measure: str, row: dict, source: Dataset, prov: SrProvenance, frame: int):
    """TID 5008: one Biometry Group (the measure, then the GA derived from it where CID 12013 has it)."""
    from highdicom.sr import CodeContentItem, ContainerContentItem, ContentSequence, NumContentItem

    items = _measurement(measure, row, source, prov, frame)
    for column, (of, equation) in GA_EQUATIONS.items():
        if of == measure and row.get(column) is not None:
            ga = NumContentItem(
                _code(GESTATIONAL_AGE), round(row[column] * 7.0, 2), _code(DAYS), relationship_type="CONTAINS"
            )
            eq = CodeContentItem(_code(EQUATION), _code(equation), relationship_type="INFERRED FROM")
            ga.ContentSequence = ContentSequence([eq])
            items.append(ga)
    group = ContainerContentItem(name=_code(GROUP), relationship_type="CONTAINS")
    group.ContentSequence = ContentSequence(items)
    return group


def _content(row: dict, source: Dataset, prov: SrProvenance):
    """The TID 5000 content tree of one row."""
    from highdicom.sr import (
        ContainerContentItem,
        ContentSequence,
        DeviceObserverIdentifyingAttributes,
        LanguageOfContentItemAndDescendants,
        NumContentItem,
        ObservationContext,
        ObserverContext,
        TextContentItem,
    )
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    frame = int(row.get("frame") or 0)
    device = DeviceObserverIdentifyingAttributes(
        uid=generate_uid(UID_ROOT, ["device", prov.fetalbio_version, *(sha for _, sha in prov.models)]),
        name="fetalbio",
        manufacturer_name="fetalbio",
        model_name=f"fetalbio {prov.fetalbio_version} {row['method']}"[:64],
    )
    items: list = [*LanguageOfContentItemAndDescendants(_code(LANGUAGE))]
    items += list(ObservationContext(observer_device_context=ObserverContext(codes.DCM.Device, device)))
    library = ContainerContentItem(_code(IMAGE_LIBRARY), relationship_type="CONTAINS")
    library.ContentSequence = ContentSequence([_image(source, frame, "CONTAINS")])
    items.append(library)
    if row.get("cephalic_index") is not None:
        ratios = ContainerContentItem(_code(RATIOS), relationship_type="CONTAINS")
        ci = round(row["cephalic_index"] / 100.0, 4)  # the CSV's index, as a ratio
        ratios.ContentSequence = ContentSequence(
            [NumContentItem(_code(CEPHALIC_INDEX), ci, _code(RATIO), relationship_type="CONTAINS")]
        )
        items.append(ratios)
    biometry = ContainerContentItem(_code(BIOMETRY), relationship_type="CONTAINS")
    biometry.ContentSequence = ContentSequence(
        [_group(m, row, source, prov, frame) for m in ("bpd", "hc", "ofd")]
    )
    items.append(biometry)
    items.append(TextContentItem(_code(COMMENT), review_text(row), relationship_type="CONTAINS"))
    root = ContainerContentItem(_code(REPORT), template_id="5000")
    root.ContentSequence = ContentSequence(items)
    return root


def review_text(row: dict) -> str:
    """The SR's statement of the row's status: what a person must still do."""
    # DICOM numbers frames from 1 (the image reference's ReferencedFrameNumber); the CSV's frame is from 0
    frame = f", frame {int(row['frame']) + 1} of the cine" if int(row.get("frame") or 0) else ""
    head = f"Automated measurement by fetalbio ({row['method']}{frame}); not verified by a person."
    if row["status"] == "review":
        return f"{head} REVIEW REQUIRED: {row.get('review_reasons') or 'see the run report'}."
    return f"{head} No review reason found; a person must still verify it before clinical use."


def build_sr(row: dict, source: Dataset, prov: SrProvenance, instance_number: int = 1) -> Dataset:
    """The Comprehensive SR of one measured row (mm) on its source (a header from
    :func:`read_source_header`). Raises SrError when the row cannot be reported."""
    from highdicom.sr import ComprehensiveSR

    if row.get("status") not in MEASURED:
        raise SrError(f"{row.get('file')}: status {row.get('status')!r}, no measurement to report")
    if row.get("unit") != "mm" or any(row.get(f"{m}_mm") is None for m in MEASURES):
        raise SrError(f"{row.get('file')}: measured in pixels only (no pixel size), no SR in mm")
    series_uid, sop_uid = sr_uids(source, row, prov)
    sr = ComprehensiveSR(
        evidence=[source],
        content=_content(row, source, prov),
        series_instance_uid=series_uid,
        series_number=9901,  # a high number: derived series sort after the scanner's own
        sop_instance_uid=sop_uid,
        instance_number=instance_number,
        manufacturer="fetalbio",
        is_complete=True,
        is_final=row["status"] == "ok",
        is_verified=False,
    )
    _unname_images(sr)
    sr.SeriesDescription = "fetalbio fetal head biometry (unverified)"
    sr.ManufacturerModelName = "fetalbio"
    sr.SoftwareVersions = prov.fetalbio_version
    return sr


def _unname_images(node) -> None:
    """Image references carry no concept name (TID 5000 row 6, TID 320): highdicom's builders need one."""
    for item in node.get("ContentSequence", []):
        if item.ValueType == "IMAGE" and "ConceptNameCodeSequence" in item:
            del item.ConceptNameCodeSequence
        _unname_images(item)


def write_sr(sr: Dataset, path: Path) -> Path:
    """Write an SR as a DICOM file (Part 10), atomically."""
    from io import BytesIO

    from fetalbio.writers import write_bytes_atomic

    buf = BytesIO()
    sr.save_as(buf, enforce_file_format=True)
    return write_bytes_atomic(path, buf.getvalue())


def read_sr(ds: Dataset) -> dict[str, Any]:
    """The values of an SR this module wrote, keyed like the CSV row (``hc_mm``, ``bpd_mm_low``,
    ``cephalic_index`` in percent, ``ga_hadlock_hc_weeks``, ...), plus ``graphics`` {measure: (type,
    points)}, ``image`` (referenced SOP instance UID, frame from 0), ``comment`` and the flags."""
    out: dict[str, Any] = {
        "verification": ds.VerificationFlag,
        "preliminary": ds.get("PreliminaryFlag"),
        "graphics": {},
    }
    by_code = {c[0]: m for m, c in MEASURES.items()}
    for item, parent, depth in _walk(ds):
        code = item.ConceptNameCodeSequence[0].CodeValue if "ConceptNameCodeSequence" in item else None
        if item.ValueType == "NUM":
            value = float(item.MeasuredValueSequence[0].NumericValue)
            if code in by_code:
                out[f"{by_code[code]}_mm"] = value
            elif code == CEPHALIC_INDEX[0]:
                out["cephalic_index"] = 100.0 * value
            elif code == GESTATIONAL_AGE[0]:
                eq = item.ContentSequence[0].ConceptCodeSequence[0].CodeValue
                col = next(c for c, (_, e) in GA_EQUATIONS.items() if e[0] == eq)
                out[col] = value / 7.0
            elif code == UNCERTAINTY[0] and parent is not None:
                m = by_code[parent.ConceptNameCodeSequence[0].CodeValue]
                out[f"{m}_uncertainty_mm"] = value
        elif item.ValueType == "SCOORD" and parent is not None:
            m = by_code[parent.ConceptNameCodeSequence[0].CodeValue]
            pts = [float(v) - 0.5 for v in item.GraphicData]
            out["graphics"][m] = (item.GraphicType, list(zip(pts[0::2], pts[1::2], strict=True)))
        elif item.ValueType == "IMAGE" and "image" not in out:
            ref = item.ReferencedSOPSequence[0]
            frames = ref.get("ReferencedFrameNumber")
            out["image"] = (str(ref.ReferencedSOPInstanceUID), int(frames) - 1 if frames else 0)
        elif item.ValueType == "TEXT" and code == COMMENT[0] and depth == 0:
            out["comment"] = str(item.TextValue)
    return out


def _walk(node, num=None, depth: int = 0):
    """(item, its nearest NUM ancestor or None, depth below the root) for every content item."""
    for item in node.get("ContentSequence", []):
        yield item, num, depth
        yield from _walk(item, item if item.ValueType == "NUM" else num, depth + 1)


# --- a run folder's SRs ---

SR_INDEX_COLUMNS = ["file", "frame", "status", "sr_file", "sop_instance_uid", "note"]


@dataclass
class SrRun:
    """What :func:`write_run_srs` did: the SR files written and, per input not reported, why."""

    written: list[dict]
    skipped: list[dict]

    def summary(self) -> str:
        """One line for the terminal, e.g. ``SR: 4 written -> out/sr; 2 not DICOM (PNG/JPEG), no SR``."""
        from collections import Counter

        why = Counter(s["kind"] for s in self.skipped)
        parts = [f"{n} {kind}" for kind, n in why.items()]
        return f"SR: {len(self.written)} written" + ("; no SR for " + ", ".join(parts) if parts else "")


def report_rows(rows: list[dict], method: str) -> list[dict]:
    """The row of each input an SR reports: the run's first method (``fused`` by default)."""
    return [r for r in rows if r.get("method") == method]


def write_run_srs(out: Path, rows: list[dict], run_info: dict) -> SrRun:
    """Write ``out/sr/<SOP instance UID>.dcm`` for every measured DICOM input of a run and
    ``out/sr/index.csv`` (input, SR file, or why there is none). ``rows`` as the CSV holds them."""
    from fetalbio.writers import round_row, write_csv_atomic

    method = (run_info.get("options", {}).get("methods") or ["fused"])[0]
    options = str(run_info.get("options_hash") or "")
    measured = _measured_sha256(out, options)
    result = SrRun([], [])
    for n, row in enumerate(report_rows([round_row(r) for r in rows], method), start=1):
        entry = {"file": row["file"], "frame": row.get("frame"), "status": row["status"]}
        try:
            if row["status"] not in MEASURED:
                raise _Skip("not measured", row.get("error") or "error row")
            path = _as_measured(Path(row["file"]), run_info)
            _unchanged(path, measured.get(row["file"]))
            src = _source(path)  # one row per input: each header is read once
            sr = build_sr(row, src, SrProvenance.from_run(run_info, method, options), n)
        except _Skip as skip:
            result.skipped.append({**entry, "kind": skip.kind, "note": skip.note})
            continue
        except SrError as exc:
            result.skipped.append({**entry, "kind": "cannot report", "note": str(exc)})
            continue
        except Exception as exc:  # noqa: BLE001 - highdicom refusing a source's attribute: that row, not the run
            note = (
                f"{row['file']}: cannot build the SR ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
            )
            result.skipped.append({**entry, "kind": "cannot report", "note": note})
            continue
        rel = Path("sr") / f"{sr.SOPInstanceUID}.dcm"
        write_sr(sr, out / rel)
        result.written.append({**entry, "sr_file": rel.as_posix(), "sop_instance_uid": sr.SOPInstanceUID})
    index = [{**w, "note": ""} for w in result.written] + result.skipped
    write_csv_atomic(out / "sr" / "index.csv", index, SR_INDEX_COLUMNS)
    return result


def _as_measured(path: Path, run_info: dict) -> Path:
    """A row's input path as predict opened it: relative paths are relative to the folder it ran in
    (``run.json``'s ``cwd``), so ``fetalbio sr RUN`` finds the sources from any folder."""
    cwd = run_info.get("cwd")
    return path if path.is_absolute() or not cwd else Path(cwd) / path


def _measured_sha256(out: Path, options: str) -> dict[str, str]:
    """{input path as given: sha256 of the file that was measured}, from the run's journal."""
    from fetalbio.runfolder import RunFolder

    return {path: sha for path, sha in RunFolder(out, "resume").done(options)} if options else {}


def _unchanged(path: Path, sha: str | None) -> None:
    """An SR reports the file that was measured: one changed since (another image, another patient
    under the same name) gets none."""
    from fetalbio.runfolder import file_sha256

    try:
        if sha is not None and file_sha256(path) != sha:
            raise _Skip("changed", f"{path}: changed since it was measured (measure it again)")
    except OSError as exc:
        raise _Skip("unreadable", f"{path}: {exc.strerror or exc}") from None


class _Skip(Exception):
    def __init__(self, kind: str, note: str):
        super().__init__(note)
        self.kind, self.note = kind, note


def _source(path: Path) -> Dataset:
    from fetalbio.io import DICOM_SUFFIXES

    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise _Skip("unreadable", f"{path}: {exc.strerror or exc}") from None
    if path.suffix.lower() not in DICOM_SUFFIXES and head[128:132] != b"DICM":
        raise _Skip("not DICOM (PNG/JPEG)", f"{path}: not a DICOM file; an SR needs the source's study")
    return read_source_header(path)
