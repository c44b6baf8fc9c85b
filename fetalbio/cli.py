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
from rich.markup import escape
from rich.text import Text

from fetalbio import defaults

app = typer.Typer(
    name="fetalbio",
    help="Fetal head biometry on 2D ultrasound: BPD, OFD and HC in millimetres.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
data_app = typer.Typer(help="Check annotated datasets before training.", no_args_is_help=True)
app.add_typer(data_app, name="data")

# markup off: paths and messages are printed as they are ("fetalbio[train]", "scans[left]/"); the few
# styled words say markup=True and escape what they interpolate. soft_wrap: a message is one line however
# narrow the terminal (or 80 columns when piped to a log): a path is never cut in two
console = Console(markup=False, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        import importlib.metadata

        try:
            v = importlib.metadata.version("fetalbio")
        except importlib.metadata.PackageNotFoundError:
            v = "unknown (not installed)"
        typer.echo(f"fetalbio {v}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show third-party log lines (TensorFlow, OpenCV, ...).")
    ] = False,
) -> None:
    """Fetal head biometry on 2D ultrasound: BPD, OFD and HC in millimetres."""
    if verbose:
        from fetalbio.quiet import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"
    else:
        quiet_third_party()


err_console = Console(stderr=True, markup=False, soft_wrap=True)


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
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True, markup=True)
    return typer.Exit(code)


def check_output(path: Path | None, option: str, folder: bool = False) -> None:
    """An output path that cannot be written is refused in one line before any work (a conversion or an
    evaluation would otherwise run for minutes and then fail with a traceback)."""
    if path is None:
        return
    if path.exists() and path.is_dir() != folder:
        raise fail(
            f"{option} {path}: "
            + ("is a file, expected a folder" if folder else "is a folder, expected a file")
        )
    above = next((p for p in path.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise fail(f"{option} {path}: {above} is a file, not a folder")
    if above is not None:  # a real write: permissions, a read-only mount or an immutable folder
        import tempfile

        try:
            with tempfile.NamedTemporaryFile(
                dir=path if folder and path.is_dir() else above, prefix=".fetalbio-"
            ):
                pass
        except OSError as exc:
            raise fail(f"{option} {path}: cannot write there ({exc.strerror or exc})") from None


def quiet_third_party() -> None:
    """Library chatter (TensorFlow/absl, OpenCV, libpng/libjpeg, pydicom) is noise in a terminal."""
    import logging
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", module="pydicom")
    warnings.filterwarnings("ignore", category=UserWarning, module="keras")
    for name in ("pydicom", "absl", "tensorflow", "keras"):
        logging.getLogger(name).setLevel(logging.ERROR)


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
    if max(h, w) > defaults.MAX_INPUT_SIDE_PX:
        raise fail(f"--image-size {text!r}: at most {defaults.MAX_INPUT_SIDE_PX} px a side")
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
    """Check a dataset: missing, extra or unreadable files, CSV rows, HC of each annotation vs the CSV,
    outlines off the skull echo's outer edge."""
    from fetalbio.datacheck import check_dataset, print_report
    from fetalbio.io import ScanError
    from fetalbio.writers import write_json_atomic

    check_output(json_path, "--json")
    try:
        report = check_dataset(dataset, pixel_csv=pixel_csv, landmarks_csv=landmarks)
    except ScanError as exc:
        raise fail(str(exc)) from None
    print_report(report, console)
    if json_path:
        write_json_atomic(json_path, {"summary": report.summary, "rows": report.rows})
        console.print(f"wrote {json_path}")
    if not report.summary.get("n_images"):  # nothing to train on is a failed check, not a clean one
        err_console.print(
            f"[red]{escape(str(dataset))}[/]: no scans found (NAME.png beside NAME_Annotation.png)",
            highlight=False,
            markup=True,
        )
    raise typer.Exit(1 if report.summary.get("n_errors") or not report.summary.get("n_images") else 0)


# --- options declared once (Typer Annotated aliases), grouped in --help by panel ---

INPUTS, OUTPUTS, MODEL, TRAINING, DISTRIBUTION = "Inputs", "Outputs", "Model", "Training", "Distribution"
PACS = "Hospital: DICOM SR and PACS (DICOMweb)"

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
        min=0.0,
        help="Learning rate for a global batch of 8 (scaled linearly).",
        rich_help_panel=TRAINING,
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
    typer.Option(
        help="auto: the shipped int8 LiteRT models (Keras when LiteRT is not installed); with --model, "
        "LiteRT for a .tflite file, else Keras.",
        rich_help_panel=MODEL,
    ),
]
MethodOpt = Annotated[
    str,
    typer.Option(
        help="fused (both models combined, with intervals), segmentation, landmarks, both (their two rows) "
        "or all (the three rows).",
        rich_help_panel=MODEL,
    ),
]
InitFrom = Annotated[
    Path | None,
    typer.Option(
        help="Start from a .keras model's matching layers (fine-tuning, or e.g. the segmentation "
        "U-Net for a landmark U-Net).",
        rich_help_panel=MODEL,
    ),
]
AugmentOpt = Annotated[
    str,
    typer.Option(
        help="Augmentation preset: standard, or robust (rotations, captures, speckle, JPEG...).",
        rich_help_panel=TRAINING,
    ),
]
JsonOut = Annotated[
    Path | None, typer.Option("--json", help="Write a JSON report here.", rich_help_panel=OUTPUTS)
]


# --- training ---


def _train(method: str, dataset: Path, out: Path, resume: bool, image_size: str, augment: str, **kw) -> None:
    quiet_tensorflow()
    from fetalbio.datasets import check_dataset_folder
    from fetalbio.io import ScanError
    from fetalbio.train import TrainConfig, train

    try:
        check_dataset_folder(dataset)
    except ScanError as exc:
        raise fail(str(exc)) from None
    if resume and not (out / "config.json").exists():
        raise fail(f"{out}: nothing to resume (no config.json)")
    kw = {k: str(v) if isinstance(v, Path) else v for k, v in kw.items()}
    if kw.get("lr", 1.0) <= 0:
        raise fail(f"--lr {kw['lr']}: a learning rate above 0 is needed (0 trains nothing)")
    if augment not in defaults.AUGMENT_PRESETS:
        raise fail(f"--augment {augment!r}: choose one of {', '.join(defaults.AUGMENT_PRESETS)}")
    from fetalbio.augment import AugmentConfig

    kw["augment"] = AugmentConfig(**defaults.AUGMENT_PRESETS[augment]).to_dict()
    cfg = TrainConfig(
        method=method, dataset=str(dataset), out=str(out), image_size=parse_size(image_size), **kw
    )
    import signal

    from fetalbio.quiet import native_stderr_silenced

    # Ctrl-C sets a flag that the loop acts on after the step in flight: a KeyboardInterrupt raised by
    # Python's own handler inside a finaliser (TensorFlow's, while the GC runs) is printed and dropped,
    # and training went on (seen once in CI). A second Ctrl-C stops at once.
    asked: list[int] = []

    def on_signal(signum, frame):
        if asked:
            raise KeyboardInterrupt
        asked.append(signum)

    def check(*_):
        if asked:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_signal)
    try:
        with native_stderr_silenced():  # TensorFlow's start-up and runtime lines (--verbose shows them)
            result = train(cfg, resume=resume, console=console, on_step=check)
    except KeyboardInterrupt:
        kept = (
            f"{out} keeps the last finished epoch (checkpoint/) and the best (best.keras); the same command "
            "with --resume carries on"
            if (out / "checkpoint" / "state.json").exists()
            else "no epoch had finished: nothing trained is kept; the same command starts again"
        )
        err_console.print(f"interrupted: {kept}", highlight=False)
        raise typer.Exit(130) from None
    except (ScanError, ValueError, FileExistsError) as exc:
        raise fail(str(exc)) from None
    finally:
        signal.signal(signal.SIGINT, previous)
    if not result.get("chief", True):
        return  # other workers of a multi-worker run stay quiet
    val = result.get("val", {})
    keys = ("dice_mean", "hc_mae_mm", "bpd_mae_mm", "ofd_mae_mm", "landmark_mre_mm")
    figures = "  ".join(f"{k} {val[k]:.3f}" for k in keys if isinstance(val.get(k), float))
    console.print(
        f"[bold green]done[/]: best epoch {result['best_epoch']}  {figures}\nrun folder: {escape(str(out))}",
        markup=True,
    )


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
    init_from: InitFrom = None,
    augment: AugmentOpt = "standard",
) -> None:
    """Train the skull-segmentation U-Net (HC, BPD, OFD from a fitted ellipse)."""
    from fetalbio.methods.segmentation import Segmentation

    _train(
        Segmentation.name,
        dataset,
        out,
        resume,
        image_size,
        augment,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        val_fraction=val_fraction,
        strategy=strategy.value,
        base_filters=base_filters,
        depth=depth,
        pixel_csv=pixel_csv,
        init_from=init_from,
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
    init_from: InitFrom = None,
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
    augment: AugmentOpt = "standard",
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
        augment,
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
    """``both`` -> the two model methods, ``all`` -> fused and both; else one registered method."""
    from fetalbio import methods

    if method == "both":
        return methods.PRIMARY
    if method == "all":
        return (*methods.DEFAULT, *methods.PRIMARY)
    try:
        return (methods.get(method).name,)
    except ValueError as exc:
        raise fail(f"--method: {exc}, or both, all") from None


def _load_engines(methods: tuple[str, ...], model: Path | None, engine: EngineName) -> dict:
    from fetalbio.engines import ModelError, load_engine

    if engine != EngineName.litert or (model and model.suffix != ".tflite"):
        quiet_tensorflow()
    from fetalbio.methods import engines_needed

    if model is not None and len(engines_needed(methods)) > 1:
        raise fail("--model takes one model: use it with --method segmentation or --method landmarks")
    if model is not None and engine == EngineName.litert and model.suffix != ".tflite":
        raise fail(f"--engine litert runs .tflite files, not {model}: convert it first (fetalbio export)")
    from fetalbio.modelinfo import sidecar_path
    from fetalbio.quiet import native_stderr_silenced

    try:
        with native_stderr_silenced():  # TensorFlow's and LiteRT's start-up lines
            engines = {m: load_engine(model, m, engine.value) for m in engines_needed(methods)}
    except ModelError as exc:
        raise fail(str(exc)) from None
    if model is not None and model.suffix == ".tflite" and sidecar_path(model) is None:
        err_console.print(
            f"warning: {model} has no sidecar ({model.with_suffix('.json').name}, written beside it by "
            "fetalbio export): its method is read from its outputs and the defaults are assumed for "
            "everything else (a landmark model's confidence limit, no sha256 check); keep the two together",
            highlight=False,
            markup=False,
        )
    return engines


def _available_methods(method: str, model: Path | None, engine: EngineName) -> tuple[str, ...]:
    """``both`` runs what is shipped: a missing landmark model is said, not fatal."""
    from fetalbio.methods import engines_needed
    from fetalbio.modelinfo import default_engine, default_model_path

    methods = _methods(method)
    if method == "both" and model is None:
        kind = default_engine(engine.value)  # auto: the shipped int8 .tflite when LiteRT is installed
        missing = [m for m in engines_needed(methods) if not default_model_path(m, kind).exists()]
        if missing and len(missing) < len(methods):
            err_console.print(
                f"note: no shipped {', '.join(missing)} model; "
                f"running {', '.join(m for m in methods if m not in missing)} only"
            )
            methods = tuple(m for m in methods if m not in missing)
    return methods


# --- predict's options ---

Inputs = Annotated[
    list[Path] | None,
    typer.Argument(help="Scan files and/or folders (searched recursively).", show_default=False),
]
WriteSr = Annotated[
    bool,
    typer.Option(
        "--sr", help="Write a DICOM SR (TID 5000) per measured DICOM input to sr/.", rich_help_panel=PACS
    ),
]
Dicomweb = Annotated[
    str | None,
    typer.Option(
        "--dicomweb",
        metavar="URL",
        help="A PACS's DICOMweb root (e.g. https://pacs/dicom-web): predict measures its studies instead of "
        "files; sr stores the SRs there with --store-sr.",
        rich_help_panel=PACS,
    ),
]
Study = Annotated[
    list[str] | None,
    typer.Option(
        "--study", metavar="UID", help="Study Instance UID to measure (repeatable).", rich_help_panel=PACS
    ),
]
StudyDate = Annotated[
    str | None,
    typer.Option(help="QIDO study date or range, e.g. 20260101-20261231.", rich_help_panel=PACS),
]
Modality = Annotated[str, typer.Option(help="Series modality to measure ('' for all).", rich_help_panel=PACS)]
PatientId = Annotated[str | None, typer.Option(help="QIDO filter: Patient ID.", rich_help_panel=PACS)]
Accession = Annotated[str | None, typer.Option(help="QIDO filter: accession number.", rich_help_panel=PACS)]
StoreSr = Annotated[
    bool,
    typer.Option(
        "--store-sr",
        help="Store the SRs on the --dicomweb server (STOW-RS); in predict it implies --sr.",
        rich_help_panel=PACS,
    ),
]
Timeout = Annotated[
    float,
    typer.Option(min=1, help="Seconds to wait for the DICOMweb server per request.", rich_help_panel=PACS),
]
RunFolderOut = Annotated[
    Path, typer.Option("--out", help="Run folder (one run per folder).", rich_help_panel=OUTPUTS)
]
PixelSize = Annotated[
    float | None, typer.Option(help="Pixel size in mm (overrides everything).", rich_help_panel=INPUTS)
]
PixelCsvFound = Annotated[
    Path | None,
    typer.Option(
        help="CSV of filename,pixel size(mm) (default: one found in an input folder).", rich_help_panel=INPUTS
    ),
]
RequireMm = Annotated[
    bool,
    typer.Option("--require-mm", help="A scan without a pixel size is an error row.", rich_help_panel=INPUTS),
]
ResumeRun = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Finish an interrupted run in --out (same models and options).",
        rich_help_panel=OUTPUTS,
    ),
]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace the run in a non-empty --out.", rich_help_panel=OUTPUTS)
]
Overlays = Annotated[
    bool, typer.Option("--overlays/--no-overlays", help="Write overlay PNGs.", rich_help_panel=OUTPUTS)
]
SaveMasks = Annotated[
    bool, typer.Option("--save-masks", help="Write segmentation masks.", rich_help_panel=OUTPUTS)
]
ScansPerCall = Annotated[int, typer.Option(min=1, help="Scans per model call.", rich_help_panel=MODEL)]
GaCsv = Annotated[
    Path | None,
    typer.Option(
        help="CSV of filename,ga_weeks (or ga_days): adds INTERGROWTH-21st z-scores and centiles.",
        rich_help_panel=INPUTS,
    ),
]
Frames = Annotated[
    str | None,
    typer.Option(
        help="A cine (multi-frame DICOM, multi-page TIFF, animated PNG/WebP): the frames to measure, "
        "e.g. 0,3,7 (default: all); the surest is reported.",
        rich_help_panel=INPUTS,
    ),
]
Quiet = Annotated[
    bool, typer.Option("--quiet", "-q", help="No table, only the summary line.", rich_help_panel=OUTPUTS)
]


@app.command("predict")
def predict(
    inputs: Inputs = None,
    out: RunFolderOut = Path("fetalbio-out"),
    method: MethodOpt = "fused",
    model: ModelPath = None,
    engine: EngineOpt = EngineName.auto,
    pixel_size: PixelSize = None,
    pixel_csv: PixelCsvFound = None,
    require_mm: RequireMm = False,
    resume: ResumeRun = False,
    overwrite: Overwrite = False,
    overlays: Overlays = True,
    save_masks: SaveMasks = False,
    batch_size: ScansPerCall = defaults.PREDICT_BATCH,
    ga_csv: GaCsv = None,
    frames: Frames = None,
    quiet: Quiet = False,
    sr: WriteSr = False,
    dicomweb: Dicomweb = None,
    study: Study = None,
    study_date: StudyDate = None,
    modality: Modality = "US",
    patient_id: PatientId = None,
    accession: Accession = None,
    store_sr: StoreSr = False,
    timeout: Timeout = 30.0,
) -> None:
    """Measure BPD, OFD and HC on scans or a PACS study; write a run folder (measurements, report.html,
    overlays, and with --sr DICOM SRs)."""
    from fetalbio.hospital import REMOTE_FOLDER, SrOptions
    from fetalbio.io import find_scans
    from fetalbio.predict import PredictOptions

    ga_map = _check_predict_options(resume, overwrite, pixel_size, pixel_csv, ga_csv)
    if store_sr and not dicomweb:
        raise fail("--store-sr stores on the --dicomweb server: give --dicomweb URL (or use `fetalbio sr`)")
    if dicomweb and inputs:
        raise fail("give scan files/folders or --dicomweb URL, not both")
    if dicomweb and pixel_csv:
        raise fail("--pixel-csv names files; a DICOMweb instance carries its spacing (or give --pixel-size)")
    if not dicomweb and not inputs:
        raise fail("give scan files or folders to measure, or --dicomweb URL --study UID")
    if sr or store_sr or dicomweb:
        _require_dicom_extra()
    methods = _available_methods(method, model, engine)
    remote = _find_remote(dicomweb, study, study_date, modality, patient_id, accession, timeout)
    inputs = [out / REMOTE_FOLDER] if remote else inputs
    paths, missing = ([], []) if remote else find_scans(inputs)  # checked before any model loads
    paths, n_in_out = _without_run_outputs(paths, inputs, out)
    if not paths and not remote:  # nothing to measure: say why at once, before any model loads
        why = f" (the {n_in_out} found are inside --out {out}, where this run writes)" if n_in_out else ""
        raise fail(
            "; ".join(str(e) for e in missing) or "no scans found in " + ", ".join(map(str, inputs)) + why
        )
    csv_map = _pixel_csv_for(inputs, pixel_csv, pixel_size, paths) if not remote else None
    opts = PredictOptions(
        methods=methods,
        pixel_size_mm=pixel_size,
        pixel_csv=csv_map,
        require_mm=require_mm,
        overlays=overlays,
        save_masks=save_masks,
        batch_size=batch_size,
        ga_weeks=ga_map,
        frames=_frame_list(frames),
    )
    if opts.frames is not None and not remote:
        _say_missing_frames(paths, opts.frames)
    mode = "resume" if resume else "overwrite" if overwrite else "new"
    sr_opts = SrOptions(write=sr or store_sr, store=remote.pacs if remote and store_sr else None)
    code = _run_predict(inputs, paths, missing, out, opts, mode, model, engine, quiet, remote, sr_opts)
    raise typer.Exit(code)


def _require_dicom_extra() -> None:
    import importlib.util

    missing = [m for m in ("highdicom", "dicomweb_client") if importlib.util.find_spec(m) is None]
    if missing:
        raise fail(
            f"DICOM SR and DICOMweb need {', '.join(missing)}: pip install '.[dicom]' (the fetalbio folder)"
        )


def _find_remote(url, study, study_date, modality, patient_id, accession, timeout):
    """The DICOMweb source's instances, asked before any model loads (None without --dicomweb)."""
    if not url:
        return None
    from fetalbio.dicomweb import DicomwebError, Query
    from fetalbio.hospital import find_remote

    query = Query(tuple(study or ()), modality or None, study_date, patient_id, accession)
    try:
        remote = find_remote(url, query, timeout)
    except DicomwebError as exc:
        raise fail(str(exc)) from None
    err_console.print(f"{len(remote.refs)} instances on {remote.pacs.where}", highlight=False, soft_wrap=True)
    return remote


def _frame_list(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        frames = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise fail(f"--frames {text!r}: expected frame numbers such as 0,3,7") from None
    if not frames or frames[0] < 0:
        raise fail(f"--frames {text!r}: expected frame numbers from 0")
    return frames


def _say_missing_frames(paths: list[Path], frames: list[int]) -> None:
    """A warning for each cine that lacks some of the frames --frames names (those it has are measured;
    one that has none of them gets an error row when read)."""
    from fetalbio.io import count_frames

    for p in paths:
        n = count_frames(p)
        gone = [f for f in frames if f >= n]
        if n > 1 and gone and len(gone) < len(frames):
            err_console.print(
                f"[yellow]warning:[/] {escape(str(p))} has {n} frames (0-{n - 1}): --frames "
                f"{','.join(map(str, gone))} not measured there",
                highlight=False,
                markup=True,
            )


def _check_predict_options(resume: bool, overwrite: bool, pixel_size, pixel_csv, ga_csv) -> dict | None:
    """Options that contradict or are out of range: one line, before anything is read. Returns the GA map."""
    if resume and overwrite:
        raise fail("give --resume or --overwrite, not both")
    if pixel_size is not None and pixel_csv is not None:
        raise fail("give --pixel-size or --pixel-csv, not both")
    if pixel_size is not None and not defaults.MIN_PIXEL_SIZE_MM <= pixel_size <= defaults.MAX_PIXEL_SIZE_MM:
        raise fail(
            f"--pixel-size {pixel_size}: expected an ultrasound pixel size, "
            f"{defaults.MIN_PIXEL_SIZE_MM}-{defaults.MAX_PIXEL_SIZE_MM} mm"
        )
    if ga_csv is None:
        return None
    from fetalbio.clinical import read_ga_csv
    from fetalbio.io import ScanError

    try:
        return read_ga_csv(ga_csv)
    except ScanError as exc:
        raise fail(str(exc)) from None


def _without_run_outputs(paths: list[Path], inputs: list[Path], out: Path) -> tuple[list[Path], int]:
    """(``paths`` less the files inside ``out`` and inside any other fetalbio run folder (one holding a
    journal) found while searching an input folder, how many were inside ``out``): a run folder's
    overlays and masks are outputs, not scans. A file named as an input itself is kept. Says how many
    other runs' files were left out, and where."""
    from fetalbio.runfolder import JOURNAL

    named = {os.path.normpath(i) for i in inputs}
    roots = [Path(os.path.realpath(i)) for i in inputs if i.is_dir()]
    real_out = os.path.realpath(out)
    runs: dict[Path, bool] = {}

    def in_a_run(p: Path) -> Path | None:
        real = Path(os.path.realpath(p))  # realpath: a link loop is an error row later, not an exception
        if real.is_relative_to(real_out):
            return Path(out)
        for parent in real.parents:
            if not any(parent.is_relative_to(r) for r in roots):
                return None
            if parent not in runs:
                runs[parent] = (parent / JOURNAL).is_file()
            if runs[parent]:
                return parent
        return None

    kept, left = [], {}
    for p in paths:
        run = None if os.path.normpath(p) in named else in_a_run(p)
        if run is None:
            kept.append(p)
        else:
            left[run] = left.get(run, 0) + 1
    n_in_out = left.pop(Path(out), 0)
    for run, n in left.items():
        shown = os.path.relpath(run) if not os.path.relpath(run).startswith("..") else str(run)
        err_console.print(
            f"[yellow]warning:[/] {n} files in {escape(shown)} left out: a fetalbio run folder's outputs",
            highlight=False,
            markup=True,
        )
    return kept, n_in_out


def _folders_searched(inputs: list[Path], paths: list[Path]) -> set[Path]:
    """The input folders and every folder between one of them and a scan found in it."""
    roots = [i for i in inputs if i.is_dir()]
    out = set(roots)
    for p in paths:
        for root in roots:
            if p.is_relative_to(root):
                parts = p.relative_to(root).parts[:-1]
                out.update(root.joinpath(*parts[:k]) for k in range(1, len(parts) + 1))
    return out


def _pixel_csv_for(
    inputs: list[Path], pixel_csv: Path | None, pixel_size: float | None, paths: list
) -> dict | None:
    """The pixel-size map: --pixel-csv, else a pixel-size CSV found in an input folder (said aloud)."""
    from fetalbio.datasets import find_pixel_csv
    from fetalbio.io import ScanError, read_pixel_csv

    if pixel_size is not None:
        return None
    if pixel_csv:  # one table the user names: by file name, for every input
        found, folders = [pixel_csv], [None]
    else:  # each input folder's own table and its subfolders', for the scans under that folder only
        # (two sites' CSVs may name the same file names with different pixel sizes); a deeper one wins
        dirs = sorted(_folders_searched(inputs, paths), key=lambda i: len(i.parts))
        pairs: list[tuple[Path, Path]] = []
        try:
            for d in dirs:
                c = find_pixel_csv(d)
                # a subfolder that finds its parent's table (beside it) adds nothing
                if c and not any(c == c0 and d.is_relative_to(d0) for c0, d0 in pairs):
                    pairs.append((c, d))
        except ScanError as exc:
            raise fail(str(exc)) from None
        found, folders = [c for c, _ in pairs], [i for _, i in pairs]
    csv_map: dict[str, float] = {}
    for c, folder in zip(found, folders, strict=True):
        try:
            table = read_pixel_csv(c)
        except ScanError as exc:
            raise fail(str(exc)) from None
        if folder is None:
            csv_map.update(table)
        else:
            csv_map.update(
                {str(p): table[p.name] for p in paths if p.name in table and p.is_relative_to(folder)}
            )
            err_console.print(f"pixel sizes from {c} (for the scans in {folder})", highlight=False)
    if found and paths and not any(p.name in csv_map or str(p) in csv_map for p in paths):
        err_console.print(
            f"[yellow]warning:[/] {escape(', '.join(map(str, found)))} names none of the {len(paths)} scans; "
            "they are measured in pixels unless their files carry a spacing",
            highlight=False,
            markup=True,
        )
    return csv_map or None


def _run_predict(
    inputs, paths, missing, out: Path, opts, mode: str, model, engine, quiet: bool, remote=None, sr_opts=None
) -> int:
    """Open the run folder, load the models, measure (journal, resume, signals), write the outputs."""
    import datetime as dt
    import signal

    from fetalbio.predict import BatchRun, calibration_identities, model_identity, options_for, write_outputs
    from fetalbio.runfolder import OutputNames, RunFolder, RunFolderError

    folder, created = RunFolder(out, mode), not out.exists()
    try:
        folder.open()
    except RunFolderError as exc:
        raise fail(str(exc)) from None
    try:
        started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        engines = _load_engines(opts.methods, model, engine)
        ids = {m: model_identity(e) for m, e in engines.items()} | calibration_identities(opts.methods)
        kind = ",".join(sorted({type(e).__name__.removesuffix("Engine").lower() for e in engines.values()}))
        options = options_for(opts, {m: sha for m, (_, sha) in ids.items()})
        run = BatchRun(folder, OutputNames(inputs), options, {m: i for m, (i, _) in ids.items()}, kind)
        if mode == "resume":
            run.done = folder.done(options)
            if remote is None:  # a PACS run's files are retrieved below: nothing to compare yet
                _say_what_resume_leaves(folder, options, paths)
            err_console.print(
                f"resuming: {len(run.done)} scans in the journal, measured with these models and options "
                "(a file changed since is measured again)"
            )
        if remote is not None:
            paths, missing = _fetch(remote, out, quiet)
        rows = _measure(paths, missing, engines, out, opts, run, quiet)
        info = _run_info(started, engines, ids, kind, opts, mode) | {"options_hash": options}
        if remote is not None:
            info["dicomweb"] = remote.info()
        try:
            summary = write_outputs(out, rows, info)
        except OSError as exc:  # a full disk, a quota, a folder where a file goes: nothing half-written
            name = exc.filename2 or exc.filename or out  # an atomic write names its target second
            raise fail(
                f"{name}: cannot write the results ({exc.strerror or exc}); the journal keeps the measured "
                "scans: fix that and rerun with --resume",
                code=1,
            ) from None
    except BaseException:  # refused (a damaged model) or stopped before anything was written: no folder
        folder.close()
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    finally:
        folder.close()
    _print_measurements(rows, quiet)
    console.print(
        f"{summary['n_scans']} scans: {summary['n_ok']} ok, {summary['n_review']} review, "
        f"{summary['n_failed']} failed"
        + (f", {summary['n_px']} in pixels (no pixel size)" if summary["n_px"] else "")
        + f" -> {out / 'measurements.csv'} ({kind})",
        highlight=False,
    )
    not_stored = _srs(out, rows, info, sr_opts)
    if run.stop:
        left = len(paths) - summary["n_scans"] + len(missing)
        err_console.print(
            f"interrupted: the measured scans are kept; {left} left, rerun with --resume to finish"
        )
        return 130 if run.stop[0] == signal.SIGINT else 143
    # a scan failed when no method measured it (the summary line counts scans so: one method's error row
    # beside another's numbers is a review)
    return 1 if summary["n_failed"] or not_stored else 0


def _say_what_resume_leaves(folder, options: str, paths: list) -> None:
    """--resume finishes the run it is given: say when the journal holds scans measured with other models
    or options (measured again) or scans that are not among these inputs (left out of the table)."""
    same, other = folder.journal_paths(options)
    given = {str(p) for p in paths}
    redo, gone = len(other & given), len((same | other) - given)
    if redo:
        err_console.print(
            f"[yellow]warning:[/] {redo} scans in the journal were measured with other models or options: "
            "measured again",
            highlight=False,
            markup=True,
        )
    if gone:
        err_console.print(
            f"[yellow]warning:[/] {gone} scans in the journal are not among these inputs: left out of the "
            "table (resume with the first run's inputs to keep them)",
            highlight=False,
            markup=True,
        )


def _fetch(remote, out: Path, quiet: bool):
    """Retrieve a DICOMweb source into the run folder: (files, missing-like errors)."""
    from contextlib import nullcontext

    from fetalbio.hospital import fetch_remote
    from fetalbio.io import ScanError

    spinner = err_console.status(f"retrieving {len(remote.refs)} instances", spinner="dots")
    with nullcontext() if quiet else spinner:
        paths, failed = fetch_remote(remote, out)
    for ref, why in remote.skipped:
        err_console.print(f"skipped {ref.name}: {why}", highlight=False, soft_wrap=True)
    return paths, [ScanError(Path(name), why) for name, why in failed]


def _measure(paths, missing, engines, out: Path, opts, run, quiet: bool) -> list[dict]:
    """The rows of a run: error rows for what could not be read, then every scan measured."""
    import signal

    from rich.progress import Progress

    from fetalbio.modelinfo import ModelError
    from fetalbio.predict import error_row, predict_paths

    handlers = {
        sig: signal.signal(sig, lambda n, f: run.stop.append(n)) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        with Progress(console=err_console, transient=True, disable=quiet) as bar:
            task = bar.add_task("measuring", total=len(paths))
            rows = [error_row(str(e.path), m, e.reason) for e in missing for m in opts.methods]
            try:
                rows += predict_paths(paths, engines, out, opts, lambda n: bar.advance(task, n), run)
            except ModelError as exc:  # a model that fails while running fails every scan: stop, say so
                raise fail(
                    f"{exc} (the scans measured before are kept: fix the model, then --resume)"
                ) from None
        if opts.ga_weeks:
            from fetalbio.clinical import add_ga_columns

            for line in add_ga_columns(rows, opts.ga_weeks):
                err_console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False, markup=True)
    finally:
        for sig, h in handlers.items():
            signal.signal(sig, h)
    return rows


def _srs(out: Path, rows: list[dict], info: dict, sr_opts) -> int:
    """--sr / --store-sr: write (and store) the SRs; returns how many could not be stored."""
    if sr_opts is None or not sr_opts.write:
        return 0
    from fetalbio.hospital import finish_srs

    lines, not_stored = finish_srs(out, rows, info, sr_opts)
    for line in lines:
        out_console = err_console if line.startswith(("not stored", "no SR:")) else console
        out_console.print(line, highlight=False, soft_wrap=True)  # UIDs and paths are never wrapped
    return not_stored


def _run_info(started: str, engines: dict, ids: dict, kind: str, opts, mode: str) -> dict:
    """run.json: who measured what, how, when."""
    import datetime as dt
    import importlib.metadata
    import os
    import sys

    try:
        version = importlib.metadata.version("fetalbio")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "fetalbio_version": version,
        "command": sys.argv,
        "cwd": os.getcwd(),  # the rows' relative paths are relative to it (fetalbio sr reads the sources)
        "started": started,
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": mode,
        "engine": kind,
        "threads": os.cpu_count(),
        "model": ", ".join(i for i, _ in ids.values()),
        "models": {
            m: {"file": str(e.path), "sha256": ids[m][1], "id": ids[m][0], "method": e.method}
            for m, e in engines.items()
        },
        "calibrations": {k: {"id": i, "sha256": sha} for k, (i, sha) in ids.items() if k not in engines},
        "options": {k: v for k, v in vars(opts).items() if k not in ("pixel_csv", "ga_weeks")}
        | {"pixel_csv_entries": len(opts.pixel_csv or {})},
    }


def _with_interval(v: float, lo: float, hi: float) -> str:
    """A value with its 90 % interval, compact: ``168.9 ±4.4 mm`` (``12.0 mm (0-40)`` when clipped at 0)."""
    if abs((hi - v) - (v - lo)) < 0.05:
        return f"{v:.1f} ±{hi - v:.1f} mm"
    return f"{v:.1f} mm ({lo:.0f}-{hi:.0f})"


def _print_errors(rows: list[dict]) -> None:
    """One line per file (and frame of a cine) and reason: the methods it concerns are named unless it is
    every method's (a file that cannot be read fails each method's row alike)."""
    per_scan: dict[tuple, int] = {}
    frames: dict[str, set] = {}
    errors: dict[tuple, list[str]] = {}
    for r in rows:
        scan = (r["file"], r.get("frame") or 0)
        per_scan[scan] = per_scan.get(scan, 0) + 1
        frames.setdefault(r["file"], set()).add(scan[1])
        if r["status"] == "error":
            errors.setdefault((*scan, r["error"]), []).append(r["method"])
    for (file, frame, why), names in errors.items():
        where = escape(file) + (f" frame {frame}" if len(frames[file]) > 1 else "")
        who = "" if len(names) == per_scan[(file, frame)] else escape(", ".join(names)) + ": "
        err_console.print(f"[red]{where}[/]: {who}{escape(why)}", highlight=False, markup=True)


def _print_measurements(rows: list[dict], quiet: bool) -> None:
    from rich.table import Table

    if quiet:
        return
    _print_errors(rows)
    ok = [r for r in rows if r["status"] in ("ok", "review")]  # review rows keep their numbers
    if not ok or len(ok) > 50:
        return
    t = Table(
        "file",
        "method",
        "status",
        "HC",
        "BPD",
        "OFD",
        "CI",
        "GA (Hadlock)",
        "flags / review",
        box=None,
        header_style="bold",
    )
    for col in t.columns[:8]:  # values never wrap ("124.0 / mm"); flags and reasons may
        col.no_wrap = True
    from fetalbio import methods

    # a file's name alone, unless another file of the table has it too (IMG0001.dcm in two folders)
    by_file: dict[str, list] = {}
    for r in ok:
        by_file.setdefault(r["file"], []).append(r)
    names = [Path(f).name for f in by_file]
    shown = {f: Path(f).name if names.count(Path(f).name) == 1 else f for f in by_file}
    for r in ok:
        u = r["unit"]

        def f(k: str, r=r, u=u) -> str:
            v = r.get(f"{k}_{u}")
            return "" if v is None else f"{v:.1f} {u}"

        ga = r.get("ga_hadlock_hc_weeks")
        lo, hi = r.get("hc_mm_low"), r.get("hc_mm_high")  # the fused row's 90 % prediction interval
        t.add_row(
            shown[r["file"]],
            methods.get(r["method"]).short_name,
            Text("review", style="yellow") if r["status"] == "review" else "ok",
            f("hc") if u != "mm" or lo is None or hi is None else _with_interval(r["hc_mm"], lo, hi),
            f("bpd"),
            f("ofd"),
            f"{r['cephalic_index']:.1f}" if r.get("cephalic_index") else "",
            f"{ga:.1f} w" if ga else "",
            "; ".join(filter(None, [r.get("flags", ""), r.get("review_reasons", "")])),
        )
    console.print(t)


@app.command("sr")
def sr_command(
    run_folder: Annotated[Path, typer.Argument(help="A predict run folder (measurements.json, run.json).")],
    dicomweb: Dicomweb = None,
    store_sr: StoreSr = False,
    timeout: Timeout = 30.0,
) -> None:
    """Write a DICOM SR (TID 5000) for each measured DICOM input of a finished run; --store-sr stores them."""
    import json

    from fetalbio.dicomweb import DicomwebError, Pacs
    from fetalbio.hospital import SrOptions

    if store_sr and not dicomweb:
        raise fail("--store-sr stores on the --dicomweb server: give --dicomweb URL")
    _require_dicom_extra()
    try:
        rows = json.loads((run_folder / "measurements.json").read_text())["rows"]
        info = json.loads((run_folder / "run.json").read_text())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise fail(
            f"{run_folder}: not a finished predict run folder ({getattr(exc, 'strerror', None) or exc})"
        ) from None
    try:
        pacs = Pacs(dicomweb, timeout) if store_sr else None
    except DicomwebError as exc:
        raise fail(str(exc)) from None
    raise typer.Exit(1 if _srs(run_folder, rows, info, SrOptions(True, pacs)) else 0)


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
    """Compare a model with the annotations: Dice, Hausdorff, HC/BPD/OFD and point errors in mm (and
    which annotations lie off the skull echo)."""
    from fetalbio.evaluate import evaluate_dataset, print_summary, read_val_names, write_report
    from fetalbio.io import ScanError
    from fetalbio.writers import write_json_atomic

    check_output(json_path, "--json")
    check_output(report, "--report", folder=True)
    try:
        read_val_names(split) if split else None  # a bad split file: said before any model loads
    except ScanError as exc:
        raise fail(str(exc)) from None
    methods = _available_methods(method, model, engine)
    engines = _load_engines(methods, model, engine)
    out: dict = {}
    try:
        for m in methods:
            from fetalbio.methods import engines_needed

            needed = {n: engines[n] for n in engines_needed((m,))}
            summary, rows = evaluate_dataset(
                dataset, needed, pixel_csv=pixel_csv, split_file=split, limit=limit, method=m
            )
            print_summary(summary, m, console)
            _say_what_evaluate_left(summary, rows, pixel_csv)
            from fetalbio.predict import model_identity

            # which model files were scored (<folder>/<file>@<sha256[:12]>), so a report names its model
            models = {n: model_identity(e)[0] for n, e in needed.items()}
            out[m] = {"models": models, "summary": summary, "rows": rows}
            if report:
                for p in write_report(report / m if len(methods) > 1 else report, rows, summary, dataset):
                    console.print(f"wrote {p}")
                if not any(r["status"] == "ok" and r.get("unit") == "mm" for r in rows):
                    err_console.print(
                        "[yellow]warning:[/] the report's plots and worst-case overlays need figures in mm: "
                        "only its summary.json was written (no pixel sizes)",
                        highlight=False,
                        markup=True,
                    )
    except ScanError as exc:
        raise fail(str(exc)) from None
    if json_path:
        write_json_atomic(json_path, out[methods[0]] if len(methods) == 1 else out)
        console.print(f"wrote {json_path}")
    raise typer.Exit(1 if any(o["summary"]["n_failed"] for o in out.values()) else 0)


def _say_what_evaluate_left(summary: dict, rows: list[dict], pixel_csv: Path | None) -> None:
    """The failed scans with their reasons, the scans without an annotation, the scans in pixels."""
    for r in rows:
        if r["status"] == "error":
            err_console.print(
                f"[red]{escape(r['file'])}[/]: {escape(r['error'])}", highlight=False, markup=True
            )
    from fetalbio.writers import first_names

    if names := summary.get("unannotated"):
        err_console.print(
            f"[yellow]warning:[/] {len(names)} scans without an annotation were left out "
            f"({escape(first_names(names))})",
            highlight=False,
            markup=True,
        )
    if summary["n_px_only"]:
        why = f"{pixel_csv} names none of them" if pixel_csv else "give --pixel-csv"
        err_console.print(
            f"[yellow]warning:[/] {summary['n_px_only']} scans have no pixel size: their figures are in "
            f"pixels (`_px` in --json), apart from the mm figures; {escape(why)}",
            highlight=False,
            markup=True,
        )


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
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing FILE.tflite and its FILE.json.")
    ] = False,
) -> None:
    """Convert a Keras model to TFLite for LiteRT (no TensorFlow ops), then verify it against Keras.

    The preprocessing the model needs travels in FILE.json beside FILE.tflite; both are written only
    after the check.
    """
    quiet_tensorflow()
    from fetalbio.export import ExportError, export_model, print_verification
    from fetalbio.quiet import native_stderr_silenced

    check_output(out, "--out")
    check_output(json_path, "--json")
    if json_path is not None and os.path.abspath(json_path) in {
        os.path.abspath(out),
        os.path.abspath(out.with_suffix(".json")),
    }:  # the report written over the model it describes, or over its sidecar (the sha256 check's source)
        raise fail(f"--json {json_path}: that is the exported model's own file; give another path")
    there = [p for p in (out, out.with_suffix(".json")) if out.suffix == ".tflite" and p.exists()]
    if there and not overwrite:
        raise fail(f"--out {out}: {there[0]} exists; use --overwrite to replace it, or another --out")

    try:
        with (
            console.status("exporting: conversion, then verification with LiteRT (up to a minute)..."),
            native_stderr_silenced(),  # the converter's and LiteRT's native lines (--verbose shows them)
        ):
            report = export_model(
                model, _methods(method)[0], out, quantize.value, calibration, console=console
            )
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
            method="all",  # the default fused row with its interval and status, and the two it combines
            model=None,
            engine=EngineName.auto,
            pixel_size=None,
            overlays=True,
            save_masks=False,
            batch_size=8,
            quiet=False,
            require_mm=False,
            resume=False,
            overwrite=True,  # the demo's own folder: a rerun replaces it
        )
    except typer.Exit as done:
        import csv

        with open(out / "scans" / "truth.csv", newline="") as f:
            truth = {r["filename"]: r for r in csv.DictReader(f)}
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
