"""A corpus of awkward and bad files, measured as ONE batch: no traceback, a row for every file, and
every error with a reason a user can act on. Every file is written here (no real data)."""

from __future__ import annotations

import csv
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from _dicom import make_dicom, us_region

from fetalbio.synthetic import draw_scan, random_ellipse


def _png_claiming(path: Path, w: int, h: int) -> None:
    """A small PNG whose valid header claims w x h pixels (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    idat = b"IDAT" + zlib.compress(b"\x00" * 4096)
    data += struct.pack(">I", len(idat) - 4) + idat + struct.pack(">I", zlib.crc32(idat))
    path.write_bytes(data + b"\x00\x00\x00\x00IEND\xaeB`\x82")


def _jpeg_claiming(path: Path, w: int, h: int) -> None:
    ok, buf = cv2.imencode(".jpg", np.full((16, 16), 128, np.uint8))
    data = bytearray(buf.tobytes())
    i = data.index(b"\xff\xc0")
    data[i + 5 : i + 9] = struct.pack(">HH", h, w)
    path.write_bytes(bytes(data))


def _exif_rotated_jpeg(path: Path, img: np.ndarray) -> None:
    """A JPEG of the scan stored on its side, with EXIF orientation 6 (turn 90 degrees clockwise)."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(np.rot90(img)), [cv2.IMWRITE_JPEG_QUALITY, 95])
    jpg = buf.tobytes()
    tiff = b"MM\x00*\x00\x00\x00\x08" + struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0)
    tiff += b"\x00\x00\x00\x00"
    app1 = b"Exif\x00\x00" + tiff
    path.write_bytes(jpg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpg[2:])


def build_corpus(root: Path) -> tuple[list[Path], dict[str, str]]:
    """Write the corpus; returns (inputs to give predict, {file name: expected reason or 'ok'})."""
    rng = np.random.default_rng(0)
    scans = root / "scans"
    scans.mkdir(parents=True)
    expect: dict[str, str] = {}

    def scan(hw=(270, 400)) -> np.ndarray:
        return draw_scan(hw, random_ellipse(hw, rng), rng)

    for i in range(50):  # ordinary scans
        cv2.imwrite(str(scans / f"good_{i:02d}.png"), scan())
        expect[f"good_{i:02d}.png"] = "ok"
    # formats that are fine
    cv2.imwrite(str(scans / "grey16.png"), (scan().astype(np.uint16) * 257))
    cv2.imwrite(str(scans / "rgb.png"), cv2.cvtColor(scan(), cv2.COLOR_GRAY2BGR))
    cv2.imwrite(str(scans / "rgba.png"), cv2.cvtColor(scan(), cv2.COLOR_GRAY2BGRA))
    cv2.imwrite(str(scans / "plain.bmp"), scan())
    cv2.imwrite(str(scans / "plain.tif"), scan())
    cv2.imwrite(str(scans / "good_00.jpg"), scan())  # the same stem as a PNG
    cv2.imwrite(str(scans / "=SUM(1+1).png"), scan())
    cv2.imwrite(str(scans / ("long_" + "x" * 230 + ".png")), scan())
    _exif_rotated_jpeg(scans / "exif_rotated.jpg", scan((300, 420)))
    for n in (
        "grey16.png",
        "rgb.png",
        "rgba.png",
        "plain.bmp",
        "plain.tif",
        "good_00.jpg",
        "=SUM(1+1).png",
        "long_" + "x" * 230 + ".png",
        "exif_rotated.jpg",
    ):
        expect[n] = "ok"
    latin1 = os.fsencode(str(scans)) + b"/caf\xe9.png"
    ok, buf = cv2.imencode(".png", scan())
    with open(latin1, "wb") as f:
        f.write(buf.tobytes())
    expect["caf\\xe9.png"] = "ok"
    for site in ("siteA", "siteB"):
        (scans / site).mkdir()
        cv2.imwrite(str(scans / site / "scan1.png"), scan())
    expect["scan1.png"] = "ok"
    os.symlink(scans / "good_01.png", scans / "link_to_good_01.png")
    expect["link_to_good_01.png"] = "ok"
    # multi-frame DICOM with ultrasound-region spacing, and single-frame
    frames = np.stack([scan((240, 320)) for _ in range(3)])
    region = [us_region(0.02, 0.02, box=(0, 0, 319, 239))]
    make_dicom(scans / "cine.dcm", frames, frames=3, SequenceOfUltrasoundRegions=region)
    make_dicom(scans / "single.dcm", scan((240, 320)), SequenceOfUltrasoundRegions=region)
    expect["cine.dcm"] = expect["single.dcm"] = "ok"
    # bad files, each with the reason a user must see
    bad = {
        "empty.png": (b"", "empty file"),
        "text.png": (b"this is not an image\n" * 10, "not an image"),
        "truncated.png": (buf.tobytes()[:200], "PNG without its end chunk"),
        "notes.txt.png": (b"%PDF-1.4 not a scan", "not an image"),
    }
    for name, (data, reason) in bad.items():
        (scans / name).write_bytes(data)
        expect[name] = reason
    cv2.imwrite(str(scans / "tiny.png"), np.full((10, 12), 100, np.uint8))
    expect["tiny.png"] = "too small"
    cv2.imwrite(str(scans / "blank.png"), np.zeros((200, 300), np.uint8))
    expect["blank.png"] = "blank image"
    _png_claiming(scans / "bomb.png", 20000, 20000)
    expect["bomb.png"] = "image too large"
    _jpeg_claiming(scans / "bomb.jpg", 20000, 20000)
    expect["bomb.jpg"] = "image too large"
    wide = np.full(
        (64, 12000), 90, np.uint8
    )  # few pixels, but more than 10000 a side: refused from the header
    for name in ("wide.tif", "wide.webp"):
        cv2.imwrite(str(scans / name), wide)
        expect[name] = "image too large"
    os.symlink("loop_b.png", scans / "loop_a.png")
    os.symlink("loop_a.png", scans / "loop_b.png")
    expect["loop_a.png"] = expect["loop_b.png"] = "link loop"
    os.symlink(scans / "gone.png", scans / "dangling.png")
    expect["dangling.png"] = "broken symbolic link"
    dcm = scans / "cut.dcm"
    make_dicom(dcm, scan((240, 320)))
    dcm.write_bytes(dcm.read_bytes()[:600])
    expect["cut.dcm"] = "truncated"
    make_dicom(scans / "huge_spacing.dcm", scan((240, 320)), PixelSpacing=[1e300, 1e300])
    expect["huge_spacing.dcm"] = "not an ultrasound pixel size"
    make_dicom(scans / "zero_spacing.dcm", scan((240, 320)), PixelSpacing=[0, 0])
    expect["zero_spacing.dcm"] = "finite and positive"
    noise = rng.integers(0, 255, (270, 400)).astype(np.uint8)
    cv2.imwrite(str(scans / "noise.png"), noise)
    expect["noise.png"] = "any"  # measured or not: whatever it says, it says it in a row
    with open(scans / "pixel_size.csv", "w") as f:
        f.write("filename,pixel size(mm)\n")
        for n in expect:
            if not n.endswith(".dcm"):  # DICOM files carry their own spacing
                f.write(f"{n},0.15\n")
    inputs = [scans, root / "missing.png", scans / "siteA" / "scan1.png", scans / "siteB" / "scan1.png"]
    expect["missing.png"] = "does not exist"
    return inputs, expect


@pytest.mark.slow
def test_the_whole_corpus_is_one_batch_with_a_row_for_every_file(tmp_path):
    inputs, expect = build_corpus(tmp_path)
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "fetalbio.cli",
        "predict",
        *map(str, inputs),
        "--out",
        str(out),
        "--engine",
        "litert",
        "--method",
        "segmentation",
        "-q",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr  # some files fail; the run itself does not
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert "INFO:" not in done.stderr and "I0000" not in done.stderr  # no third-party log lines
    with open(out / "measurements.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    files = [r["file"] for r in rows]
    assert len(files) == len(set(files)), "one row per file"
    by_name: dict[str, list[dict]] = {}
    for r in rows:
        by_name.setdefault(Path(r["file"]).name, []).append(r)
    assert len(rows) >= 80
    for name, want in expect.items():
        assert name in by_name, (name, sorted(by_name)[:5])
        for r in by_name[name]:
            if want == "ok":
                assert r["status"] in ("ok", "review"), (name, r["error"])
            elif want != "any":
                assert r["status"] == "error" and want in r["error"], (name, r["error"])
                assert "\n" not in r["error"] and len(r["error"]) < 300
    assert len(by_name["scan1.png"]) == 2  # two sites, two rows, two overlays
    overlays = [r["overlay"] for r in rows if r["overlay"]]
    assert len(overlays) == len(set(overlays)) and all((out / o).exists() for o in overlays)
    assert all(len(Path(o).name.encode()) <= 200 for o in overlays)
    # a name that a spreadsheet would run as a formula is written with a leading apostrophe
    from fetalbio.writers import format_cell

    assert format_cell("=SUM(1+1).png") == "'=SUM(1+1).png" and format_cell(-1.5, "hc_mm") == "-1.5"
