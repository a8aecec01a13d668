"""The operator, run in-process against the real cluster (kopf's KopfRunner)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from kopf.testing import KopfRunner

from support.polling import wait_for  # noqa: F401 - re-exported for the tests

OPERATOR_ARGS = ["run", "-A", "--standalone", "-m", "kubeloop.controllers.main"]


@pytest.fixture
def start_operator(
    kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], AbstractContextManager[Any]]:
    """A factory of operator runs (a test may stop and start the operator); each is a context manager."""
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    # Reconciles are event-driven: a safety resync this long never fires during a test, so none can pass
    # thanks to it.
    monkeypatch.setenv("KUBELOOP_RESYNC_SECONDS", "3600")
    monkeypatch.setenv("KUBELOOP_METRICS_PORT", "0")
    monkeypatch.setenv("KUBELOOP_STORE_URI", "s3://kubeloop-test/store")
    return lambda: KopfRunner(OPERATOR_ARGS, timeout=60)


@pytest.fixture
def operator(start_operator: Callable[[], AbstractContextManager[Any]]) -> Iterator[Any]:
    with start_operator() as runner:
        yield runner
    assert runner.exception is None, f"the operator crashed: {runner.exception!r}"
    assert runner.exit_code == 0, runner.output[-3000:]
