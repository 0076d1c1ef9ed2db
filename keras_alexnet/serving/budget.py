"""A memory budget for the work in flight: request bodies, parsed JSON and decoded images.

Every request reserves, before the work, about the bytes it will hold: its body while it is
read (`body_limit.BodyLimit`), then what parsing its JSON or decoding its images costs at
the peak (`kserve.parse_cost`, `images.decode_cost`), until it is answered. A reservation
that does not fit waits, first come first served, up to `wait_s`; then the request gets a
503 with Retry-After. One larger than the whole budget gets a 413 at once. The model's own
run (one at a time, at most `--max-batch-size` rows) is outside the budget.

Freed memory goes back to the system when the server is idle again: glibc keeps the memory
freed by large allocations in its arenas (most of a burst stayed resident without this),
so `malloc_trim` is called once the work in flight falls to zero after a large burst.
"""

import asyncio
import collections
import contextlib
import ctypes
import ctypes.util
import math

from keras_alexnet.serving.errors import ApiError

MIB = 1024 * 1024
RETRY_AFTER_S = 1  # what a 503 for a full budget tells the client to wait
TRIM_AFTER_BYTES = 64 * MIB  # released since the last trim: worth handing back when idle


def _malloc_trim():
    """The C library's malloc_trim (glibc), or None where the C library has none (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


class MemoryBudget:
    """Bytes reserved by the requests in flight, kept within `limit_bytes` (None: no limit)."""

    def __init__(self, limit_bytes, wait_s):
        self.limit = limit_bytes
        self.wait_s = wait_s
        self.in_flight = 0
        self._waiters = collections.deque()  # (bytes, future), first come first served
        self._released = 0  # bytes released since the last malloc_trim
        self._trim = _malloc_trim()

    async def reserve(self, nbytes, what):
        """Reserve `nbytes` for `what` (a request, a file), waiting up to `wait_s` for room.

        ApiError 413 if `nbytes` is more than the whole budget, 503 (Retry-After) if no room
        came in time. Every reservation must be given back with `release`.
        """
        nbytes = int(nbytes)
        if self.limit is None or (not self._waiters and self.in_flight + nbytes <= self.limit):
            self.in_flight += nbytes
            return
        if nbytes > self.limit:
            raise ApiError(
                f"{what} needs about {_mib(nbytes)} MiB of memory, more than the server's "
                f"whole budget of {_mib(self.limit)} MiB for requests in flight "
                "(--max-inflight-mb)",
                413,
            )
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((nbytes, waiter))
        try:
            await asyncio.wait({waiter}, timeout=self.wait_s)
        except asyncio.CancelledError:  # the request went away while waiting
            if waiter.done():
                self.release(nbytes)  # granted just as it went
            else:
                self._leave(nbytes, waiter)
            raise
        if not waiter.done():
            self._leave(nbytes, waiter)
            raise ApiError(
                f"the server is busy: its memory budget for requests in flight "
                f"({_mib(self.limit)} MiB) has no room for {what} (about {_mib(nbytes)} MiB); "
                f"retry after {RETRY_AFTER_S} s",
                503,
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )

    @contextlib.asynccontextmanager
    async def hold(self, nbytes, what):
        """Reserve `nbytes` for `what` for the block (see `reserve`)."""
        await self.reserve(nbytes, what)
        try:
            yield
        finally:
            self.release(nbytes)

    def release(self, nbytes):
        """Give back a reservation of `nbytes`; let waiting requests in."""
        nbytes = int(nbytes)
        self.in_flight -= nbytes
        self._released += nbytes
        self._grant()
        if self.in_flight == 0 and self._released >= TRIM_AFTER_BYTES and self._trim:
            self._released = 0
            # In a worker thread: trimming a large heap takes milliseconds.
            asyncio.get_running_loop().run_in_executor(None, self._trim, 0)

    def _leave(self, nbytes, waiter):
        """Take a waiter that was not granted out of the line; the next may fit now."""
        self._waiters.remove((nbytes, waiter))
        waiter.cancel()
        self._grant()

    def _grant(self):
        """Reserve for the waiters at the head of the line while they fit."""
        while self._waiters and self.in_flight + self._waiters[0][0] <= self.limit:
            nbytes, waiter = self._waiters.popleft()
            self.in_flight += nbytes
            waiter.set_result(None)


class Reservation:
    """What one request holds in a MemoryBudget: grown with `add`, given back by `release`."""

    def __init__(self, budget):
        self.budget = budget
        self.nbytes = 0

    async def add(self, nbytes, what):
        """Reserve `nbytes` more for `what` (see `MemoryBudget.reserve`)."""
        await self.budget.reserve(nbytes, what)
        self.nbytes += int(nbytes)

    def release(self):
        """Give back all of it."""
        self.budget.release(self.nbytes)
        self.nbytes = 0


def _mib(nbytes):
    """`nbytes` in MiB, rounded up, for messages."""
    return math.ceil(nbytes / MIB)
