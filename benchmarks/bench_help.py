"""How long each command takes to answer `--help`, against importing TensorFlow in the same run.

Each command runs as its console script does (`keras_alexnet.commands.run_<name>`) in a
fresh Python process, `--repeats` times; the table shows the median wall time. The
baseline is `python -c "import tensorflow"` measured the same way (what every `--help`
cost while the commands imported TensorFlow first), and with --baseline DIR the same
commands from another checkout (e.g. `git archive 2366532 | tar -x -C DIR`).

    python benchmarks/bench_help.py [--baseline DIR] [--repeats 5] [--write]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common  # noqa: E402
from keras_alexnet.commands import COMMANDS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TITLE = "Command start-up (--help)"


def seconds(code, root, repeats):
    """Median wall seconds of `python -c code` run in `root` (its package comes first)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, cwd=root, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def help_code(name):
    """Python that runs command `name` with --help as its console script does."""
    return (
        f"import sys; sys.argv = ['{name}', '--help']\n"
        f"from keras_alexnet.commands import run_{name}\nrun_{name}()"
    )


def measure(args):
    """Rows (command, ours, baseline or None) and the TensorFlow import's time."""
    tensorflow = seconds("import tensorflow", ROOT, args.repeats)
    rows = []
    for name in COMMANDS:
        ours = seconds(help_code(name), ROOT, args.repeats)
        before = seconds(help_code(name), args.baseline, args.repeats) if args.baseline else None
        rows.append((name, ours, before))
    return rows, tensorflow


def table(rows, tensorflow, baseline):
    """The Markdown table and a summary line."""
    head = "| command | --help (s) | / import tensorflow |"
    rule = "|---|---|---|"
    if baseline:
        head, rule = head + f" {baseline} (s) |", rule + "---|"
    lines = [head, rule]
    for name, ours, before in rows:
        line = f"| {name} | {ours:.2f} | {ours / tensorflow:.2f} |"
        lines.append(line + (f" {before:.2f} |" if before is not None else ""))
    slowest = max(ours for _, ours, _ in rows)
    lines.append("")
    lines.append(f"`python -c 'import tensorflow'` in the same run: {tensorflow:.2f} s; the "
                 f"slowest --help: {slowest:.2f} s.")  # fmt: skip
    return "\n".join(lines)


def main():
    """Measure, print, and with --write record the table in RESULTS.md."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", type=Path, default=None,
                   help="another checkout's root to time the same commands from")  # fmt: skip
    p.add_argument("--repeats", type=int, default=5, help="runs per command (median)")
    p.add_argument("--write", action="store_true", help="record the table in RESULTS.md")
    args = p.parse_args()
    rows, tensorflow = measure(args)
    label = f"checkout {args.baseline.name}" if args.baseline else None
    text = table(rows, tensorflow, label)
    print(text)
    if args.write:
        common.update_section(TITLE, f"{common.provenance()}\n\n{text}")


if __name__ == "__main__":
    main()
