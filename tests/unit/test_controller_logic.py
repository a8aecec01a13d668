"""The pure decisions inside the controllers: gates, readiness, Job outcomes, conditions."""

from __future__ import annotations

from typing import Any

import pytest

from kubeloop.api.trainingjob import Gate, TrainingJobSpec
from kubeloop.builders.serving import MODEL_DIGEST_ANNOTATION
from kubeloop.controllers.conditions import Conditions
from kubeloop.controllers.jobs import job_state, parse_result, reason_word, seconds
from kubeloop.controllers.modeldeployment import rollout_state
from kubeloop.controllers.trainingjob import gate_verdict, trials_of

SHA = "b" * 64


@pytest.mark.parametrize(
    ("gate", "metrics", "passed", "says"),
    [
        (None, {"accuracy": 0.5}, True, "every gate threshold is met"),
        ({"minimums": {"accuracy": 0.9}}, {"accuracy": 0.95}, True, "met"),
        ({"minimums": {"accuracy": 0.9}}, {"accuracy": 0.8}, False, "accuracy=0.8 is below the minimum 0.9"),
        ({"maximums": {"rmse": 2}}, {"rmse": 3.0}, False, "rmse=3.0 is above the maximum 2"),
        ({"minimums": {"f1_macro": 0.5}}, {"accuracy": 1.0}, False, "f1_macro=missing"),
    ],
)
def test_gate(gate: dict[str, Any] | None, metrics: dict[str, float], passed: bool, says: str) -> None:
    ok, message = gate_verdict(Gate.model_validate(gate) if gate else None, metrics)
    assert ok is passed and says in message


def deployment(generation: int, observed: int, sha: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": 2, "template": {"metadata": {"annotations": {MODEL_DIGEST_ANNOTATION: sha}}}},
        "status": {"observedGeneration": observed, **status},
    }


@pytest.mark.parametrize(
    ("live", "ready", "ready_replicas"),
    [
        (deployment(2, 2, SHA, replicas=2, updatedReplicas=2, availableReplicas=2), True, 2),
        (
            deployment(2, 1, SHA, replicas=2, updatedReplicas=2, availableReplicas=2),
            False,
            0,
        ),  # not observed yet
        (
            deployment(2, 2, "c" * 64, replicas=2, updatedReplicas=2, availableReplicas=2),
            False,
            0,
        ),  # old model
        (deployment(2, 2, SHA, replicas=3, updatedReplicas=2, availableReplicas=3), False, 2),  # old pod left
        (
            deployment(2, 2, SHA, replicas=2, updatedReplicas=2, availableReplicas=1),
            False,
            1,
        ),  # still loading
    ],
)
def test_ready_only_with_the_wanted_model_everywhere(
    live: dict[str, Any], ready: bool, ready_replicas: int
) -> None:
    is_ready, degraded, replicas, _ = rollout_state(live, SHA)
    assert (is_ready, degraded, replicas) == (ready, False, ready_replicas)


def test_stuck_rollout_is_degraded() -> None:
    live = deployment(
        1,
        1,
        SHA,
        conditions=[
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": "too slow",
            }
        ],
    )
    assert rollout_state(live, SHA)[1] is True


@pytest.mark.parametrize(
    ("conditions", "state"),
    [
        ([], "Running"),
        ([{"type": "Complete", "status": "True"}], "Succeeded"),
        ([{"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": "exit 2"}], "Failed"),
        ([{"type": "Failed", "status": "False"}], "Running"),
    ],
)
def test_job_state(conditions: list[dict[str, str]], state: str) -> None:
    assert job_state({"status": {"conditions": conditions}})[0] == state


def test_results() -> None:
    assert parse_result('{"ok": true, "version": "ab"}') == {"ok": True, "version": "ab"}
    assert parse_result("log line\n" + '{"ok": false, "reason": "Bad"}') == {"ok": False, "reason": "Bad"}
    assert parse_result("Traceback: boom")["reason"] == "NoResult"
    assert parse_result(None) == {}
    assert seconds("1h30m") == 5400 and seconds("45s") == 45
    assert reason_word("Backoff limit!") == "Backofflimit" and reason_word("2bad") == "Job2bad"


def test_conditions_keep_transition_time_and_report_transitions() -> None:
    conditions = Conditions(None, generation=1)
    conditions.set("Ready", "False", "Ingesting", "running")
    first = conditions.get("Ready")
    assert first is not None and [t.reason for t in conditions.transitions] == ["Ingesting"]
    again = Conditions(conditions.items, generation=2)
    again.set("Ready", "False", "Ingesting", "still running")
    assert again.transitions == []
    assert again.get("Ready") == {**first, "observedGeneration": 2, "message": "still running"}
    again.set("Ready", "True", "Ingested", "done")
    assert again.transitions[0].event_type == "Normal"


def test_search_trials() -> None:
    spec = TrainingJobSpec.model_validate(
        {
            "datasetRef": {"name": "d"},
            "model": {"estimator": "SVC"},
            "search": {
                "parameters": [
                    {"name": "C", "values": [1, 10]},
                    {"name": "kernel", "values": ["rbf", "linear"]},
                ],
                "maxTrials": 3,
                "objective": {"metric": "accuracy"},
            },
        }
    )
    trials = trials_of(spec)
    assert len(trials) == 3 and trials == trials_of(spec)
    assert trials_of(spec.model_copy(update={"search": None})) == [{}]
