"""kubeloop_operator_events_total: what the alerting rules count rollbacks and retrains with."""

from __future__ import annotations

import logging
import uuid

from prometheus_client import REGISTRY

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
