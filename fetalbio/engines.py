"""Inference engines behind one interface: Keras (``.keras``) and LiteRT (``.tflite``).

An engine maps a batch of letterboxed, normalised inputs ``(N, H, W, 1)`` float32 to model outputs
``(N, H, W, C)`` float32 (C = 1 skull probability, or 4 heatmaps). Everything else (reading, letterbox,
post-processing, mm) is shared, so both engines give the same measurements through the same code.

What a model needs beside its weights (method, input size, normalisation) lives in ``model.json``
beside a ``.keras`` file, and in a ``<name>.json`` sidecar beside a ``.tflite`` file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from fetalbio.modelinfo import (  # noqa: F401  (re-exported: the engines' public names)
    ModelError,
    ModelInfo,
    choose_model,
    default_engine,
    default_model_path,
    keras_available,
    models_dir,
    resolve_model_path,
    verify_sha256,
)


class Engine(Protocol):
    path: Path
    info: ModelInfo  # method, input size, heatmap sigma, calibrated thresholds

    @property
    def method(self) -> str: ...

    @property
    def image_size(self) -> tuple[int, int]: ...

    def predict(self, x: np.ndarray) -> np.ndarray: ...


def _complete_info(path: Path, info: ModelInfo | None, channels: int, input_hw: tuple[int, int]) -> ModelInfo:
    """The sidecar, with the method (from the output channels) and input size filled in where absent."""
    from fetalbio import methods

    info = info or ModelInfo()
    if info.method is None:
        m = methods.for_channels(channels)
        if m is None:
            raise ModelError(
                f"{path}: model has {channels} output channels and no sidecar naming its method; expected "
                + " or ".join(f"{methods.get(n).out_channels} ({n})" for n in methods.PRIMARY)
            )
        info.method = m.name
    else:
        try:
            want = getattr(methods.get(info.method), "out_channels", None)
        except ValueError:  # a method this install does not know: nothing to check against
            want = None
        if want is not None and want != channels:
            raise ModelError(
                f"{path}: model has {channels} output channels but its sidecar says it is a {info.method} "
                f"model ({want} channels); the sidecar belongs to another model"
            )
    info.image_size = input_hw
    return info


def _one_line(exc: BaseException) -> str:
    """An exception as one line (TFLite and Keras errors span several)."""
    text = " ".join(str(exc).split())
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


class _EngineBase:
    path: Path
    info: ModelInfo

    @property
    def method(self) -> str:
        return self.info.method

    @property
    def image_size(self) -> tuple[int, int]:
        return self.info.image_size


class KerasEngine(_EngineBase):
    """A ``.keras`` model run by Keras (TensorFlow backend)."""

    def __init__(self, path: Path, info: ModelInfo | None = None):
        """``path``: a ``.keras`` file or run folder; ``info``: its sidecar (read here when None)."""
        try:
            import keras
        except ImportError:
            raise ModelError(
                f"{path}: the Keras engine needs TensorFlow and Keras: pip install '.[train]' "
                "(the fetalbio folder), or run an exported .tflite with --engine litert"
            ) from None

        from fetalbio.models import register_keras_classes

        register_keras_classes()
        self.path = resolve_model_path(path)
        info = info or ModelInfo.read(self.path)
        verify_sha256(self.path, info)
        import zipfile

        if self.path.is_file() and not zipfile.is_zipfile(self.path):  # Keras would say "File not found"
            raise ModelError(f"{self.path}: not a Keras model file (a .keras file is a zip archive)")
        try:
            self.model = keras.models.load_model(self.path, compile=False)
        except Exception as exc:  # Keras raises many kinds; the user needs one line
            raise ModelError(f"{self.path}: cannot load Keras model ({_one_line(exc)})") from None
        shape = self.model.input_shape
        self.info = _complete_info(
            self.path, info, int(self.model.output_shape[-1]), (int(shape[1]), int(shape[2]))
        )
        self._fn = None

    def predict(self, x: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        if self._fn is None:
            self._fn = tf.function(lambda t: self.model(t, training=False), reduce_retracing=True)
        return np.asarray(self._fn(tf.constant(x, tf.float32)))


class LiteRTEngine(_EngineBase):
    """A ``.tflite`` model run by LiteRT (``ai-edge-litert``), without TensorFlow."""

    def __init__(self, path: Path, info: ModelInfo | None = None, num_threads: int | None = None):
        """``path``: a ``.tflite`` file; ``info``: its sidecar (read here when None)."""
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise ModelError(
                "the LiteRT engine needs ai-edge-litert: pip install '.[litert]' (the fetalbio folder)"
            ) from None
        self.path = resolve_model_path(path)
        info = info or ModelInfo.read(self.path)
        verify_sha256(self.path, info)
        self.interp = self._call("load", Interpreter, model_path=str(self.path), num_threads=num_threads)
        self.inp = self._call("read the input of", lambda: self.interp.get_input_details()[0])
        self.out = self._call("read the output of", lambda: self.interp.get_output_details()[0])
        self.info = _complete_info(
            self.path,
            info,
            int(self.out["shape"][-1]),
            (int(self.inp["shape"][1]), int(self.inp["shape"][2])),
        )
        self._batch = int(self.inp["shape"][0])
        self._call("allocate tensors for", self.interp.allocate_tensors)

    def _call(self, what: str, fn, *args, **kw):
        """``fn(*args, **kw)``; what a damaged file makes LiteRT raise becomes one line naming the file."""
        try:
            return fn(*args, **kw)
        except Exception as exc:
            raise ModelError(
                f"{self.path}: LiteRT cannot {what} this TFLite model ({_one_line(exc)}); "
                "the file may be damaged"
            ) from None

    def _resize(self, n: int) -> None:
        if n != self._batch:

            def resize():
                self.interp.resize_tensor_input(self.inp["index"], [n, *self.image_size, 1])
                self.interp.allocate_tensors()

            self._call(f"run a batch of {n} with", resize)
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
        self._call("set the input of", self.interp.set_tensor, self.inp["index"], x)
        self._call("run", self.interp.invoke)
        y = self._call("read the output of", self.interp.get_tensor, self.out["index"])
        scale, zero = self.out["quantization"]
        if self.out["dtype"] != np.float32:
            y = (y.astype(np.float32) - zero) * scale
        return np.asarray(y, np.float32)


def load_engine(path: str | Path | None, method: str, engine: str = "auto") -> Engine:
    """Load the model that ``method`` runs on (the shipped one when ``path`` is None).

    ``engine='auto'`` picks LiteRT for ``.tflite`` files and Keras otherwise; for the shipped model, its
    int8 LiteRT file when LiteRT is installed, else Keras (:func:`fetalbio.modelinfo.default_engine`).
    """
    from fetalbio import methods

    wanted = methods.get(method).model_method
    p, kind = choose_model(wanted, path, engine)
    info = ModelInfo.read(p)
    if info is not None and info.method is not None and info.method != wanted:
        raise ModelError(f"{p}: its sidecar says it is a {info.method} model, not a {wanted} model")
    eng: Engine = LiteRTEngine(p, info) if kind == "litert" else KerasEngine(p, info)
    if eng.method != wanted:
        raise ModelError(f"{p}: is a {eng.method} model, not a {wanted} model")
    return eng


class CallableEngine(_EngineBase):
    """Any ``(N, H, W, 1) -> (N, H, W, C)`` function as an engine (a model being trained, in validation)."""

    def __init__(self, fn, info: ModelInfo, path: str | Path = "<in memory>"):
        self.path, self.info, self._fn = Path(path), info, fn

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._fn(np.asarray(x, np.float32)))
