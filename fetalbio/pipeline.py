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
        combined: methods that combine the others' results (``Method.requires``), added to each result.
        batch_size: scans per engine call.
        keep_outputs: keep each raw model output in :attr:`Prediction.outputs` (export verification).
        workers: threads that read, letterbox and decode beside the engine.
    """

    def __init__(
        self,
        engines: Mapping[str, Engine],
        batch_size: int = 8,
        keep_outputs: bool = False,
        workers: int = 2,
        combined: tuple[str, ...] = (),
        find_region: bool = True,
        turn_portrait: bool = True,
    ):
        self.find_region = find_region  # letterbox only the ultrasound image of a capture (fetalbio.region)
        self.turn_portrait = turn_portrait  # measure portrait scans turned a quarter each way, averaged
        self.engines = dict(engines)
        self.combined = combined  # combining methods (e.g. fused), computed from the engines' results
        self.batch_size = batch_size
        self.keep_outputs = keep_outputs
        self.workers = workers  # threads that read/letterbox and decode beside the engine

    def infer(self, method: str, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Raw outputs (N, H, W, C) of method's engine for letterboxed, normalised inputs (N of (H, W))."""
        return self.engines[method].predict(np.stack(list(inputs))[..., None])

    def decode(self, method: str, outputs: np.ndarray, letterboxes: Sequence[Letterbox]) -> list[Result]:
        """Each output decoded by ``method`` into a Result in original pixels."""
        m, info = methods.get(method), self.engines[method].info
        return [m.decode(o, lb, info) for o, lb in zip(outputs, letterboxes, strict=True)]

    def predict_scans(self, scans: Sequence[Scan]) -> list[Prediction[Scan]]:
        """Scans already read, through the same path as :meth:`run`."""
        return [p for batch in self.run(list(scans), lambda s: s) for p in batch]

    def run(self, sources: Iterable[S], read: Callable[[S], Scan]) -> Iterator[list[Prediction[S]]]:
        """Read and measure ``sources`` batch by batch; yields each batch's predictions in input order.

        ``read`` turns a source into a Scan and raises :class:`~fetalbio.io.ScanError` when it cannot;
        such a source gets a Prediction with ``error`` set and the run goes on.

        The stages overlap (threads; OpenCV and the runtimes release the GIL): the next batch is read,
        decoded and letterboxed, and the previous batch's outputs are decoded into measurements, while
        the engine runs. At most :data:`PREFETCH` batches are read ahead, so memory stays bounded.
        """
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        batches = _chunks(sources, self.batch_size)
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="fetalbio") as pool:
            reading: deque = deque()
            decoding: deque = deque()

            def refill() -> None:
                while len(reading) < PREFETCH:
                    batch = next(batches, None)
                    if batch is None:
                        return
                    reading.append([(src, pool.submit(self._load, src, read)) for src in batch])

            refill()
            while reading:
                loaded = [(src, fut.result()) for src, fut in reading.popleft()]
                refill()
                decoding.append((*self._infer_batch(loaded, pool), self.combined))
                while len(decoding) > 1:
                    yield _finish(decoding.popleft())
            while decoding:
                yield _finish(decoding.popleft())

    def _load(self, src: S, read: Callable[[S], Scan]) -> tuple[Scan | None, dict, str | None]:
        """Read one source and letterbox it for every engine: (scan, {method: (input, letterbox)}, error)."""
        from fetalbio.io import ScanError

        try:
            scan = read(src)
        except ScanError as exc:
            return None, {}, exc.reason
        pixels, tilt = scan.pixels, None
        if self.find_region:  # a scan turned by any angle is first squared back to the axes
            from fetalbio.preprocess import upright
            from fetalbio.region import find_tilt

            found = find_tilt(pixels)
            if found is not None:
                pixels, m = upright(pixels, found)
                tilt = (m, *scan.pixels.shape[:2], found[0])
        region = self._region(pixels)
        h, w = region[2:] if region else pixels.shape[:2]
        views = [0]
        if self.turn_portrait and h > PORTRAIT_RATIO * w:
            # a landscape scan turned on its side: measured turned back both ways and averaged (the
            # models' confidence does not tell the upright view from the upside-down one reliably)
            views = [1, 3]
        inputs = {
            m: [self._view(pixels, k, e.image_size, tilt, region) for k in views]
            for m, e in self.engines.items()
        }
        return scan, inputs, None

    def _region(self, img: np.ndarray) -> tuple[int, int, int, int] | None:
        """The ultrasound image's region in ``img`` (a capture), or None (all of it)."""
        if not self.find_region:
            return None
        from fetalbio.region import find_image_region

        return find_image_region(img)

    def _view(
        self, pixels: np.ndarray, k: int, image_size: tuple[int, int], tilt: tuple | None = None, region=None
    ):
        """(input, letterbox) of the image turned by k quarter turns, letterboxing its ultrasound region
        (``region``: already found in the unturned image); ``tilt`` (affine, original h, w, angle):
        ``pixels`` is a turned scan squared back (TiltedView)."""
        from fetalbio.preprocess import RotatedView, TiltedView, turned

        img = turned(pixels, k) if k else pixels
        if k:
            region = self._region(img)
        x, lb = prepare_input(img, image_size, region)
        view = RotatedView(lb, k, *pixels.shape[:2]) if k else lb
        return x, (TiltedView(view, *tilt) if tilt else view)

    def _infer_batch(self, loaded: list, pool) -> tuple[list[Prediction[S]], list]:
        """Run the engines on a loaded batch (this thread) and submit each output's decoding to the pool."""
        preds = [Prediction(src, scan, error=err) for src, (scan, _, err) in loaded]
        ok = [(p, inputs) for p, (_, (_, inputs, err)) in zip(preds, loaded, strict=True) if err is None]
        pending = []
        for method in self.engines:
            if not ok:
                break
            views = [(p, v) for p, inputs in ok for v in inputs[method]]
            outputs = self.infer(method, [x for _, (x, _) in views])
            m, info = methods.get(method), self.engines[method].info
            for (p, (_, lb)), out in zip(views, outputs, strict=True):
                if self.keep_outputs:
                    p.outputs[method] = out
                pending.append((p, method, lb, pool.submit(_decode_safely, m, out, lb, info)))
        return preds, pending


PREFETCH = 2  # batches read ahead of the engine
PORTRAIT_RATIO = 1.2  # a scan (its ultrasound region) this much taller than wide is turned both ways;
# a near-square one is measured as it is (turning an upright scan costs more than a small lean)


def lb_key(lb) -> int:
    """Which view a letterbox belongs to (0 unturned, else its quarter turns)."""
    return getattr(lb, "k", 0)


def _decode_safely(method, output: np.ndarray, lb, info) -> Result:
    """A method's decoding; an unexpected failure on one scan becomes that scan's error, not the batch's."""
    try:
        return method.decode(output, lb, info)
    except Exception as exc:  # noqa: BLE001 - any library error on one odd output
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        return Result(method.name, error=f"measurement failed ({type(exc).__name__}: {first})")


def _chunks(items: Iterable[S], n: int) -> Iterator[list[S]]:
    batch: list[S] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _finish(batch: tuple[list[Prediction], list, tuple[str, ...]]) -> list[Prediction]:
    """Wait for a batch's decodings, attach the results, and add the combining methods' results."""
    preds, pending, combined = batch
    views: dict[int, dict[object, dict[str, Result]]] = {}  # scan -> view (letterbox) -> method -> result
    for pred, method, lb, fut in pending:
        views.setdefault(id(pred), {}).setdefault(lb_key(lb), {})[method] = (lb, fut.result())
    for pred in preds:
        options = list(views.get(id(pred), {}).values())
        for method in options[0] if options else ():
            # one view, or a portrait scan's two: each method averages its views (all in the scan's pixels)
            found = [v[method] for v in options if method in v]
            res = found[0][1] if len(found) == 1 else methods.get(method).average([r for _, r in found])
            pred.results[method], pred.letterboxes[method] = res, found[0][0]
    for pred in preds:
        if pred.error is None:
            for name in combined:
                m = methods.get(name)
                pred.results[name] = m.combine({p: pred.results[p] for p in m.requires})
    return preds
