"""ASGI middleware: a body over the size limit gets 413, one slower than the read timeout 408.

The body is read here, before parsing (counted, whatever Content-Length claims), and
replayed to the app. A 408 closes the connection: the client is too slow to keep.
"""

import asyncio

from keras_alexnet.serving.errors import error_response


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
    """ASGI middleware: a body over `max_bytes` gets 413, one slower than `timeout_s` 408."""

    def __init__(self, app, max_bytes, timeout_s):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope, receive, send):
        """Handle one ASGI connection."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        try:
            self._check_length(dict(scope["headers"]).get(b"content-length"))
            body = await self._read(receive)
        except _Refused as refused:
            return await refused.response(scope, receive, send)
        if body is None:  # the client went away
            return None
        return await self.app(scope, _Replay(body, receive), send)

    def _too_large(self):
        return _Refused(error_response(413, f"request body is larger than {self.max_bytes} bytes"))

    def _check_length(self, length):
        """Refuse a Content-Length that is not a number or is over the limit."""
        if length is None:
            return
        if not length.isdigit():
            raise _Refused(error_response(400, "invalid Content-Length header"))
        if int(length) > self.max_bytes:
            raise self._too_large()

    async def _read(self, receive):
        """The whole body, or None if the client disconnected; _Refused if too large or slow."""
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
            if not message.get("more_body", False):
                return b"".join(chunks)
