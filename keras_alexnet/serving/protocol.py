"""uvicorn's HTTP/1.1 (h11) protocol with a deadline for request headers, and JSON 400s.

uvicorn answers a request it cannot parse in plain text; here in JSON, as every error of
the server. And uvicorn times out only idle keep-alive connections, after an answer: a
client that connects and sends nothing, or sends its headers a byte at a time
(slowloris), holds a connection for ever. Here a client must have sent each request's
headers within `read_timeout_s` of connecting or of the previous answer, or the
connection is closed. The body's deadline, answered with a JSON 408, is the app's
(`keras_alexnet.serving.body_limit.BodyLimit`).

A request line and headers over `MAX_HEADER_BYTES` get a JSON 431. After an error answer
the connection is half-closed and what the client still sends is read and dropped until it
closes (or the read timeout passes): closing a socket with unread data makes the kernel
reset the connection, and the client would see the reset instead of the answer.
"""

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

# The most bytes of a request line and headers still incomplete: more is answered with 431.
# h11's own default; set explicitly so the answer can name it.
MAX_HEADER_BYTES = 16 * 1024
REASONS = {400: b"Bad Request", 431: b"Request Header Fields Too Large"}


class _Connection(h11.Connection):
    """h11's server connection, with a header limit however the headers arrived.

    h11 limits only headers still incomplete in its buffer; headers that arrive whole in
    one read are measured here. The protocol error raised is kept (for its status hint).
    """

    def __init__(self, max_header_bytes):
        super().__init__(h11.SERVER, max_incomplete_event_size=max_header_bytes)
        self.max_header_bytes = max_header_bytes
        self.error = None

    def next_event(self):
        """h11's next event; a RemoteProtocolError is kept in `error` and raised."""
        try:
            event = super().next_event()
            if isinstance(event, h11.Request) and _header_bytes(event) > self.max_header_bytes:
                raise h11.RemoteProtocolError("headers too large", error_status_hint=431)
        except h11.RemoteProtocolError as e:
            self.error = e
            raise
        return event


def _header_bytes(request):
    """About the bytes of `request`'s request line and headers, as sent."""
    line = len(request.method) + len(request.target) + len(b"  HTTP/1.1\r\n")
    return line + sum(len(name) + len(value) + 4 for name, value in request.headers)


class StrictH11Protocol(H11Protocol):
    """H11Protocol that closes a connection whose client is too slow to send a request."""

    def __init__(self, *args, read_timeout_s, **kwargs):
        super().__init__(*args, **kwargs)
        self.conn = _Connection(self.config.h11_max_incomplete_event_size or MAX_HEADER_BYTES)
        self.read_timeout_s = read_timeout_s
        self._deadline = None
        self._draining = False  # answered an unparsable request: drop what else arrives

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

    def data_received(self, data):
        """Parse what arrived, or drop it after an error answer."""
        if not self._draining:
            super().data_received(data)

    def send_400_response(self, msg):
        """Answer a request h11 cannot parse with a JSON 400 (431 for huge headers), then close."""
        status = getattr(self.conn.error, "error_status_hint", 400)
        if status == 431:
            msg = f"the request line and headers are larger than {self.conn.max_header_bytes} bytes"
        else:
            status = 400
        body = json.dumps({"error": msg}).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        for event in (
            h11.Response(status_code=status, headers=headers, reason=REASONS[status]),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self._linger()

    def _linger(self):
        """Send FIN after the answer, then read and drop the rest until the client closes."""
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self._draining = True
        self.transport.write_eof()
        self._arm()

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
        answered = self.conn.our_state is h11.DONE or self._draining
        if (waiting_for_headers or answered) and not self.transport.is_closing():
            self.transport.close()
