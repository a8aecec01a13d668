"""The operator's own Prometheus metrics."""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter(
    "kubeloop_operator_reconciles_total", "Reconciles, by kind and result.", ["kind", "result"]
)
ERRORS = Counter("kubeloop_operator_reconcile_errors_total", "Reconciles that raised, by kind.", ["kind"])
DURATION = Histogram("kubeloop_operator_reconcile_duration_seconds", "Reconcile duration, by kind.", ["kind"])
OBJECTS = Gauge(
    "kubeloop_operator_objects", "Objects by kind and condition status.", ["kind", "condition", "status"]
)
# What the operator decided, as Prometheus sees it: a canary RolledBack or Promoted, a Monitor's Retrain or
# Rollback (the alerting rules and the dashboard in helm/kubeloop/files count these).
EVENTS = Counter(
    "kubeloop_operator_events",
    "Events the operator posted, by object and reason (RolledBack, CanaryPromoting, Retrain, ...).",
    ["kind", "namespace", "name", "reason"],
)
# Reasons whose series exist at 0 from an object's first reconcile: increase() sees no rise in a series
# that is born at 1, so without them the first rollback or retrain of an object would never alert.
ZERO_EVENTS = {
    "ModelDeployment": ("CanaryStarted", "CanaryPromoting", "RolledBack"),
    "Monitor": ("Rollback", "Retrain", "RetrainLimit"),
}

MONITOR_VERDICT = Gauge(
    "kubeloop_monitor_check_verdict",
    "1 for the verdict of each Monitor check at its last run (pass, fail or inconclusive), else 0.",
    ["namespace", "monitor", "check", "verdict"],
)
MONITOR_VALUE = Gauge(
    "kubeloop_monitor_check_value",
    "The value each Monitor check measured at its last run (error share, p99 ms, worst drift score).",
    ["namespace", "monitor", "check"],
)
MONITOR_DRIFT = Gauge(
    "kubeloop_monitor_drift_score",
    "Drift score per feature at the last check.",
    ["namespace", "monitor", "feature"],
)

_lock = threading.Lock()
# (kind, namespace, name) -> {condition type: status}, to count objects by condition.
_conditions: dict[tuple[str, str, str], dict[str, str]] = {}
_counts: Tally[tuple[str, str, str]] = Tally()
# (kind, namespace, name) -> the reasons with an EVENTS series, removed with the object.
_events: dict[tuple[str, str, str], set[str]] = {}
# (namespace, monitor) -> the (gauge, labels) series its last check set: the ones it did not set again (a
# feature of the previous model, a check no longer configured) or a deleted Monitor's go, so no alert
# rule keeps firing on a verdict nobody makes any more.
_monitor_series: dict[tuple[str, str], set[tuple[Gauge, tuple[str, ...]]]] = {}
_server_started = False


def observe_conditions(kind: str, namespace: str, name: str, conditions: list[dict[str, str]] | None) -> None:
    """Remember an object's conditions (None: the object is gone) and move the gauge by the difference
    (a full recount on every reconcile would cost O(objects))."""
    with _lock:
        key = (kind, namespace, name)
        old = _conditions.pop(key, {})
        new = {c["type"]: c["status"] for c in conditions} if conditions is not None else {}
        if new:
            _conditions[key] = new
        for ctype, cstatus in old.items():
            _counts[(kind, ctype, cstatus)] -= 1
        for ctype, cstatus in new.items():
            _counts[(kind, ctype, cstatus)] += 1
        for labels in {(kind, t, s) for t, s in (*old.items(), *new.items())}:
            OBJECTS.labels(*labels).set(_counts[labels])
        if conditions is None:
            for reason in _events.pop(key, set()):
                EVENTS.remove(kind, namespace, name, reason)
            if kind == "Monitor":
                for gauge, series in _monitor_series.pop((namespace, name), set()):
                    gauge.remove(*series)
        else:
            _event_reasons(key)


def observe_event(body: dict[str, Any], reason: str) -> None:
    """Count an Event posted on ``body`` (an object of the operator's kinds)."""
    meta = body.get("metadata") or {}
    key = (str(body.get("kind", "")), str(meta.get("namespace", "")), str(meta.get("name", "")))
    with _lock:
        _event_reasons(key).add(reason)
        EVENTS.labels(*key, reason).inc()


def _event_reasons(key: tuple[str, str, str]) -> set[str]:
    """The reasons with a series for this object; on first sight, ZERO_EVENTS' made at 0 (lock held)."""
    reasons = _events.get(key)
    if reasons is None:
        reasons = _events[key] = set(ZERO_EVENTS.get(key[0], ()))
        for reason in reasons:
            EVENTS.labels(*key, reason)
    return reasons


def observe_monitor(namespace: str, monitor: str, checks: Sequence[Any], scores: dict[str, float]) -> None:
    """A Monitor's last verdicts and drift scores (``checks``: analysis.Check); none: nothing judged."""
    series: dict[tuple[Gauge, tuple[str, ...]], float] = {}
    for check in checks:
        for verdict in ("pass", "fail", "inconclusive"):
            key: tuple[str, ...] = (namespace, monitor, check.name, verdict)
            series[(MONITOR_VERDICT, key)] = int(check.verdict == verdict)
        if check.value is not None:
            series[(MONITOR_VALUE, (namespace, monitor, check.name))] = check.value
    for feature, score in scores.items():
        series[(MONITOR_DRIFT, (namespace, monitor, feature))] = score
    with _lock:
        for gauge, gone in _monitor_series.pop((namespace, monitor), set()) - set(series):
            gauge.remove(*gone)
        for (gauge, labelled), value in series.items():
            gauge.labels(*labelled).set(value)
        if series:
            _monitor_series[(namespace, monitor)] = set(series)


def serve(port: int) -> None:
    """Expose /metrics once per process (the tests start the operator more than once)."""
    global _server_started
    with _lock:
        if not _server_started and port > 0:
            start_http_server(port)
            _server_started = True
