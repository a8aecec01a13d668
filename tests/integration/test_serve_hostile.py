"""The inference server under hostile HTTP, as a real process on 127.0.0.1 (issue 13).

Whatever a client sends must never crash the server, stall other clients or grow its memory without
bound: each limit answers with its own status and a message, slow and silent connections are closed when
their timeout runs out, connections beyond the cap are refused, and a legitimate client that asks for a
prediction on a fresh connection keeps being answered while the attacks run. The timeouts are short
flags here and are asserted as behaviour, with generous margins, never as speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import resource
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from kubeloop.runtime.serve.examples import build_model_dir
from support.polling import wait_for
from support.serve import Server, rss_kib

HEADER_TIMEOUT = 2.0
REQUEST_TIMEOUT = 4.0
IDLE_TIMEOUT = 3.0
# How late a timeout may close a connection and still pass: the sweep runs every half second here, and
# this 2-core machine may be busy with other tests.
LATE = 10.0
ROW = [float(i) / 3 for i in range(20)]
V2_BODY = json.dumps({"inputs": [{"name": "X", "shape": [1, 20], "datatype": "FP32", "data": ROW}]}).encode()
V2 = b"POST /v2/models/rf/infer HTTP/1.1\r\nHost: x\r\n"
# The statuses a client mistake may get; a 5xx would be the server's fault.
CLIENT_ERRORS = {400, 404, 405, 408, 413, 414, 431}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("rf")
    build_model_dir(d, "random_forest", name="rf")
    return d


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[Server]:
    s = Server(
        "--model-dir",
        str(model_dir),
        "--header-timeout",
        str(HEADER_TIMEOUT),
        "--request-timeout",
        str(REQUEST_TIMEOUT),
        "--idle-timeout",
        str(IDLE_TIMEOUT),
    )
    s.wait_for("ready")
    yield s
    assert s.proc.poll() is None, "the server died: " + "".join(s.lines[-20:])
    assert s.stop() == 0


# --------------------------------------------------------------------------------------------- helpers


def v2_request(request_id: str = "", headers: bytes = b"") -> bytes:
    body = json.dumps({"id": request_id, **json.loads(V2_BODY)}).encode() if request_id else V2_BODY
    return V2 + headers + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


def chunked(body: bytes, size: int, trailer: bytes = b"") -> bytes:
    """``body`` as chunks of ``size`` bytes, each with a chunk extension, then the trailer fields."""
    parts = [
        b"%x;n=%d\r\n%s\r\n" % (len(body[i : i + size]), i, body[i : i + size])
        for i in range(0, len(body), size)
    ]
    return b"".join(parts) + b"0\r\n" + trailer + b"\r\n"


def answers(data: bytes) -> list[tuple[int, bytes]]:
    """The (status, body) of every HTTP answer in a stream, in order."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"a truncated answer: {data[:300]!r}"
        lines = head.split(b"\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        out.append((int(lines[0].split()[1]), rest[:length]))
        data = rest[length:]
    return out


def error_of(body: bytes) -> str:
    message = json.loads(body)["error"]
    assert isinstance(message, str)
    return message


def raw(port: int, request: bytes) -> bytes:
    """Send a request on a fresh connection; everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(65536):
                data += chunk
        return data


@dataclass
class Exchange:
    data: bytes  # everything the server sent
    seconds: float  # from the connection's start until the server closed it (or the deadline)
    closed: bool  # the server closed it before the deadline


async def exchange(port: int, parts: list[bytes], gap: float = 0.0, deadline: float = 30.0) -> Exchange:
    """One connection that sends ``parts`` ``gap`` seconds apart while it reads until the server closes."""
    start = time.monotonic()  # before the connect: the server's clocks start after it
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send() -> None:
        for i, part in enumerate(parts):
            if i and gap:
                await asyncio.sleep(gap)
            writer.write(part)
            await writer.drain()

    sender = asyncio.create_task(send())
    data, closed = b"", True
    try:
        async with asyncio.timeout(deadline):
            while chunk := await reader.read(65536):
                data += chunk
    except TimeoutError:
        closed = False
    except ConnectionResetError:
        pass
    seconds = time.monotonic() - start
    sender.cancel()
    with contextlib.suppress(asyncio.CancelledError, OSError):  # sending to a closed connection fails
        await sender
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return Exchange(data, seconds, closed)


def metric(server: Server, name: str, labels: str = "") -> float:
    text = requests.get(f"{server.url}/metrics", timeout=30).text
    pattern = rf'^{name}\{{model="rf"{"," + labels if labels else ""}\}} (\S+)$'
    found = re.search(pattern, text, re.M)
    assert found, f"no {name} {labels} in /metrics"
    return float(found[1])


class Prober(threading.Thread):
    """A legitimate client: a V2 prediction on a fresh connection, again and again; samples the RSS."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.stop = threading.Event()
        self.answered: list[float] = []  # when each correct answer came
        self.failures: list[str] = []
        self.peak_rss_kib = 0

    def run(self) -> None:
        url = f"{self.server.url}/v2/models/rf/infer"
        while not self.stop.is_set():
            try:
                r = requests.post(url, data=V2_BODY, headers={"Connection": "close"}, timeout=30)
                if r.status_code == 200 and r.json()["outputs"][0]["shape"] == [1]:
                    self.answered.append(time.monotonic())
                else:
                    self.failures.append(f"{r.status_code} {r.text[:200]}")
            except requests.RequestException as e:
                self.failures.append(repr(e))
            self.peak_rss_kib = max(self.peak_rss_kib, rss_kib(self.server.proc.pid))
            time.sleep(0.05)

    def answered_between(self, start: float, end: float) -> int:
        return sum(start <= t <= end for t in self.answered)

    def __enter__(self) -> Prober:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.join(timeout=60)


# ------------------------------------------------------------------------------------------------ tests

BINARY = b"Content-Type: application/octet-stream\r\n"
BINARY_BODY = json.dumps(
    {"inputs": [{"name": "X", "shape": [1, 20], "datatype": "FP32", "parameters": {"binary_data_size": 80}}]}
).encode()


@pytest.mark.parametrize(
    ("request_", "status", "message"),
    [
        (
            b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            414,
            "longer than the limit of 8192 bytes",
        ),
        (
            b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
            431,
            "larger than the limit of 32768 bytes",
        ),
        (
            b"GET /v2/health/live HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n",
            431,
            "more than 100 header fields",
        ),
        (
            V2
            + b"Transfer-Encoding: chunked\r\n\r\n"
            + chunked(V2_BODY, 64, b"X-Trailer: " + b"a" * 100_000 + b"\r\n"),
            431,
            "larger than the limit of 32768 bytes",
        ),
        (V2 + b"Content-Length: 2000000\r\n\r\n", 413, "the limit is 1048576"),
        (V2 + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400, "malformed HTTP request"),
        (V2 + b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 20 + b"\r\nabc\r\n0\r\n\r\n", 400, "overflow"),
        (V2 + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n", 400, "malformed HTTP request"),
        # Request smuggling: two ways to find the body's end.
        (
            V2 + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
            "malformed HTTP request",
        ),
        (V2 + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400, "Duplicate Content-Length"),
        (V2 + b"Content-Length: -5\r\n\r\n", 400, "malformed HTTP request"),
        # The binary tensor extension, lying about its sizes.
        (
            V2
            + BINARY
            + b"Inference-Header-Content-Length: 99999\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
            % (len(V2_BODY), V2_BODY),
            400,
            "Inference-Header-Content-Length 99999 is larger than the body",
        ),
        (
            V2
            + BINARY
            + b"Inference-Header-Content-Length: -1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
            % (len(V2_BODY), V2_BODY),
            400,
            "must be a byte count",
        ),
        (
            V2
            + BINARY
            + b"Inference-Header-Content-Length: %d\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s%s"
            % (len(BINARY_BODY), len(BINARY_BODY) + 8, BINARY_BODY, b"\0" * 8),
            400,
            "declares binary_data_size 80, the body carries 8 bytes",
        ),
        (bytes(range(256)) * 4, 400, "malformed HTTP request"),
        (b"GET /\x00 HTTP/1.1\r\n\r\n", 400, "malformed HTTP request"),
    ],
    ids=[
        "huge-url",
        "huge-header",
        "many-header-fields",
        "huge-trailer",
        "huge-content-length",
        "bad-chunk-size",
        "chunk-size-overflow",
        "chunk-without-crlf",
        "content-length-and-chunked",
        "two-content-lengths",
        "negative-content-length",
        "binary-header-longer-than-body",
        "binary-header-length-negative",
        "binary-data-size-lies",
        "garbage",
        "nul-in-url",
    ],
)
def test_each_limit_and_malformation_gets_its_status_and_a_message(
    server: Server, request_: bytes, status: int, message: str
) -> None:
    got = answers(raw(server.port, request_))
    assert [s for s, _ in got] == [status], got
    assert message in error_of(got[0][1])
    assert requests.get(f"{server.url}/v2/health/live", timeout=30).status_code == 200


def test_a_header_sent_over_many_reads_is_refused_once_over_the_limit(server: Server) -> None:
    """Each read holds part of one header value that httptools buffers until the value ends: counted
    per read, it is refused (431, not the 408 of the timeout) long before it ends."""
    parts = [b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: "] + [b"a" * 1024] * 100
    got = asyncio.run(exchange(server.port, parts, gap=0.005))
    assert got.closed
    (answer,) = answers(got.data)
    assert answer[0] == 431 and "larger than the limit of 32768 bytes" in error_of(answer[1])


def pipeline() -> tuple[bytes, list[str]]:
    """Plain, chunked (with chunk extensions and a trailer), V1 and GET requests on one connection, and
    the id each answer must carry, in order."""
    requests_, ids = [], []
    for i in range(4):
        body = json.dumps({"id": f"c{i}", **json.loads(V2_BODY)}).encode()
        trailer = b"X-Checksum: %d\r\n" % i if i % 2 else b""
        requests_.append(V2 + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body, 7 + i * 13, trailer))
        ids.append(f"c{i}")
        requests_.append(v2_request(f"p{i}"))
        ids.append(f"p{i}")
    requests_.insert(3, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    ids.insert(3, "live")
    v1 = json.dumps({"instances": [ROW]}).encode()
    requests_.append(b"POST /v1/models/rf:predict HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(v1), v1))
    ids.append("v1")
    requests_.append(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    ids.append("live")
    return b"".join(requests_), ids


def answer_id(body: bytes) -> str:
    doc = json.loads(body)
    return "live" if doc == {"live": True} else "v1" if "predictions" in doc else str(doc["id"])


@pytest.mark.parametrize("piece", [0, 3, 1000], ids=["one-write", "3-byte-writes", "1000-byte-writes"])
def test_pipelined_plain_and_chunked_requests_are_answered_in_order(server: Server, piece: int) -> None:
    """However the stream is cut into reads (a head spread over many of them must not count as too
    large), every request is answered, in order."""
    stream, ids = pipeline()
    parts = [stream] if not piece else [stream[i : i + piece] for i in range(0, len(stream), piece)]
    got = asyncio.run(exchange(server.port, parts, gap=0.0005 if piece else 0.0))
    assert got.closed
    got_answers = answers(got.data)
    assert [s for s, _ in got_answers] == [200] * len(ids)
    assert [answer_id(b) for _, b in got_answers] == ids


def test_a_malformed_chunk_in_a_pipeline_ends_it_after_the_good_requests(server: Server) -> None:
    stream = (
        v2_request("a")
        + v2_request("b")
        + V2
        + b"Transfer-Encoding: chunked\r\n\r\n5\r\nabc"
        + v2_request("c")
    )
    got = answers(raw(server.port, stream))
    assert [s for s, _ in got] == [200, 200, 400]
    assert [answer_id(b) for _, b in got[:2]] == ["a", "b"]
    assert "malformed HTTP request" in error_of(got[2][1])


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        for i in range(2):  # a request within the timeout restarts it
            s.sendall(v2_request(str(i)))
            assert s.recv(65536).startswith(b"HTTP/1.1 200 OK")
            answered = time.monotonic()
            if i == 0:
                time.sleep(IDLE_TIMEOUT / 2)
        assert s.recv(65536) == b""  # closed without an answer: no request was asked
        idle = time.monotonic() - answered
    assert IDLE_TIMEOUT <= idle < IDLE_TIMEOUT + LATE, idle


async def attack(port: int) -> dict[str, list[Exchange]]:
    """A few hundred connections at once, each holding the server in its own way."""
    slow_head = [V2 + b"Content-Type: application/json\r\nX-Slow: "] + [b"a"] * 120  # a byte per 0.25 s
    slow_body = [V2 + b"Content-Length: 1000\r\n\r\n"] + [b" "] * 120
    big_head = [V2 + b"X-Big: " + b"a" * 30_000]  # under the header limit, and never finished
    runs = {
        "slow_head": [exchange(port, slow_head, gap=0.25) for _ in range(300)],
        "silent": [exchange(port, []) for _ in range(100)],
        "slow_body": [exchange(port, slow_body, gap=0.25) for _ in range(20)],
        "big_head": [exchange(port, big_head) for _ in range(50)],
    }
    results = await asyncio.gather(*(c for cs in runs.values() for c in cs))
    out, i = {}, 0
    for kind, cs in runs.items():
        out[kind] = results[i : i + len(cs)]
        i += len(cs)
    return out


def timed_out(exchanges: list[Exchange], timeout: float, message: str | None) -> list[str]:
    """What is wrong with connections that the server should have closed once ``timeout`` ran out: with
    a 408 that says ``message``, or (None) without an answer."""
    wrong = []
    for e in exchanges:
        got = answers(e.data)
        if message is None:
            right = got == []
        else:
            right = len(got) == 1 and got[0][0] == 408 and message in error_of(got[0][1])
        if not e.closed or not timeout <= e.seconds < timeout + LATE:
            wrong.append(f"closed={e.closed} after {e.seconds:.2f}s")
        elif not right:
            wrong.append(f"answered {got}")
    return wrong


def test_slow_and_silent_connections_are_closed_while_others_are_served(server: Server) -> None:
    """470 connections that send half a head a byte at a time, nothing, a body a byte at a time, or 30 KB of
    a head and then nothing: each is closed once its timeout runs out (so they cannot pile up until the
    descriptors run out), and a prediction on a fresh connection is answered all the while."""
    closed_before = metric(server, "kubeloop_connections_closed_total", 'reason="header_timeout"')
    with Prober(server) as prober:
        wait_for(lambda: len(prober.answered) >= 5, timeout=60, what="the first predictions", interval=0.1)
        before = rss_kib(server.proc.pid)
        start = time.monotonic()
        results = asyncio.run(attack(server.port))
        end = time.monotonic()
        time.sleep(0.5)
    after = rss_kib(server.proc.pid)
    assert prober.failures == []
    # Answered throughout: the attack's connections all stayed open for at least 2 s of it.
    assert prober.answered_between(start + 0.5, start + HEADER_TIMEOUT) >= 1, prober.answered[-20:]
    assert prober.answered_between(start, end) >= 5
    head_message = f"the request head did not arrive within {HEADER_TIMEOUT} seconds"
    assert timed_out(results["slow_head"], HEADER_TIMEOUT, head_message) == []
    assert timed_out(results["big_head"], HEADER_TIMEOUT, head_message) == []
    assert timed_out(results["silent"], HEADER_TIMEOUT, None) == []
    body_message = f"the request did not arrive within {REQUEST_TIMEOUT} seconds"
    assert timed_out(results["slow_body"], REQUEST_TIMEOUT, body_message) == []
    closed = metric(server, "kubeloop_connections_closed_total", 'reason="header_timeout"') - closed_before
    assert closed >= 450
    assert metric(server, "kubeloop_connections_closed_total", 'reason="request_timeout"') >= 20
    # The /metrics request's own connection, and perhaps the last probe's.
    assert metric(server, "kubeloop_connections_open") <= 3
    grown, peak = (after - before) / 1024, (prober.peak_rss_kib - before) / 1024
    assert grown < 16, f"RSS grew {grown:.1f} MiB over the attack"
    assert peak < 48, f"RSS peaked {peak:.1f} MiB above its start during the attack"
    assert server.proc.poll() is None


def test_memory_stays_flat_over_repeated_attacks(server: Server) -> None:
    """After two rounds (the allocator's first use), three more leave the RSS where it was: a closed
    connection's memory is given back. (Before the parser released its connection, each round of 470
    connections kept about 1 MiB for good.)"""
    for _ in range(2):
        asyncio.run(attack(server.port))
    before = rss_kib(server.proc.pid)
    for _ in range(3):
        asyncio.run(attack(server.port))
    grown = (rss_kib(server.proc.pid) - before) / 1024
    assert grown < 1.5, f"RSS grew {grown:.2f} MiB over three rounds of 470 connections"


@pytest.mark.parametrize(
    ("path", "burst", "pause"),
    [("/metrics", 2000, 0.0), ("/v2/models/rf", 2000, 0.0), ("/metrics", 10, 0.01)],
    ids=["metrics-flood", "metadata-flood", "metrics-trickle"],
)
def test_a_client_that_does_not_read_its_answers_cannot_grow_the_server(
    server: Server, path: str, burst: int, pause: float
) -> None:
    """Pipelined requests whose answers are never read: the server stops reading while its answers wait,
    and cuts the connection off when one read's requests pile up more than 1 MiB of them, or once a
    timeout ran out. (Before, one such connection sending "GET /metrics" grew the RSS by 225 MiB in
    8 s and stalled every other client for seconds.)"""
    request = b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode()
    unread = 'reason="unread_answers"'
    unread_before = metric(server, "kubeloop_connections_closed_total", unread)
    before = rss_kib(server.proc.pid)
    cut = False
    with Prober(server) as prober, socket.create_connection(("127.0.0.1", server.port)) as s:
        s.setblocking(False)
        until = time.monotonic() + IDLE_TIMEOUT + LATE
        while time.monotonic() < until and not cut:
            try:
                s.send(request * burst)
            except BlockingIOError:  # the server stopped reading
                time.sleep(0.01)
            except (ConnectionResetError, BrokenPipeError):
                cut = True
            time.sleep(pause)
        grown = (rss_kib(server.proc.pid) - before) / 1024
    assert prober.failures == [] and prober.answered
    assert grown < 16, f"RSS grew {grown:.1f} MiB"
    # Cut off when one read's requests pile up too many answers; else by a timeout, the idle one or the
    # head's (reading stopped in the middle of a head).
    assert cut
    if path == "/metrics" and not pause:  # one read of these is enough
        assert metric(server, "kubeloop_connections_closed_total", unread) == unread_before + 1
    assert metric(server, "kubeloop_connections_open") <= 2  # the /metrics request's, perhaps a probe's


def mutate(rng: random.Random, request: bytes) -> bytes:
    """One random corruption of a request: a byte changed, bytes inserted, cut, repeated or truncated."""
    data = bytearray(request)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(data) + 1)
        op = rng.randrange(6)
        if op == 0 and data:
            data[min(i, len(data) - 1)] = rng.randrange(256)
        elif op == 1:
            data[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op == 2:
            del data[i : i + rng.randint(1, 32)]
        elif op == 3:
            data[i:i] = data[i : i + rng.randint(1, 64)] * rng.randint(2, 50)
        elif op == 4:
            data[i:i] = rng.choice(
                [b"\r\n", b"\r\n\r\n", b":", b" ", b"\0", b"\n", b"chunked", b"9999999999"]
            )
        else:
            del data[i:]
    return bytes(data)


def test_fuzzed_requests_never_get_a_5xx_nor_stop_the_server(server: Server) -> None:
    """600 corruptions of valid requests (JSON, chunked, binary extension, V1, GET, pipelined), on
    connections of their own: each gets client-error answers or is closed, never a 5xx."""
    binary = (
        V2
        + BINARY
        + b"Inference-Header-Content-Length: %d\r\nContent-Length: %d\r\n\r\n%s%s"
        % (len(BINARY_BODY), len(BINARY_BODY) + 80, BINARY_BODY, b"\0" * 80)
    )
    stream, _ = pipeline()
    seeds = [
        v2_request("f"),
        V2 + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(V2_BODY, 40, b"X-T: y\r\n"),
        binary,
        b"POST /v1/models/rf:predict HTTP/1.1\r\nContent-Length: 3\r\n\r\n{}\n",
        b"GET /v2/models/rf HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
        stream,
    ]
    rng = random.Random(13)
    cases = [mutate(rng, rng.choice(seeds)) for _ in range(600)]

    async def run_all() -> list[Exchange]:
        out: list[Exchange] = []
        for i in range(0, len(cases), 150):  # 150 connections at a time
            out += await asyncio.gather(*(exchange(server.port, [c]) for c in cases[i : i + 150]))
        return out

    with Prober(server) as prober:
        results = asyncio.run(run_all())
    assert prober.failures == [] and prober.answered
    statuses: set[int] = set()
    for case, e in zip(cases, results, strict=True):
        assert e.closed, f"still open after {e.seconds:.0f}s: {case[:300]!r}"
        got = answers(e.data)
        statuses |= {s for s, _ in got}
        assert {s for s, _ in got} <= CLIENT_ERRORS | {100, 200}, f"{got} for {case[:300]!r}"
    assert 400 in statuses and 200 in statuses  # the corruptions were seen as both
    assert server.proc.poll() is None


def served(port: int) -> bool:
    try:
        return raw(port, b"GET /v2/health/live HTTP/1.1\r\nConnection: close\r\n\r\n").startswith(
            b"HTTP/1.1 200"
        )
    except OSError:  # refused while the server had not seen the close yet
        return False


def test_connections_beyond_the_cap_get_503_and_are_counted(model_dir: Path) -> None:
    s = Server("--model-dir", str(model_dir), "--max-connections", "20")
    try:
        s.wait_for("ready")
        held = [socket.create_connection(("127.0.0.1", s.port), timeout=30) for _ in range(20)]
        # Accepted in order, so the 21st is accepted after the 20 held ones: refused at once.
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as extra:
            refused = b""
            while chunk := extra.recv(65536):
                refused += chunk
        ((status, body),) = answers(refused)
        assert status == 503 and "limit of 20 connections open" in error_of(body)
        held.pop().close()
        # Served again once one closed (the server may see the close after the next connection).
        wait_for(
            lambda: served(s.port), timeout=30, what="a connection served after one closed", interval=0.1
        )
        for h in held:
            h.close()
        assert wait_for(lambda: metric(s, "kubeloop_connections_refused_total"), timeout=30) >= 1
    finally:
        assert s.stop() == 0


def open_file_limit(pid: int) -> int:
    line = next(
        x for x in Path(f"/proc/{pid}/limits").read_text().splitlines() if x.startswith("Max open files")
    )
    return int(line.split()[3])


@pytest.mark.parametrize(("soft", "hard"), [(256, 4096), (256, 256)])
def test_the_open_file_limit_is_raised_to_fit_max_connections(model_dir: Path, soft: int, hard: int) -> None:
    """A container's soft limit of open files is often 1024: the server raises it (up to the hard limit)
    to max-connections and some spare, and says so when the hard limit is lower."""
    s = Server(
        "--model-dir",
        str(model_dir),
        "--max-connections",
        "1000",
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)),
    )
    try:
        ready = s.wait_for("ready")
        assert ready["open_file_limit"] == open_file_limit(s.proc.pid) == min(1064, hard)
        low = [e for e in s.events() if e.get("event") == "open_file_limit_low"]
        wanted = {"limit": 256, "max_connections": 1000, "wanted": 1064}
        assert low == ([] if hard >= 1064 else [{"event": "open_file_limit_low", **wanted}])
    finally:
        assert s.stop() == 0


def test_metrics_and_baseline_need_the_token_with_metrics_auth(model_dir: Path, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret\n")
    s = Server("--model-dir", str(model_dir), "--auth-token-file", str(tokens), "--metrics-auth", "on")
    try:
        s.wait_for("ready")
        auth: dict[str, Any] = {"Authorization": "Bearer s3cret"}
        for path in ("/metrics", "/kubeloop/v1/baseline"):
            refused = requests.get(s.url + path, timeout=30)
            assert refused.status_code == 401 and "bearer token is required" in refused.json()["error"]
            assert (
                requests.get(s.url + path, headers={"Authorization": "Bearer nope"}, timeout=30).status_code
                == 401
            )
            assert requests.get(s.url + path, headers=auth, timeout=30).status_code == 200
        assert "kubeloop_model_ready" in requests.get(f"{s.url}/metrics", headers=auth, timeout=30).text
        for probe in (
            "/v2/health/live",
            "/v2/health/ready",
            "/v2/models/rf/ready",
        ):  # the kubelet has no token
            assert requests.get(s.url + probe, timeout=30).status_code == 200
    finally:
        assert s.stop() == 0
