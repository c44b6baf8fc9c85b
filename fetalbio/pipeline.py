"""The one inference path: scan -> letterbox -> engine -> the method's decoding, in the scan's pixels.

``predict``, ``evaluate``, training-time validation, export verification and the tools all measure
through :class:`Predictor`, so a measurement is made one way only. Spacing travels with the scan
(:class:`~fetalbio.io.Scan`) from :func:`~fetalbio.io.read_scan` to the millimetres.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

import numpy as np

from fetalbio import methods
from fetalbio.methods.base import Result
from fetalbio.preprocess import Letterbox, prepare_input

if TYPE_CHECKING:
    from fetalbio.engines import Engine
    from fetalbio.io import Scan

S = TypeVar("S")


@dataclass
class Prediction(Generic[S]):
    """One source through the pipeline: its scan and each method's result, or why it has none."""

    source: S
    scan: Scan | None = None
    results: dict[str, Result] = field(default_factory=dict)
    letterboxes: dict[str, Letterbox] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # raw model outputs, when kept
    error: str | None = None  # the scan could not be read: the reason


class Predictor:
    """Runs engines (``{method name: Engine}``) over scans, in batches.

    Args:
        engines: one engine per method; the method decides how its engine's output is decoded.
        batch_size: scans per engine call.
        keep_outputs: keep each raw model output in :attr:`Prediction.outputs` (export verification).
    """

    def __init__(self, engines: Mapping[str, Engine], batch_size: int = 8, keep_outputs: bool = False):
        self.engines = dict(engines)
        self.batch_size = batch_size
        self.keep_outputs = keep_outputs

    def infer(self, method: str, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Raw outputs (N, H, W, C) of method's engine for letterboxed, normalised inputs (N of (H, W))."""
        return self.engines[method].predict(np.stack(list(inputs))[..., None])

    def decode(self, method: str, outputs: np.ndarray, letterboxes: Sequence[Letterbox]) -> list[Result]:
        """Each output decoded by ``method`` into a Result in original pixels."""
        m, info = methods.get(method), self.engines[method].info
        return [m.decode(o, lb, info) for o, lb in zip(outputs, letterboxes, strict=True)]

    def predict_scans(self, scans: Sequence[Scan], sources: Sequence[S] | None = None) -> list[Prediction[S]]:
        """One batch of scans through every engine."""
        preds = [Prediction(src, scan) for src, scan in zip(sources or scans, scans, strict=True)]
        for method, eng in self.engines.items():
            prepared = [prepare_input(s.pixels, eng.image_size) for s in scans]
            if not prepared:
                continue
            outputs = self.infer(method, [x for x, _ in prepared])
            lbs = [lb for _, lb in prepared]
            for p, res, lb, out in zip(preds, self.decode(method, outputs, lbs), lbs, outputs, strict=True):
                p.results[method] = res
                p.letterboxes[method] = lb
                if self.keep_outputs:
                    p.outputs[method] = out
        return preds

    def run(self, sources: Iterable[S], read: Callable[[S], Scan]) -> Iterator[list[Prediction[S]]]:
        """Read and measure ``sources`` batch by batch; yields each batch's predictions in input order.

        ``read`` turns a source into a Scan and raises :class:`~fetalbio.io.ScanError` when it cannot;
        such a source gets a Prediction with ``error`` set and the run goes on.
        """
        from fetalbio.io import ScanError

        batch: list[S] = []
        for src in sources:
            batch.append(src)
            if len(batch) == self.batch_size:
                yield self._batch(batch, read, ScanError)
                batch = []
        if batch:
            yield self._batch(batch, read, ScanError)

    def _batch(self, sources: list[S], read: Callable[[S], Scan], scan_error: type) -> list[Prediction[S]]:
        ready: list[tuple[int, Scan]] = []
        out: list[Prediction[S]] = [Prediction(src) for src in sources]
        for i, src in enumerate(sources):
            try:
                ready.append((i, read(src)))
            except scan_error as exc:
                out[i].error = exc.reason
        done = self.predict_scans([s for _, s in ready], [sources[i] for i, _ in ready])
        for (i, _), pred in zip(ready, done, strict=True):
            out[i] = pred
        return out
