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

The routes are module-level functions on `router`; each reaches its app's `ModelService`
(model, batcher, metrics) through the `Service` dependency, so several apps can share
one process.
"""

import asyncio
import contextlib
import dataclasses
import errno
import functools
import socket
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.datastructures import UploadFile

from keras_alexnet import __version__
from keras_alexnet.serving.body_limit import BodyLimit
from keras_alexnet.serving.budget import SCOPE_KEY, unmap_large_allocations
from keras_alexnet.serving.config import ServeConfig
from keras_alexnet.serving.errors import ApiError, add_error_handlers
from keras_alexnet.serving.kserve import (
    VERSION,
    infer_response,
    parse_cost,
    parse_infer_request,
)
from keras_alexnet.serving.metrics import RequestMetrics
from keras_alexnet.serving.openapi import CLASSIFY_BODY, CLASSIFY_ERRORS, INFER_BODY, INFER_ERRORS
from keras_alexnet.serving.service import ModelService

__all__ = ["ServeConfig", "create_app", "router", "serve"]


def _service(request: Request) -> ModelService:
    return request.app.state.service


Service = Annotated[ModelService, Depends(_service)]
router = APIRouter()


@router.get("/v2")
async def server_metadata():
    """Server metadata."""
    return {
        "name": "keras_alexnet",
        "version": __version__,
        "extensions": ["classify", "statistics", "binary_tensor_data"],
    }


@router.get("/v2/health/live")
async def live():
    """Liveness: the process answers HTTP."""
    return {"live": True}


@router.get("/v2/health/ready")
async def ready(service: Service):
    """Readiness: the model is loaded and warmed up."""
    if not service.ready:
        return JSONResponse({"ready": False}, status_code=503)
    return {"ready": True}


@router.get("/metrics", response_class=PlainTextResponse)
async def prometheus_metrics(service: Service):
    """Prometheus metrics: requests by route and status, latency, batch sizes, queue."""
    body, content_type = service.metrics.exposition()
    return Response(body, media_type=content_type)


@router.get("/v2/models/{name}")
async def model_metadata(name: str, service: Service):
    """Model metadata: inputs, outputs, shapes, datatypes."""
    return service.model_for(name).metadata_json()


@router.get("/v2/models/{name}/versions/{version}")
async def model_metadata_version(name: str, version: str, service: Service):
    """Model metadata for an explicit version."""
    return service.model_for(name, version).metadata_json()


@router.get("/v2/models/{name}/ready")
async def model_ready(name: str, service: Service):
    """Model readiness."""
    service.model_for(name)
    return {"name": name, "ready": True}


@router.get("/v2/models/{name}/stats")
async def model_stats(name: str, service: Service):
    """Request, row and run counts since the server started."""
    model = service.model_for(name)
    stats = dataclasses.asdict(service.batcher.stats)
    return {"model_stats": [{"name": model.name, "version": VERSION, **stats}]}


async def _infer(service, name, version, request):
    """Parse the protocol request off the event loop, run it batched, answer it."""
    model, loop = service.model_for(name, version), asyncio.get_running_loop()
    content = await request.body()
    header_length = request.headers.get("inference-header-content-length")
    cost = await loop.run_in_executor(None, parse_cost, content, header_length)
    await request.scope[SCOPE_KEY].add(cost, "parsing the request")  # held until answered
    parsed = await loop.run_in_executor(
        None, parse_infer_request, content, header_length, model, service.config.max_batch_size
    )
    result = await service.run(parsed.feeds)
    return infer_response(model, parsed, result)


@router.post("/v2/models/{name}/infer", openapi_extra=INFER_BODY, responses=INFER_ERRORS)
async def infer_route(name: str, request: Request, service: Service):
    """Inference on tensors in the protocol's JSON form."""
    return await _infer(service, name, None, request)


@router.post(
    "/v2/models/{name}/versions/{version}/infer",
    openapi_extra=INFER_BODY,
    responses=INFER_ERRORS,
)
async def infer_version_route(name: str, version: str, request: Request, service: Service):
    """Inference on an explicit version."""
    return await _infer(service, name, version, request)


async def _uploads(request, config):
    """(filename, bytes) of each file in the multipart field `file`, within the limits."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(
            f"expected multipart/form-data with image files in the field 'file', got "
            f"{content_type or 'no Content-Type'!r}",
            415,
        )
    async with request.form(max_part_size=config.max_body_bytes) as form:
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
    return files


@router.post("/v2/models/{name}/classify", openapi_extra=CLASSIFY_BODY, responses=CLASSIFY_ERRORS)
async def classify(name: str, request: Request, service: Service):
    """Top-5 classes of uploaded images (multipart field `file`, repeatable)."""
    model = service.model_for(name)
    if model.metadata is None:
        raise ApiError(
            f"model {model.name!r} has no keras_alexnet preprocessing metadata "
            "(export it with keras_alexnet); use /infer with tensors",
            400,
        )
    files = await _uploads(request, service.config)
    results = await service.classify(files, request.scope[SCOPE_KEY])
    return {"model_name": model.name, "model_version": VERSION, "results": results}


@contextlib.asynccontextmanager
async def lifespan(app):
    """Start the app's service (batcher, warm-up) before serving; stop it at shutdown."""
    service = app.state.service
    await service.start()
    if getattr(app.state, "ready_line", None):  # set by `serve`, not by tests' clients
        print(app.state.ready_line, flush=True)
    yield
    await service.stop()


def create_app(config):
    """Build the FastAPI application serving `config.model` (loaded now, warmed at startup)."""
    service = ModelService(config)
    app = FastAPI(
        title="keras_alexnet inference server",
        version=__version__,
        lifespan=lifespan,
        description="KServe v2 / Open Inference Protocol REST over onnxruntime.",
        # The routes themselves, not include_router's wrapper: the metrics middleware finds
        # the template of a request answered before routing among app.routes.
        routes=router.routes,
    )
    app.state.service = service
    app.add_middleware(
        BodyLimit,
        max_bytes=config.max_body_bytes,
        timeout_s=config.read_timeout_s,
        budget=service.budget,
    )
    # Added last, so outermost: it also counts what BodyLimit answers.
    app.add_middleware(RequestMetrics, metrics=service.metrics)
    add_error_handlers(app)
    return app


def serve(config):
    """Take the port, load the model, say where it serves, and serve HTTP until interrupted.

    The port is bound before the model loads, so a busy one is a one-line error at once.
    """
    import uvicorn

    from keras_alexnet.serving.protocol import MAX_HEADER_BYTES, StrictH11Protocol

    sock = bind(config.host, config.port)
    unmap_large_allocations()  # this process's allocator, before the model loads
    app = create_app(config)
    url = f"http://{config.host}:{sock.getsockname()[1]}"
    app.state.ready_line = f"Serving {app.state.service.model.name} at {url} (ready; Ctrl-C stops)"
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level=config.log_level,
            access_log=config.log_level in ("debug", "info"),
            timeout_graceful_shutdown=5,
            http=functools.partial(StrictH11Protocol, read_timeout_s=config.read_timeout_s),
            timeout_keep_alive=config.keep_alive_s,
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        )
    )
    server.run(sockets=[sock])


def bind(host, port):
    """A listening TCP socket on (host, port); OSError in one line when it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        why = "in use (another server?)" if e.errno == errno.EADDRINUSE else e.strerror
        raise OSError(
            e.errno, f"cannot listen on {host}:{port}: {why}; choose another --port"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
