"""The README's quick-start training, run several times: how much its accuracy varies.

Each run is the same command (`python scripts/train.py --model alexnet --strategy
mirrored`, seed 0) in a fresh run directory, or, with `--seeds`, the command with each
seed. Without `--deterministic` TensorFlow does not promise that a run repeats (its
multi-threaded kernels may add in another order, and another CPU takes other kernels), and
small differences grow over training. This prints each run's best epoch (the one best.keras
holds) and last epoch validation top-1, their mean and spread, and the wall time, and
records them in RESULTS.md ("Training demo") with the machine's CPU flags and load.
With `--precisions float32,mixed_bfloat16` each run is made in each precision (the
same seeds, the same epochs), for bf16's accuracy against float32's ("Training demo by
precision"). Arguments after `--` are appended to the command (e.g. `-- --epochs 1` for a
quick look)."""

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = ("scripts/train.py", "--model", "alexnet", "--strategy", "mirrored")


def get_args_parser():
    """Return the argument parser of this script."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--runs",
        type=int,
        default=3,
        help="how many times to run the command (default: %(default)s)",
    )
    p.add_argument(
        "--seeds",
        default=None,
        help="comma-separated --seed of each run, e.g. 1,2,3 (instead of --runs): how much the "
        "figures move with the seed (default: the README's command, seed 0, every run)",
    )
    p.add_argument(
        "--precisions",
        default=None,
        help="comma-separated --precision of each set of runs, e.g. float32,mixed_bfloat16 "
        "(default: the command's own, float32)",
    )
    p.add_argument(
        "--work-dir",
        default=None,
        help="keep the runs in WORK_DIR/run-<i> (default: a temporary directory)",
    )
    p.add_argument(
        "--no-write",
        action="store_true",
        help="print only; do not update benchmarks/RESULTS.md (default: write)",
    )
    p.add_argument(
        "train_args",
        nargs=argparse.REMAINDER,
        help="after --: flags appended to the command (default: none, the README's command)",
    )
    return p


def run_once(output, extra):
    """Run the demo command (plus `extra` flags) into `output`; return its seconds and history."""
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, *DEMO, *extra, "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"the demo failed:\n{out.stderr[-2000:]}")
    with open(Path(output) / "history.csv", newline="") as f:
        return seconds, list(csv.DictReader(f))


def run_figures(history):
    """(best epoch, its val top-1, last epoch's val top-1) of one run's history rows."""
    best = max(history, key=lambda r: float(r["val_top1"]))  # the first best: best.keras
    return int(best["epoch"]), float(best["val_top1"]), float(history[-1]["val_top1"])


def spread(values):
    """'mean ± sample standard deviation (min-max)' of percentages, for the table."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return (
        f"{100 * statistics.mean(values):.1f} % ± {100 * sd:.1f} "
        f"({100 * min(values):.1f}-{100 * max(values):.1f})"
    )


def main(args):
    """Run the command `args.runs` times (or once per seed), per precision; print, record."""
    extra = [a for a in args.train_args if a != "--"]
    seeds = [int(v) for v in args.seeds.split(",")] if args.seeds else [None] * args.runs
    precisions = args.precisions.split(",") if args.precisions else [None]
    command = "python " + " ".join([
        *DEMO, *extra, *(["--precision", "P"] if args.precisions else []),
        *(["--seed", "S"] if args.seeds else []),
    ])  # fmt: skip
    load_before = os.getloadavg()[0]
    keep = tempfile.TemporaryDirectory() if args.work_dir is None else None
    root = Path(args.work_dir or keep.name)
    rows, summaries, index = [], [], 0
    for precision in precisions:
        shown = precision or "float32"
        bests, lasts, seconds = [], [], []
        for seed in seeds:
            index += 1
            flags = [*extra, *(["--precision", precision] if precision else [])]
            flags += ["--seed", str(seed)] if seed is not None else []
            took, history = run_once(root / f"run-{index}", flags)
            epoch, best, last = run_figures(history)
            rows.append(
                f"| {index} | {shown} | {0 if seed is None else seed} | {100 * best:.2f} % "
                f"(epoch {epoch}) | {100 * last:.2f} % | {took:.0f} s |"
            )
            bests.append(best)
            lasts.append(last)
            seconds.append(took)
            print(rows[-1], flush=True)
        summaries.append(
            f"| mean ± sd (min-max) | {shown} | | {spread(bests)} | {spread(lasts)} | "
            f"{statistics.mean(seconds):.0f} s |"
        )
    if keep is not None:
        keep.cleanup()
    table = "\n".join([
        "| run | precision | seed | best val top-1 (epoch) | last epoch val top-1 | wall time |",
        "|---|---|---|---|---|---|",
        *rows,
        *summaries,
    ])  # fmt: skip
    body = (
        f"{common.provenance(command)} Run by `python {' '.join(sys.argv)}`.\n\n"
        f"{len(seeds)} runs per precision, each in a new run directory; the validation set is "
        "the demo's 364 held-out digits (centre crop). Without `--deterministic` TensorFlow "
        "does not promise that runs repeat. Wall time is the whole command (start-up, data, "
        "epochs, validation, checkpoints). 1-minute load average (other processes share the "
        f"cores) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after.\n\n{table}"
    )
    print(body)
    if not args.no_write:
        common.update_section(
            "Training demo by precision" if args.precisions else "Training demo", body
        )


if __name__ == "__main__":
    main(get_args_parser().parse_args())
