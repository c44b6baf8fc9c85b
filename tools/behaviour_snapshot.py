"""Snapshot every measurement the shipped models make, to prove a refactor changes no result.

Runs the CLI (so it holds across internal changes) over the 20-scan regression sets of both shipped
models and over the synthetic demo scans, with the Keras and the int8 LiteRT engines, plus
``evaluate`` on the regression sets; writes every row to one JSON file. ``--compare OLD`` checks a
new snapshot against an old one: every number within ``--tol`` (default 1e-6), every text equal.

    python tools/behaviour_snapshot.py --out /tmp/before.json            # before the change
    python tools/behaviour_snapshot.py --out /tmp/after.json --compare /tmp/before.json
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METHODS = ("segmentation", "landmarks")


def _fetalbio(*args: str) -> None:
    cmd = [sys.executable, "-m", "fetalbio.cli", *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-2000:]}")


def _rows(csv_path: Path) -> list[dict]:
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


def snapshot(data_root: Path) -> dict:
    train = data_root / "hc18" / "training_set"
    names = sorted(
        {n for m in METHODS for n in json.loads((REPO / "fetalbio" / "shipped" / m / "regression.json").read_text())["val"]}
    )
    out: dict = {"scans": names}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _fetalbio("demo", "--out", str(tmp / "demo"))  # draws the synthetic scans (seeded)
        inputs = {
            "hc18": (
                [str(train / n) for n in names],
                ["--pixel-csv", str(train.parent / "training_set_pixel_size_and_HC.csv")],
            ),
            "synthetic": (
                [str(tmp / "demo" / "scans")],
                ["--pixel-csv", str(tmp / "demo" / "scans" / "pixel_size.csv")],
            ),
        }
        for key, (paths, extra) in inputs.items():
            for engine in ("keras", "litert"):
                for method in METHODS:
                    model = (
                        []
                        if engine == "keras"
                        else ["--model", str(REPO / "fetalbio" / "shipped" / method / "model_int8.tflite")]
                    )
                    dest = tmp / f"{key}-{engine}-{method}"
                    _fetalbio(
                        "predict",
                        *paths,
                        *extra,
                        "--method",
                        method,
                        "--engine",
                        engine,
                        *model,
                        "--out",
                        str(dest),
                        "--no-overlays",
                        "-q",
                    )
                    rows = _rows(dest / "measurements.csv")
                    for r in rows:  # temporary folders differ between runs
                        r["file"] = Path(r["file"]).name
                    out[f"predict/{key}/{engine}/{method}"] = sorted(rows, key=lambda r: r["file"])
        for method in METHODS:
            dest = tmp / f"eval-{method}.json"
            _fetalbio(
                "evaluate",
                str(train),
                "--method",
                method,
                "--split",
                str(REPO / "fetalbio" / "shipped" / method / "regression.json"),
                "--json",
                str(dest),
            )
            out[f"evaluate/{method}"] = json.loads(dest.read_text())
    return out


def _compare(a, b, path: str, tol: float, problems: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in b:
                problems.append(f"{path}/{k}: missing in the new snapshot")
                continue
            if k not in a:  # a new key (e.g. a new count) is an addition, not a changed result
                print(f"added: {path}/{k} = {b[k]!r}")
                continue
            _compare(a[k], b[k], f"{path}/{k}", tol, problems)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            problems.append(f"{path}: {len(a)} vs {len(b)} items")
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            _compare(x, y, f"{path}[{i}]", tol, problems)
    else:
        try:
            fa, fb = float(a), float(b)
        except (TypeError, ValueError):
            if a != b:
                problems.append(f"{path}: {a!r} vs {b!r}")
            return
        if math.isnan(fa) and math.isnan(fb):
            return
        if not (abs(fa - fb) <= tol or fa == fb):
            problems.append(f"{path}: {a!r} vs {b!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--compare", type=Path)
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = ap.parse_args()
    snap = snapshot(args.data)
    args.out.write_text(json.dumps(snap, indent=1))
    n = sum(len(v) for k, v in snap.items() if k.startswith("predict/"))
    print(f"wrote {args.out}: {n} predict rows, {len(snap['scans'])} HC18 scans")
    if args.compare:
        problems: list[str] = []
        _compare(json.loads(args.compare.read_text()), snap, "", args.tol, problems)
        for p in problems[:50]:
            print("DIFF", p)
        print(f"{len(problems)} differences (tolerance {args.tol})")
        raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    main()
