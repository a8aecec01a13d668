"""The server's timeouts: which one a connection has run past, decided from its state (limits.overdue)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubeloop.runtime.serve.config import ServeConfig
from kubeloop.runtime.serve.limits import (
    BETWEEN,
    BODY,
    HEAD,
    HEADER_TIMEOUT,
    IDLE_TIMEOUT,
    LINGER_SECONDS,
    LINGER_TIMEOUT,
    REQUEST_TIMEOUT,
    overdue,
    sweep_interval,
)

CONFIG = ServeConfig(model_dir=Path("/m"), header_timeout=2, request_timeout=10, idle_timeout=30)
NOW = 1000.0


@pytest.mark.parametrize(
    ("parsing", "began", "since", "busy", "fresh", "closing", "expected"),
    [
        # A head must be complete header_timeout after its first byte, whatever came before it.
        (HEAD, NOW - 2.1, NOW - 0.1, True, False, False, HEADER_TIMEOUT),
        (HEAD, NOW - 1.9, NOW - 100, True, False, False, None),
        # The whole request (head and body) within request_timeout of its first byte.
        (BODY, NOW - 9, NOW - 9, True, False, False, None),
        (BODY, NOW - 11, NOW - 0.5, True, False, False, REQUEST_TIMEOUT),
        # A new connection that says nothing: the head's timeout, counted from the accept.
        (BETWEEN, 0.0, NOW - 2.1, False, True, False, HEADER_TIMEOUT),
        (BETWEEN, 0.0, NOW - 1.9, False, True, False, None),
        # Between requests, after an answer: the keep-alive timeout.
        (BETWEEN, NOW - 50, NOW - 29, False, False, False, None),
        (BETWEEN, NOW - 50, NOW - 31, False, False, False, IDLE_TIMEOUT),
        # A request fully read and not answered yet: the wait is the server's, no timeout.
        (BETWEEN, NOW - 50, NOW - 50, True, False, False, None),
        # After an error answer the connection lingers for LINGER_SECONDS, whatever it was doing.
        (HEAD, NOW - 50, NOW - LINGER_SECONDS - 0.1, True, False, True, LINGER_TIMEOUT),
        (HEAD, NOW - 50, NOW - LINGER_SECONDS + 0.1, True, False, True, None),
    ],
)
def test_overdue(
    parsing: int, began: float, since: float, busy: bool, fresh: bool, closing: bool, expected: str | None
) -> None:
    assert overdue(parsing, began, since, busy, fresh, closing, NOW, CONFIG) == expected


@pytest.mark.parametrize(
    ("header", "whole", "idle", "interval"),
    [(10, 60, 75, 0.5), (2, 4, 3, 0.5), (0.1, 60, 75, 0.05), (0.4, 60, 75, 0.1)],
)
def test_the_sweep_runs_at_a_quarter_of_the_shortest_timeout(
    header: float, whole: float, idle: float, interval: float
) -> None:
    config = ServeConfig(
        model_dir=Path("/m"), header_timeout=header, request_timeout=whole, idle_timeout=idle
    )
    assert sweep_interval(config) == pytest.approx(interval)
