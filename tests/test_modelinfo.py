"""ModelInfo: sidecars validated with one-line errors, round trips, and model files checked by sha256."""

from __future__ import annotations

import json
import shutil

import pytest

from fetalbio.engines import load_engine
from fetalbio.modelinfo import ModelError, ModelInfo, models_dir, verify_sha256


def test_round_trip_keeps_unknown_keys():
    d = {
        "format": "fetalbio-model/1",
        "method": "landmarks",
        "arch": "resnet",
        "image_size": [256, 384],
        "heatmap_sigma_px": 2.5,
        "low_point_confidence": 0.03,
        "tflite_sha256": "ab",
        "model_sha256": "cd",
        "future_key": {"x": 1},
    }
    info = ModelInfo.from_dict(d)
    assert (
        info.image_size == (256, 384)
        and info.heatmap_sigma_px == 2.5
        and info.model_sha256 == "cd"
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
    with pytest.raises(ModelError, match="sha256 .* does not match its sidecar") as err:
        load_engine(path, "segmentation", "litert")
    assert str(path) in str(err.value) and "model_int8.json" in str(err.value)
    assert "\n" not in str(err.value)


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


def test_sidecar_method_must_match_the_output_channels(tmp_path):
    """A 4-channel landmarks file whose sidecar says segmentation: the sidecar belongs to another model."""
    path = _copy(tmp_path, "landmarks")
    side = tmp_path / "model_int8.json"
    side.write_text(json.dumps({**json.loads(side.read_text()), "method": "segmentation"}))
    with pytest.raises(ModelError, match="4 output channels but its sidecar says it is a segmentation"):
        load_engine(path, "segmentation", "litert")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "schema"])
def test_a_damaged_file_without_a_hash_is_one_line_error(tmp_path, damage):
    """No hash to check against (an exported file whose sidecar lost it): LiteRT's own failure, one line."""
    path = _copy(tmp_path)
    side = tmp_path / "model_int8.json"
    info = json.loads(side.read_text())
    del info["tflite_sha256"]
    side.write_text(json.dumps(info))
    data = bytearray(path.read_bytes())
    if damage == "garbage":
        data = bytearray(b"not a model" * 50)
    elif damage == "truncated":
        data = data[: len(data) // 3]
    else:
        data[17] ^= 0x40  # the schema version field of the flatbuffer
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="LiteRT cannot load") as err:
        load_engine(path, "segmentation", "litert")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("method", ["segmentation", "landmarks"])
def test_every_shipped_file_matches_its_recorded_hash(method):
    folder = models_dir() / method
    files = [folder / "model.keras", *sorted(folder.glob("*.tflite"))]
    for path in files:
        info = ModelInfo.read(path)
        assert info.tflite_sha256 if path.suffix == ".tflite" else info.model_sha256, path
        verify_sha256(path, info)


def test_a_damaged_keras_file_is_caught_and_no_hash_means_no_check(tmp_path):
    src = models_dir() / "segmentation"
    for name in ("model.keras", "model.json"):
        shutil.copy(src / name, tmp_path / name)
    path = tmp_path / "model.keras"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match its sidecar") as err:
        verify_sha256(path, ModelInfo.read(path))
    assert "model.json" in str(err.value)
    verify_sha256(path, ModelInfo(method="segmentation"))  # a training run's model.json: no hash, no check
