"""One client connection: a raw asyncio Protocol that httptools parses into requests, and its answers.

Why not a web framework: the whole budget for one request is a few tens of microseconds on one core
(ONNX Runtime itself takes ~5 us for a 1-row forest), and a framework's routing, middleware and request
objects cost more than that. A connection keeps only what ``App.dispatch`` needs of a request: URL,
body, the three headers it reads, keep-alive.
"""

from __future__ import annotations

import asyncio
import time
from typing import cast

import httptools

from .app import App
from .batching import Item
from .events import log
from .responses import JSON, OCTETS, error_body, head

# The lengths of the header names on_header looks at.
HEADER_LENGTHS = frozenset(
    len(h) for h in ("content-length", "authorization", "inference-header-content-length", "expect")
)


class Connection(asyncio.Protocol):
    """httptools calls the ``on_*`` methods while it parses what ``data_received`` feeds it."""

    def __init__(self, app: App) -> None:
        self.app = app
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

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        app = self.app
        app.connections.add(self)
        if app.draining:
            app.last_accept = time.monotonic()
            app.accepted_while_draining += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.app.connections.discard(self)
        self.closing = True

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as e:
            self.fail(400, f"malformed HTTP request: {e}")

    # httptools callbacks ----------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.t0 = time.perf_counter()
        self.busy = True
        self.url = b""
        self.body = []
        self.body_size = 0
        self.auth = None
        self.json_length = None
        self.bad_header = ""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) not in HEADER_LENGTHS:  # most headers (Host, Content-Type, ...): skip lower()
            return
        name = name.lower()
        if name == b"content-length":
            limit = self.app.config.max_body_bytes
            if value.isdigit() and int(value) > limit:
                self.fail(413, f"the body is {int(value)} bytes; the limit is {limit}")
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

    def on_body(self, body: bytes) -> None:
        if self.closing:
            return
        self.body_size += len(body)
        limit = self.app.config.max_body_bytes
        if self.body_size > limit:
            self.fail(413, f"the body is larger than the limit of {limit} bytes")
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.closing:
            return
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
        metrics = self.app.metrics
        if protocol and metrics is not None:
            metrics.request(protocol, status, time.perf_counter() - t0)
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        keep_alive = keep_alive and not self.app.draining
        if json_length is None:
            h = head(status, keep_alive, content_type)
        else:  # the binary tensor extension: a JSON header of this length, then the raw tensors
            h = head(status, keep_alive, OCTETS) + b"inference-header-content-length: %d\r\n" % json_length
        transport.write(b"%scontent-length: %d\r\n\r\n%s" % (h, len(body), body))
        if not keep_alive:
            transport.close()
        self.busy = self.inflight > 0

    def fail(self, status: int, message: str) -> None:
        """A request so broken that the rest of the stream cannot be trusted: answer, then hang up."""
        self.closing = True
        self.answer(status, error_body(message), "http", False, self.t0)
        if self.transport is not None:
            self.transport.close()

    def close_if_idle(self) -> None:
        if not self.busy and self.transport is not None:
            self.transport.close()
