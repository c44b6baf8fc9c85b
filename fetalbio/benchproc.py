"""Whole-process throughput of ``predict``, side by side with an earlier version of fetalbio.

``python -m fetalbio.benchproc [--n 89] [--baseline REF]`` (run by ``make bench``) times, in fresh
processes and alternating the two versions, the command users run over a folder::

    fetalbio predict DIR --engine litert --method segmentation --no-overlays -q

(and, in this version only, with ``--method landmarks`` and ``--method fused``, the default, so each
method's speed stands beside the others) on the first ``--n`` scans of ``<data>/hc18/test_set``
(synthetic scans when it is absent). The
baseline is the git commit ``--baseline`` (default: the last commit before the batch-run work), checked
out with ``git worktree`` into a temporary folder and run from there with the same Python. Wall and
CPU time are medians over ``--repeat`` runs; the ratio is baseline wall time / this version's. The
markdown table replaces the text between ``<!-- bench-process:start -->`` and ``<!-- bench-process:end -->``
in README.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASELINE = "1abaa55"  # main before the refactor and batch-run work (2026-11-26)
START, END = "<!-- bench-process:start -->", "<!-- bench-process:end -->"


def _scans(n: int, tmp: Path) -> tuple[Path, str]:
    """A folder of ``n`` scans (links to HC18 test scans, with their pixel CSV), or synthetic ones."""
    from fetalbio.datasets import default_data_root

    src = default_data_root() / "hc18" / "test_set"
    folder = tmp / "scans"
    folder.mkdir()
    if src.is_dir():
        for p in sorted(src.glob("*.png"))[:n]:
            (folder / p.name).symlink_to(p)
        csv = next(src.glob("*pixel_size*.csv"))
        (folder / "pixel_size.csv").symlink_to(csv)
        return folder, f"the first {n} scans of {src}"
    from fetalbio.synthetic import write_samples

    write_samples(folder, n=n, seed=1)
    return folder, f"{n} synthetic 800x540 scans (HC18 absent)"


def _time(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall s, CPU s of the child) of one command, which must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr[-1500:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run(n: int, baseline: str, repeat: int) -> dict:
    from fetalbio import methods

    with tempfile.TemporaryDirectory(prefix="fetalbio-benchproc-") as tmp_s:
        tmp = Path(tmp_s)
        folder, what = _scans(n, tmp)
        base = tmp / "baseline"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(base), baseline],
            check=True,
            capture_output=True,
        )
        try:
            versions = {  # label -> (code, method): the single methods and the fused default beside them
                f"baseline {baseline}": (base, methods.PRIMARY[0]),
                "this version": (REPO, methods.PRIMARY[0]),
                **{f"this version, {m}": (REPO, m) for m in methods.PRIMARY[1:]},
                "this version, fused (the default)": (REPO, "fused"),
            }
            times: dict[str, list[tuple[float, float]]] = {k: [] for k in versions}
            for i in range(repeat):
                for label, (root, method) in versions.items():
                    env = {k: v for k, v in os.environ.items() if k != "FETALBIO_MODELS"}
                    env["PYTHONPATH"] = str(root)
                    cmd = [
                        sys.executable,
                        "-m",
                        "fetalbio.cli",
                        "predict",
                        str(folder),
                        "--out",
                        str(tmp / f"out-{i}-{abs(hash(label))}"),
                        "--engine",
                        "litert",
                        "--method",
                        method,
                        "--no-overlays",
                        "-q",
                        "--pixel-csv",
                        str(folder / "pixel_size.csv"),
                    ]
                    times[label].append(_time(cmd, env))
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], capture_output=True
            )
    res = {
        k: {"wall_s": statistics.median(w for w, _ in v), "cpu_s": statistics.median(c for _, c in v)}
        for k, v in times.items()
    }
    return {"scans": what, "n": n, "repeat": repeat, "results": res}


def markdown(r: dict) -> str:
    rows = list(r["results"].items())
    base_wall = rows[0][1]["wall_s"]
    lines = [
        f"Whole `predict --engine litert --method M --no-overlays` process over {r['scans']} "
        "(M = segmentation unless the row names another; the speed-up compares segmentation runs), "
        f"median of {r['repeat']} runs each, alternating versions in one run "
        f"(`python -m fetalbio.benchproc`, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores).",
        "",
        "| version | wall (s) | CPU (s) | scans/s | speed-up |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, v in rows:
        lines.append(
            f"| {label} | {v['wall_s']:.2f} | {v['cpu_s']:.2f} | {r['n'] / v['wall_s']:.1f} | "
            + (f"{base_wall / v['wall_s']:.2f}x |" if "," not in label else "- |")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fetalbio.benchproc", description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=89)
    ap.add_argument("--baseline", default=BASELINE)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-readme", action="store_true")
    args = ap.parse_args(argv)
    table = markdown(run(args.n, args.baseline, args.repeat))
    print(table)
    if not args.no_readme:
        from fetalbio.bench import write_readme

        write_readme(REPO / "README.md", table, START, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
