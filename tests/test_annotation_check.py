"""tools/annotation_check.py on a drawn dataset whose outlines are drawn off the skull echo by known
amounts, while the "model" ellipse always lies on it: all of the HC error is the annotation's."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from _draw import PIXEL_SIZE_MM, SHAPE_HW, ellipse, outline, scan, write_pixel_csv, write_png

from fetalbio.geometry import Ellipse, measure_ellipse

REPO = Path(__file__).resolve().parents[1]


def test_the_annotations_placement_explains_the_error(tmp_path: Path) -> None:
    folder = tmp_path / "hc18" / "training_set"
    folder.mkdir(parents=True)
    csv_rows, rows = [], []
    for i, shrink_px in enumerate([-4, -3, -2, -1, 0, 0, 1, 2, 3, 4, 5, 6]):
        name, e = f"{100 + i}_HC.png", ellipse(i)
        drawn = Ellipse(
            e.cx_px, e.cy_px, e.semi_major_px - shrink_px, e.semi_minor_px - shrink_px, e.angle_deg
        )
        write_png(folder / name, scan(SHAPE_HW, e, seed=i))
        write_png(folder / name.replace(".png", "_Annotation.png"), outline(SHAPE_HW, drawn))
        hc_true = measure_ellipse(drawn, (PIXEL_SIZE_MM, PIXEL_SIZE_MM)).hc
        csv_rows.append((name, PIXEL_SIZE_MM, hc_true))
        (cx, cy), (w, h), ang = e.to_cv2()
        hc = measure_ellipse(e, (PIXEL_SIZE_MM, PIXEL_SIZE_MM)).hc
        rows.append({"file": name, "status": "ok", "hc_mm": hc, "hc_true_mm": hc_true})
        rows[-1]["pred_ellipse"] = [[cx, cy], [w, h], ang]
    write_pixel_csv(tmp_path / "hc18" / "training_set_pixel_size_and_HC.csv", csv_rows)
    evaluation = tmp_path / "eval.json"
    evaluation.write_text(json.dumps({"rows": rows}))
    res = subprocess.run(
        [sys.executable, "tools/annotation_check.py", str(tmp_path), "--json", str(evaluation)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout
    assert out.startswith("12 scans")
    corr_ann, corr_model = re.search(r"placement ([+-][\d.]+), with the model's (\S+) ", out).groups()
    assert float(corr_ann) > 0.95 and (corr_model == "n/a" or abs(float(corr_model)) < float(corr_ann))
    mae, left = map(float, re.search(r"MAE ([\d.]+) mm; .* ([\d.]+) mm", out).groups())
    assert mae > 2.0 and left < 0.3 * mae  # the placement explains nearly all of it
    sd_ann, sd_model = map(float, re.findall(r"SD ([\d.]+) ->", out))
    assert sd_ann > 0.3 and sd_model < sd_ann / 3  # shrinks of -4..6 px at 0.15 mm; the model on the ring
