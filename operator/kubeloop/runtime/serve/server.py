"""The HTTP server: a raw asyncio Protocol, httptools for parsing, exact-match routes built once.

Why not a web framework: the whole budget for one request is a few tens of microseconds on one core
(ONNX Runtime itself takes ~5 us for a 1-row forest), and a framework's routing, middleware and request
objects cost more than that. Everything that depends only on the model (routes, metadata, response
headers and JSON fragments) is computed when it is loaded.

Micro-batching: a decoded request is queued and a flush is scheduled with ``call_soon``, which runs after
every socket that was readable in this loop iteration has been read. So concurrent requests share one
ONNX Runtime call while a lone request waits for nothing but one loop turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httptools
import numpy as np

from .metrics import Metrics
from .model import Model, ModelLoadError, Prediction
from .protocol import ClientError, Codec, Wanted

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
JSON = b"application/json"
OCTETS = b"application/octet-stream"
PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"
TOKEN_RELOAD_SECONDS = 10.0  # a mounted Secret is updated in place by the kubelet

# The lengths of the header names on_header looks at.
HEADER_LENGTHS = frozenset(
    len(h) for h in ("content-length", "authorization", "inference-header-content-length", "expect")
)

# Route kinds.
INFER_V2, PREDICT_V1, STATIC, METRICS = range(4)


@dataclass(frozen=True)
class ServeConfig:
    model_dir: Path
    expected_sha256: str | None = None
    model_name: str | None = None
    host: str = "0.0.0.0"
    port: int = 8080
    batching: bool = True
    max_batch_rows: int = 64
    max_body_bytes: int = 1 << 20
    ort_threads: int | None = None
    auth_token_file: Path | None = None
    drain_delay: float = 0.0
    drain_quiet: float = 0.0
    drain_timeout: float = 30.0
    termination_log: Path = Path("/dev/termination-log")


def log(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


_heads: dict[tuple[int, bool, bytes], bytes] = {}


def head(status: int, keep_alive: bool, content_type: bytes = JSON) -> bytes:
    """Status line and the headers that never vary (the length is added per answer)."""
    key = (status, keep_alive, content_type)
    h = _heads.get(key)
    if h is None:
        h = b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\n" % (status, REASONS[status].encode(), content_type)
        if status == 401:
            h += b"www-authenticate: Bearer\r\n"
        if not keep_alive:
            h += b"connection: close\r\n"
        _heads[key] = h
    return h


class Item:
    """One request waiting in the batch queue: rows to predict, or an answer that must keep its place."""

    __slots__ = (
        "body",
        "conn",
        "content_type",
        "keep_alive",
        "kind",
        "protocol",
        "request_id",
        "status",
        "t0",
        "wanted",
        "x",
    )

    def __init__(
        self,
        conn: Connection,
        kind: int,
        protocol: str,
        keep_alive: bool,
        t0: float,
        x: np.ndarray | None = None,
        request_id: Any = None,
        status: int = 200,
        body: bytes = b"",
        content_type: bytes = JSON,
        wanted: Wanted = None,
    ) -> None:
        self.conn, self.kind, self.protocol, self.keep_alive, self.t0 = conn, kind, protocol, keep_alive, t0
        self.x, self.request_id, self.status, self.body = x, request_id, status, body
        self.content_type, self.wanted = content_type, wanted


class App:
    """State shared by every connection: the model once ready, routes, metrics, the batch queue."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.loop = asyncio.get_running_loop()
        self.connections: set[Connection] = set()
        self.model: Model | None = None
        self.codec: Codec | None = None
        self.metrics: Metrics | None = None
        self.ready = False
        self.draining = False
        # While draining: when the newest connection arrived (is the Service still routing here?).
        self.last_accept = 0.0
        self.accepted_while_draining = 0
        self.tokens: list[bytes] | None = None
        self._token_mtime = -1.0
        self.routes: dict[bytes, tuple[int, bytes, str, bool, bytes]] = {}
        self._queue: list[Item] = []
        self._scheduled = False
        self._static_routes()
        if config.auth_token_file is not None:
            self._reload_tokens()

    # ------------------------------------------------------------------------------------------ setup

    def _static_routes(self) -> None:
        server = json.dumps({"name": "kubeloop", "version": "0.1.0", "extensions": []}).encode()
        self.routes[b"/v2/health/live"] = (STATIC, b"GET", "", False, b'{"live":true}')
        self.routes[b"/v2/health/ready"] = (STATIC, b"GET", "", False, b"")  # answered from self.ready
        self.routes[b"/v2"] = (STATIC, b"GET", "", False, server)
        self.routes[b"/metrics"] = (METRICS, b"GET", "", False, b"")

    def set_model(self, model: Model) -> None:
        self.model, self.codec, self.metrics = model, Codec(model), Metrics(model)
        name, version = model.name.encode(), model.version.encode()
        auth = self.tokens is not None
        for base in (b"/v2/models/" + name, b"/v2/models/" + name + b"/versions/" + version):
            self.routes[base] = (STATIC, b"GET", "v2", auth, self.codec.metadata)
            self.routes[base + b"/ready"] = (STATIC, b"GET", "", False, b"")  # answered from self.ready
            self.routes[base + b"/infer"] = (INFER_V2, b"POST", "v2", auth, b"")
        self.routes[b"/v1/models/" + name] = (STATIC, b"GET", "v1", auth, b"")
        self.routes[b"/v1/models/" + name + b":predict"] = (PREDICT_V1, b"POST", "v1", auth, b"")
        self.ready_body = json.dumps(
            {"ready": True, "model": model.name, "version": model.version, "sha256": model.sha256}
        ).encode()
        self.ready = self.metrics.ready = True

    def _reload_tokens(self) -> None:
        """Tokens are the non-empty lines of the file; an empty or missing file lets nobody in."""
        path = self.config.auth_token_file
        assert path is not None
        try:
            mtime = path.stat().st_mtime
            if mtime != self._token_mtime:
                lines = path.read_text().splitlines()
                self.tokens = [b"Bearer " + t.strip().encode() for t in lines if t.strip()]
                self._token_mtime = mtime
        except OSError as e:
            self.tokens = self.tokens or []
            log("auth_tokens_unreadable", path=str(path), error=str(e))
        self.loop.call_later(TOKEN_RELOAD_SECONDS, self._reload_tokens)

    # ------------------------------------------------------------------------------------------ requests

    def dispatch(
        self,
        conn: Connection,
        method: bytes,
        url: bytes,
        body: bytes,
        keep_alive: bool,
        auth: bytes | None,
        json_length: int | None,
    ) -> None:
        t0 = conn.t0
        if b"?" in url:
            url = url.split(b"?", 1)[0]
        route = self.routes.get(url)
        if route is None:
            conn.answer(*self._not_found(url), "http", keep_alive, t0)
            return
        kind, want_method, protocol, needs_auth, static = route
        if method != want_method:
            conn.answer(
                405,
                error_body(
                    f"{url.decode(errors='replace')} takes {want_method.decode()}, not "
                    f"{method.decode(errors='replace')}"
                ),
                protocol,
                keep_alive,
                t0,
            )
            return
        if needs_auth and not self._authorized(auth):
            conn.answer(
                401,
                error_body("a valid bearer token is required (Authorization: Bearer <token>)"),
                protocol,
                keep_alive,
                t0,
            )
            return
        if kind in (INFER_V2, PREDICT_V1):
            codec = self.codec
            assert codec is not None
            try:
                if kind == INFER_V2:
                    x, request_id, wanted = codec.decode_v2(body, json_length)
                else:
                    x, request_id, wanted = codec.decode_v1(body), None, None
            except ClientError as e:
                conn.answer(e.status, error_body(e.message), protocol, keep_alive, t0)
                return
            item = Item(conn, kind, protocol, keep_alive, t0, x, request_id, wanted=wanted)
            conn.inflight += 1
            if not self.config.batching:
                self._run([item])
                return
            self._queue.append(item)
            if not self._scheduled:
                self._scheduled = True
                self.loop.call_soon(self._flush)
        elif kind == METRICS:
            body = self.metrics.render() if self.metrics else b""
            conn.answer(200, body, "", keep_alive, t0, PROMETHEUS)
        elif static:
            conn.answer(200, static, protocol, keep_alive, t0)
        elif url.endswith(b"/ready"):  # health or model readiness: the answer changes over time
            if self.ready and not self.draining:
                conn.answer(200, self.ready_body, "", keep_alive, t0)
            else:
                state = "draining" if self.draining else "loading"
                conn.answer(503, b'{"ready":false,"state":"%s"}' % state.encode(), "", keep_alive, t0)
        else:  # V1 model status
            assert self.model is not None
            body = json.dumps({"name": self.model.name, "ready": self.ready and not self.draining}).encode()
            conn.answer(200, body, protocol, keep_alive, t0)

    def _not_found(self, url: bytes) -> tuple[int, bytes]:
        parts = url.decode(errors="replace").split("/")
        if len(parts) > 3 and parts[1] in ("v1", "v2") and parts[2] == "models":
            if self.model is None:
                return 503, error_body("the model is not loaded yet")
            name = parts[3].split(":", 1)[0]
            if name != self.model.name:
                return 404, error_body(
                    f"model '{name}' is not served here; this server serves '{self.model.name}'"
                )
            if len(parts) > 5 and parts[4] == "versions" and parts[5] != self.model.version:
                return 404, error_body(
                    f"model '{name}' has no version '{parts[5]}'; it has '{self.model.version}'"
                )
        return 404, error_body(f"no such endpoint: {url.decode(errors='replace')}")

    def _authorized(self, auth: bytes | None) -> bool:
        if auth is None or not self.tokens:
            return False
        # Compare with every token in constant time: the answer must not leak how much of a token matched.
        return any([hmac.compare_digest(auth, t) for t in self.tokens])

    def _flush(self) -> None:
        self._scheduled = False
        queue, self._queue = self._queue, []
        # A graph with a fixed batch size is called with exactly its rows, one request at a time.
        limit = (self.model.fixed_rows if self.model else None) or self.config.max_batch_rows
        chunk: list[Item] = []
        rows = 0
        for item in queue:
            n = 0 if item.x is None else len(item.x)
            if chunk and rows + n > limit:
                self._run(chunk)
                chunk, rows = [], 0
            chunk.append(item)
            rows += n
        if chunk:
            self._run(chunk)

    def _run(self, items: list[Item]) -> None:
        """One ONNX Runtime call for the items' rows, then every item answered in queue order."""
        model, codec, metrics = self.model, self.codec, self.metrics
        assert model is not None and codec is not None and metrics is not None
        xs = [it.x for it in items if it.x is not None]
        pred: Prediction | None = None
        failure = ""
        if xs:
            x = xs[0] if len(xs) == 1 else np.concatenate(xs)
            try:
                pred = model.predict(x)
                metrics.batch(x, pred)
            except Exception as e:  # input was validated, so this is the server's fault: 500, keep serving
                failure = f"prediction failed: {e}"
                log("prediction_failed", error=str(e))
        offset = 0
        for it in items:
            it.conn.inflight -= 1
            if it.x is None:
                it.conn.write(it.status, it.body, it.protocol, it.keep_alive, it.t0, it.content_type)
                continue
            if pred is None:
                it.conn.write(500, error_body(failure), it.protocol, it.keep_alive, it.t0)
                continue
            n = len(it.x)
            part = pred if len(xs) == 1 else pred.rows(offset, offset + n)
            offset += n
            if it.kind == PREDICT_V1:
                it.conn.write(200, codec.encode_v1(part), it.protocol, it.keep_alive, it.t0)
            elif it.wanted is None:
                it.conn.write(200, codec.encode_v2(part, it.request_id), it.protocol, it.keep_alive, it.t0)
            else:
                body, json_length = codec.encode_v2_outputs(part, it.request_id, it.wanted)
                it.conn.write(200, body, it.protocol, it.keep_alive, it.t0, JSON, json_length)

    def enqueue_answer(self, item: Item) -> None:
        """An answer for a connection whose earlier (pipelined) request is still in the batch queue."""
        item.conn.inflight += 1
        self._queue.append(item)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._flush)


class Connection(asyncio.Protocol):
    """One client connection; httptools calls the ``on_*`` methods while parsing."""

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
            if value.isdigit() and int(value) > self.app.config.max_body_bytes:
                self.fail(
                    413, f"the body is {int(value)} bytes; the limit is {self.app.config.max_body_bytes}"
                )
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
        if self.body_size > self.app.config.max_body_bytes:
            self.fail(413, f"the body is larger than the limit of {self.app.config.max_body_bytes} bytes")
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
        if self.inflight:  # an earlier pipelined request is in the batch queue: keep answers in order
            self.app.enqueue_answer(
                Item(
                    self,
                    STATIC,
                    protocol,
                    keep_alive,
                    t0,
                    status=status,
                    body=body,
                    content_type=content_type,
                )
            )
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


# ---------------------------------------------------------------------------------------------- main


def report_failure(config: ServeConfig, error: ModelLoadError) -> None:
    """The runtime contract: a JSON result in the termination log and on the last line of stdout."""
    result = json.dumps({"ok": False, "reason": error.reason, "message": error.message})
    with contextlib.suppress(OSError):
        config.termination_log.write_text(result)
    print(result, flush=True)


async def serve(config: ServeConfig) -> int:
    """Listen at once (liveness answers while loading), load, serve until SIGTERM, drain, exit."""
    loop = asyncio.get_running_loop()
    app = App(config)
    server = await loop.create_server(
        lambda: Connection(app), config.host, config.port, backlog=2048, reuse_address=True
    )
    port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log("listening", host=config.host, port=port, pid=os.getpid())

    load: asyncio.Future[Model] = loop.run_in_executor(
        None, lambda: Model(config.model_dir, config.expected_sha256, config.ort_threads, config.model_name)
    )
    stopped = asyncio.ensure_future(stop.wait())
    waiters: list[asyncio.Future[Any]] = [load, stopped]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if load.done():
        try:
            model = load.result()
        except ModelLoadError as e:
            report_failure(config, e)
            server.close()
            return 2
        app.set_model(model)
        # The model's objects live as long as the process: keep the cyclic GC from walking them again.
        gc.freeze()
        log(
            "ready",
            model=model.name,
            version=model.version,
            sha256=model.sha256,
            cpus=model.cpus,
            ort_threads=model.session.get_session_options().intra_op_num_threads,
            batching=config.batching,
            max_batch_rows=config.max_batch_rows,
            auth=config.auth_token_file is not None,
        )
    await stopped
    await drain(app, server, config)
    return 0


async def drain(app: App, server: asyncio.AbstractServer, config: ServeConfig) -> None:
    """Not ready first (endpoints are removed), then stop accepting, finish what is in flight, exit.

    The endpoint's removal reaches each node's proxy rules at its own pace (seconds on a busy node), and a
    connection that arrives after the listener closed is refused. So the listener stays open for at least
    ``drain_delay`` and then until no connection has arrived for ``drain_quiet`` seconds: traffic that still
    arrives says the Service still routes here. ``drain_timeout`` bounds the rest of the drain.
    """
    app.draining = True
    app.last_accept = start = time.monotonic()
    if app.metrics is not None:
        app.metrics.ready = False
    log("draining", connections=len(app.connections), delay=config.drain_delay, quiet=config.drain_quiet)
    deadline = start + config.drain_delay + config.drain_timeout
    if config.drain_delay:
        await asyncio.sleep(config.drain_delay)
    while time.monotonic() - app.last_accept < config.drain_quiet and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    server.close()
    log(
        "listener_closed",
        after_seconds=round(time.monotonic() - start, 3),
        accepted_while_draining=app.accepted_while_draining,
    )
    while app.connections and time.monotonic() < deadline:
        for conn in list(app.connections):
            conn.close_if_idle()  # busy ones close themselves after their answer (draining => no keep-alive)
        await asyncio.sleep(0.01)
    log("stopped", unfinished_connections=len(app.connections))


def run(config: ServeConfig) -> int:
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is in the server extra; the stdlib loop still works
        log("uvloop_missing", detail="falling back to the asyncio event loop (slower)")
    with asyncio.Runner(loop_factory=factory) as runner:
        code = runner.run(serve(config))
    sys.stdout.flush()
    return code
