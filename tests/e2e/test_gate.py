"""The quality gate against the model now serving: a worse model is kept, marked, and not deployed."""

from __future__ import annotations

import json

from support.e2e import (
    Kubectl,
    Obj,
    apply,
    conditions,
    get,
    iris_dataset,
    items,
    status,
    training_job,
    wait_condition,
    wait_for,
)

# Both TrainingJobs carry these labels and the ModelDeployment selects them all with updatePolicy Auto,
# which serves the newest succeeded TrainingJob that passed its gate: the worse model, trained last, is
# kept out by its gate and nothing else.
LABELS = {"model": "iris", "stage": "gate-e2e"}


def labelled(job: Obj) -> Obj:
    job["metadata"]["labels"] = dict(LABELS)
    return job


def test_a_model_worse_than_the_serving_one_fails_its_gate_and_is_not_deployed(
    kubectl: Kubectl, namespace: str, operator_installed: dict[str, str]
) -> None:
    good_job = labelled(training_job("good", "LogisticRegression", {"max_iter": 300}))
    apply(kubectl, namespace, iris_dataset(), good_job)
    wait_condition(
        kubectl, "trainingjob", "good", namespace, "Succeeded", timeout=400, unless=("Failed", "True")
    )
    good = status(kubectl, "trainingjob", "good", namespace)
    serving = {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris"},
        "spec": {
            # The API wants a model source beside the selector; Auto falls back to it only while no
            # selected TrainingJob is eligible, and "good" is eligible throughout.
            "model": {"trainingJobRef": {"name": "good"}},
            "updatePolicy": "Auto",
            "trainingJobSelector": {"matchLabels": {"model": LABELS["model"]}},
            "replicas": 1,
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        },
    }
    apply(kubectl, namespace, serving)
    wait_condition(kubectl, "modeldeployment", "iris", namespace, "Ready", timeout=300)
    assert status(kubectl, "modeldeployment", "iris", namespace)["model"]["trainingJob"] == "good"

    # A one-split tree cannot tell iris's three species apart as well as the logistic regression does.
    worse = labelled(
        training_job(
            "worse",
            "DecisionTreeClassifier",
            {"max_depth": 1},
            gate={"noWorseThan": {"modelDeploymentRef": {"name": "iris"}, "metrics": ["accuracy"]}},
        )
    )
    apply(kubectl, namespace, worse)
    verdict = wait_condition(
        kubectl,
        "trainingjob",
        "worse",
        namespace,
        "GatePassed",
        wanted="False",
        timeout=400,
        unless=("Failed", "True"),
    )
    assert "accuracy" in verdict["message"], verdict
    result = status(kubectl, "trainingjob", "worse", namespace)
    assert result["servingBaseline"]["trainingJob"] == "good"
    assert result["servingBaseline"]["sha256"] == good["model"]["sha256"]
    assert result["metrics"]["accuracy"] < good["metrics"]["accuracy"]
    # kept for inspection: it succeeded and has its model, newer than the good one
    assert conditions(kubectl, "trainingjob", "worse", namespace)["Succeeded"]["status"] == "True"
    assert result["model"]["sha256"] != good["model"]["sha256"]
    assert result["completionTime"] > good["completionTime"], (result["completionTime"], good)

    # The ModelDeployment's selector matches both jobs, so the worse one is a candidate. A change of its
    # spec (a selector that also requires the second label, which both carry) makes the operator choose
    # again now that the worse job has finished, and status.observedGeneration says when it has.
    for labels in ({"model": LABELS["model"]}, LABELS):
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        selected = items(kubectl, "trainingjob", namespace, selector)
        assert sorted(tj["metadata"]["name"] for tj in selected) == ["good", "worse"], selector
    patch = {"spec": {"trainingJobSelector": {"matchLabels": LABELS}}}
    kubectl("patch", "modeldeployment", "iris", "-n", namespace, "--type=merge", "-p", json.dumps(patch))
    generation = get(kubectl, "modeldeployment", "iris", namespace)["metadata"]["generation"]

    def chosen_again() -> Obj | None:
        now = status(kubectl, "modeldeployment", "iris", namespace)
        return now if now.get("observedGeneration", 0) >= generation else None

    deployment = wait_for(chosen_again, 120, f"ModelDeployment iris to reconcile generation {generation}")
    # ... and it still serves, and wants, the good model
    assert deployment["wantedSha256"] == good["model"]["sha256"], deployment
    assert deployment["model"]["sha256"] == good["model"]["sha256"], deployment
    assert deployment["model"]["trainingJob"] == "good", deployment
    ready = conditions(kubectl, "modeldeployment", "iris", namespace)["Ready"]
    assert ready["status"] == "True", ready
