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

from fetalbio import defaults, methods
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
    # method -> (y0, x0, h, w) of its second look at a small head (:func:`zoom_region`), in the pixels
    # the models saw (a turned scan's squared back); a method missing here measured the head once
    zoom_regions: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    view: ScanView | None = field(default=None, repr=False)  # how the scan was shown to the models


@dataclass(frozen=True)
class ScanView:
    """How one scan was shown to the models: the pixels they saw (a turned scan squared back), the
    tilt (affine, original h, w, angle; None when upright), the quarter turns measured (``[0]``, or
    ``[1, 3]`` for a portrait scan) and the area (px) of the part that was letterboxed."""

    pixels: np.ndarray
    tilt: tuple | None
    turns: tuple[int, ...]
    area_px: int
    flags: tuple[str, ...] = ()  # what every method's result on this scan carries (e.g. two_images)


class Predictor:
    """Runs engines (``{method name: Engine}``) over scans, in batches.

    Args:
        engines: one engine per method; the method decides how its engine's output is decoded.
        combined: methods that combine the others' results (``Method.requires``), added to each result.
        batch_size: scans per engine call.
        keep_outputs: keep each raw model output in :attr:`Prediction.outputs` (export verification).
        workers: threads that read, letterbox and decode beside the engine.
        zoom: measure a small head again in a crop around it (:func:`zoom_region`); default: on,
            except with ``keep_outputs`` (export verification compares outputs of one look).
    """

    def __init__(
        self,
        engines: Mapping[str, Engine],
        batch_size: int = defaults.PREDICT_BATCH,
        keep_outputs: bool = False,
        workers: int = 2,
        combined: tuple[str, ...] = (),
        find_region: bool = True,
        turn_portrait: bool = True,
        zoom: bool | None = None,
    ):
        self.zoom = (not keep_outputs) if zoom is None else zoom
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
                decoding.append(self._infer_batch(loaded, pool))
                while len(decoding) > 1:
                    yield self._finish(*decoding.popleft(), pool)
            while decoding:
                yield self._finish(*decoding.popleft(), pool)

    def _finish(self, preds: list[Prediction[S]], pending: list, pool) -> list[Prediction[S]]:
        """A batch's results: each method's (views averaged), a second look at small heads, then the
        combining methods'."""
        _gather(preds, pending)
        if self.zoom:
            self._second_look(preds, pool)
        for pred in preds:
            for r in pred.results.values() if pred.view is not None and pred.view.flags else ():
                r.flags = sorted(set(r.flags) | set(pred.view.flags))
            if pred.error is None:
                for name in self.combined:
                    m = methods.get(name)
                    pred.results[name] = m.combine({p: pred.results[p] for p in m.requires})
        return preds

    def _second_look(self, preds: list[Prediction[S]], pool) -> None:
        """Measure each small head again in a crop around it (:func:`zoom_region`), each method in the
        crop around its own first result (so a method's row does not depend on which others ran). Its
        second result replaces the first unless it found no head or reaches the crop's side (the crop
        cut it: the first look had underestimated the head)."""
        pending = []
        for method, e in self.engines.items():
            looks = []
            for p in preds:
                first = p.results.get(method)
                if p.error or p.view is None or first is None:
                    continue
                crop = zoom_region({method: first}, p.view, e.image_size)
                if crop is not None:
                    p.zoom_regions[method] = crop
                    looks += [(p, k) for k in p.view.turns]
            if not looks:
                continue
            views = [
                (
                    p,
                    self._view(
                        p.view.pixels, k, e.image_size, p.view.tilt, p.zoom_regions[method], zoom=True
                    ),
                )
                for p, k in looks
            ]
            pending += self._run_views(method, views, pool)
        second: dict[tuple[int, str], list] = {}
        for p, method, lb, fut in pending:
            second.setdefault((id(p), method), []).append((p, lb, fut.result()))
        for (_, method), found in second.items():
            p, lb = found[0][0], found[0][1]
            results = [r for _, _, r in found]
            res = results[0] if len(results) == 1 else methods.get(method).average(results)
            if res.error is None and res.ellipse is not None and _within(res.ellipse, p, method):
                p.results[method], p.letterboxes[method] = res, lb

    def _run_views(self, method: str, views: list, pool) -> list:
        """Run ``method``'s engine on ``views`` ([(prediction, (input, letterbox))], this thread) and
        submit each output's decoding to ``pool``: [(prediction, method, letterbox, future)]."""
        outputs = self.infer(method, [x for _, (x, _) in views])
        m, info = methods.get(method), self.engines[method].info
        pending = []
        for (p, (_, lb)), out in zip(views, outputs, strict=True):
            if self.keep_outputs:
                p.outputs[method] = out
            pending.append((p, method, lb, pool.submit(_decode_safely, m, out, lb, info)))
        return pending

    def _load(
        self, src: S, read: Callable[[S], Scan]
    ) -> tuple[Scan | None, dict, str | None, ScanView | None]:
        """Read one source and letterbox it for every engine: (scan, {method: [(input, letterbox)] per
        view}, error, how it was viewed)."""
        from fetalbio.io import ScanError

        try:
            scan = read(src)
        except ScanError as exc:
            return None, {}, exc.reason, None
        from fetalbio.preprocess import compose_affine, square_pixels, upright

        pixels, tilt, traced = scan.pixels, None, False
        if self.find_region:  # a machine's grey HC trace drawn on the scan: the models measured it
            from fetalbio.marks import remove_trace

            pixels, traced = remove_trace(pixels)
        squared = square_pixels(pixels, scan.spacing_mm)  # non-square pixels: the models learned square ones
        if squared is not None:
            pixels, m = squared
            tilt = (m, *scan.pixels.shape[:2], 0.0)

        def turned_back(m: tuple, angle: float) -> tuple:  # the file's pixels -> the upright image's
            return (m if squared is None else compose_affine(m, squared[1]), *scan.pixels.shape[:2], angle)

        if self.find_region:  # a scan turned by any angle is first squared back to the axes
            from fetalbio.preprocess import remove_impulse_noise
            from fetalbio.region import find_any_tilt

            # salt-and-pepper noise first: it breaks the flat fill and the texture the finders look for
            pixels = remove_impulse_noise(pixels)[0]
            found = find_any_tilt(pixels)
            if found is not None:
                pixels, m = upright(pixels, found)
                tilt = turned_back(m, found[0])
        region, picture, dual = self._region(pixels)
        if (tilt is None or not tilt[3]) and picture is not None:  # a capture showing a turned scan?
            from fetalbio.region import find_tilt_in_picture

            found = find_tilt_in_picture(pixels, picture)
            if found is not None:
                pixels, m = upright(pixels, found)
                tilt = turned_back(m, found[0])
                region = self._region(pixels)[0]
        h, w = region[2:] if region else pixels.shape[:2]
        views = [0]
        if self.turn_portrait and h > PORTRAIT_RATIO * w:
            # a landscape scan turned on its side: measured turned back both ways and averaged (the
            # models' confidence does not tell the upright view from the upside-down one reliably)
            views = [1, 3]
        if views != [0] and dual:  # a dual view's chosen panel, turned (each view's own search would
            from fetalbio.preprocess import turned_region  # choose another panel of the turned screen)

            regions = {k: turned_region(region, k, *pixels.shape[:2]) for k in views}
        elif views != [0]:  # each turned view's own region, found once for every engine
            from fetalbio.preprocess import turned

            regions = {k: self._region(turned(pixels, k))[0] for k in views}
        else:
            regions = {0: region}
        inputs = {
            m: [self._view(pixels, k, e.image_size, tilt, regions[k]) for k in views]
            for m, e in self.engines.items()
        }
        flags = ("two_images",) * dual + ("trace_removed",) * traced
        return scan, inputs, None, ScanView(pixels, tilt, tuple(views), int(h * w), flags)

    def _region(self, img: np.ndarray) -> tuple[tuple[int, int, int, int] | None, tuple | None, bool]:
        """The ultrasound image's region in ``img`` (a capture), or None (all of it), the picture the
        capture's screen shows, or None, and whether it shows two scans (:func:`fetalbio.region.locate`)."""
        if not self.find_region:
            return None, None, False
        from fetalbio.region import locate

        return locate(img)

    def _view(
        self,
        pixels: np.ndarray,
        k: int,
        image_size: tuple[int, int],
        tilt: tuple | None = None,
        region=None,
        zoom: bool = False,
    ):
        """(input, letterbox) of the image turned by k quarter turns, letterboxing its ultrasound region
        (``region``: found in the turned image, or with ``zoom`` a crop of the unturned image, turned
        with it); ``tilt`` (affine, original h, w, angle): ``pixels`` is a turned scan squared back
        (TiltedView)."""
        from fetalbio.preprocess import RotatedView, TiltedView, turned, turned_region

        img = turned(pixels, k) if k else pixels
        if k and zoom:
            region = turned_region(region, k, *pixels.shape[:2])
        x, lb = prepare_input(img, image_size, region)
        view = RotatedView(lb, k, *pixels.shape[:2]) if k else lb
        return x, (TiltedView(view, *tilt) if tilt else view)

    def _infer_batch(self, loaded: list, pool) -> tuple[list[Prediction[S]], list]:
        """Run the engines on a loaded batch (this thread) and submit each output's decoding to the pool."""
        preds = [Prediction(src, scan, error=err, view=view) for src, (scan, _, err, view) in loaded]
        ok = [(p, inputs) for p, (_, (_, inputs, err, _)) in zip(preds, loaded, strict=True) if err is None]
        pending = []
        for method in self.engines:
            if not ok:
                break
            pending += self._run_views(method, [(p, v) for p, inputs in ok for v in inputs[method]], pool)
        return preds, pending


PREFETCH = 2  # batches read ahead of the engine
PORTRAIT_RATIO = defaults.PORTRAIT_RATIO  # taller than wide by this: turned both ways (defaults.py)


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


def _gather(preds: list[Prediction], pending: list) -> None:
    """Wait for a batch's decodings and attach each method's result (a portrait scan's views averaged)."""
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


def _upright_points(e, view: ScanView) -> np.ndarray:
    """(72, 2) points of ellipse ``e`` (the file's pixels) in the pixels the models saw."""
    pts = e.points(72)
    if view.tilt is not None:  # the results are in the turned file's pixels; crops are of the upright
        m = np.array(view.tilt[0], np.float64).reshape(2, 3)
        pts = pts @ m[:, :2].T + m[:, 2]
    return pts


def _within(e, pred: Prediction, method: str) -> bool:
    """Whether ellipse ``e`` lies inside ``method``'s zoom crop, at least a pixel from each side of the
    crop that is not the image's own side (where a head is cut whatever the crop)."""
    y0, x0, h, w = pred.zoom_regions[method]
    ih, iw = pred.view.pixels.shape[:2]
    (px0, py0), (px1, py1) = (pts := _upright_points(e, pred.view)).min(axis=0), pts.max(axis=0)
    return (
        (x0 == 0 or px0 >= x0 + 1)
        and (y0 == 0 or py0 >= y0 + 1)
        and (x0 + w == iw or px1 <= x0 + w - 2)
        and (y0 + h == ih or py1 <= y0 + h - 2)
    )


def zoom_region(
    results: Mapping[str, Result], view: ScanView, input_hw: tuple[int, int]
) -> tuple[int, int, int, int] | None:
    """(y0, x0, h, w) of a crop of ``view.pixels`` for a second look at a small head, or None.

    The box around every method's first ellipse (in the pixels the models saw) is grown by
    :data:`~fetalbio.defaults.ZOOM_MARGIN` about its centre, widened to the model input's shape (turned
    for a portrait scan's quarter-turned views) and clipped to the image; None when no method found a
    head or the crop is not smaller than :data:`~fetalbio.defaults.ZOOM_MAX_AREA` of the first look's
    letterboxed area (no gain in pixels per mm).
    """
    from fetalbio import defaults

    ellipses = [r.ellipse for r in results.values() if r.error is None and r.ellipse is not None]
    if not ellipses:
        return None
    pts = np.concatenate([_upright_points(e, view) for e in ellipses])
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hx, hy = (x1 - x0) / 2 * defaults.ZOOM_MARGIN, (y1 - y0) / 2 * defaults.ZOOM_MARGIN
    ih, iw = input_hw
    aspect = iw / ih if view.turns == (0,) else ih / iw  # width / height of the crop
    hx, hy = max(hx, aspect * hy), max(hy, hx / aspect)
    if 4 * hx * hy >= defaults.ZOOM_MAX_AREA * view.area_px:
        return None
    h, w = view.pixels.shape[:2]
    left, top = max(0, int(np.floor(cx - hx))), max(0, int(np.floor(cy - hy)))
    right, bottom = min(w, int(np.ceil(cx + hx))), min(h, int(np.ceil(cy + hy)))
    if right - left < 8 or bottom - top < 8:
        return None
    return top, left, bottom - top, right - left
