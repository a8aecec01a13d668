"""kubeloop_operator_events_total: what the alerting rules count rollbacks and retrains with."""

from __future__ import annotations

import logging
import uuid

from prometheus_client import REGISTRY

from kubeloop.analysis import Check
from kubeloop.controllers import metrics
from kubeloop.controllers.framework import post_event

LOG = logging.getLogger("test")


def events(kind: str, namespace: str, name: str, reason: str) -> float | None:
    labels = {"kind": kind, "namespace": namespace, "name": name, "reason": reason}
    return REGISTRY.get_sample_value("kubeloop_operator_events_total", labels)


def test_an_event_posted_is_counted_by_object_and_reason() -> None:
    name = f"md-{uuid.uuid4().hex[:6]}"
    body = {"kind": "ModelDeployment", "metadata": {"namespace": "ml", "name": name}}
    post_event(body, "Warning", "RolledBack", "canary rolled back", LOG)
    post_event(body, "Warning", "RolledBack", "canary rolled back again", LOG)
    post_event(body, "Normal", "CanaryStepPassed", "step 1 passed", LOG)
    assert events("ModelDeployment", "ml", name, "RolledBack") == 2
    assert events("ModelDeployment", "ml", name, "CanaryStepPassed") == 1
    assert events("ModelDeployment", "other", name, "RolledBack") is None


def test_the_alerted_reasons_start_at_zero_so_the_first_one_is_a_rise() -> None:
    """A series born at 1 shows no increase(): the first rollback of an object would never alert."""
    name = f"mon-{uuid.uuid4().hex[:6]}"
    metrics.observe_conditions("Monitor", "ml", name, [{"type": "Ready", "status": "True"}])
    for reason in ("Retrain", "Rollback", "RetrainLimit"):
        assert events("Monitor", "ml", name, reason) == 0
    assert events("Monitor", "ml", name, "RolledBack") is None  # a ModelDeployment's reason
    post_event(
        {"kind": "Monitor", "metadata": {"namespace": "ml", "name": name}}, "Normal", "Retrain", "", LOG
    )
    assert events("Monitor", "ml", name, "Retrain") == 1


def test_the_series_go_with_the_object() -> None:
    name = f"md-{uuid.uuid4().hex[:6]}"
    post_event(
        {"kind": "ModelDeployment", "metadata": {"namespace": "ml", "name": name}}, "Normal", "X", "", LOG
    )
    assert events("ModelDeployment", "ml", name, "RolledBack") == 0  # made at first sight, events included
    metrics.observe_conditions("ModelDeployment", "ml", name, None)
    assert events("ModelDeployment", "ml", name, "RolledBack") is None
    assert events("ModelDeployment", "ml", name, "X") is None


def drift(namespace: str, monitor: str, feature: str) -> float | None:
    labels = {"namespace": namespace, "monitor": monitor, "feature": feature}
    return REGISTRY.get_sample_value("kubeloop_monitor_drift_score", labels)


def verdict(namespace: str, monitor: str, check: str, said: str) -> float | None:
    labels = {"namespace": namespace, "monitor": monitor, "check": check, "verdict": said}
    return REGISTRY.get_sample_value("kubeloop_monitor_check_verdict", labels)


def test_a_monitor_s_series_are_only_those_of_its_last_check_and_go_with_it() -> None:
    """A drift alert must not keep firing on a feature of the previous model, or for a deleted Monitor."""
    name = f"mon-{uuid.uuid4().hex[:6]}"
    failed = Check("inputDrift", "fail", 0.4, 0.2, 500, "x drifted")
    metrics.observe_conditions("Monitor", "ml", name, [{"type": "Ready", "status": "True"}])
    metrics.observe_monitor("ml", name, [failed], {"x": 0.4, "y": 0.01})
    assert drift("ml", name, "x") == 0.4 and verdict("ml", name, "inputDrift", "fail") == 1
    # a new model without feature x; the check passes now
    metrics.observe_monitor("ml", name, [Check("inputDrift", "pass", 0.05, 0.2, 500, "")], {"y": 0.05})
    assert drift("ml", name, "x") is None and drift("ml", name, "y") == 0.05
    assert verdict("ml", name, "inputDrift", "fail") == 0 and verdict("ml", name, "inputDrift", "pass") == 1
    # Prometheus did not answer: nothing judged, no verdict shown
    metrics.observe_monitor("ml", name, [], {})
    assert verdict("ml", name, "inputDrift", "pass") is None and drift("ml", name, "y") is None
    metrics.observe_monitor("ml", name, [failed], {"x": 0.4})
    metrics.observe_conditions("Monitor", "ml", name, None)  # deleted
    assert verdict("ml", name, "inputDrift", "fail") is None and drift("ml", name, "x") is None
