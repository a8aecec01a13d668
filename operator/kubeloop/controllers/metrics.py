"""The operator's own Prometheus metrics."""

from __future__ import annotations

import threading
from collections import Counter as Tally

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter(
    "kubeloop_operator_reconciles_total", "Reconciles, by kind and result.", ["kind", "result"]
)
ERRORS = Counter("kubeloop_operator_reconcile_errors_total", "Reconciles that raised, by kind.", ["kind"])
DURATION = Histogram("kubeloop_operator_reconcile_duration_seconds", "Reconcile duration, by kind.", ["kind"])
OBJECTS = Gauge(
    "kubeloop_operator_objects", "Objects by kind and condition status.", ["kind", "condition", "status"]
)

_lock = threading.Lock()
# (kind, namespace, name) -> {condition type: status}, to count objects by condition.
_conditions: dict[tuple[str, str, str], dict[str, str]] = {}
_server_started = False


def observe_conditions(kind: str, namespace: str, name: str, conditions: list[dict[str, str]] | None) -> None:
    """Remember an object's conditions (None: the object is gone) and refresh the gauge."""
    with _lock:
        key = (kind, namespace, name)
        if conditions is None:
            _conditions.pop(key, None)
        else:
            _conditions[key] = {c["type"]: c["status"] for c in conditions}
        counts = Tally(
            (k[0], ctype, cstatus) for k, conds in _conditions.items() for ctype, cstatus in conds.items()
        )
        OBJECTS.clear()
        for (k, ctype, cstatus), n in counts.items():
            OBJECTS.labels(k, ctype, cstatus).set(n)


def serve(port: int) -> None:
    """Expose /metrics once per process (the tests start the operator more than once)."""
    global _server_started
    with _lock:
        if not _server_started and port > 0:
            start_http_server(port)
            _server_started = True
