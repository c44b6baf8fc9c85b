"""The typed description of a model file: ``model.json`` beside a ``.keras`` file, ``<name>.json`` beside
a ``.tflite`` file; where the shipped models are and which one a command uses by default.

Every path and default is resolved here, once: the CLI, the engines, export, bench and the tools ask
this module rather than working it out again.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fetalbio import defaults

FORMAT = "fetalbio-model/1"
LETTERBOX = "keep aspect ratio, centre padding with 0, INTER_AREA resize"
NORMALISATION = "per-scan zero mean, unit SD over the scan's pixels"
ENGINE_FILES = {"keras": "model.keras", "litert": "model_int8.tflite"}  # the shipped file per engine


class ModelError(Exception):
    """A model that cannot be loaded or used; str() is one line naming the file."""


@dataclass
class ModelInfo:
    """What inference needs beside a model's weights (and, for a TFLite file, the export facts).

    Unknown keys of a sidecar are kept in ``extra`` and written back unchanged.
    """

    method: str | None = None  # None: the engine infers it from the output channels
    image_size: tuple[int, int] | None = None  # model input (H, W), pixels; None: the model's own
    arch: str | None = None
    heatmap_sigma_px: float = defaults.HEATMAP_SIGMA_PX  # training Gaussian, model-input pixels
    low_point_confidence: float | None = None  # calibrated per model (tools/calibrate_confidence.py)
    output: str = ""
    format: str = FORMAT
    letterbox: str = LETTERBOX
    normalisation: str = NORMALISATION
    # export facts (TFLite sidecars only)
    output_stride: int | None = None
    quantize: str | None = None
    source_model: str | None = None
    source_model_sha256: str | None = None
    tflite_sha256: str | None = None
    model_sha256: str | None = None  # of a .keras file, recorded when it ships (tools/ship_model.py)
    input_tensor: dict | None = None
    output_tensor: dict | None = None
    calibration: str | None = None
    runtime: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: the training fields always (in model.json's order), export fields where set."""
        d: dict[str, Any] = {k: getattr(self, k) for k in _TRAINING_KEYS}
        d["image_size"] = list(self.image_size) if self.image_size else None
        if self.low_point_confidence is None:
            del d["low_point_confidence"]
        d.update({k: getattr(self, k) for k in _EXPORT_KEYS if getattr(self, k) is not None})
        return {**d, **self.extra}

    @classmethod
    def from_dict(cls, d: Any, where: Path | str = "model.json") -> ModelInfo:
        """Validate a sidecar's content; ModelError (one line naming ``where``) when it is unusable."""
        if not isinstance(d, dict):
            raise ModelError(f"{where}: expected a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kw = {k: v for k, v in d.items() if k in names}
        if kw.get("method") is not None and not isinstance(kw["method"], str):
            raise ModelError(f"{where}: 'method' must be text, got {kw['method']!r}")
        size = kw.get("image_size")
        if size is not None:
            if not (isinstance(size, list | tuple) and len(size) == 2 and all(_posint(v) for v in size)):
                raise ModelError(f"{where}: 'image_size' must be two positive whole numbers, got {size!r}")
            kw["image_size"] = (int(size[0]), int(size[1]))
        kw["heatmap_sigma_px"] = _positive(
            kw.get("heatmap_sigma_px", defaults.HEATMAP_SIGMA_PX), "heatmap_sigma_px", where
        )
        if kw.get("low_point_confidence") is not None:
            kw["low_point_confidence"] = _positive(
                kw["low_point_confidence"], "low_point_confidence", where, allow_zero=True
            )
        return cls(**kw, extra={k: v for k, v in d.items() if k not in names})

    @classmethod
    def read(cls, path: Path) -> ModelInfo | None:
        """The sidecar of a model file: ``<name>.json``, else ``model.json`` beside it; None if neither."""
        cand = sidecar_path(path)
        if cand is None:
            return None
        try:
            d = json.loads(cand.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelError(f"{cand}: not valid JSON ({getattr(exc, 'msg', exc)})") from None
        return cls.from_dict(d, cand)

    def write(self, path: Path) -> Path:
        from fetalbio.writers import write_json_atomic

        return write_json_atomic(path, self.to_dict())


_TRAINING_KEYS = (
    "format",
    "method",
    "arch",
    "image_size",
    "letterbox",
    "normalisation",
    "output",
    "heatmap_sigma_px",
    "low_point_confidence",
)
_EXPORT_KEYS = (
    "output_stride",
    "quantize",
    "source_model",
    "source_model_sha256",
    "tflite_sha256",
    "model_sha256",
    "input_tensor",
    "output_tensor",
    "calibration",
    "runtime",
)


def _posint(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _positive(v: Any, key: str, where: Path | str, allow_zero: bool = False) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ModelError(f"{where}: {key!r} must be a number, got {v!r}") from None
    if not math.isfinite(f) or f < 0 or (f == 0 and not allow_zero):
        raise ModelError(f"{where}: {key!r} must be a positive number, got {v!r}")
    return f


def sidecar_path(path: Path) -> Path | None:
    """The sidecar of a model file: ``<name>.json``, else ``model.json`` beside it; None if neither."""
    return next((c for c in (path.with_suffix(".json"), path.parent / "model.json") if c.exists()), None)


def verify_sha256(path: Path, info: ModelInfo | None) -> None:
    """ModelError when the sidecar records a sha256 for ``path`` (``tflite_sha256`` for a ``.tflite``
    file, ``model_sha256`` for a ``.keras`` one) and the file's bytes differ from it. No hash: no check
    (a training run's ``model.json`` records none)."""
    if info is None:
        return
    want = info.tflite_sha256 if path.suffix == ".tflite" else info.model_sha256
    if not want:
        return
    import hashlib

    got = hashlib.sha256(path.read_bytes()).hexdigest()
    if got != want:
        raise ModelError(
            f"{path}: sha256 {got[:12]}... does not match its sidecar ({sidecar_path(path)}: "
            f"{want[:12]}...); the file is damaged or was replaced: reinstall it or export it again"
        )


# --- where models are -----------------------------------------------------------------------------


def models_dir() -> Path:
    """The shipped models: ``$FETALBIO_MODELS``, else ``fetalbio/shipped/`` (package data: a wheel
    carries them)."""
    env = os.environ.get("FETALBIO_MODELS")
    return Path(env) if env else Path(__file__).resolve().parent / "shipped"


def default_model_path(method: str, engine: str = "keras") -> Path:
    """The shipped model file of ``method`` for an engine (``keras`` or ``litert``)."""
    return models_dir() / method / ENGINE_FILES[engine]


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


def keras_available() -> bool:
    """Whether TensorFlow and Keras are installed (not in an inference-only ``.[litert]`` install)."""
    import importlib.util

    try:
        return all(importlib.util.find_spec(m) is not None for m in ("tensorflow", "keras"))
    except (ImportError, ValueError):
        return False


def litert_available() -> bool:
    """Whether ai-edge-litert is installed."""
    import importlib.util

    try:
        return importlib.util.find_spec("ai_edge_litert") is not None
    except (ImportError, ValueError):
        return False


def default_engine(engine: str = "auto") -> str:
    """The engine for the SHIPPED models (``auto``): their int8 LiteRT file, as accurate as Keras on the
    validation split (README) and several times faster to start and run; Keras when LiteRT is not
    installed. Any other value is returned as given."""
    if engine != "auto":
        return engine
    return "litert" if litert_available() or not keras_available() else "keras"


def engine_for(path: Path, engine: str = "auto") -> str:
    """The engine that runs a given file: ``auto`` is LiteRT for ``.tflite`` files, else Keras."""
    if engine != "auto":
        return engine
    return "litert" if path.suffix == ".tflite" else "keras"


def choose_model(method: str, path: str | Path | None, engine: str = "auto") -> tuple[Path, str]:
    """(model file, engine) for ``method``: the given file or run folder, else the shipped one."""
    if path is None:
        engine = default_engine(engine)
        p = default_model_path(method, engine)
        if not p.exists():
            raise ModelError(f"{p}: no shipped {method} model (train one, or give --model)")
        return p, engine
    p = resolve_model_path(path)
    return p, engine_for(p, engine)
