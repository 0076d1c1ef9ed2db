"""The inference server's memory (RSS) under bursts of large requests, with and without a budget.

Starts `scripts/serve.py` on a free 127.0.0.1 port with a tiny hand-made ONNX classifier
carrying AlexNet's preprocessing (resize 256, crop 227; the model is a few numbers, so what
is measured is what the requests cost: bodies, decoding, parsing) and sends, one after
another:

    one 6300x6300 grey PNG (about 39 kB, 39.7 Mpx: under the 40 Mpx limit) to classify;
    four classify requests at once, eight such PNGs each;
    four infer requests at once, each a 41 MB JSON body ([1, 1442, 1442, 3] FP32 numbers).

The server process's RSS is read from /proc/PID/status: VmHWM (reset before each burst
through /proc/PID/clear_refs) is the burst's peak, VmRSS a second after the burst its
settled level. Each configuration runs in its own server process, in the same run: the
default `--max-inflight-mb`, `--max-inflight-mb 0` (no budget) and, with --baseline DIR,
the server of another checkout (e.g. `git archive dc9904e | tar -x -C DIR`).

    python benchmarks/bench_serve_memory.py [--baseline DIR] [--write]
"""

import argparse
import asyncio
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common  # noqa: E402
from keras_alexnet.serving.config import ServeConfig  # noqa: E402
from keras_alexnet.serving.local import local_server_process  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
PNG_SIDE = 6300  # 39.7 Mpx, under UPLOAD_MAX_PIXELS (40 Mpx)
JSON_SHAPE = (1, 1442, 1442, 3)  # about 41 MB as JSON numbers like 137.0
SETTLE_S = 1.0  # how long after a burst its settled RSS is read
# The lscpu flags that decide which NumPy / onnxruntime kernels run.


def tiny_model(path):
    """An ONNX classifier (per-channel mean -> 10 classes) with AlexNet's preprocessing."""
    import onnx
    from onnx import TensorProto, helper

    from keras_alexnet.metadata import Metadata

    weights = np.random.default_rng(0).standard_normal((3, 10)).astype(np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["images", "axes"], ["mean"], keepdims=0),
        helper.make_node("MatMul", ["mean", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [None, None, None, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 10])],
        initializer=[
            helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2]),
            helper.make_tensor("w", TensorProto.FLOAT, [3, 10], weights.ravel()),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    metadata = Metadata("alexnet", tuple(f"class_{i}" for i in range(10)), 227, 256, (0, 0, 0))
    helper.set_model_props(model, metadata.to_properties())
    onnx.save(model, path)


def grey_png(side):
    """A `side` x `side` black 8-bit grey PNG (it compresses to a few tens of kB)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (side, side)).save(buffer, "PNG")
    return buffer.getvalue()


def json_body(shape):
    """An infer request body of `shape` FP32 values (whole numbers 0..255) as JSON numbers."""
    data = np.random.default_rng(0).integers(0, 256, shape).astype(np.float64).ravel().tolist()
    entry = {"name": "images", "shape": list(shape), "datatype": "FP32", "data": data}
    return json.dumps({"inputs": [entry]}).encode()


def status_kib(pid, field):
    """A `field` (VmRSS, VmHWM) of /proc/PID/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid):
    """Set the process's VmHWM back to its current RSS (Linux 4.0+: clear_refs 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


async def burst(url, requests):
    """Send `requests` ((path, httpx keyword arguments)) at once; their status codes."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        answers = await asyncio.gather(
            *[client.post(path, **kwargs) for path, kwargs in requests], return_exceptions=True
        )
    return [a.status_code if hasattr(a, "status_code") else type(a).__name__ for a in answers]


def bursts(png, body):
    """{label: requests} of the three bursts."""
    classify, infer = "/v2/models/tiny/classify", "/v2/models/tiny/infer"
    one = {"files": [("file", ("grey.png", png))]}
    eight = {"files": [("file", (f"grey{i}.png", png)) for i in range(8)]}
    return {
        "1 grey PNG": [(classify, one)],
        "4 x 8 grey PNGs": [(classify, eight)] * 4,
        f"4 x {len(body) / 1e6:.0f} MB JSON": [(infer, {"content": body})] * 4,
    }


def measure(command, env, requests):
    """Start the server, run each burst; {label: (peak MiB, settled MiB, statuses)}, idle MiB."""
    results = {}
    with open(os.devnull, "w") as quiet:
        server = local_server_process(command, timeout=120, output=quiet, cwd=ROOT, env=env)
        with server as (url, proc):
            asyncio.run(burst(url, next(iter(requests.values()))))  # warm: first-use set-up
            time.sleep(SETTLE_S)
            idle = status_kib(proc.pid, "VmRSS") / 1024
            for label, batch in requests.items():
                reset_peak(proc.pid)
                statuses = asyncio.run(burst(url, batch))
                peak = status_kib(proc.pid, "VmHWM") / 1024
                time.sleep(SETTLE_S)
                settled = status_kib(proc.pid, "VmRSS") / 1024
                results[label] = (peak, settled, statuses)
    return idle, results


def summary(statuses):
    """Status codes as `4 x 200`, `2 x 200, 2 x 503`."""
    counts = {s: statuses.count(s) for s in dict.fromkeys(statuses)}
    return ", ".join(f"{n} x {s}" for s, n in counts.items())


def get_args_parser():
    """Return the argument parser of this script."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--baseline",
        default=None,
        help="also measure the server of this checkout (a directory with scripts/serve.py) "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--write", action="store_true", help="write the Serving memory section of RESULTS.md"
    )
    return p


def main(args):
    """Build the model and requests, measure each configuration, print (and write) the table."""
    work = Path(tempfile.mkdtemp(prefix="bench_serve_memory_"))
    model = work / "tiny.onnx"
    tiny_model(model)
    png, body = grey_png(PNG_SIDE), json_body(JSON_SHAPE)
    requests = bursts(png, body)
    serve = [sys.executable, "scripts/serve.py", "--model", str(model)]
    default = ServeConfig(model="").max_inflight_mb
    default_name = f"budget {default:g} MiB (default)"
    unlimited_name = "no budget (`--max-inflight-mb 0`)"
    configs = {
        default_name: (serve, None),
        unlimited_name: ([*serve, "--max-inflight-mb", "0"], None),
    }
    peaks = {}
    if args.baseline:
        baseline = Path(args.baseline).resolve()
        env = {**os.environ, "PYTHONPATH": str(baseline)}
        command = [sys.executable, str(baseline / "scripts/serve.py"), "--model", str(model)]
        configs[f"`{baseline.name}` checkout (no budget)"] = (command, env)
    table = [
        "| server | idle MiB | burst | peak MiB | a second after MiB | answers |",
        "|---|---|---|---|---|---|",
    ]
    for name, (command, env) in configs.items():
        idle, results = measure(command, env, requests)
        for label, (peak, settled, statuses) in results.items():
            table.append(
                f"| {name} | {idle:.0f} | {label} | {peak:.0f} | {settled:.0f} | "
                f"{summary(statuses)} |"
            )
        print("\n".join(table[-len(results) :]), flush=True)
        peaks[name] = max(peak for peak, _, _ in results.values()) - idle
    print("\n".join(table))
    note = (
        f"With the default budget the largest burst held {peaks[default_name]:.0f} MiB above "
        f"idle, within its {default:g} MiB; without it, {peaks[unlimited_name]:.0f} MiB."
    )
    print(note)
    if args.write:
        body_mb = len(body) / 1e6
        text = (
            f"{common.provenance()}\n\n`benchmarks/bench_serve_memory.py`: "
            f"`scripts/serve.py` with a tiny ONNX classifier carrying AlexNet's "
            f"preprocessing (resize 256, crop 227), so the figures are the requests' cost. "
            f"Bursts, one after another: one {PNG_SIDE}x{PNG_SIDE} black grey PNG "
            f"({len(png) / 1000:.0f} kB) to classify; four classify requests at once with "
            f"eight such PNGs each; four infer requests at once with a {body_mb:.0f} MB JSON "
            f"body each ({list(JSON_SHAPE)} FP32). Peak: the server process's VmHWM, reset "
            f"before each burst; settled: its VmRSS {SETTLE_S:g} s after the burst. A "
            "`--baseline` row is the server of that checkout (`git archive COMMIT | tar -x "
            "-C DIR`), measured in the same run.\n\n" + "\n".join(table) + "\n\n" + note
        )
        common.update_section("Serving memory", text)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
