"""uvicorn's HTTP/1.1 (h11) protocol with a deadline for request headers, and JSON 400s.

uvicorn answers a request it cannot parse in plain text; here in JSON, as every error of
the server. And uvicorn times out only idle keep-alive connections, after an answer: a
client that connects and sends nothing, or sends its headers a byte at a time
(slowloris), holds a connection for ever. Here a client must have sent each request's
headers within `read_timeout_s` of connecting or of the previous answer, or the
connection is closed. The body's deadline, answered with a JSON 408, is the app's
(`keras_alexnet.serving.body_limit.BodyLimit`).
"""

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class StrictH11Protocol(H11Protocol):
    """H11Protocol that closes a connection whose client is too slow to send a request."""

    def __init__(self, *args, read_timeout_s, **kwargs):
        super().__init__(*args, **kwargs)
        self.read_timeout_s = read_timeout_s
        self._deadline = None

    def connection_made(self, transport):
        """Start the first request's deadline."""
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self):
        """Start the next request's deadline."""
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc):
        """Drop the deadline with the connection."""
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg):
        """Answer a request h11 cannot parse with a JSON 400, then close."""
        body = json.dumps({"error": msg}).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()

    def _arm(self):
        self._disarm()
        if not self.transport.is_closing():
            self._deadline = self.loop.call_later(self.read_timeout_s, self._expire)

    def _disarm(self):
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self):
        self._deadline = None
        # Headers not all here yet, or answered (413, 408) while a body still trickles in.
        # A request being read by the app or being answered is the app's to time out.
        waiting_for_headers = self.conn.their_state is h11.IDLE
        answered = self.conn.our_state is h11.DONE
        if (waiting_for_headers or answered) and not self.transport.is_closing():
            self.transport.close()
