"""ModelInfo: sidecars validated with one-line errors, round trips, and model files checked by sha256."""

from __future__ import annotations

import json
import shutil

import pytest

from fetalbio.engines import load_engine
from fetalbio.modelinfo import ModelError, ModelInfo, models_dir


def test_round_trip_keeps_unknown_keys():
    d = {
        "format": "fetalbio-model/1",
        "method": "landmarks",
        "arch": "resnet",
        "image_size": [256, 384],
        "heatmap_sigma_px": 2.5,
        "low_point_confidence": 0.03,
        "tflite_sha256": "ab",
        "future_key": {"x": 1},
    }
    info = ModelInfo.from_dict(d)
    assert (
        info.image_size == (256, 384)
        and info.heatmap_sigma_px == 2.5
        and info.extra == {"future_key": {"x": 1}}
    )
    again = info.to_dict()
    assert {k: again[k] for k in d} == {**d, "image_size": [256, 384]}


@pytest.mark.parametrize(
    "content,message",
    [
        ([1, 2], "expected a JSON object"),
        ({"method": "landmarks", "heatmap_sigma_px": "abc"}, "'heatmap_sigma_px' must be a number"),
        ({"method": "landmarks", "heatmap_sigma_px": 0}, "must be a positive number"),
        ({"method": "landmarks", "image_size": [256]}, "'image_size' must be two positive whole numbers"),
        ({"method": 7}, "'method' must be text"),
    ],
)
def test_bad_sidecars_are_one_line_errors(tmp_path, content, message):
    p = tmp_path / "model.json"
    p.write_text(json.dumps(content))
    with pytest.raises(ModelError, match=message) as err:
        ModelInfo.read(tmp_path / "model.keras")
    assert "\n" not in str(err.value) and str(p) in str(err.value)


def _copy(tmp_path, method="segmentation"):
    src = models_dir() / method
    for name in ("model_int8.tflite", "model_int8.json"):
        shutil.copy(src / name, tmp_path / name)
    return tmp_path / "model_int8.tflite"


def test_a_flipped_byte_is_caught_before_use(tmp_path):
    path = _copy(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10  # one bit, in the weights
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256 .* differs from its sidecar") as err:
        load_engine(path, "segmentation", "litert")
    assert str(path) in str(err.value)


def test_an_intact_copy_loads(tmp_path):
    eng = load_engine(_copy(tmp_path), "segmentation", "litert")
    assert eng.method == "segmentation"


def test_sidecar_method_must_match(tmp_path):
    path = _copy(tmp_path, "landmarks")
    side = tmp_path / "model_int8.json"
    info = json.loads(side.read_text())
    info["method"] = "segmentation"
    side.write_text(json.dumps(info))
    with pytest.raises(ModelError, match="not a landmarks model"):
        load_engine(path, "landmarks", "litert")
