"""report.html: unit checks, and the real page opened in headless Chromium (DOM, JS, a screenshot)."""

from __future__ import annotations

import csv
import html
import os
import shutil
import subprocess
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from typer.testing import CliRunner

from fetalbio.report import render, weeks_days, write_report
from fetalbio.synthetic import write_samples

CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
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
needs_chromium = pytest.mark.skipif(  # in CI (FETALBIO_REQUIRE_TOOLS=1) a missing browser fails instead
    CHROMIUM is None and os.environ.get("FETALBIO_REQUIRE_TOOLS") != "1",
    reason="/usr/bin/chromium is absent (Debian's chromium; .ci/run installs it)",
)
WEIRD = '<b>&"x" #1.png'  # HTML metacharacters, quotes, and a '#' that would cut a URL


class Cards(HTMLParser):
    """The cards of a page, in document order: attributes, the text of classed cells, image sources."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: list[dict] = []
        self.field: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        cls = a.get("class") or ""
        if tag == "div" and cls == "card":
            self.cards.append({**a, "img": [], "href": []})
        elif self.cards and tag == "img":
            self.cards[-1]["img"].append(a["src"])
        elif self.cards and tag == "a":
            self.cards[-1]["href"].append(a["href"])
        elif self.cards and cls in ("hc", "bpd", "ofd", "ga", "err", "reasons", "flags", "status"):
            self.field = cls
            self.cards[-1].setdefault(cls, []).append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "div", "b"):
            self.field = None

    def handle_data(self, data: str) -> None:
        if self.field:
            self.cards[-1][self.field][-1] += data


def cards_of(page: str) -> list[dict]:
    """The parsed cards of a page."""
    p = Cards()
    p.feed(page)
    return p.cards


def fmt(row: dict, key: str) -> str:
    """A value as the page must show it, computed here: the stored float rounded exactly to 0.1, with the
    row's unit (35.55 is 35.5499... as a float, so 35.5)."""
    unit = row["unit"]
    return f"{Decimal(float(row[f'{key}_{unit}'])).quantize(Decimal('0.1'))} {unit}"


def ga(weeks: float) -> str:
    """Weeks as 'Nw Nd', days rounded down."""
    days = int(float(weeks) * 7 + 1e-6)
    return f"{days // 7}w {days % 7}d"


def built_rows() -> list[dict]:
    """A batch: a review scan with two methods and an awkward name, one in pixels, one ok, one failed."""
    base = {"engine": "litert", "model_id": "fused/model.tflite@abc", "error": ""}
    return [
        {**base, "file": "/d/a.png", "method": "fused", "status": "ok", "unit": "mm", "hc_mm": 170.04,
         "bpd_mm": 47.25, "ofd_mm": 60.0, "ga_hadlock_hc_weeks": 19.43, "flags": "",
         "overlay": "overlays/a.png"},
        {**base, "file": f"/d/{WEIRD}", "method": "fused", "status": "review", "unit": "mm", "hc_mm": 99.96,
         "bpd_mm": 28.04, "ofd_mm": 35.55, "ga_hadlock_hc_weeks": 14.1, "flags": "edge;methods_disagree",
         "review_reasons": "head cut by the image border; the methods disagree",
         "overlay": f"overlays/{WEIRD}_fused.png"},
        {**base, "file": f"/d/{WEIRD}", "method": "landmarks", "status": "ok", "unit": "mm", "hc_mm": 120.0,
         "bpd_mm": 30.0, "ofd_mm": 40.0, "ga_hadlock_hc_weeks": 16.0, "flags": "methods_disagree",
         "overlay": f"overlays/{WEIRD}_landmarks.png"},
        {**base, "file": "/d/px.png", "method": "fused", "status": "ok", "unit": "px", "hc_px": 812.36,
         "bpd_px": 230.0, "ofd_px": 290.12, "hc_mm": None, "ga_hadlock_hc_weeks": None,
         "flags": "no_pixel_size", "overlay": "overlays/px.png"},
        {"file": "/d/bad.png", "method": "fused", "status": "error", "error": "cannot read <bad> & co",
         "unit": "", "flags": "", "overlay": ""},
    ]  # fmt: skip


def test_weeks_and_days():
    assert weeks_days(20.43) == "20w 3d" and weeks_days(20.0) == "20w 0d" and weeks_days(13.99) == "13w 6d"
    assert weeks_days(None) == weeks_days(float("nan")) == weeks_days("") == ""
    assert weeks_days("20.43") == "20w 3d"  # values read back from measurements.csv are text


def test_names_are_escaped_and_review_comes_first():
    rows = built_rows()
    page = render(rows, {"n_scans": 4, "n_review": 1, "model": "<m>"})
    assert WEIRD not in page and html.escape(WEIRD) in page and "&lt;m&gt;" in page
    assert "cannot read &lt;bad&gt; &amp; co" in page
    cards = cards_of(page)
    assert [c["data-status"] for c in cards] == ["review", "error", "ok", "ok"]
    weird = cards[0]
    assert weird["data-file"] == f"/d/{WEIRD}" and weird["hc"] == ["100.0 mm", "120.0 mm"]
    assert weird["img"][0] == quote(f"overlays/{WEIRD}_fused.png") and "%23" in weird["img"][0]
    assert weird["ga"] == ["14w 0d", "16w 0d"] and "edge" in weird["flags"][0]
    px = next(c for c in cards if c["data-file"] == "/d/px.png")
    assert px["hc"] == ["812.4 px"] and px["bpd"] == ["230.0 px"] and px["ga"] == [""]
    assert px["data-hc"] == "" and float(weird["data-hc"]) > 0  # a pixel count is not sorted among mm


def test_a_big_batch_stays_lean():
    rows = [
        {"file": f"/d/{i:05d}.png", "method": "fused", "status": "ok", "unit": "mm", "hc_mm": 100 + i % 200,
         "bpd_mm": 30.0, "ofd_mm": 40.0, "flags": "", "overlay": f"overlays/{i:05d}.png"}
        for i in range(2000)
    ]  # fmt: skip
    page = render(rows, {"n_scans": 2000})
    assert page.count('class="card"') == 2000 and page.count('loading="lazy"') == 2000
    assert len(page) < 2_000_000


def chromium(*args: str, tmp: Path) -> str:
    """Run headless Chromium; its stdout."""
    if CHROMIUM is None:
        pytest.fail("/usr/bin/chromium is not installed (.ci/run installs Debian's chromium)")
    res = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def screenshot(url: str, tmp: Path) -> np.ndarray:
    """A 1200x1600 screenshot of a page (BGR), asserted not blank."""
    import cv2

    shot = tmp / "shot.png"
    chromium(f"--screenshot={shot}", "--window-size=1200,1600", url, tmp=tmp)
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (1600, 1200)
    assert float(img.std()) > 10 and len(np.unique(img.reshape(-1, 3), axis=0)) > 50  # not blank
    return img


def check_cards(cards: list[dict], rows: list[dict]) -> None:
    """Every scan has one card, with its rows' values formatted independently here."""
    assert sorted(c["data-file"] for c in cards) == sorted({r["file"] for r in rows})
    for card in cards:
        mine = [r for r in rows if r["file"] == card["data-file"]]
        measured = [r for r in mine if r["status"] != "error"]
        assert card.get("hc", []) == [fmt(r, "hc") for r in measured]
        assert card.get("bpd", []) == [fmt(r, "bpd") for r in measured]
        assert card.get("ofd", []) == [fmt(r, "ofd") for r in measured]
        assert card.get("ga", []) == [
            ga(r["ga_hadlock_hc_weeks"]) if r.get("ga_hadlock_hc_weeks") else "" for r in measured
        ]
        assert card["img"] == card["href"] == [quote(r["overlay"]) for r in mine if r.get("overlay")]
        assert card.get("err", []) == [r["error"] for r in mine if r["status"] == "error"]


@pytest.mark.slow
@needs_chromium
def test_built_report_in_a_real_browser(tmp_path):
    import cv2

    rows = built_rows()
    (tmp_path / "overlays").mkdir()
    for r in rows:  # real overlays: the review scan's in pure red, so the screenshot shows they load
        if r["overlay"]:
            colour = (0, 0, 255) if r["status"] == "review" else (200, 120, 40)
            ok, png = cv2.imencode(".png", np.full((240, 320, 3), colour, np.uint8))
            assert ok
            (tmp_path / r["overlay"]).write_bytes(png.tobytes())
    path = write_report(tmp_path, rows, {"n_scans": 4, "n_ok": 2, "n_review": 1, "n_failed": 1, "n_px": 1})
    cards = cards_of(chromium("--dump-dom", path.as_uri(), tmp=tmp_path))
    assert [c["data-status"] for c in cards] == ["review", "error", "ok", "ok"]
    check_cards(cards, rows)
    assert cards[0]["reasons"] == ["review: head cut by the image border; the methods disagree"]
    # the inline JS: a link's #status=ok&sort=hc filters and sorts on load
    js = cards_of(chromium("--dump-dom", path.as_uri() + "#status=ok&sort=hc", tmp=tmp_path))
    # by HC in mm; the pixel-only scan has no size to compare and sorts last, with the failed one
    assert [c["data-file"] for c in js] == [f"/d/{WEIRD}", "/d/a.png", "/d/bad.png", "/d/px.png"]
    shown = [c["data-file"] for c in js if "none" not in (c.get("style") or "")]
    assert shown == ["/d/a.png", "/d/px.png"]  # status ok only
    img = screenshot(path.as_uri(), tmp_path)
    red = (img[..., 2] > 230) & (img[..., 1] < 25) & (img[..., 0] < 25)
    assert red.sum() > 5000, "the overlay named with <, &, quotes and # did not load"


@pytest.mark.slow
@needs_chromium
def test_predict_report_in_a_real_browser(tmp_path):
    from fetalbio.cli import app

    scans = tmp_path / "scans"
    write_samples(scans, n=4, seed=5, shape_hw=(270, 400), pixel_size_mm=0.2)
    shutil.copy(scans / "100_HC.png", scans / WEIRD)
    (scans / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["predict", str(scans), "--out", str(out), "--engine", "litert", "-q"])
    assert res.exit_code == 1, res.output  # the broken file fails, the batch does not
    with open(out / "measurements.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert (out / "report.html").exists(), "predict did not write report.html"
    cards = cards_of(chromium("--dump-dom", (out / "report.html").as_uri(), tmp=tmp_path))
    assert len(cards) == len({r["file"] for r in rows}) == 6
    rank = {"review": 0, "error": 1, "ok": 2}
    statuses = [c["data-status"] for c in cards]
    assert statuses == sorted(statuses, key=rank.__getitem__) and "error" in statuses
    for r in rows:
        r["ga_hadlock_hc_weeks"] = r["ga_hadlock_hc_weeks"] or None
    check_cards(cards, rows)
    assert any(c["data-file"].endswith(WEIRD) for c in cards)
    screenshot((out / "report.html").as_uri(), tmp_path)


def test_each_review_reason_once_per_scan_and_values_rounded_once(tmp_path):
    """Two methods of one scan both say "the methods disagree": the card says it once. And a BPD of
    43.0508 mm reads 43.1 on the page as in the terminal (the CSV's 43.05 would have read 43.0)."""
    from fetalbio.predict import write_outputs

    base = {
        "engine": "litert",
        "model_id": "m",
        "error": "",
        "unit": "mm",
        "status": "review",
        "file": "/d/a.png",
    }
    rows = [
        {**base, "method": "segmentation", "hc_mm": 150.0, "bpd_mm": 43.0508, "ofd_mm": 55.0, "flags": "",
         "review_reasons": "the methods disagree; implausible head shape (cephalic index 40)"},
        {**base, "method": "landmarks", "hc_mm": 170.0, "bpd_mm": 42.849, "ofd_mm": 56.0, "flags": "",
         "review_reasons": "head cut by the image border; the methods disagree"},
    ]  # fmt: skip
    write_outputs(tmp_path, rows, {"model": "m", "engine": "litert"})
    page = (tmp_path / "report.html").read_text()
    assert page.count("the methods disagree") == 1, page
    assert "43.1 mm" in page and "42.8 mm" in page
    assert "43.05" in (tmp_path / "measurements.csv").read_text()  # the CSV keeps its 2 decimals
