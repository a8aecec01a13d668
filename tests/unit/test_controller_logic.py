"""The pure decisions inside the controllers: gates, readiness, Job outcomes, conditions."""

from __future__ import annotations

from typing import Any

import pytest

from kubeloop.api.common import duration_seconds as seconds
from kubeloop.api.trainingjob import Gate, TrainingJobSpec, TrainingJobStatus
from kubeloop.builders.serving import MODEL_DIGEST_ANNOTATION
from kubeloop.builders.training import gate_config
from kubeloop.controllers.conditions import Conditions
from kubeloop.controllers.jobs import job_state, parse_result, reason_word
from kubeloop.controllers.modeldeployment import rollout_state
from kubeloop.controllers.trainingjob import (
    compared_metrics,
    gate_verdict,
    serving_baseline,
    serving_bounds,
    trials_of,
)
from kubeloop.runtime.train import gate as runtime_gate

SHA = "b" * 64


@pytest.mark.parametrize(
    ("gate", "metrics", "passed", "says"),
    [
        (None, {"accuracy": 0.5}, True, "every gate threshold is met"),
        ({"minimums": {"accuracy": 0.9}}, {"accuracy": 0.95}, True, "met"),
        ({"minimums": {"accuracy": 0.9}}, {"accuracy": 0.8}, False, "accuracy 0.8 is below the minimum 0.9"),
        ({"maximums": {"rmse": 2}}, {"rmse": 3.0}, False, "rmse 3 is above the maximum 2"),
        (
            {"minimums": {"f1_macro": 0.5}},
            {"accuracy": 1.0},
            False,
            "f1_macro is required by the gate but was not computed",
        ),
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


TJ = {"datasetRef": {"name": "iris"}, "model": {"estimator": "LogisticRegression"}}
OTHER = "c" * 64


def training_spec(gate: dict[str, Any] | None = None, **extra: Any) -> TrainingJobSpec:
    return TrainingJobSpec.model_validate({**TJ, **extra, **({"gate": gate} if gate else {})})


def no_worse(**fields: Any) -> dict[str, Any]:
    return {"noWorseThan": {"modelDeploymentRef": {"name": "iris"}, **fields}}


SEARCHED = {"parameters": [{"name": "C", "values": [1, 2]}], "objective": {"metric": "f1_macro"}}


@pytest.mark.parametrize(
    ("gate", "extra", "metrics"),
    [
        (None, {}, []),
        ({"minimums": {"accuracy": 0.9}}, {}, []),
        (no_worse(metrics=["accuracy", "f1_macro"]), {"search": SEARCHED}, ["accuracy", "f1_macro"]),
        (no_worse(), {"search": SEARCHED}, ["f1_macro"]),
        ({"minimums": {"r2": 0.5}, "maximums": {"rmse": 3.0}, **no_worse()}, {}, ["r2", "rmse"]),
    ],
)
def test_compared_metrics(gate: dict[str, Any] | None, extra: dict[str, Any], metrics: list[str]) -> None:
    assert compared_metrics(training_spec(gate, **extra)) == metrics


def md(sha: str | None, training_job: str | None = None) -> dict[str, Any]:
    model = {"uri": f"s3://b/models/{sha}", "sha256": sha, "trainingJob": training_job} if sha else None
    return {"metadata": {"name": "iris"}, "status": {"model": model} if model else {}}


def tj(name: str, sha: str, **metrics: float) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"model": {"sha256": sha}, "metrics": metrics}}


JOBS = [
    tj("old", OTHER, accuracy=0.5),
    tj("serving", SHA, accuracy=0.95, rmse=1.5),
    tj("twin", SHA, accuracy=0.9),
]


@pytest.mark.parametrize(
    ("gate", "deployment", "jobs", "metrics", "says"),
    [
        (None, md(SHA), JOBS, None, None),
        (
            no_worse(metrics=["accuracy"]),
            None,
            JOBS,
            None,
            "no model is serving yet (ModelDeployment iris does not exist): comparison skipped",
        ),
        (
            no_worse(metrics=["accuracy"]),
            md(None),
            JOBS,
            None,
            "no model is serving yet (ModelDeployment iris serves none)",
        ),
        (
            no_worse(metrics=["accuracy"]),
            md(SHA),
            [JOBS[0]],
            None,
            "produced by no TrainingJob in this namespace",
        ),
        (
            no_worse(metrics=["f1_macro"]),
            md(SHA, "serving"),
            JOBS,
            None,
            "has no f1_macro metric: comparison skipped",
        ),
        (
            no_worse(metrics=["accuracy"]),
            md(SHA, "serving"),
            JOBS,
            {"accuracy": 0.95},
            "compared with model bbbbbbbbbbbb",
        ),
        # the same digest from two runs: the one the ModelDeployment names wins, else the first by name
        (no_worse(metrics=["accuracy"]), md(SHA, "twin"), JOBS, {"accuracy": 0.9}, "(TrainingJob twin)"),
        (no_worse(metrics=["accuracy"]), md(SHA), JOBS, {"accuracy": 0.95}, "(TrainingJob serving)"),
        (
            no_worse(metrics=["accuracy", "rmse", "f1_macro"], tolerance=0.01),
            md(SHA, "serving"),
            JOBS,
            {"accuracy": 0.95, "rmse": 1.5},
            "accuracy=0.95, rmse=1.5 (tolerance 0.01); not compared, the serving model has no f1_macro",
        ),
    ],
)
def test_serving_baseline(
    gate: dict[str, Any] | None,
    deployment: dict[str, Any] | None,
    jobs: list[dict[str, Any]],
    metrics: dict[str, float] | None,
    says: str | None,
) -> None:
    baseline = serving_baseline(training_spec(gate), deployment, jobs)
    if says is None:
        assert baseline is None
        return
    assert baseline is not None and baseline["modelDeployment"] == "iris"
    assert says in baseline["message"], baseline["message"]
    assert baseline.get("metrics") == metrics
    if metrics is not None:
        assert baseline["sha256"] == SHA
    TrainingJobStatus.model_validate({"servingBaseline": baseline})  # the status schema takes it


@pytest.mark.parametrize(
    ("tolerance", "serving", "bounds"),
    [
        (0.0, {"accuracy": 0.95, "rmse": 1.5}, {"accuracy": 0.95, "rmse": 1.5}),
        # tolerance loosens the bar in the metric's direction: down where higher is better, up for errors
        (0.25, {"accuracy": 0.95, "rmse": 1.5, "mae": 1.0}, {"accuracy": 0.7, "rmse": 1.75, "mae": 1.25}),
        (0.1, {}, {}),
    ],
)
def test_serving_bounds(tolerance: float, serving: dict[str, float], bounds: dict[str, float]) -> None:
    spec = training_spec(no_worse(metrics=["accuracy"], tolerance=tolerance))
    got = serving_bounds(spec, {"modelDeployment": "iris", "metrics": serving, "message": ""})
    assert got == pytest.approx(bounds)
    assert serving_bounds(spec, None) == {} and serving_bounds(training_spec(), {"metrics": serving}) == {}


@pytest.mark.parametrize(
    ("metrics", "serving", "passed", "says"),
    [
        ({"accuracy": 0.95}, {"accuracy": 0.95}, True, "every gate threshold is met"),
        (
            {"accuracy": 0.9},
            {"accuracy": 0.95},
            False,
            "accuracy 0.9 is below the serving model's minimum 0.95",
        ),
        ({"rmse": 1.4}, {"rmse": 1.5}, True, "met"),
        ({"rmse": 1.6}, {"rmse": 1.5}, False, "rmse 1.6 is above the serving model's maximum 1.5"),
        ({"accuracy": 0.9}, {"rmse": 1.5}, False, "rmse is required by the gate but was not computed"),
    ],
)
def test_gate_against_the_serving_model(
    metrics: dict[str, float], serving: dict[str, float], passed: bool, says: str
) -> None:
    ok, message = gate_verdict(None, metrics, serving)
    assert ok is passed and says in message


@pytest.mark.parametrize(
    ("metrics", "passed"),
    [
        ({"accuracy": 0.945, "rmse": 1.505}, True),
        ({"accuracy": 0.93, "rmse": 1.5}, False),
        ({"accuracy": 0.95, "rmse": 1.6}, False),
    ],
)
def test_runtime_judges_no_worse_as_the_operator_means_it(metrics: dict[str, float], passed: bool) -> None:
    """The bounds the operator sends, through the runtime's own gate: direction and tolerance agree."""
    spec = training_spec(no_worse(metrics=["accuracy", "rmse"], tolerance=0.01))
    baseline = serving_baseline(spec, md(SHA, "serving"), JOBS)
    config = {"gate": gate_config(spec.wire()["gate"], serving_bounds(spec, baseline))}
    ok, reasons = runtime_gate(metrics, config)
    assert ok is passed, reasons
    assert ok is gate_verdict(spec.gate, metrics, serving_bounds(spec, baseline))[0]
