"""`fetalbio evaluate` on the inputs users get wrong: no pixel sizes, an annotation of another image,
bad split files and output paths. The shipped int8 LiteRT model on drawn scans with known outlines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import pytest
from typer.testing import CliRunner

from fetalbio.cli import app
from fetalbio.synthetic import write_samples

LITERT = ["--engine", "litert"]


def evaluate(*args) -> object:
    return CliRunner().invoke(app, ["evaluate", *map(str, args), *LITERT])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ev") / "set"
    write_samples(folder, n=3, seed=5, shape_hw=(270, 400), pixel_size_mm=0.2, annotations=True)
    return folder


def test_without_pixel_sizes_the_figures_are_named_in_pixels(dataset, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(dataset, bare, ignore=shutil.ignore_patterns("*.csv"))
    with_mm, without = tmp_path / "mm.json", tmp_path / "px.json"
    assert evaluate(dataset, "--json", with_mm).exit_code == 0
    res = evaluate(bare, "--json", without)
    assert res.exit_code == 0, res.output
    assert "3 scans have no pixel size" in " ".join(res.output.split())
    mm, px = (json.loads(p.read_text()) for p in (with_mm, without))
    row_mm, row_px = mm["rows"][0], px["rows"][0]
    assert row_px["unit"] == "px" and "hc_true_mm" not in row_px and "hc_mm" not in row_px
    # the same scan, the same model: pixels x 0.2 mm = the millimetre figures
    assert row_px["hc_true_px"] * 0.2 == pytest.approx(row_mm["hc_true_mm"], rel=1e-9)
    assert row_px["hc_px"] * 0.2 == pytest.approx(row_mm["hc_mm"], rel=1e-6)
    s = px["summary"]
    assert s["n_px_only"] == 3 and s["hc_mae_mm"] is None  # NaN is written as null
    # the terminal shows the pixel figures (it showed an mm table of nan)
    assert "nan" not in res.output and "HC (px)" in res.output and "HC (mm)" not in res.output
    assert f"{s['hc_mae_px']:.2f}" in res.output
    assert s["dice_mean"] == pytest.approx(mm["summary"]["dice_mean"])  # overlap needs no pixel size
    assert s["hc_mae_px"] * 0.2 == pytest.approx(mm["summary"]["hc_mae_mm"], rel=1e-6)


def test_an_annotation_of_another_image_is_a_failed_row(dataset, tmp_path):
    odd = tmp_path / "odd"
    shutil.copytree(dataset, odd)
    ann = sorted(odd.glob("*_Annotation.png"))[0]
    img = cv2.imread(str(ann), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(ann), cv2.resize(img, (200, 135), interpolation=cv2.INTER_NEAREST))
    res = evaluate(odd, "--json", tmp_path / "e.json")
    assert res.exit_code == 1, res.output  # a failed row fails the command, the others are scored
    rows = json.loads((tmp_path / "e.json").read_text())["rows"]
    bad = [r for r in rows if r["status"] == "error"]
    assert len(bad) == 1 and "annotation is 200x135 px, its scan 400x270" in bad[0]["error"]
    assert sum(r["status"] == "ok" for r in rows) == 2
    assert f"{bad[0]['file']}: annotation is 200x135 px" in " ".join(res.output.split())  # named


def test_a_scan_without_an_annotation_is_said_to_be_left_out(dataset, tmp_path):
    more = tmp_path / "more"
    shutil.copytree(dataset, more)
    next(more.glob("*_Annotation.png")).unlink()
    res = evaluate(more, "--json", tmp_path / "e.json")
    assert res.exit_code == 0, res.output
    assert "1 scans without an annotation were left out" in res.output
    assert json.loads((tmp_path / "e.json").read_text())["summary"]["n_unannotated"] == 1


@pytest.mark.parametrize(
    "content,reason",
    [
        ("{bad", "not a splits.json"),
        ('{"train": ["a"]}', "no 'val' list"),
        ('["a", "b"]', "no 'val' list"),
        (None, "split file does not exist"),
    ],
)
def test_a_bad_split_file_is_one_line_before_any_model_loads(dataset, tmp_path, content, reason):
    split = tmp_path / "splits.json"
    if content is not None:
        split.write_text(content)
    res = evaluate(dataset, "--split", split)
    assert res.exit_code == 2 and reason in res.output and "Traceback" not in res.output


def test_output_paths_that_cannot_be_written_are_refused_first(dataset, tmp_path):
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "a_file.txt").write_text("x")
    cases = [
        (["evaluate", dataset, "--json", tmp_path / "a_folder"], "is a folder, expected a file"),
        (["evaluate", dataset, "--report", tmp_path / "a_file.txt"], "is a file, expected a folder"),
        (["evaluate", dataset, "--json", tmp_path / "a_file.txt" / "e.json"], "a_file.txt is a file"),
        (["data", "check", dataset, "--json", tmp_path / "a_folder"], "is a folder, expected a file"),
        (["export", "--out", tmp_path / "a_file.txt" / "m.tflite"], "a_file.txt is a file, not a folder"),
    ]
    for args, reason in cases:
        res = CliRunner().invoke(app, list(map(str, args)))
        assert res.exit_code == 2 and reason in " ".join(res.output.split()), (args, res.output)


def test_training_picks_its_best_epoch_in_pixels_without_pixel_sizes():
    from fetalbio.train import _key_score

    assert _key_score({"hc_mae_mm": 2.0, "hc_mae_px": 9.0}, "hc_mae_mm", 0.5, 3) == [0, 2.0]
    assert _key_score({"hc_mae_mm": float("nan"), "hc_mae_px": 9.0}, "hc_mae_mm", 0.5, 3) == [0, 9.0]
    assert _key_score({"landmark_mre_px": 4.0}, "landmark_mre_mm", 0.5, 3) == [0, 4.0]
    assert _key_score({}, "hc_mae_mm", 0.5, 0) == [0, 0.5]  # no validation scans: the loss decides


def test_an_epoch_that_measured_no_validation_scan_is_never_best():
    """Scored by its training loss (1.4), an epoch whose 3 validation scans all failed beat every later
    epoch's millimetre error (16.9 mm) and stayed best.keras; and one with 2 of 3 failed (18.6 mm over
    one scan) beat one that measured all 3 (21.9 mm)."""
    from fetalbio.train import _better, _key_score

    none = _key_score({"n_failed": 3, "hc_mae_mm": float("nan")}, "hc_mae_mm", 1.4, 3)
    some = _key_score({"n_failed": 2, "hc_mae_mm": 18.55}, "hc_mae_mm", 1.4, 3)
    all_ = _key_score({"n_failed": 0, "hc_mae_mm": 21.91}, "hc_mae_mm", 1.4, 3)
    good = _key_score({"n_failed": 0, "hc_mae_mm": 16.89}, "hc_mae_mm", 1.4, 3)
    assert _better(some, none) and _better(all_, some) and _better(good, all_)
    assert not _better(none, good) and not _better(some, all_)
    assert _better(good, 17.0) and not _better(all_, 17.0)  # a best score stored by an earlier release


def test_litert_with_a_keras_file_says_to_convert_it(dataset):
    res = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(dataset),
            "--engine",
            "litert",
            "--model",
            "fetalbio/shipped/segmentation/model.keras",
        ],
    )
    assert res.exit_code == 2 and "runs .tflite files" in res.output and "fetalbio export" in res.output


@pytest.mark.parametrize(
    ("val", "reason"),
    [(["other_HC.png"], "none of its 1 validation scans is in"), ([], "validation list is empty")],
)
def test_a_split_of_another_dataset_is_named_as_the_cause(dataset, tmp_path, val, reason):
    """It said the dataset had no annotated scans."""
    split = tmp_path / "splits.json"
    split.write_text(json.dumps({"train": [], "val": val}))
    res = evaluate(dataset, "--split", split)
    assert res.exit_code == 2 and reason in " ".join(res.output.split()), res.output
    assert str(split) in " ".join(res.output.split())


def test_a_report_without_pixel_sizes_says_what_it_left_out(dataset, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(dataset, bare, ignore=shutil.ignore_patterns("*.csv"))
    res = evaluate(bare, "--report", tmp_path / "rep")
    assert res.exit_code == 0, res.output
    assert "only its summary.json was written" in " ".join(res.output.split())
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["summary.json"]
