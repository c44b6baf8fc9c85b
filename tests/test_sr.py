"""DICOM SR output: every SR a run writes validates with dciodvfy (dicom3tools), dumps with dsrdump
(dcmtk), reads back with pydicom and highdicom to the numbers of the CSV row, copies the source's
identity and references its image. Scans are synthetic DICOMs measured with the shipped int8 models."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from _dicom import STUDY_IDENTITY, make_dicom, require_tool, validate_sr, write_study
from typer.testing import CliRunner

from fetalbio import sr as srmod
from fetalbio.cli import app


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A predict --sr run over 3 single-frame DICOMs, a 3-frame cine and a PNG."""
    root = tmp_path_factory.mktemp("sr")
    write_study(root / "in", 3, multiframe=1, seed=7)
    import cv2

    from fetalbio.synthetic import draw_scan, random_ellipse

    rng = np.random.default_rng(1)
    cv2.imwrite(str(root / "in" / "plain.png"), draw_scan((240, 320), random_ellipse((240, 320), rng), rng))
    res = CliRunner().invoke(
        app, ["predict", str(root / "in"), "--out", str(root / "run"), "--sr", "--engine", "litert", "-q"]
    )
    assert res.exit_code == 0, res.output
    assert "SR: 4 written" in res.output and "no SR for 1 not DICOM (PNG/JPEG)" in res.output
    return root / "run"


def rows(run: Path) -> dict[str, dict]:
    return {r["file"]: r for r in json.loads((run / "measurements.json").read_text())["rows"]}


def index(run: Path) -> list[dict]:
    with (run / "sr" / "index.csv").open() as f:
        return list(csv.DictReader(f))


def written(run: Path) -> list[tuple[dict, Path]]:
    return [(e, run / e["sr_file"]) for e in index(run) if e["sr_file"]]


def test_every_sr_validates_with_dciodvfy(run):
    for _, path in written(run):
        validate_sr(path)


def test_dsrdump_reads_the_template_and_values(run):
    dsrdump = require_tool("dsrdump")
    by_file = rows(run)
    for entry, path in written(run):
        res = subprocess.run([dsrdump, "-Ec", str(path)], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        out = res.stdout
        row = by_file[entry["file"]]
        assert "OB-GYN Ultrasound Procedure Report" in out
        assert "Verification Flag   : UNVERIFIED" in out
        for name, key in (("Biparietal Diameter", "bpd_mm"), ("Head Circumference", "hc_mm")):
            shown = re.search(rf'"{name}"\)="([-0-9.eE+]+)" \(mm,UCUM', out)
            assert shown and float(shown.group(1)) == pytest.approx(row[key], abs=1e-9), out


def test_values_read_back_as_in_the_csv(run):
    by_file = rows(run)
    for entry, path in written(run):
        row = by_file[entry["file"]]
        back = srmod.read_sr(pydicom.dcmread(path))
        for k in (
            "hc_mm",
            "bpd_mm",
            "ofd_mm",
            "cephalic_index",
            "ga_hadlock_hc_weeks",
            "ga_hadlock_bpd_weeks",
        ):
            if row.get(k) is None:
                assert k not in back
            else:
                assert back[k] == pytest.approx(row[k], abs=0.005), k  # the CSV's 2 decimals
        for m in ("hc", "bpd", "ofd"):
            half = back[f"{m}_uncertainty_mm"]
            assert row[f"{m}_mm"] - half == pytest.approx(row[f"{m}_mm_low"], abs=0.011)
            assert row[f"{m}_mm"] + half == pytest.approx(row[f"{m}_mm_high"], abs=0.011)


def test_sr_references_its_image_and_frame_and_copies_identity(run):
    by_file = rows(run)
    for entry, path in written(run):
        src = pydicom.dcmread(entry["file"], stop_before_pixels=True)
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == srmod.COMPREHENSIVE_SR and ds.Modality == "SR"
        assert ds.StudyInstanceUID == src.StudyInstanceUID
        assert ds.SeriesInstanceUID != src.SeriesInstanceUID
        for k, v in STUDY_IDENTITY.items():
            assert str(ds.get(k)) == v, k
        back = srmod.read_sr(ds)
        frame = int(by_file[entry["file"]]["frame"])
        assert back["image"] == (src.SOPInstanceUID, frame)
        if "cine" in entry["file"]:  # multi-frame: the chosen frame, counted from 1 as DICOM does
            library = next(i for i in ds.ContentSequence if i.ValueType == "CONTAINER")
            assert int(library.ContentSequence[0].ReferencedSOPSequence[0].ReferencedFrameNumber) == frame + 1
            if frame:  # the comment numbers the frame as the reference does
                assert f"frame {frame + 1} of the cine" in back["comment"], back["comment"]
        ev = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
        assert ev.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
        assert ds.VerificationFlag == "UNVERIFIED" and ds.PreliminaryFlag == "FINAL"  # all rows ok here
        assert "not verified by a person" in back["comment"]


def test_scoords_are_the_calipers_and_ellipse_in_source_pixels(run):
    by_file = rows(run)
    for entry, path in written(run):
        row = by_file[entry["file"]]
        g = srmod.read_sr(pydicom.dcmread(path))["graphics"]
        kind, pts = g["bpd"]
        assert kind == "POLYLINE"
        np.testing.assert_allclose(
            pts, [(row["bpd1_x"], row["bpd1_y"]), (row["bpd2_x"], row["bpd2_y"])], atol=1e-3
        )
        kind, pts = g["ofd"]
        np.testing.assert_allclose(
            pts, [(row["ofd1_x"], row["ofd1_y"]), (row["ofd2_x"], row["ofd2_y"])], atol=1e-3
        )
        kind, (p1, p2, q1, q2) = g["hc"]
        assert kind == "ELLIPSE"
        # major axis ends, then minor axis ends, about the centre, perpendicular, of the fitted lengths
        centre = np.array([row["ellipse_cx_px"], row["ellipse_cy_px"]])
        np.testing.assert_allclose((np.add(p1, p2)) / 2, centre, atol=2e-3)
        np.testing.assert_allclose((np.add(q1, q2)) / 2, centre, atol=2e-3)
        assert math.dist(p1, p2) == pytest.approx(2 * row["ellipse_semi_major_px"], abs=2e-3)
        assert math.dist(q1, q2) == pytest.approx(2 * row["ellipse_semi_minor_px"], abs=2e-3)
        assert abs(np.dot(np.subtract(p2, p1), np.subtract(q2, q1))) < 1e-2 * math.dist(p1, p2) ** 2


def test_highdicom_reads_the_document(run):
    import highdicom as hd

    for _, path in written(run):
        doc = hd.sr.srread(path)
        assert doc.ContentTemplateSequence[0].TemplateIdentifier == "5000"
        names = {
            i.ConceptNameCodeSequence[0].CodeValue
            for i in doc.ContentSequence
            if "ConceptNameCodeSequence" in i
        }
        assert {"111028", "125001", "125002", "121106"} <= names


def test_png_inputs_get_no_sr_and_say_why(run):
    png = [e for e in index(run) if e["file"].endswith(".png")]
    assert len(png) == 1 and not png[0]["sr_file"] and "not a DICOM file" in png[0]["note"]


def test_sr_command_rewrites_the_same_instances(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = {e["sop_instance_uid"] for e in index(copy) if e["sr_file"]}
    shutil.rmtree(copy / "sr")
    res = CliRunner().invoke(app, ["sr", str(copy)])
    assert res.exit_code == 0, res.output
    assert {e["sop_instance_uid"] for e in index(copy) if e["sr_file"]} == before  # idempotent: no duplicates
    for _, path in written(copy):
        validate_sr(path)


def test_sr_command_refuses_a_source_changed_since_it_was_measured(tmp_path):
    """Another file under the measured name (another image, maybe another patient) gets no SR."""
    write_study(tmp_path / "in", 2, multiframe=0, seed=3)
    out = tmp_path / "run"
    res = CliRunner().invoke(
        app, ["predict", str(tmp_path / "in"), "--out", str(out), "--engine", "litert", "-q"]
    )
    assert res.exit_code == 0, res.output
    a, b = sorted((tmp_path / "in").glob("*.dcm"))
    b.write_bytes(a.read_bytes())  # b is now another image
    res = CliRunner().invoke(app, ["sr", str(out)])
    by = {Path(e["file"]).name: e for e in index(out)}
    assert by[a.name]["sr_file"] and not by[b.name]["sr_file"]
    assert "changed since it was measured" in by[b.name]["note"]
    assert "no SR for 1 changed" in " ".join(res.output.split())


def test_sr_command_on_a_folder_that_is_no_run(tmp_path):
    res = CliRunner().invoke(app, ["sr", str(tmp_path)])
    assert res.exit_code == 2 and "not a finished predict run folder" in res.output


def test_codes_are_the_standards(run):
    """Every concept code the SR uses is in the PS3.16 context group it claims (pydicom's tables)."""
    from pydicom.sr._cid_dict import cid_concepts
    from pydicom.sr.codedict import codes

    def in_cid(cid: int, value: str) -> bool:
        return any(
            getattr(getattr(codes, s), n).value == value for s, ns in cid_concepts[cid].items() for n in ns
        )

    assert all(in_cid(12005, c[0]) for c in srmod.MEASURES.values())
    assert in_cid(12004, srmod.CEPHALIC_INDEX[0])
    assert all(in_cid(12013, eq[0]) for _, eq in srmod.GA_EQUATIONS.values())
    assert codes.LN.BiparietalDiameter.value == srmod.MEASURES["bpd"][0]
    assert codes.LN.HeadCircumference.value == srmod.MEASURES["hc"][0]
    assert codes.DCM.OBGYNUltrasoundProcedureReport.value == srmod.REPORT[0]


# --- single rows (no model) ---


def source(tmp_path: Path, **extra) -> Path:
    img = np.zeros((100, 120), np.uint8)
    ids = dict(STUDY_IDENTITY, StudyInstanceUID="1.2.3.4", SeriesInstanceUID="1.2.3.4.5")
    return make_dicom(tmp_path / "s.dcm", img, **{**ids, **extra})


def row(**over) -> dict:
    base = dict(file="s.dcm", method="fused", status="ok", unit="mm", frame=0, hc_mm=100.0, bpd_mm=28.0,
                ofd_mm=36.0, cephalic_index=77.78, bpd1_x=60.0, bpd1_y=36.0, bpd2_x=60.0, bpd2_y=64.0,
                ofd1_x=42.0, ofd1_y=50.0, ofd2_x=78.0, ofd2_y=50.0, ellipse_cx_px=60.0, ellipse_cy_px=50.0,
                ellipse_semi_major_px=18.0, ellipse_semi_minor_px=14.0, ellipse_angle_deg=0.0)  # fmt: skip
    return {**base, **over}


PROV = srmod.SrProvenance("0.0.0", (("seg/m.tflite@abc", "abc" * 21 + "d"),), "litert", "opts")


def test_a_review_row_is_preliminary_and_says_why(tmp_path):
    src = srmod.read_source_header(source(tmp_path))
    ds = srmod.build_sr(row(status="review", review_reasons="the methods disagree"), src, PROV)
    validate_sr(srmod.write_sr(ds, tmp_path / "review.dcm"))
    assert ds.VerificationFlag == "UNVERIFIED" and ds.PreliminaryFlag == "PRELIMINARY"
    assert "REVIEW REQUIRED: the methods disagree" in srmod.read_sr(ds)["comment"]


def test_an_outline_outside_the_image_has_no_scoord_but_keeps_its_value(tmp_path):
    src = srmod.read_source_header(source(tmp_path))
    ds = srmod.build_sr(row(ellipse_cx_px=110.0, bpd1_y=-3.0), src, PROV)  # cut by the border
    validate_sr(srmod.write_sr(ds, tmp_path / "edge.dcm"))
    back = srmod.read_sr(ds)
    assert set(back["graphics"]) == {"ofd"} and back["hc_mm"] == 100.0 and back["bpd_mm"] == 28.0


def test_rows_that_cannot_be_reported(tmp_path):
    src = srmod.read_source_header(source(tmp_path))
    with pytest.raises(srmod.SrError, match="pixels only"):
        srmod.build_sr(row(unit="px", hc_mm=None), src, PROV)
    with pytest.raises(srmod.SrError, match="no measurement"):
        srmod.build_sr(row(status="error"), src, PROV)
    bare = make_dicom(tmp_path / "bare.dcm", np.zeros((50, 60), np.uint8))
    with pytest.raises(srmod.SrError, match="no StudyInstanceUID"):
        srmod.read_source_header(bare)
    (tmp_path / "x.dcm").write_bytes(b"not dicom")
    with pytest.raises(srmod.SrError, match="not a DICOM file"):
        srmod.read_source_header(tmp_path / "x.dcm")


def test_missing_patient_attributes_stay_empty_never_invented(tmp_path):
    path = make_dicom(tmp_path / "anon.dcm", np.zeros((50, 60), np.uint8), StudyInstanceUID="1.2.3",
                      SeriesInstanceUID="1.2.3.4")  # fmt: skip
    ds = srmod.build_sr(row(), srmod.read_source_header(path), PROV)
    validate_sr(srmod.write_sr(ds, tmp_path / "anon_sr.dcm"))
    assert ds.PatientID in ("", None) and ds.PatientBirthDate in ("", None)
    assert str(ds.PatientName) == "Synthetic^Test"  # what the source has


def test_srs_a_server_does_not_take_are_named_and_fail_the_run(run, tmp_path):
    import socket

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = CliRunner().invoke(
        app, ["sr", str(copy), "--dicomweb", f"http://127.0.0.1:{port}/dw", "--store-sr"]
    )
    assert res.exit_code == 1, res.output
    assert "stored 0 of 4 SRs" in res.output and res.output.count("not stored: storing SR") == 1
    assert "3 more SRs not tried" in res.output  # the server is gone: one line for the rest
    assert "cannot connect" in res.output


def test_a_source_whose_character_set_starts_empty_gets_its_sr(tmp_path):
    """SpecificCharacterSet "\\ISO 2022 IR 87" (PS3.3's own Japanese example: the empty first value is the
    default repertoire) made highdicom refuse the SR with a traceback; any builder failure is now a row."""
    _, (path,) = write_study(tmp_path / "in", 1, seed=4)
    ds = pydicom.dcmread(path)
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    ds.save_as(path)
    res = CliRunner().invoke(
        app, ["predict", str(tmp_path / "in"), "--out", str(tmp_path / "r"), "--sr", "-q"]
    )
    assert res.exit_code == 0, res.output
    (entry,) = index(tmp_path / "r")
    assert entry["sr_file"], entry
    ds = pydicom.dcmread(tmp_path / "r" / entry["sr_file"])
    assert list(ds.SpecificCharacterSet) == ["ISO 2022 IR 6", "ISO 2022 IR 87"]
    validate_sr(tmp_path / "r" / entry["sr_file"])


def test_another_release_writes_another_sr_instance(run):
    """The same source, frame, method and options under another fetalbio version: a new UID (a release
    may measure otherwise with the same models; the PACS must not keep an old document under its UID)."""
    from dataclasses import replace

    entry, path = written(run)[0]
    src = pydicom.dcmread(entry["file"], stop_before_pixels=True)
    row = rows(run)[entry["file"]]
    prov = srmod.SrProvenance.from_run(json.loads((run / "run.json").read_text()), row["method"], "opts")
    assert srmod.sr_uids(src, row, prov) == srmod.sr_uids(src, row, prov)  # a rerun: the same instance
    other = replace(prov, fetalbio_version=prov.fetalbio_version + ".post1")
    assert srmod.sr_uids(src, row, other)[1] != srmod.sr_uids(src, row, prov)[1]


def test_sr_command_finds_relative_sources_from_another_folder(tmp_path, monkeypatch):
    """predict ran in one folder with relative paths; `fetalbio sr` runs from another: the sources are
    found relative to where predict ran (run.json's cwd)."""
    write_study(tmp_path / "site" / "in", 2, seed=6)
    monkeypatch.chdir(tmp_path / "site")
    res = CliRunner().invoke(app, ["predict", "in", "--out", "run", "-q"])
    assert res.exit_code == 0, res.output
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["sr", "site/run"])
    assert res.exit_code == 0, res.output
    assert len([e for e in index(tmp_path / "site" / "run") if e["sr_file"]]) == 2
