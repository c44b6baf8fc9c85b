"""Export a Keras model to a TFLite file for LiteRT, with its sidecar JSON, and verify it against Keras.

``export_model`` converts with TensorFlow's TFLite converter (Keras ``ExportArchive`` -> SavedModel ->
``TFLiteConverter.from_saved_model``, batch dimension left dynamic), in one of three forms:

* ``none``: float32 weights and activations;
* ``float16``: float16 weights (about half the size; LiteRT runs them in float32);
* ``int8``: full-integer quantisation (int8 weights, activations, input and output), calibrated on
  preprocessed scans: ``--calibration DATASET``, else a sample of the shared HC18 training set when
  present, else synthetic scans.

A file that needs TensorFlow's own ops (Flex / ``SELECT_TF_OPS``) or any custom op is refused: plain
LiteRT cannot run it. The ``.tflite`` file is written atomically with ``<name>.json`` beside it (the
preprocessing the model needs: method, input size, letterbox, normalisation, output stride, and the
int8 input/output quantisation), which is all the LiteRT engine needs. Then the export verifies itself:
LiteRT runs the file and Keras the source model on a few scans through the same post-processing, and
the report gives the largest output difference and the HC/BPD/OFD differences in mm.

TensorFlow and Keras are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

QUANTIZE = ("none", "float16", "int8")
N_CALIBRATION = 64  # scans sampled for int8 calibration
N_VERIFY = 8  # scans run through both engines after writing
MIN_FOLDER_SCANS = 8  # an int8 --calibration folder with fewer readable scans calibrates nothing real
ASSUMED_PIXEL_SIZE_MM = 0.1  # for verification scans whose spacing is unknown
SYNTHETIC_PIXEL_SIZE_MM = 0.15
SEED = 20240607


class ExportError(Exception):
    """An export that cannot be done; str() is one line naming the file."""


# --- the scans used for calibration and verification -----------------------------------------------------


@dataclass
class ScanSource:
    """Where the calibration/verification scans come from, and the scans themselves."""

    kind: str  # 'folder', 'hc18-training-sample' or 'synthetic'
    description: str  # one line for the user
    calibration: list[tuple[str, np.ndarray, tuple[float, float] | None]]  # (name, pixels, spacing)
    verification: list[tuple[str, np.ndarray, tuple[float, float] | None]]
    verification_held_out: bool  # verification scans were not used for calibration

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "description": self.description,
            "n_calibration_scans": len(self.calibration),
            "verification_scans": [n for n, _, _ in self.verification],
            "verification_held_out": self.verification_held_out,
        }


def _read_folder_scans(paths: list[Path], pixel_csv: dict[str, float] | None) -> list:
    from fetalbio.io import ScanError, read_scan

    out = []
    for p in paths:
        try:
            scan = read_scan(p, pixel_csv=pixel_csv)
        except ScanError:
            continue  # an unreadable scan is left out of calibration, not fatal
        out.append((p.name, scan.pixels, scan.spacing_mm))
    return out


def _synthetic_scans(n: int, seed: int, shape_hw: tuple[int, int] = (540, 800)) -> list:
    from fetalbio.synthetic import draw_scan, random_ellipse

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        e = random_ellipse(shape_hw, rng)
        sp = (SYNTHETIC_PIXEL_SIZE_MM, SYNTHETIC_PIXEL_SIZE_MM)
        out.append((f"synthetic_{i:03d}", draw_scan(shape_hw, e, rng), sp))
    return out


def scan_source(
    calibration: str | Path | None,
    n_calibration: int = N_CALIBRATION,
    n_verify: int = N_VERIFY,
    seed: int = SEED,
) -> ScanSource:
    """Scans for calibration and verification: the given folder, else an HC18 sample, else synthetic.

    Scans are drawn in a seeded random order; the first ``n_calibration`` calibrate and the next
    ``n_verify`` verify (held out from calibration when the source has enough scans).
    """
    from fetalbio.datasets import default_data_root, find_pixel_csv
    from fetalbio.io import ScanError, find_scans, read_pixel_csv

    if calibration is not None:
        folder = Path(calibration)
        if not folder.is_dir():
            raise ExportError(f"{folder}: calibration folder does not exist")
        kind, what = "folder", f"scans of {folder}"
    else:
        folder = default_data_root() / "hc18" / "training_set"
        kind, what = "hc18-training-sample", f"scans sampled from {folder}"
    if folder.is_dir():
        paths, _ = find_scans([folder])
        if not paths and kind == "folder":
            raise ExportError(f"{folder}: calibration folder holds no scans")
        if paths:
            csv_path = find_pixel_csv(folder)
            try:
                pixel_csv = read_pixel_csv(csv_path) if csv_path else None
            except ScanError:
                pixel_csv = None
            order = np.random.default_rng(seed).permutation(len(paths))
            wanted = [paths[i] for i in order[: n_calibration + n_verify]]
            scans = _read_folder_scans(wanted, pixel_csv)
            need = min(MIN_FOLDER_SCANS, n_calibration + 1)  # fewer if fewer calibrate, one held out
            if n_calibration and len(scans) < need and kind == "folder":
                raise ExportError(
                    f"{folder}: {len(scans)} readable scans of {len(wanted)} found; the int8 calibration and "
                    f"the check need at least {need} ultrasound scans"
                )
            if not scans:
                raise ExportError(f"{folder}: none of the sampled scans could be read")
            # the check is held out from calibration: a small folder gives a quarter of its scans to it
            n_ver = min(n_verify, max(1, len(scans) // 4, len(scans) - n_calibration))
            cal = scans[: min(n_calibration, len(scans) - n_ver)] if n_calibration else []
            ver = scans[len(cal) : len(cal) + n_ver]
            return ScanSource(kind, what, cal, ver, True)
    scans = _synthetic_scans(n_calibration + n_verify, seed)
    return ScanSource(
        "synthetic",
        f"synthetic scans (no calibration folder given and {folder} is absent)",
        scans[:n_calibration],
        scans[n_calibration:],
        True,
    )


# --- checks on the converted flatbuffer -------------------------------------------------------------------


def custom_ops(tflite: bytes) -> list[str]:
    """Names of the custom ops a TFLite flatbuffer uses (``Flex...`` ones need TensorFlow's kernels)."""
    schema = None
    for mod in ("ai_edge_litert.schema_py_generated", "tensorflow.lite.python.schema_py_generated"):
        try:
            import importlib

            schema = importlib.import_module(mod)
            break
        except ImportError:
            continue
    if schema is None:  # no parser at hand: Flex op names are stored as plain strings
        return sorted({m.decode() for m in re.findall(rb"Flex[A-Za-z0-9_]+", tflite)})
    model = schema.Model.GetRootAsModel(tflite, 0)
    names = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM and code.CustomCode():
            names.add(code.CustomCode().decode())
    return sorted(names)


def check_runs_on_litert(tflite: bytes, out: Path) -> None:
    """Refuse a model plain LiteRT cannot run: Flex/custom ops, or one LiteRT fails to load."""
    ops = custom_ops(tflite)
    flex = [o for o in ops if o.startswith("Flex")]
    if flex:
        raise ExportError(
            f"{out}: the converted model needs TensorFlow ops ({', '.join(o[4:] for o in flex)}) "
            "that plain LiteRT cannot run (Flex/SELECT_TF_OPS); not written"
        )
    if ops:
        raise ExportError(f"{out}: the converted model needs custom ops ({', '.join(ops)}); not written")
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return  # the verification step says LiteRT is missing
    try:
        interp = Interpreter(model_content=tflite)
        interp.allocate_tensors()
    except Exception as exc:  # LiteRT raises RuntimeError/ValueError with multi-line text
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ExportError(f"{out}: LiteRT cannot load the converted model ({first}); not written") from None


# --- conversion ---------------------------------------------------------------------------------------------


def _load_keras(model: str | Path | None, method: str):
    from fetalbio.modelinfo import ModelError, choose_model

    try:
        model, _ = choose_model(method, model, "keras")
    except ModelError as exc:
        raise ExportError(str(exc)) from None
    try:
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    except ImportError:
        raise ExportError(
            f"{model}: export needs TensorFlow and Keras: pip install '.[train]' (the fetalbio folder)"
        ) from None
    from fetalbio.engines import KerasEngine

    if Path(model).suffix == ".tflite":
        raise ExportError(f"{model}: already a TFLite file; export takes a .keras model or run folder")
    try:
        engine = KerasEngine(model)
    except ModelError as exc:
        raise ExportError(str(exc)) from None
    if engine.method != method:
        raise ExportError(f"{engine.path}: is a {engine.method} model, not a {method} model")
    return engine


def _representative(source: ScanSource, image_size: tuple[int, int]):
    from fetalbio.preprocess import prepare_input

    def gen():
        for _, pixels, _ in source.calibration:
            x, _ = prepare_input(pixels, image_size)
            yield [x[None, ..., None].astype(np.float32)]

    return gen


def _converter_error_line(exc: Exception) -> str:
    text = str(exc)
    m = re.search(r"TF Select ops: ([^\n]+)", text)
    if m:
        return f"needs TensorFlow ops ({m.group(1).strip()}) that plain LiteRT cannot run"
    for line in text.splitlines():
        if "error:" in line:
            return line.split("error:", 1)[1].strip()[:200]
    return (text.strip().splitlines() or [exc.__class__.__name__])[0][:200]


def convert(keras_model, quantize: str, source: ScanSource | None, out: Path) -> bytes:
    """Convert a Keras model to TFLite bytes (``quantize``: none, float16 or int8)."""
    import functools

    import keras
    import tensorflow as tf

    if quantize not in QUANTIZE:
        raise ExportError(f"{out}: --quantize {quantize!r}: choose none, float16 or int8")
    shape = tuple(keras_model.input_shape[1:])
    image_size = (int(shape[0]), int(shape[1]))
    with tempfile.TemporaryDirectory(prefix="fetalbio-export-") as tmp:
        archive = keras.export.ExportArchive()
        archive.track(keras_model)
        archive.add_endpoint(
            "serve",
            functools.partial(keras_model.__call__, training=False),
            input_signature=[tf.TensorSpec((None, *shape), tf.float32, name="image")],
        )
        archive.write_out(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if quantize == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = _representative(source, image_size)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        else:
            # TF ops are allowed here only so that the check below can name them and refuse the file
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.TFLITE_BUILTINS,
                tf.lite.OpsSet.SELECT_TF_OPS,
            ]
            if quantize == "float16":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
                converter.target_spec.supported_types = [tf.float16]
        try:
            return converter.convert()
        except Exception as exc:  # ConverterError and friends carry pages of MLIR
            raise ExportError(f"{out}: conversion failed: {_converter_error_line(exc)}") from None


def _tensor_info(detail: dict) -> dict:
    scale, zero = detail["quantization"]
    return {
        "name": detail["name"],
        "dtype": np.dtype(detail["dtype"]).name,
        "shape": [int(v) for v in detail.get("shape_signature", detail["shape"])],
        "scale": float(scale),
        "zero_point": int(zero),
    }


def io_details(tflite: bytes) -> tuple[dict, dict]:
    """Input and output tensor details (dtype, shape, int8 scale/zero point) of a TFLite model."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=tflite)
    return _tensor_info(interp.get_input_details()[0]), _tensor_info(interp.get_output_details()[0])


def sidecar_content(
    engine, quantize: str, tflite: bytes, inp: dict, outp: dict, source: ScanSource | None
) -> dict:
    """What the LiteRT engine needs beside the file: the source model's info + export facts."""
    import dataclasses

    from fetalbio import methods

    info = dataclasses.replace(engine.info, extra=dict(engine.info.extra))
    if not info.output:
        info.output = methods.get(engine.method).output_description
    out_h = outp["shape"][1]
    info.output_stride = engine.image_size[0] // out_h if out_h and out_h > 0 else 1
    info.quantize = quantize
    info.source_model = str(engine.path)
    info.source_model_sha256 = hashlib.sha256(Path(engine.path).read_bytes()).hexdigest()
    info.tflite_sha256 = hashlib.sha256(tflite).hexdigest()
    info.input_tensor, info.output_tensor = inp, outp
    if quantize == "int8" and source:
        info.calibration = f"{len(source.calibration)} {source.description}"
    info.runtime = "LiteRT (ai-edge-litert); no TensorFlow ops"
    info.extra.update(
        exported_by=f"fetalbio {_version()}",
        exported_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        units="the model sees and returns pixels; millimetres = pixels x the scan's own pixel spacing",
        integration="docs/integrating.md in the fetalbio repository: every step around the model",
    )
    return {**info.to_dict(), "calibration": info.calibration}  # null says: not calibrated (not int8)


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("fetalbio")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# --- verification -------------------------------------------------------------------------------------------


def _measures(output: np.ndarray, lb, spacing: tuple[float, float], engine):
    """HC/BPD/OFD (mm) through the same decoding as ``predict``; (None, reason) when none."""
    from fetalbio import methods
    from fetalbio.pipeline import Predictor

    method = engine.method
    try:
        res = Predictor({method: engine}).decode(method, output[None], [lb])[0]
        if res.error:
            return None, res.error
        return methods.get(method).measure(res, spacing), None
    except (ValueError, ArithmeticError) as exc:  # degenerate points (e.g. an untrained model)
        return None, f"{exc.__class__.__name__}: {exc}"


def verify(tflite_path: Path, keras_engine, scans: list) -> dict:
    """Run the TFLite file (LiteRT) and the Keras model on ``scans``; compare outputs and mm."""
    from fetalbio.engines import LiteRTEngine, ModelError
    from fetalbio.pipeline import Predictor
    from fetalbio.preprocess import prepare_input

    try:
        lite = LiteRTEngine(tflite_path)
    except ModelError as exc:
        raise ExportError(str(exc)) from None
    if lite.image_size != keras_engine.image_size:
        raise ExportError(f"{tflite_path}: input size {lite.image_size} differs from the Keras model's")
    prepared = [prepare_input(pixels, keras_engine.image_size) for _, pixels, _ in scans]
    inputs = [p for p, _ in prepared]
    m = keras_engine.method
    t0 = time.perf_counter()
    y_keras = Predictor({m: keras_engine}).infer(m, inputs)
    t_keras = time.perf_counter() - t0
    t0 = time.perf_counter()
    y_lite = Predictor({m: lite}).infer(m, inputs)
    t_lite = time.perf_counter() - t0
    rows = []
    assumed = False
    for (name, _, spacing), (_, lb), yk, yl in zip(scans, prepared, y_keras, y_lite, strict=True):
        row: dict[str, Any] = {"file": name, "max_abs_output_diff": float(np.abs(yk - yl).max())}
        if spacing is None:
            spacing, assumed = (ASSUMED_PIXEL_SIZE_MM, ASSUMED_PIXEL_SIZE_MM), True
            row["pixel_size_assumed"] = True
        row["pixel_size_mm"] = float(spacing[0])
        mk, ek = _measures(yk, lb, spacing, keras_engine)
        ml, el = _measures(yl, lb, spacing, lite)
        if mk is None or ml is None:
            row["status"] = "both failed" if mk is None and ml is None else "one failed"
            row["error"] = f"keras: {ek or 'ok'}; litert: {el or 'ok'}"
        else:
            row["status"] = "ok"
            for k in ("hc", "bpd", "ofd"):
                row[f"keras_{k}_mm"] = float(getattr(mk, k))
                row[f"litert_{k}_mm"] = float(getattr(ml, k))
                row[f"{k}_diff_mm"] = float(getattr(ml, k) - getattr(mk, k))
        rows.append(row)
    ok = [r for r in rows if r["status"] == "ok"]
    summary: dict[str, Any] = {
        "n_scans": len(rows),
        "n_compared": len(ok),
        "n_one_failed": sum(r["status"] == "one failed" for r in rows),
        "n_both_failed": sum(r["status"] == "both failed" for r in rows),
        "max_abs_output_diff": max(r["max_abs_output_diff"] for r in rows) if rows else None,
        "pixel_size_assumed_mm": ASSUMED_PIXEL_SIZE_MM if assumed else None,
        "keras_seconds": round(t_keras, 3),
        "litert_seconds": round(t_lite, 3),
    }
    for k in ("hc", "bpd", "ofd"):
        d = [abs(r[f"{k}_diff_mm"]) for r in ok]
        summary[f"max_abs_{k}_diff_mm"] = max(d) if d else None
        summary[f"mean_abs_{k}_diff_mm"] = float(np.mean(d)) if d else None
    return {"summary": summary, "rows": rows}


# --- the whole export ---------------------------------------------------------------------------------------


def export_model(
    model: str | Path | None,
    method: str,
    out: str | Path,
    quantize: str = "none",
    calibration: str | Path | None = None,
    console=None,
    n_calibration: int = N_CALIBRATION,
    n_verify: int = N_VERIFY,
) -> dict:
    """Convert ``model`` (a ``.keras`` file or run folder; the shipped one when None) to ``out``.

    Writes ``out`` (``.tflite``) and ``out.with_suffix('.json')`` atomically, then verifies the file
    against Keras. Returns the report (what was written, calibration source, verification).
    Raises ExportError with a one-line message.
    """
    from fetalbio.writers import write_bytes_atomic, write_json_atomic

    t_start = time.perf_counter()
    out = Path(out)
    if out.suffix != ".tflite":
        raise ExportError(f"{out}: the output file must end in .tflite")
    if quantize not in QUANTIZE:
        raise ExportError(f"{out}: --quantize {quantize!r}: choose none, float16 or int8")
    if out.is_dir():
        raise ExportError(f"{out}: is a folder; give a .tflite file name")

    def say(text: str) -> None:
        if console is not None:
            console.print(text, highlight=False)

    engine = _load_keras(model, method)
    say(f"model: {engine.path} ({engine.method}, input {engine.image_size[0]}x{engine.image_size[1]})")
    source = scan_source(calibration, n_calibration if quantize == "int8" else 0, n_verify)
    if quantize == "int8":
        say(f"int8 calibration on {len(source.calibration)} {source.description}")
    t0 = time.perf_counter()
    tflite = convert(engine.model, quantize, source, out)
    convert_s = time.perf_counter() - t0
    check_runs_on_litert(tflite, out)
    try:
        inp, outp = io_details(tflite)
    except ImportError:
        raise ExportError(
            f"{out}: verifying the export needs LiteRT: pip install '.[litert]' (the fetalbio folder)"
        ) from None
    sidecar = sidecar_content(engine, quantize, tflite, inp, outp, source)
    held = " (not used for calibration)" if quantize == "int8" and source.verification_held_out else ""
    say(f"verifying with LiteRT vs Keras on {len(source.verification)} {source.description}{held}")
    # checked before it is written: an export interrupted (Ctrl-C, killed) during the check leaves no file
    # that predict would take for a checked one
    with tempfile.TemporaryDirectory(prefix="fetalbio-export-check-") as tmp:
        trial = write_bytes_atomic(Path(tmp) / out.name, tflite)
        write_json_atomic(trial.with_suffix(".json"), sidecar)
        verification = verify(trial, engine, source.verification)
    if not verification["summary"]["n_compared"]:  # nothing compared is no check: the file is not kept
        raise ExportError(
            f"{out}: not written: the check measured no head on any of its {len(source.verification)} scans "
            "(Keras or LiteRT), so the export cannot be verified; give --calibration a folder of real scans"
        )
    write_bytes_atomic(out, tflite)
    json_path = write_json_atomic(out.with_suffix(".json"), sidecar)
    say(f"wrote {out} ({len(tflite) / 1e6:.2f} MB) and {json_path}")
    return {
        "out": str(out),
        "sidecar": str(json_path),
        "source_model": str(engine.path),
        "method": engine.method,
        "quantize": quantize,
        "image_size": list(engine.image_size),
        "size_bytes": len(tflite),
        "sha256": sidecar["tflite_sha256"],
        "input_tensor": inp,
        "output_tensor": outp,
        "scans": source.to_dict(),
        "calibration": sidecar.get("calibration"),
        "verification": verification,
        "convert_seconds": round(convert_s, 1),
        "seconds": round(time.perf_counter() - t_start, 1),
    }


def print_verification(report: dict, console) -> None:
    """The verification table: per scan, the largest output difference and the HC/BPD/OFD differences."""
    from rich.table import Table

    ver = report["verification"]
    s = ver["summary"]
    unit_note = (
        f" (pixel size unknown for some scans: {s['pixel_size_assumed_mm']} mm assumed)"
        if s.get("pixel_size_assumed_mm")
        else ""
    )
    t = Table(
        title=f"{Path(report['out']).name} ({report['quantize']}) vs Keras: LiteRT - Keras{unit_note}",
    )
    t.add_column("scan")
    t.add_column("max |output diff|", justify="right")
    for k in ("HC", "BPD", "OFD"):
        t.add_column(f"{k} diff (mm)", justify="right")
    t.add_column("Keras HC (mm)", justify="right")
    for r in ver["rows"]:
        if r["status"] == "ok":
            cells = [f"{r[f'{k}_diff_mm']:+.3f}" for k in ("hc", "bpd", "ofd")] + [f"{r['keras_hc_mm']:.1f}"]
        else:
            cells = ["-", "-", "-", r["status"]]
        t.add_row(r["file"], f"{r['max_abs_output_diff']:.2e}", *cells)
    console.print(t)

    def fmt(v) -> str:
        return "-" if v is None else f"{v:.3f} mm"

    console.print(
        f"largest |output diff| {s['max_abs_output_diff']:.2e}; "
        f"largest |diff| HC {fmt(s['max_abs_hc_diff_mm'])}, "
        f"BPD {fmt(s['max_abs_bpd_diff_mm'])}, OFD {fmt(s['max_abs_ofd_diff_mm'])} "
        f"over {s['n_compared']} of {s['n_scans']} scans",
        highlight=False,
    )
    if s["n_one_failed"]:
        console.print(
            f"[yellow]warning:[/] {s['n_one_failed']} scan(s) measured by one engine only",
            highlight=False,
            markup=True,
        )
    if s["n_both_failed"]:
        console.print(f"{s['n_both_failed']} scan(s) found no head with either engine", highlight=False)
    console.print(
        f"{report['size_bytes'] / 1e6:.2f} MB, sha256 {report['sha256'][:16]}..., {report['seconds']:.0f} s",
        highlight=False,
    )
