"""What every connection shares: the model once it is loaded, the route table, readiness, the queue.

``dispatch`` takes one parsed request from a connection and answers it, or hands it to the batch queue;
``sweep`` closes the connections that ran past a timeout (:mod:`.limits`).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING

from .auth import BearerTokens
from .batching import Batcher, Item
from .config import ServeConfig
from .limits import overdue, sweep_interval
from .metrics import ConnectionCounts, Metrics
from .model import Model
from .protocol import ClientError, Codec
from .responses import PROMETHEUS, error_body
from .routes import (
    INFER_V2,
    METRICS,
    MODEL_STATUS_V1,
    PREDICT_V1,
    READY,
    Route,
    model_routes,
    not_found,
    server_routes,
    wrong_method,
)

if TYPE_CHECKING:
    from .connection import Connection


class App:
    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.loop = asyncio.get_running_loop()
        self.connections: set[Connection] = set()
        self.model: Model | None = None
        self.codec: Codec | None = None
        self.metrics: Metrics | None = None
        self.batcher: Batcher | None = None
        self.ready = False
        self.ready_body = b""
        self.draining = False
        # While draining: when the newest connection arrived (is the Service still routing here?).
        self.last_accept = 0.0
        self.accepted_while_draining = 0
        path = config.auth_token_file
        self.tokens = BearerTokens(path, self.loop) if path is not None else None
        self.routes: dict[bytes, Route] = server_routes(config.metrics_auth)
        self.counts = ConnectionCounts()
        self.sweep_every = sweep_interval(config)
        self.loop.call_later(self.sweep_every, self.sweep)

    def set_model(self, model: Model) -> None:
        codec, metrics = Codec(model), Metrics(model)
        self.model, self.codec, self.metrics = model, codec, metrics
        self.batcher = Batcher(
            self.loop, model, codec, metrics, self.config.max_batch_rows, self.config.batching
        )
        baseline = json.dumps({"sha256": model.sha256, **model.baseline}).encode()
        self.routes.update(
            model_routes(
                model.name,
                model.version,
                codec.metadata,
                self.tokens is not None,
                baseline,
                self.config.metrics_auth,
            )
        )
        self.ready_body = json.dumps(
            {"ready": True, "model": model.name, "version": model.version, "sha256": model.sha256}
        ).encode()
        self.ready = metrics.ready = True

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
            model = self.model
            served = None if model is None else (model.name, model.version)
            conn.answer(*not_found(url, served), "http", keep_alive, t0)
            return
        want_method, kind, protocol, needs_auth, static = route
        if method != want_method:
            conn.answer(405, wrong_method(url, route, method), protocol, keep_alive, t0)
            return
        if needs_auth and (self.tokens is None or not self.tokens.allow(auth)):
            message = "a valid bearer token is required (Authorization: Bearer <token>)"
            conn.answer(401, error_body(message), protocol, keep_alive, t0)
            return
        if kind in (INFER_V2, PREDICT_V1):
            codec, batcher = self.codec, self.batcher
            assert codec is not None and batcher is not None  # the model's routes exist once it is set
            try:
                if kind == INFER_V2:
                    x, request_id, wanted = codec.decode_v2(body, json_length)
                else:
                    x, request_id, wanted = codec.decode_v1(body), None, None
            except ClientError as e:
                conn.answer(e.status, error_body(e.message), protocol, keep_alive, t0)
                return
            batcher.submit(Item(conn, kind, protocol, keep_alive, t0, x, request_id, wanted=wanted))
        elif kind == READY:
            if self.ready and not self.draining:
                conn.answer(200, self.ready_body, "", keep_alive, t0)
            else:
                state = b"draining" if self.draining else b"loading"
                conn.answer(503, b'{"ready":false,"state":"%s"}' % state, "", keep_alive, t0)
        elif kind == METRICS:
            text = self.metrics.render(self.counts, len(self.connections)) if self.metrics else b""
            conn.answer(200, text, "", keep_alive, t0, PROMETHEUS)
        elif kind == MODEL_STATUS_V1:
            assert self.model is not None
            answer = {"name": self.model.name, "ready": self.ready and not self.draining}
            conn.answer(200, json.dumps(answer).encode(), protocol, keep_alive, t0)
        else:  # STATIC
            conn.answer(200, static, protocol, keep_alive, t0)

    def sweep(self) -> None:
        """Close every connection that ran past a timeout; runs every ``sweep_every`` seconds."""
        self.loop.call_later(self.sweep_every, self.sweep)  # first: a failure here must not end the sweeps
        now, config, closed = time.perf_counter(), self.config, self.counts.closed
        for conn in list(self.connections):  # closing one removes it from the set
            reason = overdue(
                conn.parsing, conn.t0, conn.since, conn.busy, conn.fresh, conn.closing, now, config
            )
            if reason is not None:
                closed[reason] += 1
                conn.time_out(reason)
