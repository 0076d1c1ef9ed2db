"""Forward throughput of the paper's AlexNet (227) and VGG D (224): Keras/TF in float32 and
bf16 (the mixed_bfloat16 policy), our ONNX fp32 and int8 exports in onnxruntime, and a
PyTorch eager reference of the same architecture (groups=2, per-tower LRN), all measured in
one run, with GFLOP/s against matmul peaks (fp32, bf16) measured in the same run. PyTorch
is optional (`pip install -e ".[bench]"`).

The models have random weights (`INIT`: chosen so the 1000 scores of an untrained net are
not saturated, which would make the export check vacuous) and ImageNet's mean in-graph; the
exports go through `keras_alexnet.export.export_onnx` exactly as a user's would (verified
against Keras within 1e-5), and int8 is calibrated on the bundled demo images.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# The PyTorch reference of our nets lives with the tests, its other user.
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))

from benchmarks import common  # noqa: E402

BATCHES = {"alexnet": (1, 8, 32), "vgg_d": (1, 8)}
# Random weights whose 1000 scores stay unsaturated, so the export check means something:
# the paper's init for AlexNet; for VGG D its N(0, 0.1) saturates the softmax of an
# untrained net, so Glorot on pixels scaled by 1/128.
INIT = {"alexnet": {}, "vgg_d": {"init": "glorot", "scale": 1 / 128}}
BF16 = "keras/tf bf16"  # Keras's mixed_bfloat16 policy; its % of peak is of the bf16 peak


def throughput(fn, batch, min_seconds):
    """Images/s of `fn()` on a batch: two warm-up calls, then repeat for >= min_seconds."""
    fn()
    fn()
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and calls >= 2:
            return batch * calls / elapsed


def build_runtimes(name, work, log):
    """Return {runtime: predict(x_nhwc)} for Keras (fp32, bf16), ONNX fp32 and int8, PyTorch."""
    import tensorflow as tf

    from keras_alexnet.data import IMAGENET_STATS
    from keras_alexnet.export import export_onnx
    from keras_alexnet.metadata import Metadata
    from keras_alexnet.models import build_model, get_spec
    from keras_alexnet.onnx.session import onnx_session
    from keras_alexnet.optim import global_precision

    spec = get_spec(name)
    init = INIT[name]
    model = build_model(name, seed=0, mean=IMAGENET_STATS.mean, **init)
    flops = common.forward_flops(model)
    path = Path(work) / name / "model.keras"
    path.parent.mkdir(parents=True)
    model.save(path)
    Metadata(
        model=spec.name, class_names=tuple(f"class_{i}" for i in range(1000)),
        input_size=spec.input_size, resize=spec.resize, mean=IMAGENET_STATS.mean,
        protocol=spec.protocol, scale=init.get("scale", 1.0),
    ).save(path.parent / "metadata.json")  # fmt: skip
    onnx_path = path.parent / f"{name}.onnx"
    export = export_onnx(path, onnx_path, quantize="int8", agreement_images=64, log=log)
    keras_fn = tf.function(lambda x: model(x, training=False))
    runtimes = {"keras/tf": lambda x: keras_fn(x).numpy()}
    with global_precision("mixed_bfloat16"):  # bf16 compute, the same float32 weights
        bf16 = build_model(name, seed=0, mean=IMAGENET_STATS.mean, **init)
    bf16.set_weights(model.get_weights())
    bf16_fn = tf.function(lambda x: bf16(x, training=False))
    runtimes[BF16] = lambda x: bf16_fn(x).numpy()
    for label, file in (("onnx fp32", onnx_path), ("onnx int8", Path(export["int8"]["path"]))):
        session = onnx_session(file)
        runtimes[label] = lambda x, s=session: s.run(None, {"images": x})[0]
    try:
        import torch
        import torch_reference

        torch_model = torch_reference.build(name).eval()
        torch.set_grad_enabled(False)
        runtimes["pytorch eager"] = lambda x: torch_model(
            torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
        ).numpy()
    except ImportError:
        log("PyTorch is not installed: its column is skipped")
    return runtimes, flops, export


def bf16_note(name, batch, speeds):
    """bf16's speed against the best fp32 runtime and ONNX int8 at one batch size."""
    fp32 = max(v for r, v in speeds.items() if r in ("keras/tf", "onnx fp32"))
    return (
        f"{name} batch {batch}: {speeds[BF16] / fp32:.2f}x the best fp32, "
        f"{speeds[BF16] / speeds['onnx int8']:.2f}x int8"
    )


def get_args_parser():
    """Return the argument parser of this script."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--models",
        default="alexnet,vgg_d",
        help="comma-separated models out of alexnet, vgg_d (default: %(default)s)",
    )
    p.add_argument(
        "--min-seconds",
        type=float,
        default=3.0,
        help="time each measurement for at least this long (default: %(default)s)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds over the runtimes, alternating their order; each keeps its best "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--no-write",
        action="store_true",
        help="print only; do not update benchmarks/RESULTS.md (default: write)",
    )
    return p


def main(args):
    """Measure every runtime at every batch size, print the table, record it."""
    peak = common.matmul_peak_gflops()
    bf16_peak = common.tf_matmul_peaks()["bf16"]
    load_before = os.getloadavg()[0]
    rows, notes, points, bf16_notes = [], [], [], []
    with tempfile.TemporaryDirectory() as work:
        for name in args.models.split(","):
            runtimes, flops, export = build_runtimes(name, work, log=lambda m: None)
            notes.append(
                f"{name}: export max relative error {export['max_relative_error']:.2g}, "
                f"int8 top-1 agreement with fp32 {export['int8']['agreement']:.3f} on "
                f"{export['int8']['agreement_images']} demo images"
            )
            size = 227 if name == "alexnet" else 224
            for batch in BATCHES[name]:
                x = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3))
                x = x.astype(np.float32)
                speeds = {}
                for round_index in range(args.rounds):
                    # Alternate the order; keep each runtime's best round (the 2 cores are
                    # shared, so a slow round measures the neighbours, not the runtime).
                    order = list(runtimes) if round_index % 2 == 0 else list(runtimes)[::-1]
                    for r in order:
                        img_s = throughput(lambda f=runtimes[r], x=x: f(x), batch, args.min_seconds)
                        speeds[r] = max(speeds.get(r, 0.0), img_s)
                speeds = {r: speeds[r] for r in runtimes}
                bf16_notes.append(bf16_note(name, batch, speeds))
                base = speeds.get("pytorch eager")
                for runtime, img_s in speeds.items():
                    ratio = f"{img_s / base:.2f}x" if base else "n/a"
                    points.append((name, runtime, batch, img_s))
                    rows.append((name, batch, runtime, img_s, ratio, flops * img_s / 1e9))
                    print(f"{name} batch {batch} {runtime}: {img_s:.1f} img/s, {ratio}", flush=True)
    peak = max(peak, common.matmul_peak_gflops())
    bf16_peak = max(bf16_peak, common.tf_matmul_peaks()["bf16"])
    rows = [
        f"| {name} | {batch} | {runtime} | {img_s:.1f} | {ratio} | "
        f"{gflops:.0f} ({100 * gflops / (bf16_peak if runtime == BF16 else peak):.0f} %) |"
        for name, batch, runtime, img_s, ratio, gflops in rows
    ]
    table = "\n".join([
        "| model | batch | runtime | img/s | vs PyTorch eager | GFLOP/s (of peak) |",
        "|---|---|---|---|---|---|",
        *rows,
    ])  # fmt: skip
    body = (
        f"{common.provenance()}\n\nForward passes on random 0-255 batches, best of "
        f"{args.rounds} alternating rounds of >= {args.min_seconds:g} s each, 2 intra-op threads "
        f"(the machine's cores) for every runtime. float32 GEMM peak measured in the same run "
        f"(NumPy 2048^2, best before or after): {peak:.0f} GFLOP/s; bf16 (TensorFlow's, the same "
        f"way; the `{BF16}` row's %): {bf16_peak:.0f} GFLOP/s. 1-minute load average "
        f"(other processes share "
        f"the 2 cores) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after.\n\n{table}\n\n"
        + "\n".join(f"- {n}" for n in notes)
        + "\n- bf16 (Keras's mixed_bfloat16) against fp32 and int8: "
        + "; ".join(bf16_notes)
        + ". Inference is offered in fp32 and int8 (ONNX), not bf16, as long as int8 is "
        "the faster at every batch size."
        + "\n- The weights are random (AlexNet: paper init; VGG D: Glorot): the 1000 scores "
        "are nearly tied, so the int8 agreement above measures quantisation noise, not "
        "accuracy (an untrained net's top-1 hangs on tiny score differences); on a trained "
        "AlexNet it is in *Export*."
    )
    if plot(points, PLOT, plot_title()):
        body += f"\n\n![throughput against batch size]({PLOT.name})"
    print(body)
    if not args.no_write:
        common.update_section("Inference", body)


PLOT = Path(__file__).with_name("inference_throughput.png")


def plot_title():
    """The plot's title: what was measured, on which machine, when."""
    import datetime

    return f"Forward throughput; {common.machine()}; {datetime.date.today().isoformat()}"


def plot(points, path, title=""):
    """Plot img/s against batch size per runtime, one panel per model; False without matplotlib.

    The x axis is labelled at the measured batch sizes; one legend below the panels, so it
    hides no line; `title` (machine and date) above them.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    models = sorted({p[0] for p in points})
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4.6), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for runtime in sorted({p[1] for p in points if p[0] == model}):
            xs = [(b, v) for m, r, b, v in points if m == model and r == runtime]
            ax.plot([b for b, _ in xs], [v for _, v in xs], marker="o", label=runtime)
        batches = sorted({b for m, _, b, _ in points if m == model})
        ax.set(title=model, xlabel="batch size", ylabel="images / s", xscale="log")
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.minorticks_off()
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    from keras_alexnet import fileio

    with fileio.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return True


if __name__ == "__main__":
    main(get_args_parser().parse_args())
