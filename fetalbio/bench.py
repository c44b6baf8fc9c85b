"""Benchmark of the whole ``predict`` (decode, model, post-processing, CSV) per engine and thread count.

``python -m fetalbio.bench [--n 40] [--method segmentation]`` (``make bench``) measures, on the first
``--n`` scans of ``<data>/hc18/test_set`` (synthetic scans when it is absent):

* start-up: importing the engine's runtime and loading the model (fresh process);
* per-scan latency: one scan at a time (``predict_paths`` with batch 1, then its CSV row written);
* throughput: all scans in batches of 8 and one CSV, in scans per second;

for Keras, LiteRT float32, float16 and int8, on one thread and on all cores. Every setting runs in its
own subprocess (TensorFlow's thread pools are fixed once it starts). Overlays are off: they are PNG
encoding, the same for every engine. The markdown table replaces the text between
``<!-- bench:start -->`` and ``<!-- bench:end -->`` in README.md (markers appended when absent).

Models: ``fetalbio/shipped/<method>/model.keras`` and ``model_float32.tflite``, ``model_float16.tflite``,
``model_int8.tflite`` beside it; missing ``.tflite`` files are exported to a temporary folder first
(int8 calibrated as ``fetalbio export`` does). Without a shipped Keras model an untrained one of the
default architecture is timed, and the table says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
VARIANTS = (  # (label, engine, file name beside model.keras, quantize)
    ("Keras", "keras", "model.keras", None),
    ("LiteRT float32", "litert", "model_float32.tflite", "none"),
    ("LiteRT float16", "litert", "model_float16.tflite", "float16"),
    ("LiteRT int8", "litert", "model_int8.tflite", "int8"),
)
THROUGHPUT_BATCH = 8


def all_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# --- one setting, in its own process ------------------------------------------------------------------------


def worker(cfg: dict) -> dict:
    """Time one (engine, model, threads) setting over the scans; returns figures (printed as JSON)."""
    import numpy as np

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    threads = int(cfg["threads"])
    t0 = time.perf_counter()
    if cfg["engine"] == "keras":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1 if threads == 1 else 0)
        from fetalbio.engines import KerasEngine

        engine = KerasEngine(cfg["model"])
    else:
        from fetalbio.engines import LiteRTEngine

        engine = LiteRTEngine(cfg["model"], num_threads=threads)
    startup_s = time.perf_counter() - t0

    from fetalbio.predict import COLUMNS, PredictOptions, predict_paths
    from fetalbio.writers import write_csv_atomic

    paths = [Path(p) for p in cfg["scans"]]
    out = Path(cfg["out"])
    engines = {engine.method: engine}

    def opts(batch: int) -> PredictOptions:
        return PredictOptions(methods=(engine.method,), overlays=False, batch_size=batch)

    # warm-up: both batch shapes (Keras traces each once; LiteRT resizes and allocates)
    predict_paths(paths[:1], engines, out, opts(1))
    predict_paths(paths[:THROUGHPUT_BATCH], engines, out, opts(THROUGHPUT_BATCH))

    latencies = []
    for p in paths:
        t = time.perf_counter()
        rows = predict_paths([p], engines, out, opts(1))
        write_csv_atomic(out / "one.csv", rows, COLUMNS)
        latencies.append(time.perf_counter() - t)
    t = time.perf_counter()
    rows = predict_paths(paths, engines, out, opts(THROUGHPUT_BATCH))
    write_csv_atomic(out / "measurements.csv", rows, COLUMNS)
    total = time.perf_counter() - t
    lat = np.asarray(latencies) * 1000
    return {
        "startup_s": startup_s,
        "latency_ms_median": float(np.median(lat)),
        "latency_ms_p90": float(np.percentile(lat, 90)),
        "throughput_per_s": len(paths) / total,
        "n": len(paths),
        "n_ok": sum(r["status"] == "ok" for r in rows),
    }


def run_setting(cfg: dict, timeout_s: float = 1800) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    res = subprocess.run(
        [sys.executable, "-m", "fetalbio.bench", "--worker", json.dumps(cfg)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
    )
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {res.returncode}: {tail[:200]}"}
    return json.loads(lines[-1])


# --- scans and models -----------------------------------------------------------------------------------


def _shown(path: Path) -> str:
    """A path as the README shows it: relative to the checkout when it is nearby."""
    rel = os.path.relpath(path, Path(__file__).resolve().parents[1])
    return rel if rel.count("..") <= 2 else str(path)


def bench_scans(n: int, tmp: Path) -> tuple[list[Path], str]:
    from fetalbio.datasets import default_data_root
    from fetalbio.io import find_scans

    test_set = default_data_root() / "hc18" / "test_set"
    if test_set.is_dir():
        paths, _ = find_scans([test_set])
        if paths:
            return paths[:n], f"the first {min(n, len(paths))} scans of `{_shown(test_set)}`"
    from fetalbio.synthetic import write_samples

    paths = write_samples(tmp / "scans", n=n, seed=11)
    return paths, f"{n} synthetic 800x540 scans (`{_shown(test_set)}` is absent)"


def bench_models(method: str, model: Path | None, tmp: Path, log) -> tuple[dict[str, Path], str]:
    """Paths of the four variants; missing ones are made in ``tmp``. Returns (paths, note)."""
    from fetalbio.engines import models_dir

    note = ""
    keras_path = Path(model) if model else models_dir() / method / "model.keras"
    if keras_path.is_dir():
        keras_path = keras_path / "best.keras"
    folder = keras_path.parent
    if not keras_path.exists():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        from fetalbio.train import TrainConfig, build_model, save_model

        keras_path = tmp / "untrained" / "model.keras"
        keras_path.parent.mkdir(parents=True)
        cfg = TrainConfig(method=method)
        save_model(build_model(cfg), keras_path, cfg)
        note = (
            f"no shipped {method} model: an UNTRAINED model of the default architecture was timed "
            "(post-processing of its output is not representative)"
        )
        log(note)
    paths = {}
    for label, _engine, name, quantize in VARIANTS:
        if quantize is None:
            paths[label] = keras_path
            continue
        p = folder / name
        if not p.exists() or keras_path.parent != folder:
            from fetalbio.export import export_model

            p = tmp / name
            log(f"exporting {label} to {p}")
            export_model(keras_path, method, p, quantize, None)
        paths[label] = p
    return paths, note


# --- the table ------------------------------------------------------------------------------------------


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def markdown(results: list[dict], meta: dict) -> str:
    lines = [
        f"Whole `predict` of {meta['scans']} ({meta['method']}): decode, letterbox, model, "
        f"post-processing, CSV (overlays off). {meta['cpu']}, {meta['cores']} cores available; "
        f"{meta['date']}, `python -m fetalbio.bench --n {meta['n']}`.",
        "",
    ]
    if meta.get("note"):
        lines += [f"**Note:** {meta['note']}.", ""]
    lines += [
        "| engine | model file | size | threads | start-up (s) | latency median (ms/scan) "
        "| latency p90 (ms) | throughput (scans/s, batch 8) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        head = f"| {r['label']} | `{r['file']}` | {r['size_mb']:.2f} MB | {r['threads']} "
        if "error" in r:
            lines.append(head + f"| failed: {r['error']} | | | |")
            continue
        lines.append(
            head + f"| {r['startup_s']:.2f} | {r['latency_ms_median']:.1f} | {r['latency_ms_p90']:.1f} "
            f"| {r['throughput_per_s']:.1f} |"
        )
    lines += [
        "",
        "Start-up = importing the engine's runtime (TensorFlow for Keras, `ai_edge_litert` for LiteRT) "
        "and loading the model, in a fresh process; latency = one scan at a time, after warm-up.",
    ]
    return "\n".join(lines)


def write_readme(readme: Path, table: str, start: str = START, end: str = END) -> None:
    """Replace the text between the markers (append the markers at the end when absent)."""
    from fetalbio.writers import write_bytes_atomic

    START, END = start, end  # noqa: N806
    text = readme.read_text() if readme.exists() else ""
    block = f"{START}\n{table}\n{END}"
    if START in text and END in text and text.index(START) < text.index(END):
        text = text[: text.index(START)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    write_bytes_atomic(readme, text.encode())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fetalbio.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=40, help="number of scans (default 40)")
    from fetalbio import methods

    ap.add_argument("--method", choices=methods.PRIMARY, default=methods.PRIMARY[0])
    ap.add_argument("--model", type=Path, help="a .keras model or run folder (default: the shipped one)")
    ap.add_argument(
        "--readme",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "README.md",
        help="README to update",
    )
    ap.add_argument("--no-readme", action="store_true", help="print the table only")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    cores = all_cores()
    thread_settings = [1] if cores == 1 else [1, cores]
    with tempfile.TemporaryDirectory(prefix="fetalbio-bench-") as tmp_s:
        tmp = Path(tmp_s)
        scans, scans_what = bench_scans(args.n, tmp)
        log(f"scans: {scans_what}")
        models, note = bench_models(args.method, args.model, tmp, log)
        results = []
        for label, engine, _name, _q in VARIANTS:
            for threads in thread_settings:
                log(f"{label}, {threads} thread(s)...")
                cfg = {
                    "engine": engine,
                    "model": str(models[label]),
                    "threads": threads,
                    "scans": [str(p) for p in scans],
                    "out": str(tmp / f"out-{engine}-{threads}"),
                }
                r = run_setting(cfg)
                r.update(
                    label=label,
                    file=models[label].name,
                    size_mb=models[label].stat().st_size / 1e6,
                    threads=threads,
                )
                results.append(r)
                log(
                    f"  {r['error']}"
                    if "error" in r
                    else f"  start-up {r['startup_s']:.2f} s, latency {r['latency_ms_median']:.1f} ms, "
                    f"{r['throughput_per_s']:.1f} scans/s ({r['n_ok']}/{r['n']} ok)"
                )
    meta = {
        "scans": scans_what,
        "method": args.method,
        "cpu": cpu_name(),
        "cores": cores,
        "date": time.strftime("%Y-%m-%d"),
        "n": args.n,
        "note": note,
    }
    table = markdown(results, meta)
    print(table)
    if not args.no_readme:
        write_readme(args.readme, table)
        log(f"wrote the table into {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
