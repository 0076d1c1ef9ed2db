"""Dynamic batching: concurrent requests merged into one model run, answers routed back."""

import asyncio
import collections
import concurrent.futures
import dataclasses
import time

import numpy as np


class RequestTimeout(RuntimeError):
    """A request not answered within the server's timeout."""


@dataclasses.dataclass
class _Item:
    feeds: dict  # input name -> array with the request's rows along axis 0
    rows: int
    key: tuple  # requests can share a run only if every non-batch dimension agrees
    arrival: float
    future: asyncio.Future


@dataclasses.dataclass
class Stats:
    """Counters in the style of the protocol's statistics extension."""

    inference_count: int = 0  # rows inferred
    request_count: int = 0  # requests answered (success or failure)
    execution_count: int = 0  # model runs
    failure_count: int = 0  # requests failed inside the model
    run_seconds: float = 0.0  # time inside the model


class DynamicBatcher:
    """Queue requests and run them together, up to `max_batch_size` rows per model run.

    The first queued request waits at most `max_latency_ms` for others to join it; with
    `batching=False` every request is its own run. Runs happen one at a time in a worker
    thread (onnxruntime parallelises inside a run), so the event loop keeps accepting.
    `on_run(rows, seconds)`, if given, is told of every run (metrics).
    """

    def __init__(
        self,
        run,
        *,
        max_batch_size=32,
        max_latency_ms=5.0,
        batching=True,
        timeout_s=30.0,
        on_run=None,
    ):
        self._run = run
        self._on_run = on_run
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_ms / 1000
        self.batching = batching
        self.timeout_s = timeout_s
        self.stats = Stats()
        self._queue = collections.deque()
        self._wake = None
        self._task = None
        self._executor = None

    async def start(self):
        """Start the batching loop on the running event loop."""
        self._wake = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model")
        self._task = asyncio.create_task(self._loop())

    async def stop(self):
        """Stop the loop and fail whatever is still queued."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(RuntimeError("server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, feeds):
        """Queue one request's inputs (a dict of arrays, same rows each); await its outputs."""
        first = next(iter(feeds.values()))
        key = tuple((name, a.shape[1:], a.dtype.str) for name, a in sorted(feeds.items()))
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(feeds, len(first), key, time.monotonic(), future))
        self._wake.set()
        try:
            return await asyncio.wait_for(future, self.timeout_s)
        except TimeoutError:
            raise RequestTimeout(f"no answer from the model within {self.timeout_s:g} s") from None

    def queue_depth(self):
        """Requests waiting for a run (not those being run, nor those that timed out)."""
        return sum(not item.future.done() for item in self._queue)

    def _take(self):
        """Remove and return the requests of the next run (compatible, within the limit)."""
        while self._queue and self._queue[0].future.done():  # timed out while queued
            self._queue.popleft()
        if not self._queue:
            return []
        first = self._queue.popleft()
        batch, rows = [first], first.rows
        if self.batching:
            kept = collections.deque()
            while self._queue and rows < self.max_batch_size:
                item = self._queue.popleft()
                if item.future.done():
                    continue
                if item.key == first.key and rows + item.rows <= self.max_batch_size:
                    batch.append(item)
                    rows += item.rows
                else:
                    kept.append(item)
            self._queue.extendleft(reversed(kept))
        return batch

    def _queued_rows(self):
        """Rows waiting that could join a run with the oldest request."""
        key = self._queue[0].key
        return sum(i.rows for i in self._queue if i.key == key and not i.future.done())

    async def _loop(self):
        """Wait for requests, gather a batch, run it in the worker thread, answer."""
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            if self.batching:
                await self._wait_for_company()
            batch = self._take()
            if batch:
                await self._run_batch(batch)

    async def _wait_for_company(self):
        """Wait until a full batch is queued or the oldest request has waited its latency."""
        deadline = self._queue[0].arrival + self.max_latency_s
        while self._queued_rows() < self.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                return

    async def _run_batch(self, batch):
        """Run `batch`'s requests as one model run; answer each with its rows, or the error."""
        feeds = {
            name: np.concatenate([item.feeds[name] for item in batch])
            if len(batch) > 1
            else batch[0].feeds[name]
            for name in batch[0].feeds
        }
        rows = sum(item.rows for item in batch)
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        try:
            outputs = await loop.run_in_executor(self._executor, self._run, feeds)
            if len(batch) > 1:
                _check_rows(outputs, rows)
        except Exception as e:  # any failure inside the model fails this run's requests
            self.stats.failure_count += len(batch)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(ModelError(str(e).strip()))
            return
        finally:
            seconds = time.perf_counter() - start
            self.stats.execution_count += 1
            self.stats.request_count += len(batch)
            self.stats.run_seconds += seconds
            if self._on_run is not None:
                self._on_run(rows, seconds)
        self._answer(batch, outputs)

    def _answer(self, batch, outputs):
        """Give each request of `batch` its rows of `outputs`."""
        offset = 0
        for item in batch:
            self.stats.inference_count += item.rows
            if len(batch) > 1:
                part = {n: v[offset : offset + item.rows] for n, v in outputs.items()}
            else:
                part = outputs
            offset += item.rows
            if not item.future.done():
                item.future.set_result(part)


def _check_rows(outputs, rows):
    """Refuse outputs without one row per input row: they cannot be split between requests."""
    for name, value in outputs.items():
        if value.ndim == 0 or value.shape[0] != rows:
            raise RuntimeError(
                f"output {name!r} has shape {list(value.shape)}, not one row per "
                f"input row ({rows}); cannot split it between requests"
            )


class ModelError(RuntimeError):
    """A failure inside the model run."""
