"""The HTTP server: KServe v2 / Open Inference Protocol REST on FastAPI, plus `classify`.

Endpoints (`{name}` is the served model's name, the ONNX file's stem by default):

    GET  /v2                              server metadata
    GET  /v2/health/live                  200 while the process serves HTTP
    GET  /v2/health/ready                 200 once the model is loaded and warmed up
    GET  /v2/models/{name}                model metadata: inputs, outputs, shapes, datatypes
    GET  /v2/models/{name}/ready          200 when that model is ready
    GET  /v2/models/{name}/stats          inference/execution counts (statistics extension)
    POST /v2/models/{name}/infer          tensors in the protocol's JSON form (or its binary
                                          data extension: Inference-Header-Content-Length)
    POST /v2/models/{name}/classify       multipart images in the field `file` -> top-5
    GET  /metrics                         Prometheus metrics (see `serving.metrics`)

`/v2/models/{name}/versions/1` and `/v2/models/{name}/versions/1/infer` work too. Every
error is JSON `{"error": ...}`: 4xx for a bad request, 5xx for a failure on our side. A
client must send a request's headers and its body within `read_timeout_s` each, or its
connection is closed (the body's lateness answered with a 408).
"""

import asyncio
import contextlib
import dataclasses
import functools
import json
import math

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from keras_alexnet import __version__
from keras_alexnet.onnx.session import AUTO
from keras_alexnet.serving import images
from keras_alexnet.serving.batching import DynamicBatcher, ModelError, RequestTimeout
from keras_alexnet.serving.metrics import Metrics, RequestMetrics
from keras_alexnet.serving.model import OnnxModel, top_k
from keras_alexnet.serving.openapi import CLASSIFY_BODY, CLASSIFY_ERRORS, INFER_BODY, INFER_ERRORS

# ServeConfig field: (test, what the value must be); checked whenever a config is made.
LIMITS = {
    "port": (lambda v: 0 <= v <= 65535, "a TCP port from 0 to 65535"),
    "max_batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "max_pixels": (lambda v: v >= 1, "an integer >= 1"),
    "threads": (lambda v: v >= 0, "an integer >= 0"),
    "max_latency_ms": (lambda v: v >= 0, "a finite number >= 0"),
    "max_body_mb": (lambda v: v > 0, "a finite number > 0"),
    "timeout_s": (lambda v: v > 0, "a finite number > 0"),
    "read_timeout_s": (lambda v: v > 0, "a finite number > 0"),
    "keep_alive_s": (lambda v: v > 0, "a finite number > 0"),
}


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """What `scripts/serve.py` configures; a value out of range is a one-line ValueError."""

    model: str
    host: str = "127.0.0.1"
    port: int = 8000
    model_name: str | None = None
    max_batch_size: int = 32
    max_latency_ms: float = 5.0
    batching: bool = True
    threads: int = 0
    max_body_mb: float = 64.0
    max_pixels: int = images.MAX_PIXELS
    timeout_s: float = 30.0
    provider: str = AUTO
    read_timeout_s: float = 30.0  # for a request's headers, and then for its body
    keep_alive_s: float = 5.0  # an idle connection is closed after this
    log_level: str = "warning"

    def __post_init__(self):
        """Refuse values no server can run with, naming the flag that sets them."""
        for name, (accept, requirement) in LIMITS.items():
            value = getattr(self, name)
            if not (math.isfinite(value) and accept(value)):
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} must be {requirement}. Received: {value}")


class ApiError(Exception):
    """An error answered with `status` (4xx: the request's fault, 5xx: ours) and a message."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


def _error(status, message, headers=None):
    """The JSON error response."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware: a body over `max_bytes` gets 413, one slower than `timeout_s` 408.

    The body is read here, before parsing (counted, whatever Content-Length claims), and
    replayed to the app. A 408 closes the connection: the client is too slow to keep.
    """

    def __init__(self, app, max_bytes, timeout_s):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope, receive, send):
        """Handle one ASGI connection."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = _error(413, f"request body is larger than {self.max_bytes} bytes")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await _error(400, "invalid Content-Length header")(scope, receive, send)
            if int(length) > self.max_bytes:
                return await too_large(scope, receive, send)
        too_slow = _error(
            408,
            f"the request body did not arrive within {self.timeout_s:g} s",
            {"Connection": "close"},
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), deadline - loop.time())
            except TimeoutError:
                return await too_slow(scope, receive, send)
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await too_large(scope, receive, send)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def _parse_tensor(entry, spec, max_rows, batchable, raw=None):
    """Validate one protocol input object against the model's input spec; return the array.

    `raw` is the tensor's bytes when it came in the binary data extension's form.
    """
    if not isinstance(entry, dict):
        raise ApiError("each element of 'inputs' must be an object")
    name = entry.get("name")
    shape, datatype, data = entry.get("shape"), entry.get("datatype"), entry.get("data")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise ApiError(f"input {name!r}: 'shape' must be a list of non-negative integers")
    if datatype != spec.datatype:
        raise ApiError(f"input {name!r} has datatype {datatype!r}; the model takes {spec.datatype}")
    if len(shape) != len(spec.shape) or any(
        want not in (-1, got) for want, got in zip(spec.shape, shape, strict=True)
    ):
        raise ApiError(
            f"input {name!r} has shape {shape}; the model takes {list(spec.shape)} (-1: any size)"
        )
    if batchable and shape[0] > max_rows:
        raise ApiError(
            f"input {name!r} has a batch of {shape[0]}, more than the server's limit of {max_rows}",
            413,
        )
    if batchable and shape[0] == 0:
        raise ApiError(f"input {name!r} has an empty batch")
    if raw is not None:
        if data is not None:
            raise ApiError(f"input {name!r} has both 'data' and binary_data_size")
        need = math.prod(shape) * np.dtype(spec.dtype).itemsize
        if len(raw) != need:
            raise ApiError(
                f"input {name!r} has {len(raw)} bytes of binary data; shape {shape} of "
                f"{spec.datatype} needs {need}"
            )
        array = np.frombuffer(raw, np.dtype(spec.dtype).newbyteorder("<")).reshape(shape)
        array = array.astype(spec.dtype)  # native byte order, writable
        if spec.datatype.startswith("FP") and not np.isfinite(array).all():
            raise ApiError(f"input {name!r} holds NaN or infinite values")
        return array
    if not isinstance(data, list):
        raise ApiError(f"input {name!r}: 'data' must be a (flat or nested) list")
    try:
        array = np.asarray(data, dtype=spec.dtype)
    except (ValueError, TypeError, OverflowError):
        raise ApiError(
            f"input {name!r}: 'data' must hold only {spec.datatype} numbers in a regular "
            "(flat or nested) list"
        ) from None
    if array.size != math.prod(shape):
        raise ApiError(
            f"input {name!r} has {array.size} values; shape {shape} needs {math.prod(shape)}"
        )
    if spec.datatype.startswith("FP") and not np.isfinite(array).all():
        raise ApiError(f"input {name!r} holds NaN or infinite values")
    return array.reshape(shape)


@dataclasses.dataclass
class InferRequest:
    """A validated inference request."""

    feeds: dict  # input name -> array
    outputs: list  # (output name, answer in binary form?)
    id: str | None


def _binary_size(entry):
    """The binary data extension's `binary_data_size` of an input object, or None."""
    parameters = entry.get("parameters") if isinstance(entry, dict) else None
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise ApiError("'binary_data_size' must be a non-negative integer")
    return size


def parse_infer_request(content, header_length, model, max_rows):
    """Validate a protocol inference request (JSON, or JSON + binary tensors) for `model`.

    `header_length` is the Inference-Header-Content-Length header of the binary data
    extension: the JSON part is that many leading bytes and the tensors follow, in order.
    """
    if header_length is None:
        header, binary = content, b""
    else:
        if not header_length.isdigit() or int(header_length) > len(content):
            raise ApiError(
                f"Inference-Header-Content-Length {header_length!r} is not a byte count "
                f"within the {len(content)}-byte body"
            )
        header, binary = content[: int(header_length)], content[int(header_length) :]
    try:
        body = json.loads(header)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(f"the request body is not JSON ({e})") from None
    except RecursionError:
        raise ApiError("the request body's JSON is nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError("the request body must be a JSON object")
    entries = body.get("inputs")
    if not isinstance(entries, list) or not entries:
        raise ApiError("the request needs a non-empty 'inputs' list")
    specs = {s.name: s for s in model.inputs}
    feeds, offset = {}, 0
    for entry in entries:
        name = entry.get("name") if isinstance(entry, dict) else None
        if name not in specs:
            raise ApiError(f"unknown input {name!r}; the model's inputs are {list(specs)}")
        if name in feeds:
            raise ApiError(f"input {name!r} is given twice")
        size, raw = _binary_size(entry), None
        if size is not None:
            if offset + size > len(binary):
                raise ApiError(f"input {name!r}: the body ends before its binary data")
            raw, offset = binary[offset : offset + size], offset + size
        feeds[name] = _parse_tensor(entry, specs[name], max_rows, model.batchable, raw)
        small = model.too_small(specs[name], feeds[name].shape)
        if small:
            raise ApiError(f"input {name!r}: {small}")
    if offset != len(binary):
        raise ApiError(f"{len(binary) - offset} bytes of binary data belong to no input")
    missing = [n for n in specs if n not in feeds]
    if missing:
        raise ApiError(f"missing input(s) {missing}")
    if len({a.shape[0] for a in feeds.values()}) > 1:
        raise ApiError("all inputs must have the same batch size")
    parameters = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
    binary_default = parameters.get("binary_data_output") is True
    outputs = [(o.name, binary_default) for o in model.outputs]
    requested = body.get("outputs")
    if requested is not None:
        if not isinstance(requested, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
        ):
            raise ApiError("'outputs' must be a list of objects with a 'name'")
        names = [name for name, _ in outputs]
        unknown = [o["name"] for o in requested if o["name"] not in names]
        if unknown:
            raise ApiError(f"unknown output(s) {unknown}; the model's outputs are {names}")
        outputs = [
            (o["name"], (o.get("parameters") or {}).get("binary_data", binary_default) is True)
            for o in requested
        ]
    request_id = body.get("id")
    return InferRequest(feeds, outputs, request_id if isinstance(request_id, str) else None)


def infer_response(model, request, result):
    """The protocol's answer: JSON, or JSON + binary tensors where the request asked."""
    specs = {o.name: o for o in model.outputs}
    answer = {"model_name": model.name, "model_version": "1", "outputs": []}
    if request.id is not None:
        answer["id"] = request.id
    chunks = []
    for name, binary in request.outputs:
        value = result[name]
        item = {"name": name, "datatype": specs[name].datatype, "shape": list(value.shape)}
        if binary:
            chunks.append(np.ascontiguousarray(value, value.dtype.newbyteorder("<")).tobytes())
            item["parameters"] = {"binary_data_size": len(chunks[-1])}
        else:
            item["data"] = value.ravel().tolist()
        answer["outputs"].append(item)
    if not chunks:
        return JSONResponse(answer)
    header = json.dumps(answer).encode()
    return Response(
        header + b"".join(chunks),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )


def create_app(config):
    """Build the FastAPI application serving `config.model` (loaded now, warmed at startup)."""
    model = OnnxModel(
        config.model, name=config.model_name, threads=config.threads, provider=config.provider
    )
    metrics = Metrics(config.max_batch_size)
    state = {"model": None, "batcher": None, "ready": False}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher = DynamicBatcher(
            model.run,
            max_batch_size=config.max_batch_size,
            max_latency_ms=config.max_latency_ms,
            batching=config.batching and model.batchable,
            timeout_s=config.timeout_s,
            on_run=metrics.observe_run,
        )
        metrics.watch_queue(batcher.queue_depth)
        await batcher.start()
        state.update(model=model, batcher=batcher)
        warm = {s.name: np.zeros(model.example_shape(s), s.dtype) for s in model.inputs}
        with contextlib.suppress(Exception):  # a model with data-dependent shapes may refuse
            await asyncio.get_running_loop().run_in_executor(None, model.run, warm)
        state["ready"] = True
        yield
        state["ready"] = False
        await batcher.stop()

    app = FastAPI(
        title="keras_alexnet inference server",
        version=__version__,
        lifespan=lifespan,
        description="KServe v2 / Open Inference Protocol REST over onnxruntime.",
    )
    app.add_middleware(
        BodyLimit,
        max_bytes=int(config.max_body_mb * 1024 * 1024),
        timeout_s=config.read_timeout_s,
    )
    # Added last, so outermost: it also counts what BodyLimit answers.
    app.add_middleware(RequestMetrics, metrics=metrics)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        # exc.headers carries Allow on a 405.
        return _error(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def unexpected_error(request, exc):
        # A bug, not the request's fault: still JSON, as every error; the log has the trace.
        return _error(500, f"internal server error ({type(exc).__name__})")

    @app.exception_handler(ApiError)
    async def bad_request(request, exc):
        return _error(exc.status, str(exc))

    def get_model(name):
        model = state["model"]
        if model is None or not state["ready"]:
            raise ApiError("the model is not loaded yet", 503)
        if name != model.name:
            raise ApiError(f"unknown model {name!r}; this server serves {model.name!r}", 404)
        return model

    def check_version(version):
        if version != "1":
            raise ApiError(f"unknown model version {version!r}; the only version is '1'", 404)

    @app.get("/v2")
    async def server_metadata():
        """Server metadata."""
        return {
            "name": "keras_alexnet",
            "version": __version__,
            "extensions": ["classify", "statistics", "binary_tensor_data"],
        }

    @app.get("/v2/health/live")
    async def live():
        """Liveness: the process answers HTTP."""
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready():
        """Readiness: the model is loaded and warmed up."""
        if not state["ready"]:
            return JSONResponse({"ready": False}, status_code=503)
        return {"ready": True}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus_metrics():
        """Prometheus metrics: requests by route and status, latency, batch sizes, queue."""
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.get("/v2/models/{name}")
    async def model_metadata(name: str):
        """Model metadata: inputs, outputs, shapes, datatypes."""
        return get_model(name).metadata_json()

    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata_version(name: str, version: str):
        """Model metadata for an explicit version."""
        check_version(version)
        return get_model(name).metadata_json()

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str):
        """Model readiness."""
        get_model(name)
        return {"name": name, "ready": True}

    @app.get("/v2/models/{name}/stats")
    async def model_stats(name: str):
        """Request, row and run counts since the server started."""
        model = get_model(name)
        stats = dataclasses.asdict(state["batcher"].stats)
        return {"model_stats": [{"name": model.name, "version": "1", **stats}]}

    async def infer(name, request):
        model = get_model(name)
        content = await request.body()
        header_length = request.headers.get("inference-header-content-length")
        parsed = await asyncio.get_running_loop().run_in_executor(
            None, parse_infer_request, content, header_length, model, config.max_batch_size
        )
        result = await run_model(parsed.feeds)
        return infer_response(model, parsed, result)

    async def run_model(feeds):
        try:
            return await state["batcher"].submit(feeds)
        except ModelError as e:
            raise ApiError(f"inference failed: {e}", 500) from None
        except RequestTimeout as e:
            raise ApiError(str(e), 503) from None

    @app.post("/v2/models/{name}/infer", openapi_extra=INFER_BODY, responses=INFER_ERRORS)
    async def infer_route(name: str, request: Request):
        """Inference on tensors in the protocol's JSON form."""
        return await infer(name, request)

    @app.post(
        "/v2/models/{name}/versions/{version}/infer",
        openapi_extra=INFER_BODY,
        responses=INFER_ERRORS,
    )
    async def infer_version_route(name: str, version: str, request: Request):
        """Inference on an explicit version."""
        check_version(version)
        return await infer(name, request)

    @app.post("/v2/models/{name}/classify", openapi_extra=CLASSIFY_BODY, responses=CLASSIFY_ERRORS)
    async def classify(name: str, request: Request):
        """Top-5 classes of uploaded images (multipart field `file`, repeatable)."""
        model = get_model(name)
        if model.metadata is None:
            raise ApiError(
                f"model {model.name!r} has no keras_alexnet preprocessing metadata "
                "(export it with keras_alexnet); use /infer with tensors",
                400,
            )
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise ApiError(
                f"expected multipart/form-data with image files in the field 'file', got "
                f"{content_type or 'no Content-Type'!r}",
                415,
            )
        limit = int(config.max_body_mb * 1024 * 1024)
        async with request.form(max_part_size=limit) as form:
            uploads = form.getlist("file")
            if not uploads:
                raise ApiError("no images: send one or more files in the multipart field 'file'")
            if len(uploads) > config.max_batch_size:
                raise ApiError(
                    f"{len(uploads)} images is more than the server's limit of "
                    f"{config.max_batch_size} per request",
                    413,
                )
            files = []
            for upload in uploads:
                if not isinstance(upload, UploadFile):
                    raise ApiError("the field 'file' must hold file uploads, not text")
                files.append((upload.filename or "", await upload.read()))
        crops = await asyncio.get_running_loop().run_in_executor(
            None, _preprocess_all, files, model.metadata, config.max_pixels
        )
        spec = model.inputs[0]
        result = await run_model({spec.name: np.stack(crops).astype(spec.dtype, copy=False)})
        probabilities = result[model.probabilities]
        names = list(model.metadata.class_names)
        return {
            "model_name": model.name,
            "model_version": "1",
            "results": [
                {"file": filename, "top5": top_k(p, names)}
                for (filename, _), p in zip(files, probabilities, strict=True)
            ],
        }

    return app


def _preprocess_all(files, metadata, max_pixels):
    """Decode and crop every uploaded file; a bad one fails the request with its name."""
    crops = []
    for filename, data in files:
        try:
            crops.append(images.preprocess(data, metadata, max_pixels))
        except images.ImageTooLarge as e:
            raise ApiError(f"file {filename!r}: {e}", 413) from None
        except (images.ImageError, ValueError) as e:
            raise ApiError(f"file {filename!r}: {e}", 415) from None
    return crops


def serve(config):
    """Load the model and serve HTTP until interrupted."""
    import uvicorn

    from keras_alexnet.serving.protocol import StrictH11Protocol

    app = create_app(config)
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        log_level=config.log_level,
        access_log=config.log_level in ("debug", "info"),
        timeout_graceful_shutdown=5,
        http=functools.partial(StrictH11Protocol, read_timeout_s=config.read_timeout_s),
        timeout_keep_alive=config.keep_alive_s,
    )
