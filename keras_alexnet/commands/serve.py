"""Serve an exported ONNX model over HTTP (KServe v2 / Open Inference Protocol REST).

    python scripts/serve.py --model export/alexnet.onnx --port 8000

Endpoints: /v2/health/live, /v2/health/ready, /v2/models/NAME (metadata),
/v2/models/NAME/infer (tensors as JSON), /v2/models/NAME/classify (multipart images in the
field `file` -> top-5 classes). NAME is the ONNX file's stem unless --model-name is given.
"""

import argparse

from keras_alexnet import extras
from keras_alexnet.onnx.session import provider_help
from keras_alexnet.serving.config import ServeConfig


def get_args_parser():
    """Return the argument parser of this script."""
    d = ServeConfig(model="")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for add in (_model_args, _http_args, _batching_args):
        add(p, d)
    return p


def _model_args(parser, d):
    """Add the model flags."""
    p = parser.add_argument_group("model")
    p.add_argument("--model", required=True, help="the .onnx file to serve")
    p.add_argument(
        "--model-name",
        default=None,
        help="name in the URLs (default: the ONNX file's stem)",
    )
    p.add_argument("--provider", default=d.provider, help=provider_help())
    p.add_argument(
        "--threads",
        type=int,
        default=d.threads,
        help="onnxruntime intra-op threads, 0 for one per core (default: %(default)s)",
    )


def _http_args(parser, d):
    """Add the HTTP flags."""
    p = parser.add_argument_group("HTTP")
    p.add_argument("--host", default=d.host, help="address to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=d.port, help="TCP port (default: %(default)s)")
    p.add_argument(
        "--log-level",
        default=d.log_level,
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn log level; 'info' also logs every request (default: %(default)s)",
    )
    p.add_argument(
        "--max-body-mb",
        type=float,
        default=d.max_body_mb,
        help="largest request body accepted, in MiB (default: %(default)s)",
    )
    p.add_argument(
        "--read-timeout-s",
        type=float,
        default=d.read_timeout_s,
        help="a client gets this long for a request's headers (else its connection is "
        "closed), then as long for its body (else a 408) (default: %(default)s)",
    )
    p.add_argument(
        "--keep-alive-s",
        type=float,
        default=d.keep_alive_s,
        help="an idle connection is closed after this (default: %(default)s)",
    )
    p.add_argument(
        "--timeout-s",
        type=float,
        default=d.timeout_s,
        help="a request not answered in this time gets a 503 (default: %(default)s)",
    )


def _batching_args(parser, d):
    """Add the batching and limits flags."""
    p = parser.add_argument_group("batching and limits")
    p.add_argument(
        "--max-batch-size",
        type=int,
        default=d.max_batch_size,
        help="most images per model run and per request (default: %(default)s)",
    )
    p.add_argument(
        "--max-latency-ms",
        type=float,
        default=d.max_latency_ms,
        help="longest a request waits for others to batch with (default: %(default)s)",
    )
    p.add_argument(
        "--no-batching",
        dest="batching",
        action="store_false",
        help="run every request on its own, never merged with others (default: batch)",
    )
    p.add_argument(
        "--max-inflight-mb",
        type=float,
        default=d.max_inflight_mb,
        help="memory for the requests in flight, in MiB: bodies, parsed JSON and decoded "
        "images, as estimated before the work; 0 for no limit (default: %(default)s)",
    )
    p.add_argument(
        "--inflight-wait-s",
        type=float,
        default=d.inflight_wait_s,
        help="how long a request waits for room in that budget before a 503 with "
        "Retry-After (default: %(default)s)",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=d.max_pixels,
        help="largest decoded image accepted, in pixels (default: %(default)s)",
    )


def main(args):
    """Validate the options (ServeConfig checks every number) and serve until interrupted."""
    extras.require("server")  # before serving.app imports FastAPI
    from keras_alexnet.serving.app import serve

    serve(ServeConfig(**vars(args)))
