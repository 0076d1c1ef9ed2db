"""AlexNet training-step throughput: Keras/TF (one device, mirrored over 2 CPU replicas) vs a
PyTorch SGD step of the same net, in float32 and bf16, measured in one run, with peak memory
and the matmul peak of each precision.

bf16 is Keras's `mixed_bfloat16` policy (bf16 compute, float32 variables) and PyTorch's
`torch.autocast("cpu", torch.bfloat16)`, eager and under `torch.compile` (inductor). The
bf16 peak is TensorFlow's bf16 matmul (oneDNN) on 2048^2 matrices, measured like the
float32 one.

Each configuration runs in its own process (so the logical-device split and the peak RSS
belong to it alone), on synthetic 227x227 batches so that only the step is timed. PyTorch is
optional (`pip install -e ".[bench]"`): without it its column is skipped. The README's demo
training command end to end, with its accuracy over runs, is bench_demo.py's.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# The PyTorch reference of our nets lives with the tests, its other user.
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))

from benchmarks import common  # noqa: E402

# (runtime, mode, precision); a precision's rows are compared with PyTorch's best in it.
CONFIGS = (
    ("keras", "one_device", "fp32"),
    ("keras", "mirrored", "fp32"),
    ("torch", "eager", "fp32"),
    ("keras", "one_device", "bf16"),
    ("keras", "mirrored", "bf16"),
    ("torch", "eager", "bf16"),
    ("torch", "compile", "bf16"),
)
KERAS_POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16"}


def keras_worker(strategy_name, precision, batch, steps):
    """Time `steps` SGD steps of the paper's AlexNet under a tf.distribute strategy."""
    from keras_alexnet.distribute import configure_devices, make_strategy
    from keras_alexnet.optim import global_precision, make_train_step

    if strategy_name == "mirrored":
        configure_devices("mirrored", 2)
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_alexnet.models import build_model

    strategy = make_strategy(strategy_name, 2)
    with strategy.scope(), global_precision(KERAS_POLICIES[precision]):
        model = build_model("alexnet", classifier_activation=None, init="he", seed=0)
        optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
        optimizer.build(model.trainable_variables)
    step = make_train_step(strategy, model, optimizer, batch, 5e-4)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (batch, 227, 227, 3)).astype("float32")
    y = rng.integers(0, 1000, batch).astype("int32")
    data = iter(strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors((x, y)).repeat()
    ))  # fmt: skip
    flops = common.forward_flops(model)
    return _time(lambda: step(*next(data))[0].numpy(), steps, batch, flops)


def torch_worker(mode, precision, batch, steps):
    """Time `steps` SGD steps of the same net in PyTorch, eager or compiled, fp32 or bf16."""
    import torch
    import torch_reference

    torch.manual_seed(0)
    model = torch_reference.AlexNet().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(batch, 3, 227, 227) * 2 - 1
    y = torch.randint(0, 1000, (batch,))
    loss_fn = torch.nn.CrossEntropyLoss()
    forward = torch.compile(model) if mode == "compile" else model

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = loss_fn(forward(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    from keras_alexnet.models import build_model

    return _time(step, steps, batch, common.forward_flops(build_model("alexnet")))


def peak_worker():
    """TensorFlow's float32 and bf16 matmul GFLOP/s (`common.tf_matmul_peaks`)."""
    return common.tf_matmul_peaks()


def _time(step, steps, batch, flops):
    """Warm up twice, then time `steps` calls; return img/s, GFLOP/s (3x forward), RSS."""
    step()
    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - start) / steps
    return {
        "img_s": batch / seconds,
        "gflops": 3 * flops * batch / seconds / 1e9,
        "rss_mib": common.peak_rss_mib(),
    }


def get_args_parser():
    """Return the argument parser of this script."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--batch-sizes",
        default="32,128",
        help="comma-separated global batch sizes (default: %(default)s)",
    )
    p.add_argument(
        "--steps", type=int, default=3, help="timed steps per configuration (default: %(default)s)"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="rounds over the configurations, alternating their order; each keeps its best "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--precisions",
        default="fp32,bf16",
        help="comma-separated precisions to measure, of fp32 and bf16 (default: %(default)s)",
    )
    p.add_argument(
        "--no-compile",
        action="store_true",
        help="skip the torch.compile row (inductor builds C++ kernels first: minutes)",
    )
    p.add_argument(
        "--no-write",
        action="store_true",
        help="print only; do not update benchmarks/RESULTS.md (default: write)",
    )
    p.add_argument(
        "--worker",
        nargs=4,
        metavar=("RUNTIME", "MODE", "PRECISION", "BATCH"),
        help=argparse.SUPPRESS,
    )
    return p


def run_config(runtime, mode, precision, batch, steps):
    """Run one configuration in a fresh process; return its JSON result or None (skipped)."""
    cmd = [sys.executable, __file__, "--steps", str(steps), "--worker", runtime, mode,
           precision, str(batch)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode == 3:
        return None
    if out.returncode != 0:
        raise SystemExit(
            f"{runtime} {mode} {precision} batch {batch} failed:\n{out.stderr[-2000:]}"
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_worker(runtime, mode, precision, batch, steps):
    """This process's share: one configuration's figures (exit 3: PyTorch not installed)."""
    if runtime == "peak":
        return peak_worker()
    if runtime == "keras":
        return keras_worker(mode, precision, batch, steps)
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit(3)
    return torch_worker(mode, precision, batch, steps)


def selected_configs(args):
    """The configurations the flags ask for."""
    precisions = args.precisions.split(",")
    unknown = sorted(set(precisions) - set(KERAS_POLICIES))
    if unknown:
        raise SystemExit(f"--precisions: unknown {', '.join(unknown)}; choose from fp32, bf16")
    return tuple(
        c for c in CONFIGS if c[2] in precisions and not (args.no_compile and c[1] == "compile")
    )


def measure_peaks():
    """{precision: matmul GFLOP/s}: TensorFlow's fp32 and bf16, NumPy's fp32, the best of each."""
    peaks = run_config("peak", "tf", "all", 0, 0)
    peaks["fp32"] = max(peaks["fp32"], common.matmul_peak_gflops())
    return peaks


def table_rows(measured, peaks):
    """The results table's rows: each precision against PyTorch's best and ours in float32."""
    rows = []
    for batch, results in measured.items():
        ours_fp32 = results.get(("keras", "one_device", "fp32"))
        for (runtime, mode, precision), r in results.items():
            if r is None:
                rows.append(f"| {batch} | {runtime} {mode} | {precision} | skipped | | | | |")
                continue
            torch_best = max(
                (v["img_s"] for (rt, _, pr), v in results.items()
                 if rt == "torch" and pr == precision and v),
                default=None,
            )  # fmt: skip
            vs_torch = f"{r['img_s'] / torch_best:.2f}x" if torch_best else "n/a"
            vs_fp32 = f"{r['img_s'] / ours_fp32['img_s']:.2f}x" if ours_fp32 else "n/a"
            share = 100 * r["gflops"] / peaks[precision]
            rows.append(
                f"| {batch} | {runtime} {mode} | {precision} | {r['img_s']:.1f} | {vs_torch} | "
                f"{vs_fp32} | {r['gflops']:.0f} ({share:.0f} %) | {r['rss_mib']:.0f} |"
            )
    return rows


def main(args):
    """Run every configuration, print the table, and record it in RESULTS.md."""
    if args.worker:
        runtime, mode, precision, batch = args.worker
        print(json.dumps(run_worker(runtime, mode, precision, int(batch), args.steps)))
        return
    configs = selected_configs(args)
    peaks = measure_peaks()
    load_before = os.getloadavg()[0]
    measured = {}
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        results = {}
        for round_index in range(args.rounds):
            # Alternate the order each round; keep each configuration's best round (the
            # 2 cores are shared, so a slow round measures the neighbours, not the step).
            order = configs if round_index % 2 == 0 else configs[::-1]
            for config in order:
                r = run_config(*config, batch, args.steps)
                best = results.get(config)
                better = best is None or (r is not None and r["img_s"] > best["img_s"])
                results[config] = r if better else best
        measured[batch] = {c: results[c] for c in configs}
    after = measure_peaks()
    peaks = {k: max(v, after[k]) for k, v in peaks.items()}
    table = "\n".join([
        "| batch | runtime | precision | img/s | vs PyTorch's best (same precision) "
        "| vs ours fp32 one device | GFLOP/s (of the precision's peak) | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
        *table_rows(measured, peaks),
    ])  # fmt: skip
    body = (
        f"{common.provenance()}\n\nAlexNet (paper, 2 towers, 227x227) SGD train steps on "
        f"synthetic batches; FLOPs = 3 x forward; best of {args.rounds} alternating rounds of "
        f"{args.steps} timed steps after 2 warm-up steps. Matmul peaks measured in the same "
        f"run (2048^2, best before or after): float32 {peaks['fp32']:.0f} GFLOP/s (NumPy or "
        f"TensorFlow, the higher), bf16 {peaks['bf16']:.0f} GFLOP/s (TensorFlow). 1-minute "
        f"load average (other processes share the 2 cores) {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after.\n\n{table}"
    )
    print(body)
    if not args.no_write:
        common.update_section("Training step (AlexNet)", body)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
