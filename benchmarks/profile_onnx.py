"""Where ONNX models' time goes in onnxruntime: images/s side by side, and each operator's share.

Runs each file on random 0-255 crops at each batch size: first the images/s of every file
(best of alternating rounds, profiler off) with its ratio to the first file, then, with
onnxruntime's profiler on, the kernel time per operator type, largest first. This is how
the int8 export's layout changes were found and measured (RESULTS.md, "int8 inference"):
e.g. `python benchmarks/profile_onnx.py export/alexnet.onnx export/alexnet.int8.onnx`.
"""

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def get_args_parser():
    """Return the argument parser of this script."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "models",
        nargs="+",
        help="ONNX files written by keras-alexnet-export-onnx; the first "
        "is the baseline of the ratios",
    )
    p.add_argument(
        "--batch-sizes", default="1,32", help="comma-separated batch sizes (default: %(default)s)"
    )
    p.add_argument(
        "--size", type=int, default=None, help="crop size (default: the file's metadata)"
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=2.0,
        help="time and profile each file at each batch this long (default: %(default)s)",
    )
    p.add_argument(
        "--rounds", type=int, default=3, help="alternating timing rounds (default: %(default)s)"
    )
    p.add_argument("--top", type=int, default=12, help="operator types to list (default: 12)")
    return p


def _session(path, profile_prefix=None):
    """An onnxruntime CPU session of `path`, profiling into `profile_prefix` when given."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def images_per_second(session, x, seconds):
    """Images/s of `session` on the batch `x`: two warm-up runs, then >= `seconds` of runs."""
    feed = {session.get_inputs()[0].name: x}
    for _ in range(2):
        session.run(None, feed)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or calls < 2:
        session.run(None, feed)
        calls += 1
    return len(x) * calls / (time.perf_counter() - start)


def operator_shares(path, x, seconds, workdir):
    """{op type: share of kernel time in %} of `path` on the batch `x`, profiler on."""
    session = _session(path, Path(workdir) / f"{Path(path).stem}-{len(x)}")
    images_per_second(session, x, seconds)
    times = collections.Counter()
    for event in json.loads(Path(session.end_profiling()).read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            times[event["args"].get("op_name", "?")] += event["dur"]
    total = sum(times.values()) or 1
    return {op: 100 * t / total for op, t in times.most_common()}


def speeds(paths, x, seconds, rounds):
    """{path: best images/s over `rounds` alternating rounds} on the batch `x`."""
    sessions = {path: _session(path) for path in paths}
    best = {}
    for round_index in range(rounds):
        for path in paths if round_index % 2 == 0 else paths[::-1]:
            speed = images_per_second(sessions[path], x, seconds)
            best[path] = max(best.get(path, 0.0), speed)
    return best


def main(args):
    """Time the files side by side at each batch size, then print each operator's share."""
    from keras_alexnet.runtime import load_metadata

    size = args.size or load_metadata(args.models[0]).input_size
    with tempfile.TemporaryDirectory() as workdir:
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            x = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3))
            x = x.astype("float32")
            measured = speeds(args.models, x, args.seconds, args.rounds)
            base = measured[args.models[0]]
            print(f"\nbatch {batch}\n| file | img/s | vs {Path(args.models[0]).name} |")
            print("|---|---|---|")
            for path, speed in measured.items():
                print(f"| {Path(path).name} | {speed:.1f} | {speed / base:.2f}x |")
            for path in args.models:
                shares = operator_shares(path, x, args.seconds, workdir)
                print(f"\n{Path(path).name}, batch {batch}, share of kernel time")
                print("| operator | share |\n|---|---|")
                for op, share in list(shares.items())[: args.top]:
                    print(f"| {op} | {share:.1f} % |")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
