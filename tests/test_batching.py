"""The server's dynamic batcher as a unit: in-process, asyncio, a model that records its runs."""

import asyncio
import threading

import numpy as np
import pytest

from keras_alexnet.serving.batching import DynamicBatcher, ModelError, RequestTimeout


class Recorder:
    """A model run that doubles its input and records each run's row count and shape.

    With `gate` set it blocks until the gate opens, so a test can fill the queue meanwhile.
    """

    def __init__(self, gate=None):
        self.runs, self.gate = [], gate

    def __call__(self, feeds):
        if self.gate is not None:
            self.gate.wait(5)
        x = feeds["x"]
        self.runs.append(x.shape)
        return {"y": x * 2}


def rows(count, width=3, start=0):
    """`count` rows of `width` values, each row numbered from `start`."""
    return np.arange(start, start + count, dtype=np.float32)[:, None] * np.ones(width, np.float32)


def run(coroutine):
    """Run `coroutine` on a fresh event loop."""
    return asyncio.run(coroutine)


async def started(model, **kwargs):
    """A started DynamicBatcher around `model`."""
    batcher = DynamicBatcher(model, **kwargs)
    await batcher.start()
    return batcher


def test_concurrent_requests_share_a_run_and_get_their_own_rows_back():
    async def scenario():
        model = Recorder()
        batcher = await started(model, max_batch_size=8, max_latency_ms=200)
        answers = await asyncio.gather(
            *(batcher.submit({"x": rows(2, start=10 * i)}) for i in range(3))
        )
        await batcher.stop()
        return model, answers

    model, answers = run(scenario())
    assert model.runs == [(6, 3)]  # one run of the three requests' six rows
    for i, answer in enumerate(answers):
        np.testing.assert_array_equal(answer["y"], rows(2, start=10 * i) * 2)


def test_requests_of_different_shapes_are_never_merged():
    async def scenario():
        model = Recorder()
        batcher = await started(model, max_batch_size=8, max_latency_ms=100)
        narrow, wide = await asyncio.gather(
            batcher.submit({"x": rows(2, width=3)}), batcher.submit({"x": rows(2, width=5)})
        )
        await batcher.stop()
        return model, narrow, wide

    model, narrow, wide = run(scenario())
    assert sorted(model.runs) == [(2, 3), (2, 5)]
    assert narrow["y"].shape == (2, 3) and wide["y"].shape == (2, 5)


def test_rows_past_the_batch_limit_wait_for_the_next_run():
    async def scenario():
        gate = threading.Event()
        model = Recorder(gate)
        batcher = await started(model, max_batch_size=4, max_latency_ms=1)
        first = asyncio.ensure_future(batcher.submit({"x": rows(1)}))  # blocks the model
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(batcher.submit({"x": rows(3, start=i)})) for i in (1, 4)]
        await asyncio.sleep(0.02)
        depth = batcher.queue_depth()
        gate.set()
        await asyncio.gather(first, *queued)
        await batcher.stop()
        return model, depth

    model, depth = run(scenario())
    assert depth == 2
    assert model.runs == [(1, 3), (3, 3), (3, 3)]  # 3 + 3 rows exceed 4: two runs


def test_a_request_that_times_out_is_dropped_and_never_run():
    async def scenario():
        gate = threading.Event()
        model = Recorder(gate)
        batcher = await started(model, max_batch_size=4, max_latency_ms=1, timeout_s=0.1)
        blocking = asyncio.ensure_future(batcher.submit({"x": rows(1)}))
        await asyncio.sleep(0.02)
        with pytest.raises(RequestTimeout, match="within 0.1 s"):
            await batcher.submit({"x": rows(2, start=7)})  # queued behind the blocked run
        assert batcher.queue_depth() == 0
        gate.set()
        with pytest.raises(RequestTimeout):
            await blocking  # its own timeout passed while the model was blocked
        await asyncio.sleep(0.05)
        await batcher.stop()
        return model

    model = run(scenario())
    assert model.runs == [(1, 3)]  # the timed-out request's two rows never reached the model


def test_stop_fails_what_is_queued():
    async def scenario():
        gate = threading.Event()
        model = Recorder(gate)
        batcher = await started(model, max_batch_size=4, max_latency_ms=1)
        blocking = asyncio.ensure_future(batcher.submit({"x": rows(1)}))
        await asyncio.sleep(0.02)
        queued = asyncio.ensure_future(batcher.submit({"x": rows(2)}))
        await asyncio.sleep(0.02)
        await batcher.stop()
        gate.set()
        outcome = await asyncio.gather(queued, return_exceptions=True)
        blocking.cancel()
        return outcome[0]

    error = run(scenario())
    assert isinstance(error, RuntimeError) and "shutting down" in str(error)


def test_a_failing_model_fails_only_its_runs_requests():
    def broken(feeds):
        raise ValueError("bad input\n")

    async def scenario():
        batcher = await started(broken, max_batch_size=4, max_latency_ms=1)
        with pytest.raises(ModelError, match="^bad input$"):
            await batcher.submit({"x": rows(1)})
        stats = batcher.stats
        await batcher.stop()
        return stats

    stats = run(scenario())
    assert (stats.failure_count, stats.request_count, stats.execution_count) == (1, 1, 1)
