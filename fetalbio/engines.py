"""Inference engines behind one interface: Keras (``.keras``) and LiteRT (``.tflite``).

An engine maps a batch of letterboxed, normalised inputs ``(N, H, W, 1)`` float32 to model outputs
``(N, H, W, C)`` float32 (C = 1 skull probability, or 4 heatmaps). Everything else (reading, letterbox,
post-processing, mm) is shared, so both engines give the same measurements through the same code.

What a model needs beside its weights (method, input size, normalisation) lives in ``model.json``
beside a ``.keras`` file, and in a ``<name>.json`` sidecar beside a ``.tflite`` file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol

import numpy as np

METHODS = ("segmentation", "landmarks")


class ModelError(Exception):
    """A model that cannot be loaded or used; str() is one line naming the file."""


def models_dir() -> Path:
    """The shipped models: ``$FETALBIO_MODELS`` or ``models/`` at the top of the checkout."""
    env = os.environ.get("FETALBIO_MODELS")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "models"


def default_model_path(method: str, engine: str = "keras") -> Path:
    name = "model.keras" if engine == "keras" else "model_int8.tflite"
    return models_dir() / method / name


class Engine(Protocol):
    method: str
    heatmap_sigma_px: float  # the training sigma, for heatmap confidences
    low_point_confidence: float | None  # the model's own low-confidence threshold, if calibrated
    image_size: tuple[int, int]
    path: Path

    def predict(self, x: np.ndarray) -> np.ndarray: ...


def _sidecar(path: Path) -> dict:
    for cand in (path.with_suffix(".json"), path.parent / "model.json"):
        if cand.exists():
            try:
                return json.loads(cand.read_text())
            except json.JSONDecodeError as exc:
                raise ModelError(f"{cand}: not valid JSON ({exc.msg})") from None
    return {}


def _method_from_channels(c: int, path: Path) -> str:
    if c == 1:
        return "segmentation"
    if c == 4:
        return "landmarks"
    raise ModelError(f"{path}: model has {c} output channels; expected 1 (segmentation) or 4 (landmarks)")


def resolve_model_path(path: str | Path) -> Path:
    """A ``.keras``/``.tflite`` file, or a run folder (its ``best.keras``)."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.keras", "model.keras"):
            if (p / name).exists():
                return p / name
        raise ModelError(f"{p}: folder holds no best.keras or model.keras")
    if not p.exists():
        raise ModelError(f"{p}: model file does not exist")
    return p


class KerasEngine:
    """A ``.keras`` model run by Keras (TensorFlow backend)."""

    def __init__(self, path: str | Path):
        import importlib

        try:
            import keras
        except ImportError:
            raise ModelError(
                f"{path}: the Keras engine needs TensorFlow and Keras: pip install 'fetalbio[train]' "
                "(or run an exported .tflite with --engine litert)"
            ) from None

        # importing the builders registers their classes with Keras' deserialiser
        for mod in ("unet", "hrnet", "resnet_head"):
            try:
                importlib.import_module(f"fetalbio.models.{mod}")
            except ModuleNotFoundError:
                pass
        self.path = resolve_model_path(path)
        try:
            self.model = keras.models.load_model(self.path, compile=False)
        except Exception as exc:  # Keras raises many kinds; the user needs one line
            raise ModelError(
                f"{self.path}: cannot load Keras model ({exc.__class__.__name__}: {exc})"
            ) from None
        shape = self.model.input_shape
        self.image_size = (int(shape[1]), int(shape[2]))
        info = _sidecar(self.path)
        self.heatmap_sigma_px = float(info.get("heatmap_sigma_px", 3.0))
        self.low_point_confidence = info.get("low_point_confidence")
        self.method = info.get("method") or _method_from_channels(self.model.output_shape[-1], self.path)
        self._fn = None

    def predict(self, x: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        if self._fn is None:
            self._fn = tf.function(lambda t: self.model(t, training=False), reduce_retracing=True)
        return np.asarray(self._fn(tf.constant(x, tf.float32)))


class LiteRTEngine:
    """A ``.tflite`` model run by LiteRT (``ai-edge-litert``), without TensorFlow."""

    def __init__(self, path: str | Path, num_threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise ModelError(
                "the LiteRT engine needs ai-edge-litert: pip install 'fetalbio[litert]'"
            ) from None
        self.path = resolve_model_path(path)
        try:
            self.interp = Interpreter(model_path=str(self.path), num_threads=num_threads)
        except Exception as exc:
            raise ModelError(f"{self.path}: cannot load TFLite model ({exc})") from None
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]
        self.image_size = (int(self.inp["shape"][1]), int(self.inp["shape"][2]))
        info = _sidecar(self.path)
        self.heatmap_sigma_px = float(info.get("heatmap_sigma_px", 3.0))
        self.low_point_confidence = info.get("low_point_confidence")
        self.method = info.get("method") or _method_from_channels(int(self.out["shape"][-1]), self.path)
        self._batch = int(self.inp["shape"][0])
        self.interp.allocate_tensors()

    def _resize(self, n: int) -> None:
        if n != self._batch:
            self.interp.resize_tensor_input(self.inp["index"], [n, *self.image_size, 1])
            self.interp.allocate_tensors()
            self.inp = self.interp.get_input_details()[0]
            self.out = self.interp.get_output_details()[0]
            self._batch = n

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        self._resize(len(x))
        scale, zero = self.inp["quantization"]
        if self.inp["dtype"] != np.float32:
            info = np.iinfo(self.inp["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(self.inp["dtype"])
        self.interp.set_tensor(self.inp["index"], x)
        self.interp.invoke()
        y = self.interp.get_tensor(self.out["index"])
        scale, zero = self.out["quantization"]
        if self.out["dtype"] != np.float32:
            y = (y.astype(np.float32) - zero) * scale
        return np.asarray(y, np.float32)


def keras_available() -> bool:
    """Whether TensorFlow and Keras are installed (not in an inference-only ``.[litert]`` install)."""
    import importlib.util

    try:
        return all(importlib.util.find_spec(m) is not None for m in ("tensorflow", "keras"))
    except (ImportError, ValueError):
        return False


def default_engine(engine: str = "auto") -> str:
    """The engine for the SHIPPED model: Keras when installed, else LiteRT (``auto``); else as given."""
    if engine != "auto":
        return engine
    return "keras" if keras_available() else "litert"


def load_engine(path: str | Path | None, method: str, engine: str = "auto") -> Engine:
    """Load the model for ``method`` (the shipped one when ``path`` is None).

    ``engine='auto'`` picks LiteRT for ``.tflite`` files and Keras otherwise; for the shipped model,
    Keras when TensorFlow is installed, else the shipped int8 LiteRT file.
    """
    if path is None:
        engine = default_engine(engine)
        path = default_model_path(method, engine)
        if not Path(path).exists():
            raise ModelError(f"{path}: no shipped {method} model (train one, or give --model)")
    p = resolve_model_path(path)
    kind = engine if engine != "auto" else ("litert" if p.suffix == ".tflite" else "keras")
    eng: Engine = LiteRTEngine(p) if kind == "litert" else KerasEngine(p)
    if eng.method != method:
        raise ModelError(f"{p}: is a {eng.method} model, not a {method} model")
    return eng
