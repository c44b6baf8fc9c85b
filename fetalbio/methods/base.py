"""What every measurement method provides, and the result it decodes a model output into."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from fetalbio.geometry import Ellipse, HeadMeasure, Landmarks, measure_ellipse

if TYPE_CHECKING:
    from fetalbio.modelinfo import ModelInfo
    from fetalbio.preprocess import Letterbox


@dataclass
class Result:
    """One method's result on one scan, in the scan's ORIGINAL pixels."""

    method: str
    ellipse: Ellipse | None = None
    landmarks: Landmarks | None = None
    mask: np.ndarray | None = None  # (H, W) uint8 0/1, segmentation only
    flags: list[str] = field(default_factory=list)
    confidence: float = 0.0
    point_confidence: list[float] | None = None
    fit_residual_px: float | None = None
    error: str | None = None
    parts: dict[str, Result] = field(default_factory=dict)  # a combining method's inputs, by method


class Method:
    """A way to measure the head from one model's output. Subclass it in one file and register it.

    A method owns: the model it runs on (``model_method``: the ``method`` of the model files it takes,
    usually its own name), the model's output channels and builder, the training targets and loss, the
    decoding of one output into a :class:`Result`, how a result is measured, the key validation metric
    and its overlay.
    """

    name: ClassVar[str]
    short_name: ClassVar[str] = ""  # in the terminal table; the name when empty
    out_channels: ClassVar[int]
    default_arch: ClassVar[str] = "unet"
    requires: ClassVar[tuple[str, ...]] = ()  # a combining method: the methods whose results it combines
    key_metric: ClassVar[str] = "hc_mae_mm"  # validation figure that picks the best epoch (lower = better)
    output_description: ClassVar[str] = ""
    bpd_convention: ClassVar[str] = ""

    def __init_subclass__(cls, **kw) -> None:
        super().__init_subclass__(**kw)
        if not cls.__dict__.get("short_name"):
            cls.short_name = cls.__dict__.get("name", "")

    @property
    def model_method(self) -> str:
        """The ``method`` recorded in the model files this method runs on."""
        return self.name

    # --- training ---
    def build_model(self, arch: str, image_size: tuple[int, int], base_filters: int, **kwargs: Any):
        """The Keras model: (H, W, 1) normalised scan -> (H, W, out_channels)."""
        raise NotImplementedError(f"{self.name}: has no trainable model")

    def targets(
        self, masks: np.ndarray, points: np.ndarray, image_size: tuple[int, int], sigma_px: float
    ) -> np.ndarray:
        """Training targets (N, H, W, out_channels) from masks (N, H, W) and points (N, 4, 2), input px."""
        raise NotImplementedError(f"{self.name}: has no training targets")

    def loss(self):
        """The per-example loss ``f(y_true, y_pred) -> (batch,)``."""
        raise NotImplementedError(f"{self.name}: has no loss")

    # --- inference ---
    def decode(self, output: np.ndarray, letterbox: Letterbox, info: ModelInfo) -> Result:
        """One model output (in_h, in_w, C) -> a :class:`Result` in original pixels."""
        raise NotImplementedError

    def measure(self, result: Result, spacing_mm: tuple[float, float] | None) -> HeadMeasure:
        """HC, BPD and OFD of a result (mm with a spacing, else px). Default: of the ellipse."""
        return measure_ellipse(result.ellipse, spacing_mm)

    def average(self, results: list[Result]) -> Result:
        """One result from the same scan measured in several views (turned copies, each result already in
        the scan's pixels): the views that measured a head, their geometry averaged
        (:meth:`mean_geometry`), confidences averaged, flags of any view, the first view's mask."""
        from dataclasses import replace

        ok = [r for r in results if r.error is None and r.ellipse is not None]
        if len(ok) < 2:
            return ok[0] if ok else results[0]
        flags = list(dict.fromkeys(f for r in ok for f in r.flags))
        conf = float(np.mean([r.confidence for r in ok]))
        return replace(ok[0], flags=flags, confidence=conf, **self.mean_geometry(ok))

    def mean_geometry(self, ok: list[Result]) -> dict:
        """The averaged geometry of several views' results (fields of :class:`Result`). Default: the
        mean ellipse (:func:`~fetalbio.geometry.mean_ellipse`), its axis end points, the mean residual."""
        from fetalbio.geometry import ellipse_to_landmarks, mean_ellipse

        e = mean_ellipse([r.ellipse for r in ok])
        residuals = [r.fit_residual_px for r in ok if r.fit_residual_px is not None]
        residual = float(np.mean(residuals)) if residuals else None
        return {"ellipse": e, "landmarks": ellipse_to_landmarks(e), "fit_residual_px": residual}

    def combine(self, parts: dict[str, Result]) -> Result:
        """A combining method's result from the results of :attr:`requires` (same scan)."""
        raise NotImplementedError(f"{self.name}: combines nothing")

    def row_extras(self, result: Result, spacing_mm: tuple[float, float] | None) -> dict:
        """Extra output columns of a measured result (e.g. intervals). Default: none."""
        return {}

    def overlay(self, bgr: np.ndarray, result: Result, scale: int) -> None:
        """Draw what is particular to this method onto the overlay (in place). Default: nothing."""
