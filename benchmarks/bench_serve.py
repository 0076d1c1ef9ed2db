"""Load test of the inference server on loopback: throughput, p50/p99 latency, errors.

Starts `scripts/serve.py` on a free 127.0.0.1 port, once with dynamic batching and once
with `--no-batching`, and drives each with N concurrent asyncio/httpx clients for a fixed
time, every client sending `classify` requests (one 500x375 JPEG each) back to back. The
model is the paper's AlexNet (random weights; the speed does not depend on them), exported
to ONNX once and cached, unless --model names an exported .onnx file.

    python benchmarks/bench_serve.py [--clients 64] [--duration 30] [--write]
"""

import argparse
import asyncio
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common  # noqa: E402
from keras_alexnet.serving.local import local_server  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def build_alexnet_onnx(path):
    """Export the paper's AlexNet (random weights, 1000 classes) with `export_onnx` to `path`."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from keras_alexnet.export import export_onnx
    from keras_alexnet.metadata import Metadata
    from keras_alexnet.models import build_model

    mean = (123.7, 116.3, 103.5)
    run = path.parent / "alexnet_run"
    run.mkdir(parents=True, exist_ok=True)
    build_model("alexnet", seed=0, mean=mean).save(run / "best.keras")
    classes = tuple(f"class_{i}" for i in range(1000))
    Metadata("alexnet", classes, 227, 256, mean).save(run / "metadata.json")
    export_onnx(run / "best.keras", path, log=lambda *args, **kwargs: None)


def photo_jpeg(seed=0):
    """A photo-like 500x375 JPEG (smooth colour field plus noise), quality 90."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((500, 375), Image.BICUBIC), np.int16)
    image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@contextlib.contextmanager
def server(model, flags):
    """Run scripts/serve.py with `flags` until the block ends; yield its URL."""
    cmd = [sys.executable, str(ROOT / "scripts/serve.py"), "--model", str(model), *flags]
    try:
        with local_server(cmd, timeout=120, cwd=ROOT) as url:
            yield url
    except RuntimeError as e:
        raise SystemExit(f"error: {e}") from None


async def load(url, name, image, clients, duration, max_requests):
    """`clients` loops posting `image` until `duration` s or `max_requests` have passed."""
    import httpx

    latencies, errors, statuses = [], 0, {}
    sent = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        deadline = time.perf_counter() + duration

        async def one_client():
            nonlocal errors, sent
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                start = time.perf_counter()
                try:
                    response = await client.post(
                        f"/v2/models/{name}/classify", files={"file": ("photo.jpg", image)}
                    )
                    ok = response.status_code == 200
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                except httpx.HTTPError as e:
                    ok = False
                    statuses[type(e).__name__] = statuses.get(type(e).__name__, 0) + 1
                if ok:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*[one_client() for _ in range(clients)])
        elapsed = time.perf_counter() - start
    return latencies, errors, elapsed, statuses


def measure(model, flags, args, image):
    """Warm up, then load the server; return a result row."""
    import httpx

    name = Path(model).stem
    with server(model, flags) as url:
        asyncio.run(load(url, name, image, args.clients, args.warmup, 10**9))
        before = httpx.get(f"{url}/v2/models/{name}/stats").json()["model_stats"][0]
        latencies, errors, elapsed, statuses = asyncio.run(
            load(url, name, image, args.clients, args.duration, args.max_requests)
        )
        after = httpx.get(f"{url}/v2/models/{name}/stats").json()["model_stats"][0]
    runs = after["execution_count"] - before["execution_count"]
    rows = after["inference_count"] - before["inference_count"]
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "throughput": len(latencies) / elapsed,
        "p50": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p99": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
        "errors": errors,
        "statuses": statuses,
        "mean_batch": rows / runs if runs else 0.0,
    }


def in_process(model, batch, seconds):
    """Images/s of the same model alone in onnxruntime in this process, on `batch` crops."""
    from keras_alexnet.onnx.session import onnx_session

    session = onnx_session(model)
    x = np.random.default_rng(0).uniform(0, 255, (batch, 227, 227, 3)).astype("float32")
    for _ in range(2):
        session.run(None, {"images": x})
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or calls < 2:
        session.run(None, {"images": x})
        calls += 1
    return batch * calls / (time.perf_counter() - start)


def overhead_line(rows, alone, batch):
    """The served images/s against the model alone at the server's largest batch."""
    best = max(r["throughput"] for r in rows.values())
    return (
        f"The same model alone in onnxruntime in this process, batches of {batch}: "
        f"{alone:.1f} images/s; the best server configuration gives {best / alone:.0%} of "
        f"it (serving overhead {1 - best / alone:.0%}: JPEG decoding and resizing, HTTP and "
        "the clients, on the same cores)."
    )


def notes(rows, clients):
    """What the table says: the gain from batching and how much of the latency is queueing."""
    batched, alone = rows.values()
    return (
        f"Dynamic batching: {batched['throughput'] / alone['throughput']:.2f}x the throughput. "
        f"With {clients} clients always waiting, the median latency is mostly queueing: "
        f"{clients} / {batched['throughput']:.1f} images/s = "
        f"{clients / batched['throughput']:.1f} s of work ahead of each request. Batching "
        "saves work only inside onnxruntime (the FC weights read once per run; the "
        "convolutions cost the same per image either way); decoding and resizing each JPEG "
        "in Python, HTTP, and the clients themselves share the same cores and cost the same "
        "per request either way, so when they set the pace batching gains little or nothing "
        "(compare the model alone in *Inference*)."
    )


def get_args_parser():
    """Return the argument parser of this script."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="an exported .onnx (default: build AlexNet)")
    p.add_argument(
        "--cache-dir",
        default=str(Path(tempfile.gettempdir()) / "keras_alexnet_bench"),
        help="where the built AlexNet ONNX is kept between runs (default: %(default)s)",
    )
    p.add_argument(
        "--clients", type=int, default=64, help="concurrent clients (default: %(default)s)"
    )
    p.add_argument(
        "--duration", type=float, default=30, help="seconds per run (default: %(default)s)"
    )
    p.add_argument(
        "--warmup", type=float, default=3, help="seconds before measuring (default: %(default)s)"
    )
    p.add_argument(
        "--max-requests", type=int, default=100_000, help="cap per run (default: %(default)s)"
    )
    p.add_argument(
        "--max-batch-size", type=int, default=32, help="server flag (default: %(default)s)"
    )
    p.add_argument(
        "--max-latency-ms", type=float, default=5, help="server flag (default: %(default)s)"
    )
    p.add_argument("--write", action="store_true", help="write the Serving section of RESULTS.md")
    return p


def main(args):
    """Build or take the model, run both configurations, print (and write) the table."""
    model = Path(args.model) if args.model else Path(args.cache_dir) / "alexnet_export.onnx"
    if not model.is_file():
        if args.model:
            raise SystemExit(f"error: no ONNX model at {model}")
        print(f"exporting AlexNet to {model} (about 2 minutes) ...", file=sys.stderr)
        model.parent.mkdir(parents=True, exist_ok=True)
        build_alexnet_onnx(model)
    image = photo_jpeg()
    load_before = f"{os.getloadavg()[0]:.1f}"
    batching = [
        "--max-batch-size",
        str(args.max_batch_size),
        "--max-latency-ms",
        str(args.max_latency_ms),
    ]
    rows = {
        f"dynamic batching (max {args.max_batch_size}, {args.max_latency_ms:g} ms)": measure(
            model, batching, args, image
        ),
        "no batching (one request per run)": measure(
            model, ["--no-batching", "--max-batch-size", str(args.max_batch_size)], args, image
        ),
    }
    alone = in_process(model, args.max_batch_size, args.duration / 3)
    table = [
        "| server | requests | images/s | p50 ms | p99 ms | errors | mean images per run |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        table.append(
            f"| {label} | {r['requests']} | {r['throughput']:.1f} | {r['p50']:.0f} | "
            f"{r['p99']:.0f} | {r['errors']} | {r['mean_batch']:.1f} |"
        )
    print("\n".join(table))
    print(overhead_line(rows, alone, args.max_batch_size))
    for label, r in rows.items():
        print(f"{label}: answers by status {r['statuses']}")
    if args.write:
        body = (
            f"{common.provenance()}\n\n`benchmarks/bench_serve.py`: {args.clients} concurrent "
            f"asyncio/httpx clients on loopback for {args.duration:g} s each (after "
            f"{args.warmup:g} s warm-up), each sending `classify` requests with one 500x375 "
            f"JPEG back to back, against `scripts/serve.py --model {model.name}` (the paper's "
            "AlexNet as `keras_alexnet.export.export_onnx` writes it, random weights; "
            "onnxruntime CPU, default threads). The clients run on the same machine as the "
            f"server and share its cores; load average before the runs: {load_before}, after: "
            f"{os.getloadavg()[0]:.1f} (other processes shared the machine).\n\n"
            + "\n".join(table)
            + "\n\n"
            + overhead_line(rows, alone, args.max_batch_size)
            + " "
            + notes(rows, args.clients)
        )
        common.update_section("Serving", body)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
