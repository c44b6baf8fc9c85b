"""--ga-csv: INTERGROWTH-21st z-scores and centiles per row, checked against the published equations."""

from __future__ import annotations

import csv
import math

import pytest
from typer.testing import CliRunner

from fetalbio.clinical import add_ga_columns, read_ga_csv
from fetalbio.io import ScanError


def test_read_ga_csv_weeks_days_and_errors(tmp_path):
    p = tmp_path / "ga.csv"
    p.write_text("filename,GA_days\nfolder/a.png,140\nb.png,203\n")
    assert read_ga_csv(p) == {"a.png": 20.0, "b.png": 29.0}
    p.write_text("filename,ga_weeks\na.png,41.5\n")
    with pytest.raises(ScanError, match="outside the INTERGROWTH-21st"):
        read_ga_csv(p)
    p.write_text("filename,ga_weeks\na.png,soon\n")
    with pytest.raises(ScanError, match="not a number"):
        read_ga_csv(p)
    p.write_text("name,weeks\n")
    with pytest.raises(ScanError, match="missing column"):
        read_ga_csv(p)


def test_hc_zscore_from_the_published_equation():
    # Papageorghiou et al. 2014 (HC): mean = -28.2849 + 1.69267 GA^2 - 0.397485 GA^2 ln GA, and
    # SD = 1.98735 + 0.0136772 GA^3 - 0.00726264 GA^3 ln GA + 0.000976253 GA^3 (ln GA)^2
    ga = 24.0
    lg = math.log(ga)
    mean = -28.2849 + 1.69267 * ga**2 - 0.397485 * ga**2 * lg
    sd = 1.98735 + 0.0136772 * ga**3 - 0.00726264 * ga**3 * lg + 0.000976253 * ga**3 * lg**2
    hc = mean + 1.5 * sd
    rows = [
        {"file": "x/a.png", "status": "ok", "unit": "mm", "hc_mm": hc, "bpd_mm": 60.0, "ofd_mm": 75.0},
        {"file": "b.png", "status": "error"},
    ]
    assert add_ga_columns(rows, {"a.png": ga, "b.png": ga}) == 1
    assert rows[0]["hc_zscore"] == pytest.approx(1.5, abs=1e-9)
    assert rows[0]["hc_centile"] == pytest.approx(100 * 0.5 * (1 + math.erf(1.5 / math.sqrt(2))), abs=1e-9)
    assert "hc_zscore" not in rows[1]


def test_predict_with_ga_csv(tmp_path):
    from fetalbio.cli import app
    from fetalbio.synthetic import write_samples

    scans = tmp_path / "scans"
    write_samples(scans, n=2, seed=4, shape_hw=(270, 400), pixel_size_mm=0.2)
    (tmp_path / "ga.csv").write_text("filename,ga_weeks\n100_HC.png,22\n")
    res = CliRunner().invoke(
        app,
        [
            "predict",
            str(scans),
            "--out",
            str(tmp_path / "run"),
            "--engine",
            "litert",
            "--ga-csv",
            str(tmp_path / "ga.csv"),
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    rows = {
        r["file"].rsplit("/", 1)[-1]: r for r in csv.DictReader(open(tmp_path / "run" / "measurements.csv"))
    }
    assert rows["100_HC.png"]["ga_given_weeks"] == "22" and rows["100_HC.png"]["hc_zscore"] != ""
    assert rows["101_HC.png"]["hc_zscore"] == ""
    bad = CliRunner().invoke(
        app, ["predict", str(scans), "--out", str(tmp_path / "r2"), "--ga-csv", str(tmp_path / "nope.csv")]
    )
    assert bad.exit_code == 2 and "nope.csv" in bad.output and "does not exist" in bad.output
