"""Tests for the landmark heatmap models (fetalbio.models): shapes, config round-trips, .keras save/load."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from fetalbio.models import ARCHS, build_landmark_model  # noqa: E402

SHAPE = (64, 96, 1)


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(2, *SHAPE)).astype(np.float32)


@pytest.fixture(scope="module", params=ARCHS)
def model(request):
    keras.utils.set_random_seed(1)
    return build_landmark_model(request.param, SHAPE, base_filters=8)


def test_output_shape_dtype_and_linear_head(model, batch):
    out = np.asarray(model(batch, training=False))
    assert out.shape == (2, 64, 96, 4)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()
    last = model.layers[-1]
    assert isinstance(last, keras.layers.Conv2D) and last.filters == 4
    assert last.get_config()["activation"] == "linear"
    assert last.dtype_policy.name == "float32"  # float32 heatmaps also under mixed precision


def test_config_round_trip(model):
    config = model.get_config()
    clone = type(model).from_config(config)
    assert clone.get_config() == config
    assert clone.count_params() == model.count_params()


def test_save_and_load_keras(model, batch, tmp_path):
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_allclose(
        np.asarray(loaded(batch, training=False)),
        np.asarray(model(batch, training=False)),
        rtol=1e-5,
        atol=1e-6,
    )


def test_unknown_arch_raises():
    with pytest.raises(ValueError, match="unet, hrnet, resnet"):
        build_landmark_model("vgg", SHAPE)


@pytest.mark.parametrize("arch", ["hrnet", "resnet"])
def test_bad_image_size_raises(arch):
    with pytest.raises(ValueError, match="divisible"):
        build_landmark_model(arch, (60, 96, 1))


def test_init_from_segmentation_unet_copies_all_but_the_head(tmp_path):
    import numpy as np

    from fetalbio.models.unet import UNet
    from fetalbio.train import init_weights_from

    seg = UNet((64, 96, 1), base_filters=4, depth=2, out_channels=1, out_activation="sigmoid")
    seg.save(tmp_path / "seg.keras")
    lm = UNet((64, 96, 1), base_filters=4, depth=2, out_channels=4, out_activation="linear")
    n = init_weights_from(lm, tmp_path / "seg.keras")
    with_weights = [layer for layer in lm.layers if layer.weights]
    assert n == len(with_weights) - 1  # every layer but the 4-channel head
    np.testing.assert_array_equal(
        lm.get_layer("enc0_conv1").get_weights()[0], seg.get_layer("enc0_conv1").get_weights()[0]
    )
    assert not np.array_equal(
        lm.get_layer("head").get_weights()[0].shape, seg.get_layer("head").get_weights()[0].shape
    )
