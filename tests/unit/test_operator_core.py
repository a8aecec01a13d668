"""The operator core's pure parts: the TrainingJob decision table, index keys, status patches, errors."""

from __future__ import annotations

from typing import Any

import pytest

from kubeloop.api import TRAINING_JOB
from kubeloop.api.conditions import REASONS, ConditionType, Reason
from kubeloop.api.crdgen import crd
from kubeloop.api.modeldeployment import ModelDeploymentSpec
from kubeloop.api.trainingjob import TrainingJobSpec
from kubeloop.builders.settings import Settings
from kubeloop.builders.training import training_job, trial_job_name
from kubeloop.contract import label_value, owner_selector
from kubeloop.controllers import modeldeployment, monitor, trainingjob
from kubeloop.controllers.cache import ANY, child_keys, object_keys
from kubeloop.controllers.conditions import Conditions
from kubeloop.controllers.errors import Invalid, Waiting
from kubeloop.controllers.framework import status_model, status_patch
from kubeloop.controllers.jobs import Outcome
from kubeloop.controllers.trainingjob import Decision, Observed, decide

LONG = "a" * 230  # object names may have 253 characters; label values and Job names 63
SHA = "d" * 64
READY_DATASET = {
    "metadata": {"name": "iris", "namespace": "ns"},
    "status": {"version": "v1", "artifactURI": "s3://b/datasets/ns/iris/v1/data.parquet"},
}
SEARCH = {"parameters": [{"name": "C", "values": [1, 2, 3]}], "parallelism": 2, "objective": {"metric": "f1"}}


def spec(**extra: Any) -> TrainingJobSpec:
    return TrainingJobSpec.model_validate(
        {"datasetRef": {"name": "iris"}, "model": {"estimator": "LogisticRegression"}, **extra}
    )


def result(f1: float) -> dict[str, Any]:
    return {
        "ok": True,
        "metrics": {"f1": f1},
        "model": {"uri": f"s3://b/models/{SHA}", "sha256": SHA},
        "gatePassed": True,
    }


def run(
    tj: TrainingJobSpec, status: dict[str, Any], observed: Observed, name: str = "tj"
) -> tuple[Decision, Conditions]:
    conditions = Conditions(status.get("conditions"), generation=1)
    return decide(name, "ns", tj, status, 1, conditions, Settings(), observed), conditions


def pinned(**fields: Any) -> dict[str, Any]:
    return {
        "observedGeneration": 1,
        "dataset": {"name": "iris", "version": "v1", "artifactURI": "s3://x"},
        **fields,
    }


def job(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns"}}


@pytest.mark.parametrize(
    ("observed", "reason"),
    [
        (Observed(dataset=None), Reason.WAITING_FOR_DATASET),
        (Observed(dataset={"metadata": {"name": "iris"}, "status": {}}), Reason.WAITING_FOR_DATASET),
    ],
)
def test_waiting_for_the_dataset_pins_nothing(observed: Observed, reason: Reason) -> None:
    with pytest.raises(Waiting) as waited:
        run(spec(), pinned(trials=[{"index": 0}]) | {"observedGeneration": 0}, observed)
    assert waited.value.reason == reason and "iris" in waited.value.message
    # What an earlier generation pinned is removed, not left to pass for this one's.
    assert waited.value.fields == {"dataset": None, "trials": None, "servingBaseline": None}


def test_a_pinned_version_missing_from_the_history_waits_with_its_own_reason() -> None:
    with pytest.raises(Waiting) as waited:
        run(spec(datasetRef={"name": "iris", "version": "ffff"}), {}, Observed(dataset=READY_DATASET))
    assert waited.value.reason == Reason.DATASET_VERSION_NOT_FOUND


@pytest.mark.parametrize(
    ("tj", "reason"),
    [
        (spec(model={"estimator": "NotAnEstimator"}), Reason.ESTIMATOR_NOT_ALLOWED),
        (
            spec(search={**SEARCH, "parameters": [{"name": "C", "min": 1, "max": 2}]}),
            Reason.INVALID_SEARCH,
        ),
    ],
)
def test_a_spec_that_cannot_work_fails_for_good(tj: TrainingJobSpec, reason: Reason) -> None:
    with pytest.raises(Invalid) as failed:
        run(tj, {}, Observed(dataset=READY_DATASET))
    assert failed.value.reason == reason and failed.value.fields["completionTime"]


def test_a_search_starts_no_more_trials_than_its_parallelism() -> None:
    decision, conditions = run(spec(search=SEARCH), {}, Observed(dataset=READY_DATASET))
    assert [index for index, _ in decision.start] == [0, 1]
    assert [t["state"] for t in decision.fields["trials"]] == ["Running", "Running", "Pending"]
    assert decision.fields["dataset"]["version"] == "v1"
    said = conditions.get(ConditionType.SUCCEEDED)
    assert said is not None and said["status"] == "Unknown" and said["message"] == "0 of 3 trials finished"


def test_a_finished_trial_frees_its_slot_and_the_best_trial_wins() -> None:
    names = [trial_job_name("tj", 1, i) for i in range(3)]
    first = Observed(
        jobs={names[0]: job(names[0]), names[1]: job(names[1])},
        outcomes={names[0]: Outcome("Succeeded", result(0.8), "", "")},
    )
    status = pinned(trials=[{"index": i, "job": names[i], "state": "Running"} for i in (0, 1)])
    decision, _ = run(spec(search=SEARCH), status, first)
    assert [index for index, _ in decision.start] == [2]
    assert [t["state"] for t in decision.fields["trials"]] == ["Succeeded", "Running", "Running"]

    done = Observed(
        jobs={n: job(n) for n in names},
        outcomes={
            names[0]: Outcome("Succeeded", result(0.8), "", ""),
            names[1]: Outcome("Succeeded", result(0.9), "", ""),
            names[2]: Outcome("Failed", {}, "bad data", "TooManyNulls"),
        },
    )
    decision, conditions = run(spec(search=SEARCH), pinned(trials=decision.fields["trials"]), done)
    assert decision.start == [] and decision.fields["bestTrial"] == 1
    assert decision.fields["trials"][2]["message"] == "TooManyNulls: bad data"
    assert conditions.is_true(ConditionType.SUCCEEDED) and conditions.is_true(ConditionType.GATE_PASSED)


def test_every_trial_failed_is_a_failure_with_the_first_message() -> None:
    name = trial_job_name("tj", 1, 0)
    observed = Observed(jobs={name: job(name)}, outcomes={name: Outcome("Failed", {}, "boom", "NoResult")})
    with pytest.raises(Invalid) as failed:
        run(spec(), pinned(), observed)
    assert failed.value.reason == Reason.TRAINING_FAILED and "NoResult: boom" in failed.value.message


def test_a_finished_run_is_final_for_its_generation() -> None:
    conditions = [{"type": "Succeeded", "status": "True", "observedGeneration": 1, "reason": "Trained",
                   "lastTransitionTime": "2026-01-01T00:00:00Z", "message": ""}]  # fmt: skip
    decision, _ = run(
        spec(model={"estimator": "NotAllowedAnyMore"}), pinned(conditions=conditions), Observed()
    )
    assert decision == Decision({}, [])


def test_long_names_label_and_select_the_same_children() -> None:
    """A 230-character TrainingJob: its Jobs are named and labelled within 63 characters, and the
    selector the operator reads them by is the label the builder writes."""
    name = trial_job_name(LONG, 3, 12)
    assert len(name) <= 63 and name == trial_job_name(LONG, 3, 12) != trial_job_name(LONG, 3, 11)
    manifest = training_job(
        name=LONG,
        namespace="ns",
        spec=spec(),
        generation=3,
        trial=12,
        params={},
        dataset={"name": "iris", "version": "v1", "artifactURI": "s3://x"},
        settings=Settings(),
    )
    labels = manifest["metadata"]["labels"]
    assert owner_selector("TrainingJob", LONG).items() <= labels.items()
    assert all(len(v) <= 63 for v in labels.values())
    keys = child_keys("ns", manifest)
    assert ("ns", "kubeloop.io/trainingjob", label_value(LONG)) in keys
    owner = object_keys("ns", LONG, {"spec": {}}, trainingjob.needs)
    assert owner[("ns", "label", label_value(LONG))] == LONG


def test_dependents_are_indexed_by_what_their_spec_names() -> None:
    tj = {
        "spec": {
            "datasetRef": {"name": "iris"},
            "gate": {"noWorseThan": {"modelDeploymentRef": {"name": "md"}}},
        }
    }
    assert ("ns", "needs", "Dataset", "iris") in object_keys("ns", "t", tj, trainingjob.needs)
    assert ("ns", "needs", "ModelDeployment", "md") in object_keys("ns", "t", tj, trainingjob.needs)
    auto = {"spec": {"model": {"trainingJobRef": {"name": "t"}}, "trainingJobSelector": {"matchLabels": {}}}}
    keys = object_keys("ns", "m", auto, modeldeployment.needs)
    assert ("ns", "needs", "TrainingJob", "t") in keys and ("ns", "needs", "TrainingJob", ANY) in keys
    assert ("ns", "needs", "ModelDeployment", "m") in object_keys(
        "ns", "x", {"spec": {"deploymentRef": {"name": "m"}}}, monitor.needs
    )


def test_status_patch_changes_what_changed_and_removes_what_went() -> None:
    old = {"dataset": {"version": "a"}, "trials": [1], "startTime": "t"}
    new = {"dataset": {"version": "a"}, "startTime": "u"}
    assert status_patch(old, new) == {"startTime": "u", "trials": None}
    assert status_patch(new, new) == {}


def test_status_is_the_kinds_model_and_refuses_what_the_schema_would() -> None:
    model = status_model(TRAINING_JOB, {"bestTrial": 1}, {"startTime": "t", "bestTrial": None})
    assert model.model_dump(by_alias=True, exclude_none=True) == {"startTime": "t"}
    with pytest.raises(ValueError, match="bestTrial"):
        status_model(TRAINING_JOB, {}, {"bestTrial": -1})


def test_kubectl_explain_lists_condition_types_and_reasons() -> None:
    conditions = crd(TRAINING_JOB)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "status"
    ]["properties"]["conditions"]
    assert "Succeeded:" in conditions["description"] and "WaitingForDataset:" in conditions["description"]
    assert set(REASONS) == set(Reason)


def test_a_condition_set_twice_in_one_reconcile_is_one_transition() -> None:
    stored = Conditions(None, generation=1)
    stored.set("Ready", "Unknown", "StatusRejected", "refused")
    again = Conditions(stored.items, generation=1)
    again.set("Ready", "False", "ModelLoading", "loading")  # the reconcile's own verdict ...
    again.set("Ready", "Unknown", "StatusRejected", "refused again")  # ... refused once more on write
    assert again.transitions == []
    assert again.get("Ready")["lastTransitionTime"] == stored.get("Ready")["lastTransitionTime"]  # type: ignore[index]


def test_the_cache_keeps_what_reconciles_read_and_drops_the_rest() -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "labels": {"job-name": "j"}, "managedFields": [{"manager": "kubelet"}]},
        "spec": {"containers": [{"name": "train", "env": [{"name": "KUBELOOP_CONFIG", "value": "{}"}]}]},
        "status": {"containerStatuses": [{"state": {"terminated": {"message": "{}"}}}]},
    }
    (kept,) = child_keys("ns", pod).values()
    assert kept == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "labels": {"job-name": "j"}},
        "status": pod["status"],
    }
    owner = object_keys(
        "ns", "t", {"metadata": {"name": "t", "managedFields": []}, "spec": {"a": 1}}, monitor.needs
    )
    assert owner[("ns", "object", "t")]["spec"] == {"a": 1}
    assert "managedFields" not in owner[("ns", "object", "t")]["metadata"]


def test_status_holds_artifact_uris_of_long_names() -> None:
    """A 230-character Dataset's snapshot URI is longer than a name (seen: the status was refused)."""
    from kubeloop.api import DATASET

    uri = f"file:///var/lib/kubeloop/store/datasets/ns/{LONG}/{SHA}/data.parquet"
    model = status_model(
        DATASET,
        {},
        {"artifactURI": uri, "history": [{"version": "v", "rows": 1, "artifactURI": uri, "ingestedAt": "t"}]},
    )
    assert model.model_dump(by_alias=True)["artifactURI"] == uri


def test_the_cache_keeps_what_the_model_deployment_reconcile_compares() -> None:
    """A Deployment's selector (compared to spot a pre-canary one) and an EndpointSlice's endpoints (Ready
    counts them) survive slimming: without them every reconcile replaced the Deployment."""
    from kubeloop.builders.serving import deployment
    from kubeloop.controllers.cache import slim

    spec = ModelDeploymentSpec.model_validate({"model": {"uri": "s3://b/m", "sha256": "a" * 64}})
    manifest = deployment(
        name="iris", namespace="ml", spec=spec, uri="s3://b/m", sha256="a" * 64, settings=Settings()
    )
    assert slim(manifest)["spec"]["selector"] == manifest["spec"]["selector"]
    endpoint = {
        "addresses": ["10.0.0.1"],
        "conditions": {"ready": True},
        "targetRef": {"kind": "Pod", "name": "p"},
    }
    kept = slim(
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {},
            "endpoints": [endpoint],
        }
    )
    assert kept["endpoints"] == [{"conditions": {"ready": True}, "targetRef": {"name": "p"}}]
