"""ASGI middleware: a body over the size limit gets 413, one slower than the read timeout 408.

The body is read here, before parsing (counted, whatever Content-Length claims), and
replayed to the app. A 408 closes the connection: the client is too slow to keep. Its
memory is reserved in the server's budget (`budget.MemoryBudget`) until the request is
answered: all of Content-Length before reading, chunk by chunk without one. The
reservation stays in the request's scope, for the routes to add to.
"""

import asyncio

from keras_alexnet.serving.budget import SCOPE_KEY, Reservation
from keras_alexnet.serving.errors import ApiError, error_response

# Reserved per body byte: the chunks as they arrive and their join.
BODY_COPIES = 2


class _Refused(Exception):
    """The body is refused; `response` (an ASGI app) says why."""

    def __init__(self, response):
        super().__init__()
        self.response = response


class _Replay:
    """An ASGI `receive` that gives the body read already, then whatever `receive` gives."""

    def __init__(self, body, receive):
        self.body = body
        self.receive = receive
        self.replayed = False

    async def __call__(self):
        """The next ASGI message of the request."""
        if not self.replayed:
            self.replayed = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        return await self.receive()


class BodyLimit:
    """ASGI middleware: a body over `max_bytes` gets 413, one slower than `timeout_s` 408.

    The body's memory is held in `budget` (a MemoryBudget) until the request is answered.
    """

    def __init__(self, app, max_bytes, timeout_s, budget):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.budget = budget

    async def __call__(self, scope, receive, send):
        """Handle one ASGI connection."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        reservation = scope[SCOPE_KEY] = Reservation(self.budget)
        try:
            try:
                length = self._check_length(dict(scope["headers"]).get(b"content-length"))
                if length:
                    await reservation.add(BODY_COPIES * length, "the request body")
                body = await self._read(receive, reservation, known=length is not None)
            except _Refused as refused:
                return await refused.response(scope, receive, send)
            except ApiError as e:  # no room in the budget
                return await error_response(e.status, str(e), e.headers)(scope, receive, send)
            if body is None:  # the client went away
                return None
            return await self.app(scope, _Replay(body, receive), send)
        finally:
            reservation.release()

    def _too_large(self):
        return _Refused(error_response(413, f"request body is larger than {self.max_bytes} bytes"))

    def _check_length(self, length):
        """The Content-Length as an int (None without one); refused if bad or over the limit."""
        if length is None:
            return None
        if not length.isdigit():
            raise _Refused(error_response(400, "invalid Content-Length header"))
        if int(length) > self.max_bytes:
            raise self._too_large()
        return int(length)

    async def _read(self, receive, reservation, known):
        """The whole body, or None if the client disconnected; _Refused if too large or slow.

        Without a `known` length, each chunk's memory is added to `reservation` as it arrives.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), deadline - loop.time())
            except TimeoutError:
                raise _Refused(
                    error_response(
                        408,
                        f"the request body did not arrive within {self.timeout_s:g} s",
                        {"Connection": "close"},
                    )
                ) from None
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                raise self._too_large()
            if not known:
                await reservation.add(BODY_COPIES * len(chunks[-1]), "the request body")
            if not message.get("more_body", False):
                return b"".join(chunks)
