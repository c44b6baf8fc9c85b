"""Knowing when a measurement may be wrong: the region finder, review reasons, fused intervals."""

from __future__ import annotations

import numpy as np
import pytest

from fetalbio import defaults
from fetalbio.predict import apply_review, review_reasons
from fetalbio.preprocess import Letterbox, prepare_input
from fetalbio.region import find_image_region
from fetalbio.synthetic import draw_scan, random_ellipse


def _scan(seed: int, hw=(360, 520)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return draw_scan(hw, random_ellipse(hw, rng), rng)


def _capture(img: np.ndarray, y0: int, x0: int) -> np.ndarray:
    """A dark screen with text and a grey bar, the scan pasted at (y0, x0)."""
    import cv2

    h, w = img.shape
    canvas = np.full((h + 260, w + 420), 18, np.uint8)
    canvas[y0 : y0 + h, x0 : x0 + w] = img
    canvas[:, -40:] = 110
    for i, text in enumerate(("ACME C5-1", "MI 0.9", "Gn 52", "FR 31Hz")):
        cv2.putText(canvas, text, (6, 22 + 24 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 230, 1, cv2.LINE_AA)
    return canvas


@pytest.mark.parametrize("seed,y0,x0", [(1, 120, 200), (2, 40, 60), (3, 200, 330)])
def test_region_finder_finds_the_scan_in_a_capture(seed, y0, x0):
    img = _scan(seed)
    region = find_image_region(_capture(img, y0, x0))
    assert region is not None
    ry, rx, rh, rw = region
    h, w = img.shape
    # the box holds the whole scan (within a small margin) and not much of the screen
    assert ry <= y0 + 0.03 * h and rx <= x0 + 0.03 * w
    assert ry + rh >= y0 + 0.97 * h and rx + rw >= x0 + 0.97 * w
    assert rh * rw <= 1.5 * h * w  # a margin is kept on purpose (PAD_FRAC)


def test_region_finder_keeps_a_smaller_textured_piece_of_the_scan():
    """A dark scan whose texture falls in two pieces (tissue above, the far skull below a dark head):
    the lower piece, 8 % the size of the upper one, belongs to the scan, and a box without it would cut
    the head (seen on an HC18 scan with Poisson noise)."""
    rng = np.random.default_rng(0)
    scan = np.full((300, 600), 4, np.uint8)  # dark, flat: no texture
    scan[:150] = rng.integers(40, 120, (150, 600))  # tissue above the head
    scan[200:230, 150:420] = rng.integers(60, 200, (30, 270))  # the far skull, 9 % of the tissue's area
    canvas = np.full((500, 900), 4, np.uint8)  # the scan's own dark level all round
    canvas[100:400, 150:750] = scan
    region = find_image_region(canvas)
    assert region is not None
    ry, rx, rh, rw = region
    assert ry + rh >= 100 + 230  # the far skull is inside the box


def test_region_finder_leaves_a_plain_scan_whole():
    for seed in range(4):
        assert find_image_region(_scan(seed)) is None


def test_letterbox_of_a_region_maps_back_to_the_full_image():
    full = (300, 500)
    region = (40, 70, 200, 300)
    lb = Letterbox.fit(full, (128, 192), region)
    pts = np.array([[70.0, 40.0], [369.0, 239.0], [123.4, 150.6]])
    assert np.allclose(lb.to_original(lb.to_input(pts)), pts, atol=1e-9)
    prob = np.ones((128, 192), np.float32)
    back = lb.map_to_original(prob)
    assert back.shape == full and back[40:240, 70:370].min() == 1.0
    assert back[:40].max() == 0.0 and back[:, 370:].max() == 0.0
    x, lb2 = prepare_input(np.zeros(full, np.uint8), (128, 192), region)
    assert x.shape == (128, 192) and lb2 == lb


def _row(**kw) -> dict:
    row = {"status": "ok", "flags": "", "unit": "mm", "hc_mm": 170.0, "cephalic_index": 80.0}
    row.update(kw)
    return row


@pytest.mark.parametrize(
    "bad,good,reason",
    [
        (_row(flags="edge"), _row(flags="poor_fit"), "border"),
        (_row(flags="low_confidence"), _row(), "confidence"),
        (_row(flags="methods_disagree"), _row(), "disagree"),
        (_row(flags="one_method_only"), _row(), "only one method"),
        (
            _row(hc_mm_low=160.0, hc_mm_high=160.0 + (defaults.REVIEW_INTERVAL_FRAC + 0.01) * 170),
            _row(hc_mm_low=165.0, hc_mm_high=165.0 + (defaults.REVIEW_INTERVAL_FRAC - 0.02) * 170),
            "wide",
        ),
        (_row(cephalic_index=55.0), _row(cephalic_index=72.0), "shape"),
        (_row(cephalic_index=99.0), _row(cephalic_index=90.0), "shape"),
        # a pixel size in cm (10x too small) or of another image: no fetal head is that size
        (_row(hc_mm=7.2), _row(hc_mm=44.3), "no fetal head size"),
        (_row(hc_mm=5214.0), _row(hc_mm=335.0), "check the pixel size"),
    ],
)
def test_each_review_reason_fires_and_does_not(bad, good, reason):
    assert any(reason in r for r in review_reasons(bad)), review_reasons(bad)
    assert review_reasons(good) == []
    rows = [bad, good]
    apply_review(rows)
    assert bad["status"] == "review" and reason in bad["review_reasons"]
    assert good["status"] == "ok" and good["review_reasons"] == ""


def test_review_threshold_scales_with_the_head():
    # the same interval width: too wide for a small head, fine for a large one
    width = 1.3 * defaults.REVIEW_INTERVAL_FRAC * 100.0
    small = _row(hc_mm=100.0, hc_mm_low=100.0 - width / 2, hc_mm_high=100.0 + width / 2)
    large = _row(hc_mm=300.0, hc_mm_low=300.0 - width / 2, hc_mm_high=300.0 + width / 2)
    assert review_reasons(small) and not review_reasons(large)


def test_an_error_row_stays_an_error():
    rows = [{"status": "error", "error": "no head found", "flags": "no_head"}]
    apply_review(rows)
    assert rows[0]["status"] == "error" and "review_reasons" not in rows[0]


def _records(n: int, seed: int, kind: str = "clean") -> list[dict]:
    """Synthetic (scan, method) records with known noise: segmentation unbiased, SD 1.5 mm; landmarks
    biased by +1.5 mm, SD 4 mm; every 4th scan 3x noisier on both (a 'perturbed' look)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = {k: rng.uniform(60, 340) * f for k, f in (("hc", 1.0), ("bpd", 0.27), ("ofd", 0.34))}
        scale = 3.0 if i % 4 == 0 else 1.0
        for m, bias, sd in (("segmentation", 0.0, 1.5), ("landmarks", 1.5, 4.0)):
            rec = {"file": f"s{seed}_{i}", "kind": kind, "method": m, "status": "ok"}
            for k in t:
                rec[f"{k}_true_mm"] = t[k]
                rec[f"{k}_mm"] = t[k] + (bias + rng.normal(0, sd * scale)) * (
                    t[k] / t["hc"] if k != "hc" else 1
                )
            out.append(rec)
    return out


def test_conformal_intervals_cover_90_percent_of_new_scans():
    from fetalbio.methods.fused import FusedCalibration, combine_values
    from fetalbio.robustness import fit_fused_calibration

    recs = _records(1500, seed=1)
    # asked to, the fit weighs the less noisy method more; the shipped fit keeps equal weights (FIT_WEIGHTS)
    assert fit_fused_calibration(recs, fit_weights=True)["weights"]["hc"] > 0.5
    shipped = fit_fused_calibration(recs)  # equal weights, no biases (FIT_WEIGHTS, FIT_BIAS)
    assert shipped["weights"] == {"hc": 0.5, "bpd": 0.5, "ofd": 0.5}
    assert shipped["bias_mm"]["landmarks"] == {"hc": 0.0, "bpd": 0.0, "ofd": 0.0}
    cal = fit_fused_calibration(recs, fit_bias=True)
    assert cal["bias_mm"]["landmarks"]["hc"] == pytest.approx(1.5, abs=0.4)
    assert cal["bias_mm"]["segmentation"]["hc"] == pytest.approx(0.0, abs=0.4)
    fc = FusedCalibration(**{k: v for k, v in cal.items() if k in FusedCalibration.__dataclass_fields__})
    test = _records(2000, seed=2)
    by = {}
    for r in test:
        by.setdefault(r["file"], {})[r["method"]] = r
    hits = []
    for d in by.values():
        s, lm = d["segmentation"], d["landmarks"]
        est, sig = combine_values(
            {k: s[f"{k}_mm"] for k in ("hc", "bpd", "ofd")},
            {k: lm[f"{k}_mm"] for k in ("hc", "bpd", "ofd")},
            fc,
            True,
        )
        hits.append(abs(est["hc"] - s["hc_true_mm"]) <= fc.q["hc"] * sig["hc"])
    assert 0.87 <= float(np.mean(hits)) <= 0.93


@pytest.mark.parametrize("k", [1, 3])
def test_a_turned_view_maps_points_and_maps_back_exactly(k):
    from fetalbio.preprocess import RotatedView, turned

    img = np.arange(30 * 50, dtype=np.uint8).reshape(30, 50)
    t = turned(img, k)
    lb = Letterbox.fit(t.shape, (64, 96))
    view = RotatedView(lb, k, 30, 50)
    pts = np.array([[3.0, 4.0], [49.0, 29.0], [12.5, 7.25]])
    assert np.allclose(view.to_original(view.to_input(pts)), pts, atol=1e-9)
    # a pixel of the turned image is the same pixel of the original at the mapped position
    for x, y in ((0, 0), (10, 20), (t.shape[1] - 1, t.shape[0] - 1)):
        ox, oy = view._unturn(np.array([float(x), float(y)]))
        assert t[y, x] == img[int(oy), int(ox)]
    prob = np.zeros((64, 96), np.float32)
    prob[lb.pad_y : lb.pad_y + 4, lb.pad_x : lb.pad_x + 4] = 1.0  # the turned image's top-left corner
    back = view.map_to_original(prob)
    assert back.shape == (30, 50)
    corner = view._unturn(np.array([0.0, 0.0])).astype(int)
    assert back[corner[1], corner[0]] > 0.5


def test_a_portrait_scan_is_measured_like_the_landscape_one():
    """The same synthetic head, the scan turned on its side: the portrait view search finds it again."""
    from pathlib import Path

    from fetalbio.engines import load_engine
    from fetalbio.io import Scan
    from fetalbio.pipeline import Predictor

    eng = load_engine(None, "segmentation", "litert")
    img = _scan(5, (540, 800))
    scans = [
        Scan(img, (0.15, 0.15), Path("a.png"), "cli"),
        Scan(np.rot90(img).copy(), (0.15, 0.15), Path("b.png"), "cli"),
    ]
    flat, turned_ = Predictor({"segmentation": eng}).predict_scans(scans)
    from fetalbio.geometry import measure_ellipse

    a = measure_ellipse(flat.results["segmentation"].ellipse, (0.15, 0.15)).hc
    b = measure_ellipse(turned_.results["segmentation"].ellipse, (0.15, 0.15)).hc
    assert b == pytest.approx(a, rel=0.02)


def test_multiframe_dicom_reports_the_surest_frame_not_frame_0(tmp_path):
    """A 4-frame cine whose frame 0 is noise: every frame is measured and a head frame is reported."""
    import csv

    from _dicom import make_dicom, us_region
    from typer.testing import CliRunner

    from fetalbio.cli import app

    rng = np.random.default_rng(9)
    hw = (270, 400)
    noise = rng.integers(0, 255, hw).astype(np.uint8)
    heads = [draw_scan(hw, random_ellipse(hw, rng), rng) for _ in range(3)]
    region = [us_region(0.03, 0.03, box=(0, 0, 399, 269))]
    make_dicom(tmp_path / "cine.dcm", np.stack([noise, *heads]), frames=4, SequenceOfUltrasoundRegions=region)
    res = CliRunner().invoke(
        app,
        ["predict", str(tmp_path / "cine.dcm"), "--out", str(tmp_path / "run"), "--engine", "litert", "-q"],
    )
    assert res.exit_code in (0, 1), res.output
    (row,) = list(csv.DictReader(open(tmp_path / "run" / "measurements.csv")))
    assert row["frame"] in ("1", "2", "3") and row["status"] in ("ok", "review")
    only0 = CliRunner().invoke(
        app,
        [
            "predict",
            str(tmp_path / "cine.dcm"),
            "--out",
            str(tmp_path / "r0"),
            "--engine",
            "litert",
            "--frames",
            "0",
            "-q",
        ],
    )
    assert only0.exit_code in (0, 1)
    (row0,) = list(csv.DictReader(open(tmp_path / "r0" / "measurements.csv")))
    assert row0["frame"] in ("0", "")  # asked for frame 0 only: that is what is measured
    again = CliRunner().invoke(
        app,
        ["predict", str(tmp_path / "cine.dcm"), "--out", str(tmp_path / "r0"), "--engine", "litert",
         "--frames", "2", "--resume", "-q"],
    )  # fmt: skip
    assert again.exit_code in (0, 1), again.output
    (row2,) = list(csv.DictReader(open(tmp_path / "r0" / "measurements.csv")))
    assert row2["frame"] == "2"  # --resume with other frames measures them, not the journal's frame 0
    import cv2

    cv2.imwrite(str(tmp_path / "single.png"), heads[0])  # --frames names a cine's frames, not a PNG's
    mixed = CliRunner().invoke(
        app,
        ["predict", str(tmp_path / "cine.dcm"), str(tmp_path / "single.png"), "--pixel-size", "0.3",
         "--out", str(tmp_path / "r3"), "--engine", "litert", "--frames", "3,2", "-q"],
    )  # fmt: skip
    assert mixed.exit_code == 0, mixed.output
    by = {r["file"].rsplit("/", 1)[-1]: r for r in csv.DictReader(open(tmp_path / "r3" / "measurements.csv"))}
    assert by["cine.dcm"]["frame"] in ("2", "3") and by["single.png"]["frame"] == "0"
    assert by["single.png"]["status"] in ("ok", "review")


@pytest.mark.slow
def test_a_huge_scan_is_post_processed_at_a_bounded_size():
    """The same head at 6x the pixels (and 1/6 of the pixel size): the same HC in mm (post-processed on a
    map of at most MAX_POSTPROCESS_SIDE_PX a side, so no huge morphology)."""
    from pathlib import Path

    import cv2

    from fetalbio.engines import load_engine
    from fetalbio.geometry import measure_ellipse
    from fetalbio.io import Scan
    from fetalbio.pipeline import Predictor

    img = _scan(7, (540, 800))
    big = cv2.resize(img, (800 * 6, 540 * 6), interpolation=cv2.INTER_CUBIC)
    p = Predictor({"segmentation": load_engine(None, "segmentation", "litert")})
    small_r, big_r = p.predict_scans(
        [Scan(img, (0.15, 0.15), Path("a"), "cli"), Scan(big, (0.025, 0.025), Path("b"), "cli")]
    )
    a = measure_ellipse(small_r.results["segmentation"].ellipse, (0.15, 0.15)).hc
    b = measure_ellipse(big_r.results["segmentation"].ellipse, (0.025, 0.025)).hc
    assert b == pytest.approx(a, rel=0.02)


def test_a_landmark_outside_the_scan_is_flagged_edge():
    from fetalbio import methods
    from fetalbio.heatmaps import render_heatmaps
    from fetalbio.modelinfo import ModelInfo

    lb = Letterbox.fit((300, 400), (64, 96))  # the scan fills 85 of 96 columns: pad_x = 5
    info = ModelInfo("landmarks", heatmap_sigma_px=2.0)
    inside = np.array([[48, 14], [48, 50], [22, 32], [74, 32]], float)
    outside = inside.copy()
    outside[2, 0] = 1.0  # an OFD end in the padding, left of the scan
    lm = methods.get("landmarks")
    assert "edge" not in lm.decode(render_heatmaps(inside, (64, 96), 2.0), lb, info).flags
    res = lm.decode(render_heatmaps(outside, (64, 96), 2.0), lb, info)
    assert "edge" in res.flags and res.landmarks.as_array()[:, 0].min() < 0


def test_an_interval_never_reaches_below_zero_and_still_sends_the_row_to_review():
    """Two methods far apart (a head 1 against 3 times another's size): the symmetric interval would
    start below 0 mm; it starts at 0 and is still wide."""
    from fetalbio.geometry import Ellipse, ellipse_to_landmarks
    from fetalbio.methods import get
    from fetalbio.methods.base import Result
    from fetalbio.methods.fused import calibration
    from fetalbio.predict import review_reasons

    sp = (0.15, 0.15)
    seg_e, lm_e = Ellipse(400.0, 270.0, 60.0, 45.0, 0.0), Ellipse(400.0, 270.0, 180.0, 135.0, 0.0)
    seg = Result("segmentation", seg_e, ellipse_to_landmarks(seg_e), confidence=0.9)
    lm = Result("landmarks", lm_e, ellipse_to_landmarks(lm_e), confidence=0.9)
    fused = get("fused")
    res = fused.combine({"segmentation": seg, "landmarks": lm})
    hc = fused.measure(res, sp).hc
    ext = fused.row_extras(res, sp)
    assert ext["hc_mm_low"] == 0.0 and hc - calibration().q["hc"] * ext["hc_sd_mm"] < 0  # would have been
    assert ext["bpd_mm_low"] >= 0.0 and ext["ofd_mm_low"] >= 0.0
    reasons = review_reasons({"hc_mm": hc, "flags": "", **ext})
    assert any(r.startswith("wide interval (HC 0-") for r in reasons)


def test_the_fused_estimate_leaves_out_a_result_its_model_is_unsure_of():
    """Landmarks flagged low_confidence next to a confident segmentation: the fused values are the
    segmentation's alone (less its calibrated bias), the row still goes to review; both unsure: both."""
    from fetalbio.geometry import Ellipse, ellipse_to_landmarks
    from fetalbio.methods import get
    from fetalbio.methods.base import Result
    from fetalbio.methods.fused import calibration, confident

    assert confident([], ["low_confidence"]) == (True, False)
    assert confident(["low_confidence"], []) == (False, True)
    assert confident(["low_confidence"], ["low_confidence"]) == (True, True)
    sp = (0.15, 0.15)
    seg_e, lm_e = Ellipse(400.0, 270.0, 200.0, 160.0, 10.0), Ellipse(400.0, 270.0, 150.0, 100.0, 10.0)
    seg = Result("segmentation", seg_e, ellipse_to_landmarks(seg_e), confidence=0.9)
    fused = get("fused")
    cal = calibration()
    seg_hc = get("segmentation").measure(seg, sp).hc
    for lm_flags, expect_seg_only in ((["low_confidence"], True), ([], False)):
        lm = Result("landmarks", lm_e, ellipse_to_landmarks(lm_e), flags=lm_flags, confidence=0.1)
        res = fused.combine({"segmentation": seg, "landmarks": lm})
        hc = fused.measure(res, sp).hc
        if expect_seg_only:
            assert hc == pytest.approx(seg_hc - cal.bias("segmentation", "hc"))
            assert "low_confidence" in res.flags
        else:
            assert hc < seg_hc - 10  # averaged with the much smaller landmark head


def test_square_pixels_map_back_exactly():
    from fetalbio.preprocess import Letterbox, TiltedView, square_pixels

    img = _scan(3, (300, 400))
    squared, m = square_pixels(img, (0.3, 0.2))  # x pixels 1.5x as wide as tall: columns stretched
    assert squared.shape == (300, 600)
    assert square_pixels(img, (0.2, 0.2)) is None and square_pixels(img, None) is None
    view = TiltedView(Letterbox.fit(squared.shape, (256, 384)), m, 300, 400, 0.0)
    pts = np.array([[0.0, 0.0], [399.0, 299.0], [123.4, 56.7]])
    np.testing.assert_allclose(view.to_original(view.to_input(pts)), pts, atol=1e-9)
    np.testing.assert_allclose(
        view.to_input(pts)[1], Letterbox.fit((300, 600), (256, 384)).to_input([[598.75, 299.0]])[0]
    )


@pytest.mark.parametrize("squeeze", ["x", "y"])
def test_a_scan_with_non_square_pixels_is_measured_like_the_square_one(squeeze):
    """The same head stored with pixels 1.5x wider (or taller) than they are tall: the models saw it
    squeezed and the landmark model named the BPD points OFD (fused BPD +7-11 %, status ok on HC18)."""
    from pathlib import Path

    import cv2

    from fetalbio.engines import load_engine
    from fetalbio.io import Scan
    from fetalbio.pipeline import Predictor

    img = _scan(11, (540, 800))
    if squeeze == "x":
        small, spacing = cv2.resize(img, (533, 540), interpolation=cv2.INTER_AREA), (0.15 * 800 / 533, 0.15)
    else:
        small, spacing = cv2.resize(img, (800, 360), interpolation=cv2.INTER_AREA), (0.15, 0.15 * 540 / 360)
    engines = {m: load_engine(None, m, "litert") for m in ("segmentation", "landmarks")}
    preds = Predictor(engines).predict_scans(
        [
            Scan(img, (0.15, 0.15), Path("square.png"), "cli"),
            Scan(small, spacing, Path("squeezed.dcm"), "dicom-pixelspacing"),
        ]
    )
    from fetalbio import methods

    for m in ("segmentation", "landmarks"):
        square, squeezed = (methods.get(m).measure(p.results[m], p.scan.spacing_mm) for p in preds)
        assert squeezed.bpd < squeezed.ofd  # the short axis is the BPD in mm
        assert squeezed.bpd == pytest.approx(square.bpd, rel=0.03)
        assert squeezed.ofd == pytest.approx(square.ofd, rel=0.03)
        assert squeezed.hc == pytest.approx(square.hc, rel=0.02)


def test_a_turned_scan_with_non_square_pixels_maps_back_through_both():
    """Squared first, then turned back: the two affines compose (a wrong order puts the head elsewhere)."""
    from pathlib import Path

    import cv2

    from fetalbio.engines import load_engine
    from fetalbio.geometry import measure_ellipse
    from fetalbio.io import Scan
    from fetalbio.perturb import rotate
    from fetalbio.pipeline import Predictor

    img = _scan(11, (540, 800))
    turned_ = rotate(img, 25.0)  # the scan turned by 25 degrees, its canvas grown to hold it
    m = cv2.getRotationMatrix2D((400.0, 270.0), 25.0, 1.0)  # rotate()'s own matrix
    m[:, 2] += ((turned_.shape[1] - 800) / 2, (turned_.shape[0] - 540) / 2)
    sx = turned_.shape[1] / 667
    squeezed = cv2.resize(turned_, (667, turned_.shape[0]), interpolation=cv2.INTER_AREA)  # pixels sx wide
    eng = load_engine(None, "segmentation", "litert")
    flat, both = Predictor({"segmentation": eng}).predict_scans(
        [
            Scan(img, (0.15, 0.15), Path("a.png"), "cli"),
            Scan(squeezed, (0.15 * sx, 0.15), Path("b.dcm"), "dicom-pixelspacing"),
        ]
    )
    assert both.view.tilt is not None and abs(abs(both.view.tilt[3]) % 90 - 25.0) < 2.0  # squared, then found
    a = measure_ellipse(flat.results["segmentation"].ellipse, (0.15, 0.15)).hc
    b = measure_ellipse(both.results["segmentation"].ellipse, both.scan.spacing_mm).hc
    assert b == pytest.approx(a, rel=0.02)
    # the centre, mapped from the squeezed file's pixels back to the unturned scan's, is the same head's
    c = both.results["segmentation"].ellipse.centre
    back = cv2.invertAffineTransform(m) @ np.array([(c[0] + 0.5) * sx - 0.5, c[1], 1.0])
    assert np.hypot(*(back - np.array(flat.results["segmentation"].ellipse.centre))) < 6.0
