"""--ga-csv: reading the GA table, and INTERGROWTH-21st z-scores and centiles per row, checked against
the published equations and z-score tables (Papageorghiou et al., Lancet 2014;384:869-879), worked
here by hand rather than through fetalbio.biometry."""

from __future__ import annotations

import csv
import math

import pytest
from typer.testing import CliRunner

from fetalbio.clinical import GA_COLUMNS, add_ga_columns, read_ga_csv
from fetalbio.io import ScanError


def phi(z: float) -> float:
    """Standard normal CDF in percent."""
    return 50.0 * (1.0 + math.erf(z / math.sqrt(2.0)))


def published_mean_sd(measure: str, ga: float) -> tuple[float, float]:
    """INTERGROWTH-21st fetal growth standards, Papageorghiou et al. Lancet 2014 (Table/appendix):
    mean and SD in mm at GA in exact weeks, transcribed from the paper, not from fetalbio."""
    lg = math.log(ga)
    if measure == "hc":
        mean = -28.2849 + 1.69267 * ga**2 - 0.397485 * ga**2 * lg
        sd = 1.98735 + 0.0136772 * ga**3 - 0.00726264 * ga**3 * lg + 0.000976253 * ga**3 * lg**2
    elif measure == "bpd":
        mean = 5.60878 + 0.158369 * ga**2 - 0.00256379 * ga**3
        sd = math.exp(0.101242 + 0.00150557 * ga**3 - 0.000771535 * ga**3 * lg + 0.0000999638 * ga**3 * lg**2)
    else:
        mean = -12.4097 + 0.626342 * ga**2 - 0.148075 * ga**2 * lg
        sd = math.exp(-0.880034 + 0.0631165 * ga**2 - 0.0317136 * ga**2 * lg + 0.00408302 * ga**2 * lg**2)
    return mean, sd


def write(tmp_path, text: str, name: str = "ga.csv"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# --------------------------------------------------------------------------- read_ga_csv


def test_ga_columns_are_exported():
    assert GA_COLUMNS == [
        "ga_given_weeks",
        "hc_zscore",
        "hc_centile",
        "bpd_zscore",
        "bpd_centile",
        "ofd_zscore",
        "ofd_centile",
    ]


def test_read_ga_csv_weeks_and_days(tmp_path):
    p = write(tmp_path, "filename,GA_days\nfolder/a.png,140\nC:\\scans\\b.png,203\n")
    assert read_ga_csv(p) == {"folder/a.png": 20.0, "C:/scans/b.png": 29.0}  # names as written
    p = write(tmp_path, "\ufeffFile Name , GA (weeks)\r\na.png,20.5\r\n\r\nb.png,20+3\r\nc.png,\r\n")
    got = read_ga_csv(p)
    assert got == {"a.png": 20.5, "b.png": pytest.approx(20 + 3 / 7)}  # c.png: GA unknown, skipped
    p = write(tmp_path, "hc,filename,ga_weeks\n1,a.png,14\n2,b.png,40\n3,a.png,14.0\n")
    assert read_ga_csv(p) == {"a.png": 14.0, "b.png": 40.0}  # both ends of the range are inside


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("filename,ga_weeks\na.png,52\n", "GA 52 weeks is no gestational age (above 0, at most 45 weeks)"),
        ("filename,ga_weeks\na.png,0\n", "is no gestational age"),
        ("filename,ga_days\na.png,330\n", "330 days (47.14 weeks) is no gestational age"),
        ("filename,ga_weeks\na.png,soon\n", "row 2 (a.png): GA 'soon' is not a number of weeks"),
        ("filename,ga_weeks\na.png,nan\n", "is not a number"),
        ("filename,ga_weeks\na.png,inf\n", "is not a number"),
        ("filename,ga_weeks\na.png,20+9\n", "is not a number"),
        ("name,weeks\n", "missing column 'filename'"),
        ("filename,hc\n", "missing column 'ga_weeks' or 'ga_days'"),
        ("filename,ga_weeks,ga_days\n", "both 'ga_weeks' and 'ga_days'"),
        ("filename;ga_weeks\na.png;20\n", "semicolon-separated"),
        ("filename,ga_weeks\n,20\n", "row 2: empty filename"),
        ("filename,ga_weeks\nx/a.png,20\n./x\\a.png,21\n", "x/a.png listed twice with different GAs"),
        ("filename,ga_weeks\na.png\n", "row 2: expected at least 2 columns"),
        ("", "empty CSV file"),
    ],
)
def test_read_ga_csv_errors_are_one_line_and_name_the_file(tmp_path, text, reason):
    p = write(tmp_path, text)
    with pytest.raises(ScanError) as info:
        read_ga_csv(p)
    msg = str(info.value)
    assert reason in msg and msg.startswith(str(p)) and "\n" not in msg


def test_read_ga_csv_missing_file_and_folder(tmp_path):
    with pytest.raises(ScanError, match="nope.csv: does not exist"):
        read_ga_csv(tmp_path / "nope.csv")
    with pytest.raises(ScanError, match="is a directory"):
        read_ga_csv(tmp_path)
    p = tmp_path / "latin1.csv"
    p.write_bytes(b"filename,ga_weeks\ncaf\xe9.png,20\n")
    with pytest.raises(ScanError, match="cannot read CSV"):
        read_ga_csv(p)


# --------------------------------------------------------------------------- add_ga_columns


@pytest.mark.parametrize("measure", ["hc", "bpd", "ofd"])
@pytest.mark.parametrize("ga", [14.0, 20.5, 24.0, 33.0, 40.0])
@pytest.mark.parametrize("z", [-2.5, 0.0, 1.5])
def test_zscores_match_the_published_equations(measure, ga, z):
    means_sds = {m: published_mean_sd(m, ga) for m in ("hc", "bpd", "ofd")}
    row = {"file": "x/a.png", "status": "ok", "unit": "mm"}
    for m, (mean, sd) in means_sds.items():
        row[f"{m}_mm"] = mean + (z if m == measure else 0.0) * sd
    add_ga_columns([row], {"a.png": ga})
    assert row["ga_given_weeks"] == ga
    assert row[f"{measure}_zscore"] == pytest.approx(z, abs=1e-9)
    assert row[f"{measure}_centile"] == pytest.approx(phi(z), abs=1e-9)


@pytest.mark.parametrize(
    ("measure", "ga", "minus2", "mean", "plus2"),
    [
        # rows of the published INTERGROWTH-21st z-score tables (mm, rounded to 0.1 mm)
        ("hc", 20, 157.6, 172.5, 187.4),
        ("hc", 34, 287.9, 308.1, 328.3),
        ("bpd", 23, 53.1, 58.2, 63.3),
        ("bpd", 40, 87.1, 94.9, 102.7),
        ("ofd", 17, 42.6, 47.4, 52.1),
        ("ofd", 30, 90.3, 98.0, 105.8),
    ],
)
def test_zscores_match_the_published_tables(measure, ga, minus2, mean, plus2):
    rows = [
        {"file": f"{v}.png", "status": "review", "unit": "mm", f"{measure}_mm": v}
        for v in (minus2, mean, plus2)
    ]
    add_ga_columns(rows, {f"{v}.png": float(ga) for v in (minus2, mean, plus2)})
    zs = [r[f"{measure}_zscore"] for r in rows]
    assert zs == [pytest.approx(-2.0, abs=0.05), pytest.approx(0.0, abs=0.05), pytest.approx(2.0, abs=0.05)]
    assert rows[1][f"{measure}_centile"] == pytest.approx(50.0, abs=2.0)
    assert rows[2][f"{measure}_centile"] == pytest.approx(97.72, abs=0.3)  # Phi(2) = 97.72 %


def test_only_measured_mm_rows_with_a_ga_get_columns():
    ga = {"a.png": 24.0, "b.png": 24.0, "c.png": 24.0, "d.png": 24.0}
    rows = [
        {"file": "x/a.png", "status": "ok", "unit": "mm", "hc_mm": 220.0, "bpd_mm": None, "ofd_mm": -1.0},
        {"file": "b.png", "status": "error", "unit": "", "error": "blank image"},
        {"file": "c.png", "status": "ok", "unit": "px", "hc_px": 800.0},
        {"file": "d.png", "status": "ok", "unit": "mm", "hc_mm": math.inf, "bpd_mm": math.nan, "ofd_mm": "x"},
        {"file": "e.png", "status": "ok", "unit": "mm", "hc_mm": 220.0},  # no GA given
        {"file": "C:\\scans\\a.png", "status": "ok", "unit": "mm", "hc_mm": 1e300},  # absurd, no raise
    ]
    warnings = add_ga_columns(rows, ga)
    assert len(warnings) == 2
    assert "the GA table's a.png was given to 2 scans (C:\\scans\\a.png, x/a.png)" in warnings[0]
    assert warnings[1] == "1 rows of the GA table name no measured scan of this run (b.png)"
    assert rows[0]["ga_given_weeks"] == 24.0 and "hc_zscore" in rows[0]
    assert "bpd_zscore" not in rows[0] and "ofd_zscore" not in rows[0]  # no value, nothing invented
    assert rows[1] == {"file": "b.png", "status": "error", "unit": "", "error": "blank image"}
    assert rows[2]["ga_given_weeks"] == 24.0 and "measured in pixels" in rows[2]["ga_note"]
    assert not any(k.endswith("_zscore") for k in rows[2])
    assert rows[3]["ga_given_weeks"] == 24.0 and not any(k.endswith("_zscore") for k in rows[3])
    assert "ga_given_weeks" not in rows[4]
    assert rows[5]["hc_centile"] == 100.0 and math.isfinite(rows[5]["hc_zscore"])
    assert rows[5]["status"] == "review" and "HC far from its GA" in rows[5]["review_reasons"]
    assert rows[0]["status"] == "ok"  # 220 mm at 24 weeks: within 4 SD


@pytest.mark.parametrize("ga", [math.nan, math.inf])
def test_a_ga_that_is_no_number_adds_nothing(ga):
    rows = [{"file": "a.png", "status": "ok", "unit": "mm", "hc_mm": 200.0}]
    add_ga_columns(rows, {"a.png": ga})
    assert rows == [{"file": "a.png", "status": "ok", "unit": "mm", "hc_mm": 200.0}]


@pytest.mark.parametrize("ga", [13.0, 41.0])
def test_a_ga_outside_the_standards_is_kept_without_z_scores_and_says_why(ga):
    rows = [{"file": "a.png", "status": "ok", "unit": "mm", "hc_mm": 200.0, "ga_note": ""}]
    add_ga_columns(rows, {"a.png": ga})
    assert rows[0]["ga_given_weeks"] == ga and "hc_zscore" not in rows[0]
    assert f"GA {ga:.1f} weeks is outside the INTERGROWTH-21st standards (14-40)" in rows[0]["ga_note"]


def test_a_csv_with_a_41_week_row_measures_the_rest(tmp_path):
    path = tmp_path / "ga.csv"
    path.write_text("filename,ga_weeks\na.png,20\nb.png,41\n")  # 41 weeks is common: not a refusal
    assert read_ga_csv(path) == {"a.png": 20.0, "b.png": 41.0}


# --------------------------------------------------------------------------- through the CLI


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


# --------------------------------------------------------------------------- names with folders


def _row(file, hc=220.0):
    return {"file": file, "status": "ok", "unit": "mm", "hc_mm": hc}


def test_names_with_folders_give_each_scan_its_own_ga(tmp_path):
    """Scanner exports name every patient's file IMG0001: a table keyed by base name gave a 15-week head
    the 32.5 weeks of another folder's (HC z -20, status ok)."""
    path = write(tmp_path, "filename,ga_weeks\nsiteA/scan1.png,32.5\nsiteB\\scan1.png,15\n")
    rows = [_row("/data/sites/siteA/scan1.png", 300.0), _row("/data/sites/siteB/scan1.png", 110.0)]
    assert add_ga_columns(rows, read_ga_csv(path)) == []
    assert [r["ga_given_weeks"] for r in rows] == [32.5, 15.0]
    assert all(abs(r["hc_zscore"]) < 2 and r["status"] == "ok" for r in rows)
    # a file in neither folder: the two names match it equally, so it gets no GA and says why
    other = [_row("/data/sites/siteC/scan1.png")]
    add_ga_columns(other, read_ga_csv(path))
    assert "ga_given_weeks" not in other[0]
    assert "siteA/scan1.png and siteB/scan1.png match this file equally" in other[0]["ga_note"]


def test_a_name_in_the_right_folder_wins_over_a_bare_one():
    ga = {"scan1.png": 20.0, "siteB/scan1.png": 15.0}
    rows = [_row("x/siteA/scan1.png", 175.0), _row("x/siteB/scan1.png", 110.0)]
    assert add_ga_columns(rows, ga) == []
    assert [r["ga_given_weeks"] for r in rows] == [20.0, 15.0]
    # a lone name from another machine still applies (its folders are not this machine's)
    rows = [_row("/home/u/scans/a.png")]
    add_ga_columns(rows, {"C:/scans/a.png": 24.0})
    assert rows[0]["ga_given_weeks"] == 24.0


def test_a_bare_name_given_to_two_scans_and_a_far_z_score_are_said():
    rows = [_row("siteA/scan1.png", 300.0), _row("siteB/scan1.png", 110.0)]
    warnings = add_ga_columns(rows, {"scan1.png": 32.5})
    assert warnings == [
        "the GA table's scan1.png was given to 2 scans (siteA/scan1.png, siteB/scan1.png): "
        "name their folders (siteA/scan1.png) to give each its own"
    ]
    assert rows[0]["status"] == "ok"
    assert rows[1]["status"] == "review" and rows[1]["hc_zscore"] < -4
    assert (
        "HC far from its GA (z" in rows[1]["review_reasons"] and "check the GA" in rows[1]["review_reasons"]
    )
