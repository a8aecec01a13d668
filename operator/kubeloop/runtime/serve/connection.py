"""One client connection: a raw asyncio Protocol that httptools parses into requests, and its answers.

Why not a web framework: the whole budget for one request is a few tens of microseconds on one core
(ONNX Runtime itself takes ~5 us for a 1-row forest), and a framework's routing, middleware and request
objects cost more than that. A connection keeps only what ``App.dispatch`` needs of a request: URL,
body, the three headers it reads, keep-alive.

What a client sends is bounded while httptools parses it: the URL (414), the header fields' bytes and
count (431) and the body (413) are checked in the callbacks, so nothing over a limit is held past one
read. The timeouts are the App's sweep's (:mod:`.limits`). An error answer ends the connection.
"""

from __future__ import annotations

import asyncio
import time
from typing import cast

import httptools

from .app import App
from .batching import Item
from .events import log
from .limits import BETWEEN, BODY, HEAD, HEADER_TIMEOUT, MAX_UNREAD_BYTES, UNREAD_ANSWERS
from .responses import JSON, OCTETS, error_body, head

# The lengths of the header names on_header looks at.
HEADER_LENGTHS = frozenset(
    len(h) for h in ("content-length", "authorization", "inference-header-content-length", "expect")
)


# What a closed connection's parser is replaced with. A parser holds its connection's bound methods: the
# cycle would wait for the cyclic GC, so every connection's memory lived on long after it closed (RSS grew
# ~1 MiB per 470 connections, for good; tests/integration/test_serve_hostile.py).
RELEASED = httptools.HttpRequestParser(None)


class Refused(Exception):
    """Raised in a parser callback: httptools stops at once; the request gets ``status`` and the
    connection ends."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class Unread(Exception):
    """Raised in a parser callback: the client sends requests and leaves their answers unread."""


class Connection(asyncio.Protocol):
    """httptools calls the ``on_*`` methods while it parses what ``data_received`` feeds it."""

    def __init__(self, app: App) -> None:
        self.app = app
        config = app.config
        self.max_url, self.max_head = config.max_url_bytes, config.max_header_bytes
        self.max_fields, self.max_body = config.max_header_fields, config.max_body_bytes
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.body_size = 0
        self.auth: bytes | None = None
        self.json_length: int | None = None
        self.bad_header = ""
        self.t0 = 0.0
        self.inflight = 0  # this connection's requests in the batch queue; later answers queue behind them
        self.busy = False
        self.closing = False
        self.shut = False  # our side is shut after an error answer: nothing more is written
        self.paused = False  # the transport holds more than its high-water mark of unsent answers
        # What the sweep (limits.overdue) reads: where the parser is, and since when nothing is asked.
        self.parsing = BETWEEN
        self.fresh = True  # no request begun yet
        self.since = 0.0  # accepted, last answered, or (closing) the error answer sent
        # The current request's URL and header fields (and trailers) parsed so far: bytes and count.
        self.head_size = 0
        self.fields = 0
        # Bytes of reads that went wholly into httptools' own buffers (an incomplete header field).
        self.unparsed = 0
        self.progressed = False  # the current read began a request or carried body bytes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        app = self.app
        self.since = time.perf_counter()
        if app.draining:
            app.last_accept = time.monotonic()
            app.accepted_while_draining += 1
        limit = app.config.max_connections
        if len(app.connections) >= limit:
            # Refused before it costs more than a descriptor for a moment; a client may retry elsewhere.
            app.counts.refused += 1
            self.closing = True
            body = error_body(f"the server has its limit of {limit} connections open; retry later")
            self.transport.write(b"%scontent-length: %d\r\n\r\n%s" % (head(503, False), len(body), body))
            self.transport.close()
            return
        app.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.app.connections.discard(self)
        self.closing = True  # nothing is parsed any more
        self.parser = RELEASED

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return  # after an error answer: dropped while the connection lingers
        self.progressed = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.fail(400, "protocol upgrades are not supported")
            return
        except httptools.HttpParserError as e:
            refused = e.__context__
            if isinstance(refused, Refused):
                self.fail(refused.status, refused.message)
            elif isinstance(refused, Unread):  # an answer would not be read either
                self.closing = True
                self.app.counts.closed[UNREAD_ANSWERS] += 1
                assert self.transport is not None
                self.transport.abort()
            else:
                self.fail(400, f"malformed HTTP request: {e}")
            return
        if self.parsing != BETWEEN and not self.progressed and not self.closing:
            # The whole read went into a request begun in an earlier read and added nothing to its body:
            # httptools holds it while a header field (or trailer) is incomplete, and on_header sees a field
            # only once it is complete. (The read a request begins in is not counted: where in it the
            # request began is unknown, so this stays a lower bound and never refuses a smaller head.)
            self.unparsed += len(data)
            if self.unparsed > self.max_head:
                self.fail(431, self.too_large())

    # httptools callbacks ----------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.t0 = time.perf_counter()
        self.busy = True
        self.fresh = False
        self.progressed = True
        self.parsing = HEAD
        self.head_size = self.fields = self.unparsed = 0
        self.url = b""
        self.body = []
        self.body_size = 0
        self.auth = None
        self.json_length = None
        self.bad_header = ""

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.max_url:
            raise Refused(414, f"the URL is longer than the limit of {self.max_url} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields += 1
        self.head_size += len(name) + len(value) + 4  # ": " and CRLF
        if self.head_size + len(self.url) > self.max_head or self.fields > self.max_fields:
            raise Refused(431, self.too_large())
        if len(name) not in HEADER_LENGTHS:  # most headers (Host, Content-Type, ...): skip lower()
            return
        name = name.lower()
        if name == b"content-length":
            limit = self.max_body
            if value.isdigit() and int(value) > limit:
                raise Refused(413, f"the body is {int(value)} bytes; the limit is {limit}")
        elif name == b"authorization":
            self.auth = value
        elif name == b"inference-header-content-length":
            if value.isdigit():
                self.json_length = int(value)
            else:
                self.bad_header = f"Inference-Header-Content-Length must be a byte count, not {value!r}"
        elif (
            name == b"expect" and value.lower() == b"100-continue" and not self.inflight and not self.closing
        ):
            # curl sends this for bodies over 1 KiB and waits a second for it before sending the body.
            # (Not while an earlier pipelined answer is pending: the interim answer would overtake it.)
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def too_large(self) -> str:
        if self.fields > self.max_fields:
            return f"the request has more than {self.max_fields} header fields"
        return f"the request line and header fields are larger than the limit of {self.max_head} bytes"

    def on_headers_complete(self) -> None:
        self.parsing = BODY

    def on_body(self, body: bytes) -> None:
        self.progressed = True
        self.body_size += len(body)
        limit = self.max_body
        if self.body_size > limit:
            raise Refused(413, f"the body is larger than the limit of {limit} bytes")
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.parsing = BETWEEN
        if self.closing:
            return
        if self.paused:
            assert self.transport is not None
            if self.transport.get_write_buffer_size() > MAX_UNREAD_BYTES:
                raise Unread()
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        keep_alive = self.parser.should_keep_alive()
        if self.bad_header:
            self.answer(400, error_body(self.bad_header), "http", keep_alive, self.t0)
            return
        try:
            self.app.dispatch(
                self, self.parser.get_method(), self.url, body, keep_alive, self.auth, self.json_length
            )
        except Exception as e:  # a bug must cost one request, never the process
            log("request_failed", error=repr(e))
            self.answer(500, error_body(f"internal error: {e}"), "http", keep_alive, self.t0)

    # answers ----------------------------------------------------------------------------------------

    def answer(
        self, status: int, body: bytes, protocol: str, keep_alive: bool, t0: float, content_type: bytes = JSON
    ) -> None:
        """Answer now, unless an earlier (pipelined) request of this connection is still in the queue."""
        if self.inflight:
            batcher = self.app.batcher
            assert batcher is not None  # only a loaded model's requests are queued
            batcher.submit(Item.answer(self, status, body, protocol, keep_alive, t0, content_type))
            return
        self.write(status, body, protocol, keep_alive, t0, content_type)

    def write(
        self,
        status: int,
        body: bytes,
        protocol: str,
        keep_alive: bool,
        t0: float,
        content_type: bytes = JSON,
        json_length: int | None = None,
    ) -> None:
        now = time.perf_counter()
        metrics = self.app.metrics
        if protocol and metrics is not None:
            metrics.request(protocol, status, now - t0)
        transport = self.transport
        if transport is None or transport.is_closing() or self.shut:
            return
        keep_alive = keep_alive and not self.app.draining
        if json_length is None:
            h = head(status, keep_alive, content_type)
        else:  # the binary tensor extension: a JSON header of this length, then the raw tensors
            h = head(status, keep_alive, OCTETS) + b"inference-header-content-length: %d\r\n" % json_length
        transport.write(b"%scontent-length: %d\r\n\r\n%s" % (h, len(body), body))
        if not keep_alive:
            if self.closing and transport.can_write_eof():  # an error answer: linger (fail)
                transport.write_eof()
                self.shut = True
            else:
                transport.close()
        self.busy = self.inflight > 0
        self.since = now

    def fail(self, status: int, message: str) -> None:
        """A request so broken that the rest of the stream cannot be trusted: answer (after the answers of
        earlier pipelined requests), then hang up.

        Hanging up lingers: our side is shut and what the client still sends is dropped until it closes,
        or for limits.LINGER_SECONDS. Closing with its bytes unread would reset the connection, and a
        reset can destroy the answer before the client reads it (a 431 for a header still being sent).
        """
        self.closing = True
        self.since = time.perf_counter()  # the linger's clock, should the answer wait in the queue
        self.answer(status, error_body(message), "http", False, self.t0)

    def time_out(self, reason: str) -> None:
        """The sweep's verdict: a request that stopped arriving gets 408; anything else is closed."""
        if self.parsing != BETWEEN and not self.closing:
            config = self.app.config
            if reason == HEADER_TIMEOUT:
                self.fail(408, f"the request head did not arrive within {config.header_timeout} seconds")
            else:
                self.fail(408, f"the request did not arrive within {config.request_timeout} seconds")
        elif self.transport is not None:
            # Not close(): it waits to send what is buffered, forever if the client reads nothing.
            self.transport.abort()

    # Flow control: the transport calls these when its buffer of unsent answers passes the high-water
    # mark and when it drains below the low one.

    def pause_writing(self) -> None:
        self.paused = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()  # no more requests until the client reads its answers

    def resume_writing(self) -> None:
        self.paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def close_if_idle(self) -> None:
        if (not self.busy or self.closing) and self.transport is not None:
            self.transport.close()
