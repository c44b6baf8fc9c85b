"""DICOMweb against a real PACS: Orthanc with its DICOMweb plugin on a loopback port (started and stopped
here). A 50-instance ultrasound study (48 scans, 2 cines) and a PDF go in; one ``predict --dicomweb
--store-sr`` measures the study and stores its SRs; QIDO finds every SR, each references its image and
carries the values of a folder run on the same files."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from _dicom import validate_sr, write_study
from _orthanc import PASSWORD, USER, available, free_port, orthanc
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from typer.testing import CliRunner

from fetalbio.cli import app
from fetalbio.dicomweb import DicomwebError, InstanceRef, Pacs, Query, redact
from fetalbio.sr import read_sr

pytestmark = pytest.mark.slow

if available() and os.environ.get("FETALBIO_REQUIRE_TOOLS") != "1":
    pytest.skip(available(), allow_module_level=True)

CREDS = {"FETALBIO_DICOMWEB_USER": USER, "FETALBIO_DICOMWEB_PASSWORD": PASSWORD}


def pdf_in(study: str, path: Path) -> Path:
    """An Encapsulated PDF instance in the study: not an image, skipped with its reason."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study, generate_uid(), "DOC"
    ds.PatientID, ds.PatientName = "FB-0042", "Doe^Jane"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pacs")
    study, paths = write_study(root / "study", 48, multiframe=2, seed=11)
    with orthanc(root / "orthanc") as server:
        for p in paths:
            server.upload(p)
        server.upload(pdf_in(study, root / "doc.dcm"))
        yield server, study, paths, root


def invoke(args: list[str], env: dict | None = None):
    return CliRunner().invoke(app, args, env={**CREDS, **(env or {})})


@pytest.fixture(scope="module")
def round_trip(pacs):
    """One command: the 50-instance study in, measured, its SRs stored back."""
    server, study, _, root = pacs
    res = invoke(["predict", "--dicomweb", server.dicomweb, "--study", study, "--store-sr",
                  "--out", str(root / "run"), "--engine", "litert", "-q"])  # fmt: skip
    return res, root / "run"


def stored_srs(server, study: str) -> list[Dataset]:
    p = Pacs(server.dicomweb)
    os.environ.update(CREDS)
    try:
        refs = p.find(Query((study,), modality="SR"))
        return [p.client.retrieve_instance(r.study, r.series, r.sop) for r in refs]
    finally:
        for k in CREDS:
            os.environ.pop(k, None)


def test_a_50_instance_study_round_trips_in_one_command(pacs, round_trip):
    server, study, paths, _ = pacs
    res, _ = round_trip
    assert res.exit_code == 0, res.output
    assert "50 scans: " in res.output and "stored 50 of 50 SRs" in res.output
    srs = stored_srs(server, study)
    assert len(srs) == 50
    sources = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in paths}
    assert {read_sr(ds)["image"][0] for ds in srs} == set(sources)  # each references its own image
    for path in (round_trip[1] / "sr").glob("*.dcm"):  # every SR this run wrote and stored
        validate_sr(path)


def test_stored_srs_carry_the_values_of_a_folder_run(pacs, round_trip, tmp_path):
    server, study, paths, root = pacs
    folder = root / "study"
    res = invoke(
        ["predict", str(folder), "--out", str(tmp_path / "local"), "--sr", "--engine", "litert", "-q"]
    )
    assert res.exit_code == 0, res.output
    local = {}
    for f in (tmp_path / "local" / "sr").glob("*.dcm"):
        validate_sr(f)
        back = read_sr(pydicom.dcmread(f))
        local[back["image"]] = back
    remote = {read_sr(ds)["image"]: read_sr(ds) for ds in stored_srs(server, study)}
    assert set(remote) == set(local) and len(local) == 50  # same instances, same frames of the cines
    for key, back in remote.items():
        for k in ("hc_mm", "bpd_mm", "ofd_mm", "cephalic_index", "hc_uncertainty_mm"):
            assert back[k] == local[key][k], (key, k)


def test_the_pdf_is_skipped_with_its_reason_and_resume_stores_no_duplicates(pacs, round_trip):
    server, study, _, root = pacs
    args = ["predict", "--dicomweb", server.dicomweb, "--study", study, "--modality", "", "--store-sr"]
    res = invoke([*args, "--out", str(root / "run"), "--resume", "--engine", "litert", "-q"])
    assert res.exit_code == 0, res.output
    assert "not an image: an encapsulated document" in res.output
    assert "not an image: a structured report" in res.output  # our own SRs, now in the study
    assert "resuming: 50 scans in the journal" in " ".join(res.output.split())
    assert "not among these inputs" not in res.output  # a PACS run's files come after the journal check
    assert len(stored_srs(server, study)) == 50  # the same SR instances again, not new ones


def test_wrong_password_is_one_line_and_never_printed(pacs, tmp_path):
    server, study, _, _ = pacs
    res = invoke(
        ["predict", "--dicomweb", server.dicomweb, "--study", study, "--out", str(tmp_path / "r")],
        env={"FETALBIO_DICOMWEB_PASSWORD": "not-the-password-91"},
    )
    assert res.exit_code == 2
    assert "HTTP 401" in res.output and study in res.output and "Traceback" not in res.output
    assert "not-the-password-91" not in res.output and PASSWORD not in res.output
    assert not (tmp_path / "r").exists()  # asked before anything was written


def test_sr_store_with_a_wrong_password_tries_once_and_says_it_once(pacs, round_trip, tmp_path):
    import shutil

    server, _, _, _ = pacs
    copy = tmp_path / "run"
    shutil.copytree(round_trip[1], copy)
    res = invoke(
        ["sr", str(copy), "--dicomweb", server.dicomweb, "--store-sr"],
        env={"FETALBIO_DICOMWEB_PASSWORD": "not-the-password-91"},
    )
    text = " ".join(res.output.split())
    assert res.exit_code == 1 and text.count("HTTP 401") == 2, res.output  # the first SR, then the rest
    assert "49 more SRs not tried" in text and "not-the-password-91" not in text


def test_credentials_from_a_netrc_file(pacs, tmp_path, monkeypatch):
    server, study, _, _ = pacs
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    for k in CREDS:
        monkeypatch.delenv(k, raising=False)
    assert len(Pacs(server.dicomweb).find(Query((study,)))) == 50


def test_a_missing_instance_fails_alone_and_the_rest_are_retrieved(pacs, tmp_path):
    server, study, _, _ = pacs
    os.environ.update(CREDS)
    try:
        p = Pacs(server.dicomweb)
        refs = p.find(Query((study,)))[:2]
        ghost = InstanceRef(study, refs[0].series, generate_uid(), refs[0].sop_class)
        got = p.fetch([refs[0], ghost, refs[1]], tmp_path)
    finally:
        for k in CREDS:
            os.environ.pop(k, None)
    assert len(got.paths) == 2 and all(path.exists() for path in got.paths)
    assert len(got.failed) == 1 and ghost.sop in got.failed[0][1] and "HTTP 404" in got.failed[0][1]


def test_a_server_that_is_down(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    res = invoke(["predict", "--dicomweb", url, "--study", "1.2.3", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "cannot connect" in res.output and "1.2.3" in res.output


def test_a_server_that_never_answers_times_out(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])  # accept, never answer
            except TimeoutError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/dicom-web"
        res = invoke(
            ["predict", "--dicomweb", url, "--study", "1.2.3", "--timeout", "1", "--out", str(tmp_path / "r")]
        )
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        listener.close()
    assert res.exit_code == 2 and "no answer within 1 s" in res.output
    assert len(held) == 1  # asked once: a retry would wait the whole --timeout again (it was 3 times)


def test_a_busy_server_is_asked_again_and_a_refusal_is_not(tmp_path):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    codes = [503, 503, 200, 400]  # busy twice, then an answer; then a plain refusal
    seen: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            code = codes[min(len(seen), len(codes) - 1)]
            seen.append(code)
            body = b"[]" if code == 200 else b""
            self.send_response(code)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        pacs = Pacs(f"http://127.0.0.1:{server.server_address[1]}/dicom-web", timeout_s=5)
        assert pacs.find(Query(studies=("1.2.3",))) == []  # answered on the third try
        assert seen == [503, 503, 200]
        with pytest.raises(DicomwebError, match="HTTP 400"):
            pacs.find(Query(studies=("1.2.4",)))
        assert seen == [503, 503, 200, 400]  # a refusal is not asked again
    finally:
        server.shutdown()
        server.server_close()


def test_tls_is_verified_and_urls_are_redacted():
    p = Pacs("https://alice:s3cret@pacs.example.org:8443/dicom-web")
    assert p._session().verify is True
    assert "s3cret" not in p.where and "alice" not in p.where
    assert redact("https://u:p@h/x") == "https://h/x"


def test_options_that_contradict(tmp_path):
    scan = tmp_path / "a.png"
    scan.write_bytes(b"x")
    assert "not both" in invoke(["predict", str(scan), "--dicomweb", "http://h/dw"]).output
    assert "--store-sr stores on the --dicomweb server" in invoke(["predict", str(scan), "--store-sr"]).output
    assert "give --study UID or a filter" in invoke(["predict", "--dicomweb", "http://127.0.0.1:9/dw"]).output
    csv = invoke(["predict", "--dicomweb", "http://h/dw", "--study", "1.2", "--pixel-csv", str(scan)]).output
    assert "--pixel-csv names files" in csv


def test_a_study_named_twice_is_listed_once(pacs):
    server, study, _, _ = pacs
    os.environ.update(CREDS)
    try:
        refs = Pacs(server.dicomweb).find(Query((study, study)))
    finally:
        for k in CREDS:
            os.environ.pop(k, None)
    assert len(refs) == len({r.sop for r in refs}) == 50  # 48 scans and 2 cines (US only), once each


def test_studies_found_by_qido_filters(pacs, tmp_path):
    server, study, _, _ = pacs
    os.environ.update(CREDS)
    try:
        refs = Pacs(server.dicomweb).find(Query(study_date="20261101-20261130", patient_id="FB-0042"))
        none = requests.get(
            f"{server.dicomweb}/studies?StudyDate=19990101", auth=(USER, PASSWORD), timeout=10
        )
    finally:
        for k in CREDS:
            os.environ.pop(k, None)
    assert {r.study for r in refs} == {study} and len(refs) == 50
    assert none.status_code in (200, 204) and (none.status_code == 204 or none.json() == [])
    assert np.all([r.sop_class for r in refs])


def test_sr_command_stores_a_folder_runs_srs_as_the_same_instances(pacs, round_trip, tmp_path):
    """A folder run of the same files measures the same instances with the same models and options:
    `fetalbio sr --store-sr` stores SRs with the same UIDs, so the PACS still holds 50, not 100."""
    server, study, _, root = pacs
    res = invoke(
        ["predict", str(root / "study"), "--out", str(tmp_path / "local"), "--engine", "litert", "-q"]
    )
    assert res.exit_code == 0, res.output
    res = invoke(["sr", str(tmp_path / "local"), "--dicomweb", server.dicomweb, "--store-sr"])
    assert res.exit_code == 0 and "stored 50 of 50 SRs" in res.output, res.output
    assert len(stored_srs(server, study)) == 50
    for f in (tmp_path / "local" / "sr").glob("*.dcm"):
        validate_sr(f)


def test_which_instances_are_not_images():
    from fetalbio.dicomweb import non_image_reason

    assert non_image_reason("1.2.840.10008.5.1.4.1.1.88.33") == "not an image: a structured report"
    assert "encapsulated" in non_image_reason("1.2.840.10008.5.1.4.1.1.104.1")
    assert non_image_reason("1.2.840.10008.5.1.4.1.1.6.1") is None  # US image
    assert non_image_reason("1.2.840.10008.5.1.4.1.1.3.1") is None  # US multi-frame
    assert non_image_reason("1.2.840.10008.5.1.4.1.1.7") is None  # secondary capture (screen captures)


def test_a_bearer_token_is_sent_and_never_printed(monkeypatch):
    monkeypatch.setenv("FETALBIO_DICOMWEB_TOKEN", "tok-123456789")
    session = Pacs("https://pacs.example.org/dicom-web")._session()
    assert session.headers["Authorization"] == "Bearer tok-123456789" and session.auth is None
    url = f"http://127.0.0.1:{free_port()}/dw"
    res = CliRunner().invoke(app, ["predict", "--dicomweb", url, "--study", "1.2.3", "--out", "never"])
    assert res.exit_code == 2 and "tok-123456789" not in res.output


def test_a_damaged_instance_on_the_pacs_fails_alone_with_its_name(tmp_path, monkeypatch):
    """Orthanc's stored file of one instance is cut short after the study was listed: its retrieval
    fails with a one-line reason naming it; the other instance is retrieved."""
    study, paths = write_study(tmp_path / "study", 2, seed=5)
    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    with orthanc(tmp_path / "orthanc") as server:
        for p in paths:
            server.upload(p)
        pacs = Pacs(server.dicomweb)
        refs = pacs.find(Query((study,)))
        damaged = pydicom.dcmread(paths[0], stop_before_pixels=True).SOPInstanceUID
        tags = {
            i: server.get(f"/instances/{i}/simplified-tags")["SOPInstanceUID"]
            for i in server.get("/instances")
        }
        (oid,) = [i for i, uid in tags.items() if uid == damaged]
        uuid = server.get(f"/instances/{oid}/attachments/dicom/info")["Uuid"]
        stored = tmp_path / "orthanc" / "db" / uuid[:2] / uuid[2:4] / uuid
        assert stored.is_file()
        stored.write_bytes(stored.read_bytes()[:300])
        got = pacs.fetch(refs, tmp_path / "cache")
    assert [p.stem for p in got.paths] == [r.sop for r in refs if r.sop != damaged]
    (ref, why), *_ = got.failed
    assert len(got.failed) == 1 and ref.sop == damaged and damaged in why and "\n" not in why, why
    assert why.startswith("malformed instance") and "SOP Instance UID: missing" in why
