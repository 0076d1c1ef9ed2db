"""Load test of the inference server on loopback: throughput, p50/p99 latency, errors.

Starts `scripts/serve.py` on a free 127.0.0.1 port, once with dynamic batching and once
with `--no-batching`, and drives each with N concurrent keep-alive clients (raw asyncio
streams, cheap beside the server) for a fixed time, every client sending `classify` requests
(one 500x375 JPEG each) back to back, and splits the server's CPU time per image into the
model (measured alone), JPEG decoding and cropping (measured alone), and the rest. The
model is the paper's AlexNet (random weights; the speed does not depend on them), exported
to ONNX once and cached, unless --model names an exported .onnx file.

    python benchmarks/bench_serve.py [--clients 64] [--duration 30] [--write]
"""

import argparse
import asyncio
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common  # noqa: E402
from keras_alexnet.serving.local import local_server_process  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def build_alexnet_onnx(path):
    """Export the paper's AlexNet (random weights, 1000 classes) to `path`, and its int8 twin.

    int8 is calibrated on the bundled demo images (`export_onnx(quantize="int8")`).
    """
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
    export_onnx(run / "best.keras", path, quantize="int8", log=lambda *args, **kwargs: None)


def int8_path(path):
    """Where `export_onnx` writes the int8 twin of the export at `path`."""
    return path.with_suffix(".int8.onnx")


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


BOUNDARY = "keras-alexnet-bench"


def classify_request(name, image):
    """The bytes of one `classify` POST (multipart, one JPEG), built once and sent as they are."""
    part = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="photo.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    )
    body = part.encode() + image + f"\r\n--{BOUNDARY}--\r\n".encode()
    head = (
        f"POST /v2/models/{name}/classify HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def exchange(reader, writer, request):
    """Send `request` on a keep-alive connection; return (status, body, whether it stays open)."""
    writer.write(request)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", 0)))
    return status, body, headers.get("connection", "").lower() != "close"


async def load(url, name, image, clients, duration, max_requests):
    """`clients` keep-alive connections posting `image` until `duration` s or `max_requests`.

    The clients are raw asyncio streams sending prebuilt request bytes, so they take little
    of the shared cores (httpx clients took about 5 ms of CPU a request here, a quarter of
    what the server took); an answer counts when it is a 200 carrying top-5 classes.
    """
    host, port = url.removeprefix("http://").rsplit(":", 1)
    request = classify_request(name, image)
    latencies, statuses, sent = [], {}, 0
    deadline = time.perf_counter() + duration

    async def one_client():
        nonlocal sent
        reader = writer = None
        while time.perf_counter() < deadline and sent < max_requests:
            sent += 1
            start, body = time.perf_counter(), b""
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, int(port))
                status, body, keep = await exchange(reader, writer, request)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
                status, keep = type(e).__name__, False
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200 and b'"top5"' in body:
                latencies.append(time.perf_counter() - start)
            if not keep and writer is not None:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*[one_client() for _ in range(clients)])
    elapsed = time.perf_counter() - start
    return latencies, sent - len(latencies), elapsed, statuses


def cpu_seconds(pid):
    """User + system CPU seconds of process `pid` and its threads so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def model_stats(url, name):
    """The server's statistics of model `name` (runs, rows), from its statistics endpoint."""
    import httpx

    return httpx.get(f"{url}/v2/models/{name}/stats").json()["model_stats"][0]


def measure(model, flags, args, image):
    """Warm up, then load the server; return a result row with each side's CPU per image."""
    name = Path(model).stem
    cmd = [sys.executable, str(ROOT / "scripts/serve.py"), "--model", str(model), *flags]
    try:
        with local_server_process(cmd, timeout=120, cwd=ROOT) as (url, proc):
            asyncio.run(load(url, name, image, args.clients, args.warmup, 10**9))
            before = model_stats(url, name)
            cpu_before = cpu_seconds(proc.pid), time.process_time()
            latencies, errors, elapsed, statuses = asyncio.run(
                load(url, name, image, args.clients, args.duration, args.max_requests)
            )
            server_cpu = cpu_seconds(proc.pid) - cpu_before[0]
            client_cpu = time.process_time() - cpu_before[1]
            after = model_stats(url, name)
    except RuntimeError as e:
        raise SystemExit(f"error: {e}") from None
    runs = after["execution_count"] - before["execution_count"]
    rows = after["inference_count"] - before["inference_count"]
    ms = np.array(latencies) * 1000
    answered = max(len(latencies), 1)
    return {
        "requests": len(latencies),
        "throughput": len(latencies) / elapsed,
        "p50": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p99": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
        "errors": errors,
        "statuses": statuses,
        "mean_batch": rows / runs if runs else 0.0,
        "server_ms": 1000 * server_cpu / answered,
        "client_ms": 1000 * client_cpu / answered,
    }


def latency_row(model, args, image):
    """p50/p99 of one client's requests, one at a time, against the server's default flags."""
    flags = [
        "--max-batch-size",
        str(args.max_batch_size),
        "--max-latency-ms",
        str(args.max_latency_ms),
    ]
    one = argparse.Namespace(**{**vars(args), "clients": 1, "duration": args.latency_duration})
    return measure(model, flags, one, image)


def in_process(model, batch, seconds):
    """The same model alone in onnxruntime in this process on `batch` crops: (images/s, CPU ms
    an image)."""
    from keras_alexnet.onnx.session import onnx_session

    session = onnx_session(model)
    x = np.random.default_rng(0).uniform(0, 255, (batch, 227, 227, 3)).astype("float32")
    for _ in range(2):
        session.run(None, {"images": x})
    calls, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds or calls < 2:
        session.run(None, {"images": x})
        calls += 1
    cpu, wall = time.process_time() - cpu, time.perf_counter() - start
    return batch * calls / wall, 1000 * cpu / (batch * calls)


def preprocess_ms(model, image, repeats=200):
    """CPU ms of the server's decoding and centre crop of `image`, in this process."""
    from keras_alexnet.images import decode
    from keras_alexnet.serving.model import OnnxModel

    metadata = OnnxModel(model).metadata
    decode.preprocess(image, metadata)
    start = time.process_time()
    for _ in range(repeats):
        decode.preprocess(image, metadata)
    return 1000 * (time.process_time() - start) / repeats


def overhead_lines(rows, alone, batch, decode_ms):
    """The served images/s against the model alone, and where the server's CPU goes."""
    best_label = max(rows, key=lambda label: rows[label]["throughput"])
    best, (alone_rate, model_ms) = rows[best_label], alone
    rest = best["server_ms"] - model_ms - decode_ms
    return [
        f"The same model alone in onnxruntime in this process, batches of {batch}: "
        f"{alone_rate:.1f} images/s; the best server configuration ({best_label}) gives "
        f"{best['throughput'] / alone_rate:.0%} of it (serving overhead "
        f"{1 - best['throughput'] / alone_rate:.0%}).",
        "",
        "| CPU ms an answered image (both cores) | ms | share of the server's |",
        "|---|---|---|",
        f"| server process, all threads | {best['server_ms']:.1f} | 100% |",
        f"| of it: the model (alone, batch {batch}) | {model_ms:.1f} | "
        f"{model_ms / best['server_ms']:.0%} |",
        f"| of it: JPEG decoding and centre crop (alone) | {decode_ms:.1f} | "
        f"{decode_ms / best['server_ms']:.0%} |",
        f"| of it: the rest (HTTP, multipart, ASGI, batching, threads contending) | "
        f"{rest:.1f} | {rest / best['server_ms']:.0%} |",
        f"| the clients (this process) | {best['client_ms']:.1f} | |",
    ]


def notes(rows, clients):
    """What the tables say: the gain from batching, queueing, and what bounds the server."""
    batched, alone = rows.values()
    return (
        f"Dynamic batching: {batched['throughput'] / alone['throughput']:.2f}x the throughput. "
        f"With {clients} clients always waiting, the median latency is mostly queueing: "
        f"{clients} / {batched['throughput']:.1f} images/s = "
        f"{clients / batched['throughput']:.1f} s of work ahead of each request. Every part "
        "shares the same cores, so the overhead is the CPU spent outside the model: decoding "
        "and cropping each JPEG and the HTTP work cost the same per request whatever the "
        "batch, and the clients' share is taken from the server's. The overhead goal "
        "(<= 10 %) needs the clients and the image decoding off the model's cores (another "
        "machine, or a server with more cores than the model's threads)."
    )


def latency_table(latency, args):
    """The one-client rows: each request alone, so its latency is the server's at batch 1."""
    lines = [
        f"| one client, requests one at a time ({args.latency_duration:g} s) | requests | "
        "images/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in latency.items():
        lines.append(
            f"| {label} | {r['requests']} | {r['throughput']:.1f} | {r['p50']:.1f} | "
            f"{r['p99']:.1f} | {r['errors']} |"
        )
    lines.append(
        f"\nEach lone request waits out the batching window ({args.max_latency_ms:g} ms) for "
        "company before it runs."
    )
    return lines


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
    p.add_argument(
        "--latency-duration",
        type=float,
        default=10,
        help="seconds of the one-client latency runs, fp32 and int8 (default: %(default)s)",
    )
    p.add_argument("--write", action="store_true", help="write the Serving section of RESULTS.md")
    return p


def main(args):
    """Build or take the model, run both configurations, print (and write) the table."""
    model = Path(args.model) if args.model else Path(args.cache_dir) / "alexnet_export.onnx"
    if not model.is_file() or not (args.model or int8_path(model).is_file()):
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
    latency = {"fp32": latency_row(model, args, image)}
    if int8_path(model).is_file():
        latency["int8"] = latency_row(int8_path(model), args, image)
    alone = in_process(model, args.max_batch_size, args.duration / 3)
    split = overhead_lines(rows, alone, args.max_batch_size, preprocess_ms(model, image))
    table = [
        "| server | requests | images/s | p50 ms | p99 ms | errors | mean images per run |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        table.append(
            f"| {label} | {r['requests']} | {r['throughput']:.1f} | {r['p50']:.0f} | "
            f"{r['p99']:.0f} | {r['errors']} | {r['mean_batch']:.1f} |"
        )
    table += ["", *latency_table(latency, args)]
    print("\n".join([*table, "", *split]))
    for label, r in rows.items():
        print(f"{label}: answers by status {r['statuses']}")
    if args.write:
        body = (
            f"{common.provenance()}\n\n`benchmarks/bench_serve.py`: {args.clients} concurrent "
            f"keep-alive clients (raw asyncio streams) on loopback for {args.duration:g} s each "
            f"(after {args.warmup:g} s warm-up), each sending `classify` requests with one "
            f"500x375 JPEG back to back, against `scripts/serve.py --model {model.name}` (the "
            "paper's AlexNet as `keras_alexnet.export.export_onnx` writes it, random weights; "
            "onnxruntime CPU, default threads). The clients run on the same machine as the "
            f"server and share its cores; load average before the runs: {load_before}, after: "
            f"{os.getloadavg()[0]:.1f} (other processes shared the machine). CPU times: the "
            "server's from /proc/PID/stat, the clients' and the model's alone from this "
            "process.\n\n" + "\n".join([*table, "", *split]) + "\n\n" + notes(rows, args.clients)
        )
        common.update_section("Serving", body)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
