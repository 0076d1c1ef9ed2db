"""The served model with its dynamic batcher and metrics: start-up, warm-up, runs; no HTTP."""

import asyncio
import contextlib

import numpy as np

from keras_alexnet.classify import top_k
from keras_alexnet.images import decode
from keras_alexnet.serving.batching import DynamicBatcher, ModelError, RequestTimeout
from keras_alexnet.serving.budget import MemoryBudget
from keras_alexnet.serving.errors import ApiError
from keras_alexnet.serving.kserve import VERSION
from keras_alexnet.serving.metrics import Metrics
from keras_alexnet.serving.model import OnnxModel


class ModelService:
    """One app's model, its batcher and metrics, and whether it is ready for requests.

    The model loads when the service is made (a bad path fails at once); the batcher starts
    and the model is warmed up in `start`, which the app's lifespan calls.
    """

    def __init__(self, config):
        self.config = config
        self.model = OnnxModel(
            config.model, name=config.model_name, threads=config.threads, provider=config.provider
        )
        self.metrics = Metrics(config.max_batch_size)
        self.budget = MemoryBudget(config.inflight_limit_bytes, config.inflight_wait_s)
        self.metrics.watch_budget(self.budget)
        self.batcher = None
        self.ready = False

    async def start(self):
        """Start the batcher on the running loop, warm the model up, then be ready."""
        model, config = self.model, self.config
        self.batcher = DynamicBatcher(
            model.run,
            max_batch_size=config.max_batch_size,
            max_latency_ms=config.max_latency_ms,
            batching=config.batching and model.batchable,
            timeout_s=config.timeout_s,
            on_run=self.metrics.observe_run,
        )
        self.metrics.watch_queue(self.batcher.queue_depth)
        await self.batcher.start()
        warm = {s.name: np.zeros(model.example_shape(s), s.dtype) for s in model.inputs}
        with contextlib.suppress(Exception):  # a model with data-dependent shapes may refuse
            await asyncio.get_running_loop().run_in_executor(None, model.run, warm)
        self.ready = True

    async def stop(self):
        """Stop taking requests and fail those still queued."""
        self.ready = False
        await self.batcher.stop()

    def model_for(self, name, version=None):
        """The model a URL names: ApiError 404 for another name or version, 503 until ready."""
        if version is not None and version != VERSION:
            raise ApiError(
                f"unknown model version {version!r}; the only version is {VERSION!r}", 404
            )
        if not self.ready:
            raise ApiError("the model is not loaded yet", 503)
        if name != self.model.name:
            raise ApiError(f"unknown model {name!r}; this server serves {self.model.name!r}", 404)
        return self.model

    async def run(self, feeds):
        """Run one request's feeds through the batcher; a failure is an ApiError 500 or 503."""
        try:
            return await self.batcher.submit(feeds)
        except ModelError as e:
            raise ApiError(f"inference failed: {e}", 500) from None
        except RequestTimeout as e:
            raise ApiError(str(e), 503) from None

    async def classify(self, files, reservation):
        """[{"file", "top5"}] of (filename, bytes) image files, with the model's preprocessing.

        What decoding them costs is added to `reservation` (the request's, in the budget).
        """
        model, loop = self.model, asyncio.get_running_loop()
        cost = await loop.run_in_executor(None, _classify_cost, files, model, self.config)
        await reservation.add(cost, f"decoding {len(files)} image{'s' if len(files) > 1 else ''}")
        crops = await loop.run_in_executor(
            None, _preprocess_all, files, model.metadata, self.config.max_pixels
        )
        spec = model.inputs[0]
        result = await self.run({spec.name: np.stack(crops).astype(spec.dtype, copy=False)})
        names = list(model.metadata.class_names)
        return [
            {"file": filename, "top5": top_k(p, names)}
            for (filename, _), p in zip(files, result[model.probabilities], strict=True)
        ]


def _classify_cost(files, model, config):
    """About the peak bytes of classifying `files`: the largest decode, every crop twice.

    The files are decoded one at a time; the crops are kept, then stacked into a batch.
    """
    size = model.metadata.input_size
    crops = 2 * len(files) * size * size * 3 * np.dtype(np.float32).itemsize
    largest = max(decode.decode_cost(data, config.max_pixels) for _, data in files)
    return largest + crops


def _preprocess_all(files, metadata, max_pixels):
    """Decode and crop every uploaded file; a bad one fails the request with its name."""
    crops = []
    for filename, data in files:
        try:
            crops.append(decode.preprocess(data, metadata, max_pixels))
        except decode.ImageTooLarge as e:
            raise ApiError(f"file {filename!r}: {e}", 413) from None
        except (decode.ImageError, ValueError) as e:
            raise ApiError(f"file {filename!r}: {e}", 415) from None
    return crops
