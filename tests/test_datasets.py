"""CSV readers of datasets.py (through io.read_csv_file) and the annotation-name helpers of io.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from fetalbio.datasets import find_samples, read_hc_column, read_landmarks_csv
from fetalbio.io import ScanError, annotation_path, is_annotation, read_pixel_csv

LM_HEADER = "image_name,ofd_1_x,ofd_1_y,ofd_2_x,ofd_2_y,bpd_1_x,bpd_1_y,bpd_2_x,bpd_2_y"


def _one_line(err: pytest.ExceptionInfo[ScanError], path: Path) -> str:
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{path}: ")
    return text


@pytest.mark.parametrize(("sep", "name"), [(";", "semicolon"), ("\t", "tab")])
@pytest.mark.parametrize(
    "reader",
    [read_pixel_csv, read_hc_column, read_landmarks_csv],
    ids=["pixel", "hc", "landmarks"],
)
def test_csv_with_other_delimiter_says_so(tmp_path: Path, sep: str, name: str, reader: object) -> None:
    path = tmp_path / "table.csv"
    header = LM_HEADER if reader is read_landmarks_csv else "filename,pixel size(mm),head circumference (mm)"
    row = "000_HC.png,1,2,3,4,5,6,7,8" if reader is read_landmarks_csv else "000_HC.png,0.1,150.5"
    path.write_text(f"{header}\n{row}\n".replace(",", sep), encoding="utf-8")
    with pytest.raises(ScanError) as err:
        reader(path)  # type: ignore[operator]
    text = _one_line(err, path)
    assert f"{name}-separated; expected commas" in text and "missing column" not in text


def test_landmark_csv_filename_column_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "lm.csv"
    header = LM_HEADER.replace("image_name", "Filename")
    path.write_bytes(f"\ufeff{header}\r\nsub/000_HC.png,1,2,3,4,5,6,7,8\r\n".encode())
    assert read_landmarks_csv(path)["000_HC.png"].tolist() == [[5, 6], [7, 8], [1, 2], [3, 4]]


def test_landmark_csv_errors_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "lm.csv"
    path.write_text("name,x\na.png,1\n")
    with pytest.raises(ScanError, match="missing column 'image_name'") as err:
        read_landmarks_csv(path)
    _one_line(err, path)
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ScanError, match="cannot read CSV") as err:
        read_landmarks_csv(path)
    _one_line(err, path)
    with pytest.raises(ScanError, match="is a directory"):
        read_landmarks_csv(tmp_path)


def test_hc_column(tmp_path: Path) -> None:
    path = tmp_path / "sizes.csv"
    path.write_text(
        "\ufefffilename,pixel size(mm),head circumference (mm)\r\n"
        "000_HC.png,0.1,150.5\r\n001_HC.png,0.1,x\r\n",
        encoding="utf-8",
    )
    assert read_hc_column(path) == {"000_HC.png": 150.5}
    path.write_text("filename,pixel size(mm)\n000_HC.png,0.1\n")
    assert read_hc_column(path) == {}
    with pytest.raises(ScanError, match="does not exist"):
        read_hc_column(tmp_path / "missing.csv")


def test_annotation_helpers(tmp_path: Path) -> None:
    assert annotation_path(Path("d/010_2HC.png")) == Path("d/010_2HC_Annotation.png")
    assert annotation_path("010_HC.png") == Path("010_HC_Annotation.png")
    assert is_annotation(Path("d/010_2HC_Annotation.png")) and is_annotation("X_ANNOTATION.PNG")
    assert not is_annotation(Path("010_HC.png")) and not is_annotation("annotation.png")
    assert is_annotation(annotation_path(Path("a.png")))


def test_find_samples_skips_annotations_and_pairs_them(tmp_path: Path) -> None:
    for name in ("000_HC.png", "000_HC_Annotation.png", "001_HC.png", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "x_pixel_size.csv").write_text(
        "filename,pixel size(mm),head circumference (mm)\n000_HC.png,0.1,150\n"
    )
    samples = find_samples(tmp_path)
    assert [s.name for s in samples] == ["000_HC.png", "001_HC.png"]
    assert samples[0].annotation_path == tmp_path / "000_HC_Annotation.png"
    assert samples[1].annotation_path is None
    assert (samples[0].pixel_size_mm, samples[0].hc_csv_mm) == (0.1, 150.0)
    assert (samples[1].pixel_size_mm, samples[1].hc_csv_mm) == (None, None)


def test_another_folders_pixel_csv_beside_it_is_not_used(tmp_path):
    from fetalbio.datasets import find_pixel_csv

    (tmp_path / "test_set").mkdir()
    (tmp_path / "training_set_pixel_size_and_HC.csv").write_text("filename,pixel size(mm)\n")
    assert find_pixel_csv(tmp_path / "test_set") is None  # the training set's table is not the test set's
    assert find_pixel_csv(tmp_path / "training_set") == tmp_path / "training_set_pixel_size_and_HC.csv"
    (tmp_path / "test_set_pixel_size.csv").write_text("filename,pixel size(mm)\n")
    assert find_pixel_csv(tmp_path / "test_set") == tmp_path / "test_set_pixel_size.csv"


def test_a_filled_head_mask_is_fitted_at_its_boundary(tmp_path):
    """Annotations drawn as filled masks were fitted through every pixel: HC about 30 mm short."""
    import cv2
    import numpy as np

    from fetalbio.biometry import ramanujan_perimeter
    from fetalbio.datasets import load_truth
    from fetalbio.geometry import Ellipse, draw_ellipse_mask
    from fetalbio.synthetic import draw_outline

    e = Ellipse(400.0, 270.0, 210.0, 170.0, 20.0)
    cv2.imwrite(str(tmp_path / "filled.png"), draw_ellipse_mask((540, 800), e).astype(np.uint8) * 255)
    cv2.imwrite(str(tmp_path / "outline.png"), draw_outline((540, 800), e))
    want = ramanujan_perimeter(e.semi_major_px, e.semi_minor_px)
    for name in ("filled.png", "outline.png"):
        t = load_truth(tmp_path / name, (540, 800))
        got = ramanujan_perimeter(t.ellipse.semi_major_px, t.ellipse.semi_minor_px)
        assert got == pytest.approx(want, abs=3.0), name  # within a pixel of radius: 2 pi px
        assert (t.ellipse.cx_px, t.ellipse.cy_px) == pytest.approx((400.0, 270.0), abs=0.5)
