"""The ``fetalbio`` command line: thin Typer commands over the typed functions of each module.

TensorFlow and Keras are imported inside the commands that need them, so ``--help``, ``data check``
and the LiteRT engine start fast and run without TensorFlow.
"""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fetalbio import defaults

app = typer.Typer(
    name="fetalbio",
    help="Fetal head biometry on 2D ultrasound: BPD, OFD and HC in millimetres.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Check annotated datasets before training.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console()
err_console = Console(stderr=True)


class EngineName(StrEnum):
    auto = "auto"
    keras = "keras"
    litert = "litert"


class Strategy(StrEnum):
    auto = "auto"
    one_device = "one-device"
    mirrored = "mirrored"
    multi_worker = "multi-worker"


class Quantize(StrEnum):
    none = "none"
    float16 = "float16"
    int8 = "int8"


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error (no traceback) and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def quiet_tensorflow() -> None:
    """TensorFlow's C++ start-up chatter is noise for a terminal user."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise fail(f"--image-size {text!r}: expected HxW, e.g. 256x384") from None
    if h <= 0 or w <= 0 or h % 16 or w % 16:
        raise fail(f"--image-size {text!r}: both sides must be positive multiples of 16")
    return h, w


# --- data check ---


@data_app.command("check")
def data_check(
    dataset: Annotated[
        Path, typer.Argument(help="Folder of NAME.png scans with NAME_Annotation.png outlines.")
    ],
    landmarks: Annotated[
        Path | None, typer.Option(help="Four-point CSV (role-challenge format) to check.")
    ] = None,
    pixel_csv: Annotated[Path | None, typer.Option(help="Pixel-size CSV (filename,pixel size(mm)).")] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write per-image rows and a summary here.")
    ] = None,
) -> None:
    """Check a dataset: missing, extra or unreadable files, CSV rows, HC of each annotation vs the CSV."""
    from fetalbio.datacheck import check_dataset, print_report
    from fetalbio.io import ScanError
    from fetalbio.writers import write_json_atomic

    try:
        report = check_dataset(dataset, pixel_csv=pixel_csv, landmarks_csv=landmarks)
    except ScanError as exc:
        raise fail(str(exc)) from None
    print_report(report, console)
    if json_path:
        write_json_atomic(json_path, {"summary": report.summary, "rows": report.rows})
        console.print(f"wrote {json_path}")
    raise typer.Exit(1 if report.summary.get("n_errors") else 0)


# --- options declared once (Typer Annotated aliases), grouped in --help by panel ---

INPUTS, OUTPUTS, MODEL, TRAINING, DISTRIBUTION = "Inputs", "Outputs", "Model", "Training", "Distribution"

Dataset = Annotated[
    Path, typer.Argument(help="Annotated folder (NAME.png + NAME_Annotation.png), e.g. hc18/training_set.")
]
RunOut = Annotated[
    Path,
    typer.Option(
        "--out", help="Run folder (config, splits, history, model, metrics).", rich_help_panel=OUTPUTS
    ),
]
PixelCsv = Annotated[
    Path | None,
    typer.Option(
        help="Pixel-size CSV (filename,pixel size(mm)); found in or beside the folder if omitted.",
        rich_help_panel=INPUTS,
    ),
]
Epochs = Annotated[int, typer.Option(min=1, help="Training epochs.", rich_help_panel=TRAINING)]
BatchSize = Annotated[
    int, typer.Option(min=1, help="GLOBAL batch, split evenly over replicas.", rich_help_panel=DISTRIBUTION)
]
ImageSize = Annotated[
    str, typer.Option(help="Model input HxW (letterboxed, aspect ratio kept).", rich_help_panel=MODEL)
]
Lr = Annotated[
    float,
    typer.Option(
        min=0.0, help="Learning rate for a global batch of 8 (scaled linearly).", rich_help_panel=TRAINING
    ),
]
Seed = Annotated[
    int, typer.Option(help="Seed of the subject split, augmentation and weights.", rich_help_panel=TRAINING)
]
ValFraction = Annotated[
    float,
    typer.Option(
        min=0.0, max=0.9, help="Share of SUBJECTS held out for validation.", rich_help_panel=TRAINING
    ),
]
StrategyOpt = Annotated[
    Strategy,
    typer.Option(
        help="tf.distribute strategy (auto: mirrored when several devices).", rich_help_panel=DISTRIBUTION
    ),
]
BaseFilters = Annotated[
    int, typer.Option(min=4, help="Network width (filters of the first level).", rich_help_panel=MODEL)
]
StepsPerEpoch = Annotated[
    int | None, typer.Option(min=1, help="Limit steps per epoch (quick runs).", rich_help_panel=TRAINING)
]
MaxSamples = Annotated[
    int | None, typer.Option(min=2, help="Use only the first N scans (quick runs).", rich_help_panel=INPUTS)
]
Resume = Annotated[
    bool,
    typer.Option(
        "--resume", help="Carry on from the run folder's last checkpoint.", rich_help_panel=TRAINING
    ),
]
ModelPath = Annotated[
    Path | None,
    typer.Option(
        help="A .keras/.tflite file or a run folder (default: the shipped model).", rich_help_panel=MODEL
    ),
]
EngineOpt = Annotated[
    EngineName,
    typer.Option(help="auto: LiteRT for .tflite files, else Keras when installed.", rich_help_panel=MODEL),
]
MethodOpt = Annotated[
    str, typer.Option(help="segmentation, landmarks, or both (any registered method).", rich_help_panel=MODEL)
]
JsonOut = Annotated[
    Path | None, typer.Option("--json", help="Write a JSON report here.", rich_help_panel=OUTPUTS)
]


# --- training ---


def _train(method: str, dataset: Path, out: Path, resume: bool, image_size: str, **kw) -> None:
    quiet_tensorflow()
    from fetalbio.io import ScanError
    from fetalbio.train import TrainConfig, train

    if not dataset.is_dir():
        raise fail(f"{dataset}: dataset folder does not exist")
    if resume and not (out / "config.json").exists():
        raise fail(f"{out}: nothing to resume (no config.json)")
    kw = {k: str(v) if isinstance(v, Path) else v for k, v in kw.items()}
    cfg = TrainConfig(
        method=method, dataset=str(dataset), out=str(out), image_size=parse_size(image_size), **kw
    )
    try:
        result = train(cfg, resume=resume, console=console)
    except (ScanError, ValueError, FileExistsError) as exc:
        raise fail(str(exc)) from None
    if not result.get("chief", True):
        return  # other workers of a multi-worker run stay quiet
    val = result.get("val", {})
    keys = ("dice_mean", "hc_mae_mm", "bpd_mae_mm", "ofd_mae_mm", "landmark_mre_mm")
    figures = "  ".join(f"{k} {val[k]:.3f}" for k in keys if isinstance(val.get(k), float))
    console.print(f"[bold green]done[/]: best epoch {result['best_epoch']}  {figures}\nrun folder: {out}")


DEFAULT_SIZE = "x".join(map(str, defaults.IMAGE_SIZE))


@app.command("train-seg")
def train_seg(
    dataset: Dataset,
    out: RunOut,
    epochs: Epochs = defaults.EPOCHS,
    batch_size: BatchSize = defaults.BATCH_SIZE,
    image_size: ImageSize = DEFAULT_SIZE,
    lr: Lr = defaults.LR,
    seed: Seed = defaults.SEED,
    val_fraction: ValFraction = defaults.VAL_FRACTION,
    strategy: StrategyOpt = Strategy.auto,
    base_filters: BaseFilters = defaults.SEG_BASE_FILTERS,
    depth: Annotated[
        int, typer.Option(min=2, max=6, help="U-Net depth.", rich_help_panel=MODEL)
    ] = defaults.SEG_DEPTH,
    pixel_csv: PixelCsv = None,
    steps_per_epoch: StepsPerEpoch = None,
    max_samples: MaxSamples = None,
    resume: Resume = False,
) -> None:
    """Train the skull-segmentation U-Net (HC, BPD, OFD from a fitted ellipse)."""
    from fetalbio.methods.segmentation import Segmentation

    _train(
        Segmentation.name,
        dataset,
        out,
        resume,
        image_size,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        val_fraction=val_fraction,
        strategy=strategy.value,
        base_filters=base_filters,
        depth=depth,
        pixel_csv=pixel_csv,
        steps_per_epoch=steps_per_epoch,
        max_samples=max_samples,
    )


@app.command("train-landmarks")
def train_landmarks(
    dataset: Dataset,
    out: RunOut,
    arch: Annotated[
        str,
        typer.Option(
            help="Heatmap network: resnet (default, see docs/landmarks.md), unet or hrnet.",
            rich_help_panel=MODEL,
        ),
    ] = defaults.LANDMARK_ARCH,
    landmarks: Annotated[
        Path | None,
        typer.Option(help="Train from a four-point CSV instead of the ellipses.", rich_help_panel=INPUTS),
    ] = None,
    init_from: Annotated[
        Path | None,
        typer.Option(
            help="Start from a .keras model's matching layers (e.g. the segmentation U-Net).",
            rich_help_panel=MODEL,
        ),
    ] = None,
    sigma: Annotated[
        float, typer.Option(min=0.5, help="Heatmap Gaussian sigma (input px).", rich_help_panel=MODEL)
    ] = defaults.HEATMAP_SIGMA_PX,
    epochs: Epochs = defaults.EPOCHS,
    batch_size: BatchSize = defaults.BATCH_SIZE,
    image_size: ImageSize = DEFAULT_SIZE,
    lr: Lr = defaults.LR,
    seed: Seed = defaults.SEED,
    val_fraction: ValFraction = defaults.VAL_FRACTION,
    strategy: StrategyOpt = Strategy.auto,
    base_filters: BaseFilters = defaults.SEG_BASE_FILTERS,
    pixel_csv: PixelCsv = None,
    steps_per_epoch: StepsPerEpoch = None,
    max_samples: MaxSamples = None,
    resume: Resume = False,
) -> None:
    """Train a heatmap CNN for the four BPD/OFD end points."""
    from fetalbio.models import ARCHS

    if arch not in ARCHS:
        raise fail(f"--arch {arch!r}: choose one of {', '.join(ARCHS)}")
    from fetalbio.methods.landmarks import LandmarkMethod

    _train(
        LandmarkMethod.name,
        dataset,
        out,
        resume,
        image_size,
        arch=arch,
        heatmap_sigma_px=sigma,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        val_fraction=val_fraction,
        strategy=strategy.value,
        base_filters=base_filters,
        pixel_csv=pixel_csv,
        landmarks_csv=landmarks,
        init_from=init_from,
        steps_per_epoch=steps_per_epoch,
        max_samples=max_samples,
    )


# --- predict / evaluate ---


def _methods(method: str) -> tuple[str, ...]:
    """``both`` -> the shipped methods; otherwise one registered method (a one-line error if unknown)."""
    from fetalbio import methods

    if method == "both":
        return methods.PRIMARY
    try:
        return (methods.get(method).name,)
    except ValueError as exc:
        raise fail(f"--method: {exc}") from None


def _load_engines(methods: tuple[str, ...], model: Path | None, engine: EngineName) -> dict:
    from fetalbio.engines import ModelError, load_engine

    if engine != EngineName.litert or (model and model.suffix != ".tflite"):
        quiet_tensorflow()
    if model is not None and len(methods) > 1:
        raise fail("--model takes one model: use it with --method segmentation or --method landmarks")
    try:
        return {m: load_engine(model, m, engine.value) for m in methods}
    except ModelError as exc:
        raise fail(str(exc)) from None


def _available_methods(method: str, model: Path | None, engine: EngineName) -> tuple[str, ...]:
    """``both`` runs what is shipped: a missing landmark model is said, not fatal."""
    from fetalbio.modelinfo import default_engine, default_model_path

    methods = _methods(method)
    if method == "both" and model is None:
        kind = default_engine(engine.value)  # auto: Keras when installed, else the shipped int8 .tflite
        missing = [m for m in methods if not default_model_path(m, kind).exists()]
        if missing and len(missing) < len(methods):
            err_console.print(
                f"note: no shipped {', '.join(missing)} model; "
                f"running {', '.join(m for m in methods if m not in missing)} only"
            )
            methods = tuple(m for m in methods if m not in missing)
    return methods


@app.command("predict")
def predict(
    inputs: Annotated[list[Path], typer.Argument(help="Scan files and/or folders (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("fetalbio-out"),
    method: MethodOpt = "both",
    model: ModelPath = None,
    engine: EngineOpt = EngineName.auto,
    pixel_size: Annotated[
        float | None, typer.Option(min=0.0, help="Pixel size in mm (overrides everything).")
    ] = None,
    pixel_csv: Annotated[Path | None, typer.Option(help="CSV of filename,pixel size(mm).")] = None,
    overlays: Annotated[bool, typer.Option("--overlays/--no-overlays", help="Write overlay PNGs.")] = True,
    save_masks: Annotated[bool, typer.Option("--save-masks", help="Write segmentation masks.")] = False,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No table, only the summary line.")] = False,
) -> None:
    """Measure BPD, OFD and HC on scans; write measurements.csv/.json (and overlays)."""
    from rich.progress import Progress

    from fetalbio.io import ScanError, find_scans, read_pixel_csv
    from fetalbio.predict import COLUMNS, PredictOptions, error_row, predict_paths
    from fetalbio.writers import write_csv_atomic, write_json_atomic

    if pixel_size is not None and pixel_csv is not None:
        raise fail("give --pixel-size or --pixel-csv, not both")
    try:
        csv_map = read_pixel_csv(pixel_csv) if pixel_csv else None
    except ScanError as exc:
        raise fail(str(exc)) from None
    methods = _available_methods(method, model, engine)
    paths, missing = find_scans(inputs)
    if not paths and not missing:
        raise fail("no scans found in " + ", ".join(map(str, inputs)))
    engines = _load_engines(methods, model, engine)
    opts = PredictOptions(
        methods=methods,
        pixel_size_mm=pixel_size,
        pixel_csv=csv_map,
        overlays=overlays,
        save_masks=save_masks,
        batch_size=batch_size,
        disagreement_hc_mm=defaults.METHOD_DISAGREEMENT_HC_MM,
    )
    rows = [error_row(str(e.path), m, e.reason) for e in missing for m in methods]
    with Progress(console=err_console, transient=True, disable=quiet) as bar:
        task = bar.add_task("measuring", total=len(paths))
        rows += predict_paths(paths, engines, out, opts, progress=lambda n: bar.advance(task, n))
    write_csv_atomic(out / "measurements.csv", rows, COLUMNS)
    write_json_atomic(out / "measurements.json", {"columns": COLUMNS, "rows": rows})
    _print_measurements(rows, quiet)
    n_err = sum(r["status"] == "error" for r in rows)
    console.print(f"{len(rows) - n_err} ok, {n_err} failed -> {out / 'measurements.csv'}", highlight=False)
    raise typer.Exit(1 if n_err else 0)


def _print_measurements(rows: list[dict], quiet: bool) -> None:
    from rich.table import Table

    if quiet:
        return
    for r in rows:
        if r["status"] == "error":
            err_console.print(f"[red]{r['file']}[/]: {r['error']}", highlight=False)
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok or len(ok) > 50:
        return
    t = Table(
        "file", "method", "HC", "BPD", "OFD", "CI", "GA (Hadlock)", "flags", box=None, header_style="bold"
    )
    t.columns[0].no_wrap = True
    from fetalbio import methods

    for r in ok:
        u = r["unit"]

        def f(k: str, r=r, u=u) -> str:
            v = r.get(f"{k}_{u}")
            return "" if v is None else f"{v:.1f} {u}"

        ga = r.get("ga_hadlock_hc_weeks")
        t.add_row(
            Path(r["file"]).name,
            methods.get(r["method"]).short_name,
            f("hc"),
            f("bpd"),
            f("ofd"),
            f"{r['cephalic_index']:.1f}" if r.get("cephalic_index") else "",
            f"{ga:.1f} w" if ga else "",
            r.get("flags", ""),
        )
    console.print(t)


@app.command("evaluate")
def evaluate(
    dataset: Annotated[Path, typer.Argument(help="Annotated folder (NAME.png + NAME_Annotation.png).")],
    method: MethodOpt = "segmentation",
    model: ModelPath = None,
    engine: EngineOpt = EngineName.auto,
    pixel_csv: PixelCsv = None,
    split: Annotated[
        Path | None, typer.Option(help="A run's splits.json: evaluate its 'val' scans only.")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate the first N scans only.")] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write summary and per-image rows here.")
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="Write plots and worst-case overlays to this folder.")
    ] = None,
) -> None:
    """Compare a model with the annotations: Dice, Hausdorff, HC/BPD/OFD and point errors in mm."""
    from fetalbio.evaluate import evaluate_dataset, print_summary, write_report
    from fetalbio.io import ScanError
    from fetalbio.writers import write_json_atomic

    methods = _available_methods(method, model, engine)
    engines = _load_engines(methods, model, engine)
    out: dict = {}
    try:
        for m in methods:
            summary, rows = evaluate_dataset(
                dataset, engines[m], pixel_csv=pixel_csv, split_file=split, limit=limit
            )
            print_summary(summary, m, console)
            out[m] = {"summary": summary, "rows": rows}
            if report:
                for p in write_report(report / m if len(methods) > 1 else report, rows, summary, dataset):
                    console.print(f"wrote {p}")
    except ScanError as exc:
        raise fail(str(exc)) from None
    if json_path:
        write_json_atomic(json_path, out[methods[0]] if len(methods) == 1 else out)
        console.print(f"wrote {json_path}")


# --- export ---


@app.command("export")
def export(
    out: Annotated[Path, typer.Option("--out", help="The .tflite file to write (sidecar JSON beside it).")],
    method: Annotated[
        str,
        typer.Option(
            help="The method whose model to convert: segmentation or landmarks.", rich_help_panel=MODEL
        ),
    ] = "segmentation",
    model: Annotated[
        Path | None, typer.Option(help="A .keras file or run folder (default: shipped).")
    ] = None,
    quantize: Annotated[Quantize, typer.Option(help="none, float16 or int8 (full-integer).")] = Quantize.none,
    calibration: Annotated[
        Path | None,
        typer.Option(
            help="Folder of scans for int8 calibration and the check "
            "(default: a sample of the HC18 training set when present, else synthetic scans)."
        ),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the export and verification report here.")
    ] = None,
) -> None:
    """Convert a Keras model to TFLite for LiteRT (no TensorFlow ops), then verify it against Keras.

    The preprocessing the model needs travels in FILE.json beside FILE.tflite.
    """
    quiet_tensorflow()
    from fetalbio.export import ExportError, export_model, print_verification

    try:
        report = export_model(model, _methods(method)[0], out, quantize.value, calibration, console=console)
    except ExportError as exc:
        raise fail(str(exc)) from None
    print_verification(report, console)
    if json_path:
        from fetalbio.writers import write_json_atomic

        write_json_atomic(json_path, report)
        console.print(f"wrote {json_path}")


@app.command("demo", hidden=True)
def demo(
    out: Annotated[Path, typer.Option("--out")] = Path("fetalbio-demo"),
) -> None:
    """Draw synthetic sample scans and measure them with the shipped models (the README's first run)."""
    from fetalbio.synthetic import write_samples

    scans = write_samples(out / "scans")
    console.print(f"wrote {len(scans)} synthetic scans to {out / 'scans'} (true axes in truth.csv)")
    try:
        predict(
            [out / "scans"],
            out=out / "results",
            pixel_csv=out / "scans" / "pixel_size.csv",
            method="both",
            model=None,
            engine=EngineName.auto,
            pixel_size=None,
            overlays=True,
            save_masks=False,
            batch_size=8,
            quiet=False,
        )
    except typer.Exit as done:
        import csv

        truth = {r["filename"]: r for r in csv.DictReader(open(out / "scans" / "truth.csv"))}
        console.print(
            "truth (drawn skull centre line): "
            + ", ".join(
                f"{k}: HC {v['hc_mm']} BPD {v['bpd_mm']} OFD {v['ofd_mm']} mm" for k, v in truth.items()
            ),
            highlight=False,
        )
        console.print(f"overlays: {out / 'results' / 'overlays'}")
        raise done


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
