"""A memory budget for the work in flight: request bodies, parsed JSON and decoded images.

Every request reserves, before the work, about the bytes it will hold: its body while it is
read (`body_limit.BodyLimit`), then what parsing its JSON or decoding its images costs at
the peak (`kserve.parse_cost`, `decode.decode_cost`), until it is answered. A reservation
that does not fit waits, first come first served, up to `wait_s`; then the request gets a
503 with Retry-After. One larger than the whole budget gets a 413 at once. The model's own
run (one at a time, at most `--max-batch-size` rows) is outside the budget.

Freed memory goes back to the system when the server is idle again: glibc keeps the memory
freed by large allocations in its arenas (most of a burst stayed resident without this),
so the server maps large allocations on their own (`unmap_large_allocations`) and calls
`malloc_trim` once the work in flight falls to zero after a large burst.
"""

import asyncio
import collections
import ctypes
import ctypes.util
import dataclasses
import math

from keras_alexnet.serving.errors import ApiError

MIB = 1024 * 1024
RETRY_AFTER_S = 1  # what a 503 for a full budget tells the client to wait
TRIM_AFTER_BYTES = 64 * MIB  # released since the last trim: worth handing back when idle
SCOPE_KEY = "keras_alexnet.reservation"  # the request's Reservation in its ASGI scope
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
MMAP_THRESHOLD = 1024 * 1024  # allocations this large are mapped on their own


def unmap_large_allocations(threshold=MMAP_THRESHOLD):
    """Have glibc map each allocation of `threshold` bytes or more alone, unmapped when freed.

    A no-op without glibc; for the server process, at its start. By default glibc raises
    that threshold up to 32 MiB as large blocks are freed, then keeps such blocks in its
    arenas once freed: decoded images and parsed bodies stayed resident after a burst. A
    fixed threshold (set with mallopt) stops that.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mallopt(M_MMAP_THRESHOLD, threshold)


def _malloc_trim():
    """The C library's malloc_trim (glibc), or None where the C library has none (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


@dataclasses.dataclass(eq=False)
class _Waiter:
    nbytes: int  # what it waits for
    held: int  # what its request holds already (its body) while it waits
    future: asyncio.Future  # set when granted, cancelled when refused


class MemoryBudget:
    """Bytes reserved by the requests in flight, kept within `limit_bytes` (None: no limit).

    Requests wait in line, first come first served. A request waiting for more while it
    holds some (its body) could wait for ever behind others doing the same, the budget
    full of bodies; when the first in line could not fit even once all running work is
    done, the last ones in line that hold memory are refused (503) to make room.
    """

    def __init__(self, limit_bytes, wait_s):
        self.limit = limit_bytes
        self.wait_s = wait_s
        self.in_flight = 0
        self._waiters = collections.deque()
        self._released = 0  # bytes released since the last malloc_trim
        self._trim = _malloc_trim()

    async def reserve(self, nbytes, what, held=0):
        """Reserve `nbytes` for `what`, whose request holds `held`, waiting up to `wait_s`.

        ApiError 413 if `held + nbytes` is more than the whole budget, 503 (Retry-After)
        if no room came in time. Every reservation must be given back with `release`.
        """
        nbytes = int(nbytes)
        if self.limit is None or (not self._waiters and self.in_flight + nbytes <= self.limit):
            self.in_flight += nbytes
            return
        if held + nbytes > self.limit:
            raise ApiError(
                f"{what} needs about {_mib(held + nbytes)} MiB of memory, more than the "
                f"server's whole budget of {_mib(self.limit)} MiB for requests in flight "
                "(--max-inflight-mb)",
                413,
            )
        waiter = _Waiter(nbytes, held, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        self._unblock()
        try:
            await asyncio.wait({waiter.future}, timeout=self.wait_s)
        except asyncio.CancelledError:  # the request went away while waiting
            if not waiter.future.done():
                self._leave(waiter)
            elif not waiter.future.cancelled():
                self.release(nbytes)  # granted just as it went
            raise
        if not waiter.future.done():
            self._leave(waiter)
        if waiter.future.cancelled():
            raise ApiError(
                f"the server is busy: its memory budget for requests in flight "
                f"({_mib(self.limit)} MiB) has no room for {what} (about {_mib(nbytes)} MiB); "
                f"retry after {RETRY_AFTER_S} s",
                503,
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )

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

    def _leave(self, waiter):
        """Take a waiter out of the line, refused; the next may fit now."""
        self._waiters.remove(waiter)
        waiter.future.cancel()
        self._grant()

    def _grant(self):
        """Reserve for the waiters at the head of the line while they fit."""
        while self._waiters and self.in_flight + self._waiters[0].nbytes <= self.limit:
            waiter = self._waiters.popleft()
            self.in_flight += waiter.nbytes
            waiter.future.set_result(None)
        self._unblock()

    def _unblock(self):
        """Refuse the last waiters holding memory while the first could never fit otherwise.

        The first fits once running work is done unless the memory held by waiters, and
        its own need, exceed the budget. It is never refused here: its need and its own
        holding fit (else 413), so some later waiter holds what it lacks.
        """
        while self._waiters:
            held = sum(w.held for w in self._waiters)
            if held + self._waiters[0].nbytes <= self.limit:
                return
            last = next(w for w in reversed(self._waiters) if w.held)
            self._waiters.remove(last)
            last.future.cancel()


class Reservation:
    """What one request holds in a MemoryBudget: grown with `add`, given back by `release`.

    `BodyLimit` makes it, for the body, and keeps it in the request's ASGI scope under
    `SCOPE_KEY`; the routes add what parsing or decoding will cost.
    """

    def __init__(self, budget):
        self.budget = budget
        self.nbytes = 0

    async def add(self, nbytes, what):
        """Reserve `nbytes` more for `what` (see `MemoryBudget.reserve`)."""
        await self.budget.reserve(nbytes, what, held=self.nbytes)
        self.nbytes += int(nbytes)

    def release(self):
        """Give back all of it."""
        self.budget.release(self.nbytes)
        self.nbytes = 0


def _mib(nbytes):
    """`nbytes` in MiB, rounded up, for messages."""
    return math.ceil(nbytes / MIB)
