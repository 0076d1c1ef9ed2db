"""Prometheus metrics of one server app, served at /metrics in the text exposition format.

Each app keeps its own CollectorRegistry (not prometheus_client's global one), so several
apps in one process (tests, an embedding program) count separately and never collide.
"""

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.routing import Match

PREFIX = "keras_alexnet_"
# Requests matching no route share one label: a label per path a scanner tries would grow
# the time series without bound.
UNMATCHED = "unmatched"


def _batch_buckets(max_batch_size):
    """Histogram buckets for rows per model run: powers of two up to the largest batch."""
    powers = {2**i for i in range(max_batch_size.bit_length()) if 2**i < max_batch_size}
    return sorted(powers | {max_batch_size})


class Metrics:
    """Request counts by route and status, request latency, rows per model run, queue depth."""

    def __init__(self, max_batch_size):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            PREFIX + "requests",
            "HTTP requests answered, by route template, method and status code",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            PREFIX + "request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by route template",
            ["route"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            PREFIX + "batch_size",
            "Rows (images) per model run, after dynamic batching",
            buckets=_batch_buckets(max_batch_size),
            registry=self.registry,
        )
        self.run_seconds = Histogram(
            PREFIX + "model_run_seconds", "Time inside the model per run", registry=self.registry
        )
        self.queue_depth = Gauge(
            PREFIX + "queue_depth", "Requests waiting for a model run", registry=self.registry
        )

    def watch_budget(self, budget):
        """Report `budget`'s reserved bytes and limit at each scrape."""
        in_flight = Gauge(
            PREFIX + "inflight_bytes",
            "Memory reserved by the requests in flight (bodies, parsed JSON, decoded images)",
            registry=self.registry,
        )
        in_flight.set_function(lambda: budget.in_flight)
        limit = Gauge(
            PREFIX + "inflight_limit_bytes",
            "The budget for memory in flight (--max-inflight-mb); 0: no limit",
            registry=self.registry,
        )
        limit.set(budget.limit or 0)

    def observe_run(self, rows, seconds):
        """Record one model run of `rows` rows that took `seconds`."""
        self.batch_size.observe(rows)
        self.run_seconds.observe(seconds)

    def watch_queue(self, depth):
        """Report `depth()`, called at each scrape, as the queue depth."""
        self.queue_depth.set_function(depth)

    def exposition(self):
        """(body, content type) of the current metrics in Prometheus's text format."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _route_template(scope):
    """The route template (`/v2/models/{name}/infer`) a request was for, or UNMATCHED.

    The router records the route it picked; a request answered before routing (413 from
    the body limit) is matched here.
    """
    route = scope.get("route")
    if route is None:
        route = next(
            (r for r in scope["app"].routes if r.matches(scope)[0] is not Match.NONE), None
        )
    return getattr(route, "path", UNMATCHED)


class RequestMetrics:
    """ASGI middleware: count every HTTP request and time it into `metrics`."""

    def __init__(self, app, metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        """Handle one ASGI connection."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500  # an exception before the answer starts is answered with a 500

        async def send_and_note_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            route = _route_template(scope)
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
