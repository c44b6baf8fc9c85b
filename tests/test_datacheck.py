"""Tests for fetalbio.datacheck: small synthetic datasets drawn into tmp_path, plus one real-data test."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from _draw import (
    PIXEL_SIZE_MM,
    SHAPE_HW,
    ellipse,
    hc_mm,
    outline,
    point_on_ellipse,
    scan,
    true_points,
    write_landmarks_csv,
    write_pixel_csv,
    write_png,
    write_sample,
)
from rich.console import Console

from fetalbio.datacheck import (
    LM_MAX_ANGLE_DEV_DEG,
    check_dataset,
    check_landmark_points,
    names_swapped_share,
    print_report,
    report_table_rows,
    usable_landmarks,
)
from fetalbio.datasets import default_data_root, read_landmarks_csv
from fetalbio.geometry import Ellipse, Landmarks
from fetalbio.io import ScanError

# ---- a dataset with one defect of each kind ----------------------------------------------------------


@pytest.fixture(scope="module")
def defects(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Scans 100-103 fine; 104 no annotation; 105 no CSV row; 106 corrupt scan; 107 wrong HC in the CSV;
    108 empty annotation; 109 annotation of another size; 199 a CSV row without scan; 110 an annotation
    without scan (an extra file)."""
    folder = tmp_path_factory.mktemp("defects") / "training_set"
    folder.mkdir()
    csv_rows = []
    for i in range(100, 110):
        name, e = f"{i}_HC.png", ellipse(i)
        write_sample(folder, name, e, seed=i, annotation=i != 104)
        if i != 105:
            csv_rows.append((name, PIXEL_SIZE_MM, hc_mm(e) + (3.0 if i == 107 else 0.0)))
    (folder / "106_HC.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG")
    write_png(folder / "108_HC_Annotation.png", np.zeros(SHAPE_HW, np.uint8))
    write_png(folder / "109_HC_Annotation.png", outline((SHAPE_HW[0] + 10, SHAPE_HW[1]), ellipse(109)))
    write_png(folder / "110_HC_Annotation.png", outline(SHAPE_HW, ellipse(110)))
    csv_rows.append(("199_HC.png", PIXEL_SIZE_MM, 100.0))
    write_pixel_csv(folder.parent / "training_set_pixel_size_and_HC.csv", csv_rows)
    return folder


@pytest.fixture(scope="module")
def defects_report(defects: Path):
    return check_dataset(defects)


def _row(report, name: str) -> dict:
    return next(r for r in report.rows if r["file"] == name)


def test_each_defect_is_reported(defects_report) -> None:
    rep = defects_report
    expected = {
        "104_HC.png": ("error", "missing annotation"),
        "105_HC.png": ("warning", "no CSV row"),
        "106_HC.png": ("error", "unreadable scan: "),
        "107_HC.png": ("warning", "HC differs from CSV by 3.0"),
        "108_HC.png": ("error", "empty annotation"),
        "109_HC.png": ("error", "size mismatch: scan 260x200, annotation 260x210"),
    }
    for name, (status, problem) in expected.items():
        row = _row(rep, name)
        assert row["status"] == status, row
        assert len(row["problems"]) == 1 and row["problems"][0].startswith(problem), row
        assert "\n" not in row["problems"][0]
    for i in range(100, 104):
        row = _row(rep, f"{i}_HC.png")
        assert row["status"] == "ok" and row["problems"] == []
        assert row["hc_abs_diff_mm"] < 0.05
        assert row["fit_residual_px"] < 0.5
        assert (row["width_px"], row["height_px"]) == (SHAPE_HW[1], SHAPE_HW[0])
    assert _row(rep, "107_HC.png")["hc_abs_diff_mm"] == pytest.approx(3.0, abs=0.05)
    assert _row(rep, "105_HC.png")["pixel_size_mm"] is None
    assert _row(rep, "105_HC.png")["hc_fit_mm"] is None


def test_summary_counts(defects_report) -> None:
    s = defects_report.summary
    assert s["n_images"] == 10
    assert (s["n_ok"], s["n_warnings"], s["n_errors"]) == (4, 2, 4)
    assert s["n_missing_annotation"] == 1
    assert s["n_unreadable"] == 1
    assert s["n_empty_annotation"] == 1
    assert s["n_size_mismatch"] == 1
    assert s["n_csv_rows_without_scan"] == 1 and defects_report.csv_rows_without_scan == ["199_HC.png"]
    assert s["n_scans_without_csv_row"] == 1
    assert s["n_extra_files"] == 1 and defects_report.extra_files == ["110_HC_Annotation.png"]
    assert s["n_hc_mismatch"] == 1
    assert s["hc_abs_diff_mm_max"] == pytest.approx(3.0, abs=0.05)
    # 100-103, 107, and 106 and 109 whose annotation is fine (their scan is bad or of another size)
    assert s["n_hc_compared"] == 7
    assert "landmarks_rows" not in s and "lm_status" not in defects_report.rows[0]


def test_print_report_and_table_rows(defects_report) -> None:
    buf = io.StringIO()
    print_report(defects_report, Console(file=buf, width=140, color_system=None))
    text = buf.getvalue()
    assert "missing annotation" in text and "104_HC.png" in text and "199_HC.png" in text
    assert "110_HC_Annotation.png" in text
    flat = report_table_rows(defects_report)
    assert all(isinstance(r["problems"], str) for r in flat)


def test_missing_folder_and_bad_pixel_csv(tmp_path: Path) -> None:
    with pytest.raises(ScanError, match="does not exist"):
        check_dataset(tmp_path / "nope")
    (tmp_path / "pixel_size.csv").write_text("filename,pixel size(mm)\n100_HC.png,abc\n")
    with pytest.raises(ScanError, match="row 2"):
        check_dataset(tmp_path)


def test_no_pixel_csv_is_a_warning(tmp_path: Path) -> None:
    write_sample(tmp_path, "100_HC.png", ellipse(0), seed=0)
    rep = check_dataset(tmp_path)
    assert rep.summary["pixel_csv"] is None and rep.summary["n_scans_without_csv_row"] == 1
    assert rep.rows[0]["status"] == "warning" and rep.rows[0]["problems"] == ["no pixel-size CSV"]


def test_outline_drawn_inside_the_skull_echo_is_a_warning(tmp_path: Path) -> None:
    """The scans' skull echo is a 4 px anti-aliased ring on the ellipse (outer edge 2-3 px outside it):
    an outline on the ellipse passes, one drawn 10 px (1.5 mm) inside it, inside the bone, is reported."""
    rows = []
    for i, shrink_px in ((0, 0.0), (1, 10.0)):
        name, e = f"10{i}_HC.png", ellipse(i)
        write_png(tmp_path / name, scan(SHAPE_HW, e, seed=i))
        a, b = e.semi_major_px - shrink_px, e.semi_minor_px - shrink_px
        drawn = Ellipse(e.cx_px, e.cy_px, a, b, e.angle_deg)
        write_png(tmp_path / name.replace(".png", "_Annotation.png"), outline(SHAPE_HW, drawn))
        rows.append((name, PIXEL_SIZE_MM, hc_mm(drawn)))
    rep = check_dataset(tmp_path, write_pixel_csv(tmp_path / "pixel_size.csv", rows))
    good, inside = _row(rep, "100_HC.png"), _row(rep, "101_HC.png")
    assert good["status"] == "ok" and 0.2 <= good["echo_edge_mm"] <= 0.5
    assert inside["echo_edge_mm"] - good["echo_edge_mm"] == pytest.approx(1.5, abs=0.1)
    assert inside["status"] == "warning" and len(inside["problems"]) == 1
    assert inside["problems"][0].startswith("outline 1.") and "inside the skull echo" in inside["problems"][0]
    assert rep.summary["n_outline_off_echo"] == 1 and rep.summary["n_echo_checked"] == 2


# ---- landmarks ---------------------------------------------------------------------------------------------

GOOD = [f"{i}_HC.png" for i in range(120, 126)]
PERP, OFF, NOT_SWAPPED = "130_HC.png", "131_HC.png", "132_HC.png"
DUP_A, DUP_B = "140_HC.png", "140_2HC.png"
WITHOUT_SCAN = ["190_HC.png", "191_HC.png"]
NO_ROW = "150_HC.png"


@pytest.fixture(scope="module")
def lm_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """Scans with annotations and a landmark CSV whose pair names are swapped (as in the real file).

    Returns (folder, landmark CSV, the anatomical points written for each row, rounded to pixels).
    """
    folder = tmp_path_factory.mktemp("lm") / "training_set"
    folder.mkdir()
    rng = np.random.default_rng(5)
    ellipses = {n: ellipse(int(n[:3])) for n in [*GOOD, PERP, OFF, NOT_SWAPPED, DUP_A, NO_ROW]}
    ellipses[DUP_B] = ellipses[DUP_A]  # a repeat image of the same head
    for i, (name, e) in enumerate(ellipses.items()):
        write_sample(folder, name, e, seed=i)
    write_pixel_csv(folder / "pixel_size.csv", [(n, PIXEL_SIZE_MM, hc_mm(e)) for n, e in ellipses.items()])

    pts: dict[str, np.ndarray] = {}
    for name in GOOD + [NOT_SWAPPED, DUP_A, *WITHOUT_SCAN]:
        e = ellipses.get(name) or ellipse(int(name[:3]))
        pts[name] = true_points(e) + rng.integers(-2, 3, (4, 2))  # a careful human: +-2 px
    e = ellipses[PERP]  # the BPD rotated by 35 deg, its points still on the skull
    d = e.angle_deg + 90 - 35
    pts[PERP] = np.vstack([point_on_ellipse(e, d), point_on_ellipse(e, d + 180), true_points(e)[2:]])
    e = ellipses[OFF]  # one BPD point 26 px (3.9 mm, 30-50 % of the semi-minor axis) inside the skull
    p = true_points(e)
    p[1] += 26 * (p[0] - p[1]) / np.linalg.norm(p[0] - p[1])
    pts[OFF] = p
    pts[DUP_B] = pts[DUP_A].copy()
    pts = {n: np.rint(p) for n, p in pts.items()}
    file_bpd_is = {n: "bpd" if n == NOT_SWAPPED else "ofd" for n in pts}
    csv_path = write_landmarks_csv(folder.parent / "landmarks.csv", pts, file_bpd_is)
    return folder, csv_path, pts


@pytest.fixture(scope="module")
def lm_report(lm_dataset):
    folder, csv_path, _ = lm_dataset
    return check_dataset(folder, landmarks_csv=csv_path)


def test_landmark_names_swapped_and_faulty_rows_flagged(lm_report) -> None:
    s = lm_report.summary
    assert s["landmarks_names_swapped"] is True
    assert s["landmarks_swapped_share"] == pytest.approx(12 / 13, abs=1e-4)
    assert s["landmarks_rows"] == 13
    assert s["landmarks_rows_without_scan"] == 2 and lm_report.landmarks_rows_without_scan == WITHOUT_SCAN
    assert s["landmarks_rows_checked"] == 11
    assert s["landmarks_scans_without_row"] == 1
    assert _row(lm_report, NO_ROW)["lm_status"] == "missing"
    expected = {
        PERP: ["not_perpendicular"],
        OFF: ["off_skull"],
        NOT_SWAPPED: ["bpd_longer"],
        DUP_A: ["duplicate"],
        DUP_B: ["duplicate"],
    }
    flagged = {r["file"]: r["lm_reasons"] for r in lm_report.rows if r["lm_status"] == "suspect"}
    assert flagged == expected
    assert s["landmarks_suspect_rows"] == 5
    assert s["landmarks_suspect_share"] == pytest.approx(5 / 11, abs=1e-4)
    assert s["landmarks_reason_counts"] == {
        "bpd_longer": 1,
        "not_perpendicular": 1,
        "off_skull": 1,
        "duplicate": 2,
    }
    # image checks are not affected by the landmarks
    assert s["n_errors"] == 0 and s["n_warnings"] == 0


def test_landmark_metrics_and_errors(lm_report) -> None:
    for name in GOOD:
        row = _row(lm_report, name)
        assert row["lm_status"] == "ok" and row["lm_reasons"] == []
        assert row["lm_err_max_mm"] < 3 * math.sqrt(2) * PIXEL_SIZE_MM  # the +-2 px jitter and rounding
        assert row["lm_angle_dev_deg"] < 5 and row["lm_midpoint_offset_rel"] < 0.03
        assert row["lm_off_skull_max_rel"] < 0.1
    perp = _row(lm_report, PERP)
    assert perp["lm_angle_dev_deg"] == pytest.approx(35, abs=1.5)
    assert perp["lm_angle_dev_deg"] > LM_MAX_ANGLE_DEV_DEG
    assert perp["lm_off_skull_max_mm"] < 0.3
    off = _row(lm_report, OFF)
    assert off["lm_off_skull_max_mm"] == pytest.approx(26 * PIXEL_SIZE_MM, abs=0.15)
    assert off["lm_err_max_mm"] == pytest.approx(26 * PIXEL_SIZE_MM, abs=0.15)
    # the not-swapped row is read with the file-wide swap: its 'BPD' is the real OFD
    assert _row(lm_report, NOT_SWAPPED)["lm_err_max_mm"] > 5


def test_usable_landmarks(lm_dataset) -> None:
    folder, csv_path, pts = lm_dataset
    points, info = usable_landmarks(folder, csv_path)
    assert info == {
        "n_rows": 13,
        "n_used": len(GOOD),
        "n_suspect": 5,
        "n_without_scan": 2,
        "n_image_error": 0,
        "names_swapped": True,
    }
    assert sorted(points) == GOOD
    for name in GOOD:
        np.testing.assert_array_equal(points[name], Landmarks.from_array(pts[name]).as_array())
        bpd = np.linalg.norm(points[name][1] - points[name][0])
        ofd = np.linalg.norm(points[name][3] - points[name][2])
        assert bpd < ofd  # unswapped


def test_check_landmark_points_reasons() -> None:
    e = Ellipse(100.0, 100.0, 80.0, 60.0, 0.0)
    good = true_points(e)
    assert check_landmark_points(good, e, 0.15)[0] == []
    shifted = good.copy()
    shifted[:2, 0] += 40  # BPD 40 px along the OFD: 25 % of the OFD length
    reasons, metrics = check_landmark_points(shifted)
    assert reasons == ["midpoints_apart"] and metrics["lm_midpoint_offset_rel"] == pytest.approx(0.25)
    assert check_landmark_points(good[[2, 3, 0, 1]])[0] == ["bpd_longer"]
    collapsed = good.copy()
    collapsed[1] = collapsed[0]
    assert check_landmark_points(collapsed, e)[0] == ["zero_length"]
    # off the skull: 12 px = 20 % of b, but only 1.8 mm at 0.15 mm/px (< 3 mm), 6 mm at 0.5 mm/px
    out = good.copy()
    out[3, 0] += 12
    assert check_landmark_points(out, e, 0.15)[0] == []
    assert check_landmark_points(out, e, 0.5)[0] == ["off_skull"]
    assert check_landmark_points(out, e, None)[0] == ["off_skull"]


def test_names_swapped_share() -> None:
    e = Ellipse(100.0, 100.0, 80.0, 60.0, 0.0)
    right, swapped = true_points(e), true_points(e)[[2, 3, 0, 1]]
    assert names_swapped_share({"a": right, "b": right, "c": swapped}) == (False, pytest.approx(1 / 3))
    assert names_swapped_share({"a": swapped, "b": right, "c": swapped}) == (True, pytest.approx(2 / 3))
    assert names_swapped_share({}) == (False, 0.0)


def test_read_landmarks_csv(tmp_path: Path) -> None:
    header = "image_name,ofd_1_x,ofd_1_y,ofd_2_x,ofd_2_y,bpd_1_x,bpd_1_y,bpd_2_x,bpd_2_y"
    path = tmp_path / "lm.csv"
    path.write_bytes(f"\ufeff{header}\r\n000_HC.png,1,2,3,4,5,6,7,8\r\n\r\n".encode())
    got = read_landmarks_csv(path)
    np.testing.assert_array_equal(got["000_HC.png"], [[5, 6], [7, 8], [1, 2], [3, 4]])

    with pytest.raises(ScanError, match="does not exist"):
        read_landmarks_csv(tmp_path / "missing.csv")
    path.write_text(header.replace(",bpd_2_y", "") + "\n000_HC.png,1,2,3,4,5,6,7\n")
    with pytest.raises(ScanError, match="missing column bpd_2_y"):
        read_landmarks_csv(path)
    path.write_text(f"{header}\n000_HC.png,1,2,3,4,5,6,7,8\n001_HC.png,1,2,3,x,5,6,7,8\n")
    with pytest.raises(ScanError, match=r"row 3 \(001_HC.png\): ofd_2_y 'x' is not a number") as err:
        read_landmarks_csv(path)
    assert str(err.value).count("\n") == 0 and str(err.value).startswith(str(path))
    path.write_text(f"{header}\n000_HC.png,1,2,3,4,5,6,7,8\n000_HC.png,1,2,3,4,5,6,7,9\n")
    with pytest.raises(ScanError, match="listed twice"):
        read_landmarks_csv(path)


# ---- real data ---------------------------------------------------------------------------------------------

DATA = default_data_root()
HC18 = DATA / "hc18" / "training_set"
ROLE = DATA / "role_challenge" / "role_challenge_dataset_ground_truth.csv"


@pytest.mark.data
@pytest.mark.skipif(not (HC18.exists() and ROLE.exists()), reason=f"{DATA} is absent (set FETALBIO_DATA)")
def test_real_data() -> None:
    rep = check_dataset(HC18, landmarks_csv=ROLE)
    s = rep.summary
    assert s["n_images"] == 798 and s["n_errors"] == 0 and s["n_hc_compared"] == 798
    assert s["hc_abs_diff_mm_mean"] <= 0.05 and s["hc_abs_diff_mm_max"] <= 0.2
    assert s["n_csv_rows_without_scan"] == 0 and s["n_extra_files"] == 0
    # HC18's outlines lie near the skull echo's outer edge, a few of them well inside the bone
    assert s["n_echo_checked"] >= 780 and 0.0 < s["echo_edge_mm_median"] < 0.4
    assert 0.2 < s["echo_edge_mm_sd"] < 0.6 and 3 <= s["n_outline_off_echo"] <= 40
    assert s["landmarks_names_swapped"] is True
    assert 0.2 <= s["landmarks_suspect_share"] <= 0.45
    assert s["landmarks_rows"] == 622
    assert s["landmarks_rows_checked"] + s["landmarks_rows_without_scan"] == 622
    assert s["landmarks_err_max_mm_median_ok"] < s["landmarks_err_max_mm_median_suspect"]
