"""Shared benchmark helpers: FLOP counts, the matmul peak, RSS, and RESULTS.md sections."""

import datetime
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# The commands' TensorFlow settings (oneDNN on) take effect only if set before TensorFlow
# is imported: every benchmark imports this module first.
from keras_alexnet import cli, hardware

cli.prepare_process()

RESULTS = Path(__file__).with_name("RESULTS.md")


def forward_flops(model):
    """Forward FLOPs (2 x multiply-adds) of one image through a Keras model's conv/dense layers."""
    total = 0
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        out = layer.output.shape
        macs_per_output = int(np.prod(kernel.shape[:-1]))  # kh * kw * (in / groups), or in
        outputs = int(np.prod([d for d in out[1:] if d is not None]))
        total += 2 * macs_per_output * outputs
    return total


def matmul_peak_gflops(n=2048, repeats=10):
    """Best-of-`repeats` float32 GEMM GFLOP/s of NumPy's BLAS on this machine, now.

    Benchmarks call it before and after their runs and keep the higher figure, so a
    moment of contention cannot lower the peak and flatter the "% of peak" column.
    """
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def tf_matmul_peaks(n=2048, repeats=10):
    """TensorFlow's float32 and bf16 matmul GFLOP/s on n x n matrices (oneDNN), best of 10."""
    import tensorflow as tf

    peaks = {}
    for name, dtype in (("fp32", tf.float32), ("bf16", tf.bfloat16)):
        a, b = (tf.cast(tf.random.stateless_normal((n, n), (s, 0)), dtype) for s in (0, 1))
        matmul = tf.function(lambda a, b: tf.reduce_sum(tf.cast(tf.matmul(a, b)[0], tf.float32)))
        matmul(a, b).numpy()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            matmul(a, b).numpy()
            best = min(best, time.perf_counter() - start)
        peaks[name] = 2 * n**3 / best / 1e9
    return peaks


def peak_rss_mib():
    """Peak resident memory of this process in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu():
    """The CPU's model name and its SIMD flags (lscpu's model name, /proc/cpuinfo's flags)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        text = ""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    name = " ".join(fields.get("Model name", "unknown").split())
    return f"{name}, flags {hardware.simd_summary(hardware.cpu_flags())}"


def machine():
    """One line describing the machine, with the CPU's model and SIMD flags."""
    return (
        f"{os.cpu_count()}-core CPU (CI-class VM; {cpu()}), {platform.machine()}, Linux, "
        f"Python {platform.python_version()}"
    )


def update_section(title, body):
    """Replace (or append) the `## title` section of RESULTS.md with `body`, atomically."""
    from keras_alexnet import fileio

    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    header = f"## {title}\n"
    section = f"{header}\n{body.strip()}\n\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = (
        pattern.sub(lambda _: section, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + section
    )
    fileio.write_text(RESULTS, text.rstrip() + "\n")


def provenance(command=None):
    """Machine, date and command lines for a RESULTS.md section."""
    command = command or "python " + " ".join(sys.argv)
    today = datetime.date.today().isoformat()
    return f"Machine: {machine()}. Date: {today}. Command: `{command}`."
