"""Micro-batching: requests decoded in the same event-loop turn share one ONNX Runtime call.

A decoded request is queued and a flush is scheduled with ``call_soon``, which runs after every socket
that was readable in this loop iteration has been read. So concurrent requests share one ORT call while
a lone request waits for nothing but one loop turn (at 32 connections ~30 requests per call: 3.6x the
req/s of one call per request on the 2-core development machine, bench/README.md).

Answers leave in the order the requests came: a connection with a request in the queue queues its later
(pipelined) answers behind it, even those that need no prediction.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from .events import log
from .metrics import Metrics
from .model import Inputs, Model, Prediction, concat
from .protocol import Codec, Wanted
from .responses import JSON, error_body
from .routes import PREDICT_V1, STATIC


class Answerable(Protocol):
    """What the queue needs of a connection."""

    inflight: int  # its requests in the queue

    def write(
        self,
        status: int,
        body: bytes,
        protocol: str,
        keep_alive: bool,
        t0: float,
        content_type: bytes = ...,
        json_length: int | None = ...,
    ) -> None: ...


class Item:
    """One request waiting in the queue: rows to predict, or an answer that must keep its place."""

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
        conn: Answerable,
        kind: int,
        protocol: str,
        keep_alive: bool,
        t0: float,
        x: Inputs | None = None,
        request_id: object = None,  # the V2 request's "id", echoed back
        status: int = 200,
        body: bytes = b"",
        content_type: bytes = JSON,
        wanted: Wanted = None,
    ) -> None:
        self.conn, self.kind, self.protocol, self.keep_alive, self.t0 = conn, kind, protocol, keep_alive, t0
        self.x, self.request_id, self.status, self.body = x, request_id, status, body
        self.content_type, self.wanted = content_type, wanted

    @classmethod
    def answer(
        cls,
        conn: Answerable,
        status: int,
        body: bytes,
        protocol: str,
        keep_alive: bool,
        t0: float,
        content_type: bytes,
    ) -> Item:
        return cls(
            conn, STATIC, protocol, keep_alive, t0, status=status, body=body, content_type=content_type
        )


class Batcher:
    """The queue of one model: predicts each batch in one call and answers its items in queue order."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        model: Model,
        codec: Codec,
        metrics: Metrics,
        max_rows: int,
        enabled: bool = True,
    ) -> None:
        self.loop, self.model, self.codec, self.metrics = loop, model, codec, metrics
        # A graph with a fixed batch size is called with exactly its rows, one request at a time.
        self.max_rows = model.fixed_rows or max_rows
        self.enabled = enabled
        self._queue: list[Item] = []
        self._scheduled = False

    def submit(self, item: Item) -> None:
        """A decoded request; or, for a connection with requests in the queue, an answer behind them."""
        item.conn.inflight += 1
        if not self.enabled and item.x is not None:
            self._run([item])
            return
        self._queue.append(item)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        queue, self._queue = self._queue, []
        limit = self.max_rows
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

    def _predict_alone(self, x: Inputs) -> Prediction | str:
        try:
            pred = self.model.predict(x)
        except Exception as e:
            return f"prediction failed: {e}"
        self.metrics.batch(x, pred)
        return pred

    def _run(self, items: list[Item]) -> None:
        """One ONNX Runtime call for the items' rows, then every item answered in queue order."""
        codec = self.codec
        xs = [it.x for it in items if it.x is not None]
        pred: Prediction | None = None
        failure = ""
        # After a failed call over several requests: each request's own answer (a Prediction, or why it
        # failed), so that one request's rows never fail the others that shared its batch.
        alone: dict[int, Prediction | str] | None = None
        if xs:
            x = concat(xs)
            try:
                pred = self.model.predict(x)
                self.metrics.batch(x, pred)
            except Exception as e:  # input was validated, so this is the server's fault: 500, keep serving
                failure = f"prediction failed: {e}"
                log("prediction_failed", error=str(e))
                if len(xs) > 1:
                    alone = {id(it): self._predict_alone(it.x) for it in items if it.x is not None}
        offset = 0
        for it in items:
            it.conn.inflight -= 1
            if it.x is None:
                it.conn.write(it.status, it.body, it.protocol, it.keep_alive, it.t0, it.content_type)
                continue
            if alone is not None:
                answer = alone[id(it)]
                if isinstance(answer, str):
                    it.conn.write(500, error_body(answer), it.protocol, it.keep_alive, it.t0)
                    continue
                part = answer
            elif pred is None:
                it.conn.write(500, error_body(failure), it.protocol, it.keep_alive, it.t0)
                continue
            else:
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
