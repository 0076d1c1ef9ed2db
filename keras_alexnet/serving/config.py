"""The server's settings, `ServeConfig`, checked when made; importing this loads no FastAPI.

`scripts/serve.py` derives its flag defaults from here, so `--help` stays fast.
"""

import dataclasses
import math

from keras_alexnet.images.headers import UPLOAD_MAX_PIXELS
from keras_alexnet.onnx.session import AUTO

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
    "max_inflight_mb": (lambda v: v >= 0, "a finite number >= 0"),
    "inflight_wait_s": (lambda v: v >= 0, "a finite number >= 0"),
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
    max_pixels: int = UPLOAD_MAX_PIXELS
    timeout_s: float = 30.0
    provider: str = AUTO
    read_timeout_s: float = 30.0  # for a request's headers, and then for its body
    keep_alive_s: float = 5.0  # an idle connection is closed after this
    # Memory for the requests in flight (bodies, parsed JSON, decoded images), 0: no limit.
    # Sized, with the server's own memory, for a 2 GB container (figures:
    # benchmarks/RESULTS.md, "Serving memory").
    max_inflight_mb: float = 1024.0
    inflight_wait_s: float = 10.0  # a request waits this long for room, then gets a 503
    log_level: str = "warning"

    def __post_init__(self):
        """Refuse values no server can run with, naming the flag that sets them."""
        for name, (accept, requirement) in LIMITS.items():
            value = getattr(self, name)
            if not (math.isfinite(value) and accept(value)):
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} must be {requirement}. Received: {value}")

    @property
    def max_body_bytes(self):
        """`max_body_mb` in bytes: the largest request body, and the largest multipart part."""
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def inflight_limit_bytes(self):
        """`max_inflight_mb` in bytes, or None for no limit (0)."""
        return int(self.max_inflight_mb * 1024 * 1024) or None
