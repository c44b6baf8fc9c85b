"""The CSV/JSON writers: decimals per column, spreadsheet formula injection, non-UTF-8 file names."""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np
import pytest

from fetalbio.writers import (
    column_decimals,
    format_cell,
    round_row,
    safe_text,
    write_csv_atomic,
    write_json_atomic,
)


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- decimals


@pytest.mark.parametrize(
    "column",
    ["hc_mm", "bpd_mm", "ofd_mm", "hc_mm_low", "ofd_mm_high", "hc_sd_mm", "ga_hadlock_hc_weeks"]
    + ["ga_given_weeks", "hc_zscore", "bpd_centile", "cephalic_index"],
)
def test_measurements_get_two_decimals(column):
    assert column_decimals(column) == 2
    assert format_cell(172.456789, column) == "172.46"


@pytest.mark.parametrize(
    "column",
    ["pixel_size_mm", "pixel_size_y_mm", "bpd1_x", "ofd2_y", "hc_px", "fit_residual_px"]
    + ["ellipse_cx_px", "ellipse_angle_deg", "ellipse_semi_major_px", "confidence"],
)
def test_coordinates_and_pixel_sizes_keep_four_decimals(column):
    assert column_decimals(column) == 4
    assert format_cell(0.089312, column) == "0.0893"


def test_number_formatting_details():
    assert format_cell(2.5, "hc_mm") == "2.5"  # trailing zeros dropped
    assert format_cell(180.0, "hc_mm") == "180"
    assert format_cell(-0.001, "hc_zscore") == "0"  # no "-0"
    assert format_cell(-1.5, "hc_zscore") == "-1.5"
    assert format_cell(np.float32(0.25), "hc_mm") == "0.25"
    assert format_cell(7, "frame") == "7" and format_cell(np.int64(10), "frame") == "10"
    assert format_cell(True) == "true" and format_cell(None) == "" and format_cell(math.nan, "hc_mm") == ""
    assert format_cell(math.inf, "hc_mm") == "" and format_cell(-math.inf, "bpd1_x") == ""
    assert format_cell(1e300, "hc_mm") == "1e+300" and float(format_cell(3.2e20, "hc_mm")) == 3.2e20
    assert format_cell(1e-300, "hc_mm") == "0"
    assert format_cell(1e-300, "pixel_size_mm") == "1e-300"  # a pixel size never becomes 0
    assert format_cell(0.0000123456, "pixel_size_y_mm") == "1.235e-05"
    assert round_row({"pixel_size_mm": 0.0000123456})["pixel_size_mm"] == 1.235e-05
    assert format_cell(0.0123, "loss") == "0.0123"  # not a measurement: 4 decimals as before
    assert format_cell(1.23456, "hc_mm", places=3) == "1.235"


def test_csv_and_json_carry_the_same_numbers(tmp_path):
    row = {
        "file": "a.png",
        "hc_mm": 172.456789,
        "hc_mm_low": 170.004999,
        "pixel_size_mm": 0.089312,
        "bpd1_x": 123.456789,
        "confidence": 0.987654,
        "hc_zscore": -0.0001,
        "frame": 0,
        "loss": 0.12345678,
    }
    columns = list(row)
    write_csv_atomic(tmp_path / "m.csv", [row], columns)
    write_json_atomic(tmp_path / "m.json", {"rows": [round_row(row)]})
    (cells,) = read_csv(tmp_path / "m.csv")
    assert cells == {
        "file": "a.png",
        "hc_mm": "172.46",
        "hc_mm_low": "170",
        "pixel_size_mm": "0.0893",
        "bpd1_x": "123.4568",
        "confidence": "0.9877",
        "hc_zscore": "0",
        "frame": "0",
        "loss": "0.1235",
    }
    (js,) = json.loads((tmp_path / "m.json").read_text())["rows"]
    for c in columns:
        if c != "file":
            assert float(cells[c]) == js[c], c
    assert js["hc_mm"] == 172.46 and js["pixel_size_mm"] == 0.0893 and js["frame"] == 0


def test_decimals_override_per_column(tmp_path):
    row = {"hc_mm": 172.456789, "bpd_mm": 50.123456}
    write_csv_atomic(tmp_path / "m.csv", [row], ["hc_mm", "bpd_mm"], decimals={"hc_mm": 3})
    assert read_csv(tmp_path / "m.csv") == [{"hc_mm": "172.457", "bpd_mm": "50.12"}]
    assert round_row(row, decimals={"hc_mm": 3}) == {"hc_mm": 172.457, "bpd_mm": 50.12}


# --------------------------------------------------------------------------- formula injection


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("=SUM(1+1).png", "'=SUM(1+1).png"),
        ("+x", "'+x"),
        ("-x", "'-x"),
        ("@x", "'@x"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("scan=1.png", "scan=1.png"),  # only a leading character is dangerous
        ("a.png", "a.png"),
    ],
)
def test_formula_like_text_gets_an_apostrophe(tmp_path, text, written):
    assert format_cell(text, "file") == written
    write_csv_atomic(
        tmp_path / "m.csv", [{"file": text, "hc_mm": -1.5, "frame": -2}], ["file", "hc_mm", "frame"]
    )
    (row,) = read_csv(tmp_path / "m.csv")
    assert row == {"file": written, "hc_mm": "-1.5", "frame": "-2"}  # numbers are never prefixed
    assert round_row({"file": text})["file"] == text  # the JSON keeps the name as it is


# --------------------------------------------------------------------------- non-UTF-8 file names


def test_safe_text():
    name = os.fsdecode(b"caf\xe9.png")  # a Latin-1 name on a UTF-8 system: 'caf\udce9.png'
    assert name == "caf\udce9.png"
    assert safe_text(name) == "caf\\xe9.png"
    assert safe_text("café ✓.png") == "café ✓.png"  # valid text unchanged
    assert safe_text("bad\ud800.png") == "bad\\ud800.png"  # a lone surrogate not from a file name
    assert safe_text("caf\udce9\ud800") == "caf\\xe9\\ud800"


def test_non_utf8_names_never_raise(tmp_path):
    name = "scans/caf\udce9.png"
    rows = [{"file": name, "error": "caf\udce9.png: bad\ud800", "hc_mm": 1.0}]
    write_csv_atomic(tmp_path / "m.csv", rows, ["file", "error", "hc_mm"])
    (row,) = read_csv(tmp_path / "m.csv")
    assert row["file"] == "scans/caf\\xe9.png" and row["error"] == "caf\\xe9.png: bad\\ud800"
    write_json_atomic(tmp_path / "m.json", {"rows": [round_row(r) for r in rows], "caf\udce9": [name]})
    data = json.loads((tmp_path / "m.json").read_text(encoding="utf-8"))
    assert data["rows"][0]["file"] == "scans/caf\\xe9.png"
    assert data["caf\\xe9"] == ["scans/caf\\xe9.png"]
    # the JSON writer alone (without round_row) is safe too
    write_json_atomic(tmp_path / "raw.json", rows)
    assert json.loads((tmp_path / "raw.json").read_text())[0]["file"] == "scans/caf\\xe9.png"


def test_header_and_odd_cells(tmp_path):
    write_csv_atomic(
        tmp_path / "m.csv",
        [{"a\udce9": "line1\nline2", "b": 'say "hi", ok'}],
        ["a\udce9", "b"],
    )
    assert read_csv(tmp_path / "m.csv") == [{"a\\xe9": "line1\nline2", "b": 'say "hi", ok'}]
    assert not list(tmp_path.glob(".*.tmp"))


def test_csv_quoting_round_trips(tmp_path):
    import io

    cells = ["plain", "a,b", 'q"uote', "cr\rin the middle", "lf\nline", "", " spaced ", "x\r\ny"]
    rows = [{f"c{i}": v for i, v in enumerate(cells)}]
    columns = list(rows[0])
    write_csv_atomic(tmp_path / "m.csv", rows, columns)
    assert read_csv(tmp_path / "m.csv") == [rows[0]]
    # without a CR, the bytes are what csv.writer would write
    plain = [{"c0": "a,b", "c1": 'q"', "c2": "", "c3": "lf\nx", "c4": "z"}]
    write_csv_atomic(tmp_path / "p.csv", plain, list(plain[0]))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerows([list(plain[0]), list(plain[0].values())])
    assert (tmp_path / "p.csv").read_text(encoding="utf-8") == buf.getvalue()
    # a row of one empty cell is not a blank line
    write_csv_atomic(tmp_path / "e.csv", [{"file": None}, {"file": "a"}], ["file"])
    assert read_csv(tmp_path / "e.csv") == [{"file": ""}, {"file": "a"}]
