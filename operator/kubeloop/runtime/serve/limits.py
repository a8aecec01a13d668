"""Which connections have run past a timeout: one pure decision, taken by a periodic sweep (:mod:`.app`).

One sweep over every connection every ``sweep_interval`` seconds, instead of a timer per request: a
timer costs an allocation and a heap push and pop per request, while the sweep costs nothing per request
and about a microsecond per open connection per interval. A connection therefore closes up to one
interval after its deadline.
"""

from __future__ import annotations

from .config import ServeConfig

# Where the parser is in a connection's current request.
BETWEEN = 0  # no request begun since the last one ended
HEAD = 1  # request line and header fields
BODY = 2  # the body (and a chunked body's trailers)

# Why a connection is closed: the ``reason`` label of kubeloop_connections_closed_total.
HEADER_TIMEOUT = "header_timeout"
REQUEST_TIMEOUT = "request_timeout"
IDLE_TIMEOUT = "idle_timeout"
LINGER_TIMEOUT = "linger_timeout"
UNREAD_ANSWERS = "unread_answers"  # not a timeout: the client sent requests and did not read the answers

# After an error answer the connection stays open this long, reading and dropping what the client still
# sends: closing with unread bytes makes the kernel send a reset, which can destroy the answer before
# the client reads it (nginx's lingering close, shorter).
LINGER_SECONDS = 2.0

# A client that does not read its answers: reading from it stops while more than the transport's
# high-water mark (64 KiB) of them waits to be sent, and a request that completes while more than this
# waits ends the connection. Only the requests of one read can get that far, but one read of pipelined
# "GET /metrics" (~25 bytes each, ~20 KB answers) is enough for hundreds of MB of answers.
MAX_UNREAD_BYTES = 1 << 20


def overdue(
    parsing: int,
    began: float,
    since: float,
    busy: bool,
    fresh: bool,
    closing: bool,
    now: float,
    config: ServeConfig,
) -> str | None:
    """The timeout a connection has run past, or None.

    ``began``: the first byte of its current request; ``since``: when it was accepted, last answered, or
    (``closing``) sent its error answer; ``busy``: an answer of ours is pending, so the wait is ours;
    ``fresh``: no request has begun on it yet.
    """
    if closing:
        return LINGER_TIMEOUT if now - since > LINGER_SECONDS else None
    if parsing == HEAD:
        return HEADER_TIMEOUT if now - began > config.header_timeout else None
    if parsing == BODY:
        return REQUEST_TIMEOUT if now - began > config.request_timeout else None
    if busy:
        return None
    if fresh:  # the head's clock starts when the connection is accepted
        return HEADER_TIMEOUT if now - since > config.header_timeout else None
    return IDLE_TIMEOUT if now - since > config.idle_timeout else None


def sweep_interval(config: ServeConfig) -> float:
    """A quarter of the shortest timeout, between 50 ms and 1 s: deadlines overshoot by at most that."""
    shortest = min(config.header_timeout, config.request_timeout, config.idle_timeout, LINGER_SECONDS)
    return min(1.0, max(0.05, shortest / 4))
