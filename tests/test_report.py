"""report.html: unit checks, and the real thing opened in headless Chromium (DOM + a screenshot)."""

from __future__ import annotations

import csv
import html
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fetalbio.report import render, weeks_days
from fetalbio.synthetic import write_samples

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_weeks_and_days():
    assert weeks_days(20.43) == "20w 3d" and weeks_days(20.0) == "20w 0d" and weeks_days(None) == ""


def test_names_are_escaped_and_review_comes_first():
    rows = [
        {"file": "a.png", "method": "fused", "status": "ok", "unit": "mm", "hc_mm": 170.04, "flags": ""},
        {
            "file": '<b>&"x".png',
            "method": "fused",
            "status": "review",
            "unit": "mm",
            "hc_mm": 99.96,
            "flags": "edge",
            "review_reasons": "head cut by the image border",
        },
        {"file": "c.png", "method": "fused", "status": "error", "error": "not an image", "flags": ""},
    ]
    page = render(rows, {"n_scans": 3})
    assert "<b>&" not in page and html.escape('<b>&"x".png') in page
    order = [m.group(1) for m in re.finditer(r'data-status="(\w+)"', page)]
    assert order == ["review", "error", "ok"]
    assert "170.0 mm" in page and "100.0 mm" in page and "head cut by the image border" in page


def _chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_in_a_real_browser(tmp_path):
    from fetalbio.cli import app

    scans = tmp_path / "scans"
    write_samples(scans, n=4, seed=5, shape_hw=(270, 400), pixel_size_mm=0.2)
    (scans / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["predict", str(scans), "--out", str(out), "--engine", "litert", "-q"])
    assert res.exit_code == 1, res.output  # the broken file fails, the batch does not
    with open(out / "measurements.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    dom = _chromium("--dump-dom", (out / "report.html").as_uri(), tmp=tmp_path).stdout
    cards = re.findall(
        r'<div class="card" data-file="([^"]+)" data-status="(\w+)"[^>]*>(.*?)</table>', dom, re.S
    )
    assert len(cards) == len({r["file"] for r in rows}) == 5
    for file, status, body in cards:
        row = next(r for r in rows if r["file"] == html.unescape(file))
        if row["status"] == "error":
            assert status == "error" and html.escape(row["error"]) in body
            continue
        assert status == row["status"]
        want = f"{float(row['hc_mm']):.1f} mm"  # from the CSV, formatted here
        assert re.search(rf'class="hc">{re.escape(want)}<', body), (want, body[:300])
        assert f"{float(row['bpd_mm']):.1f} mm" in body and f"{float(row['ofd_mm']):.1f} mm" in body
        assert re.search(r'<img loading="lazy" src="overlays/', body)
    shot = tmp_path / "shot.png"
    _chromium(f"--screenshot={shot}", "--window-size=1200,900", (out / "report.html").as_uri(), tmp=tmp_path)
    import cv2

    img = cv2.imread(str(shot))
    assert img is not None and img.shape[0] > 100
    assert float(img.std()) > 10 and len(np.unique(img.reshape(-1, 3), axis=0)) > 50  # not blank
