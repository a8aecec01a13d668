"""The quality gate against the model now serving: a worse model is kept, marked, and not deployed."""

from __future__ import annotations

from support.e2e import Kubectl, apply, iris_dataset, status, training_job, wait_condition


def test_a_model_worse_than_the_serving_one_fails_its_gate_and_is_not_deployed(
    kubectl: Kubectl, namespace: str, operator_installed: dict[str, str]
) -> None:
    apply(kubectl, namespace, iris_dataset(), training_job("good", "LogisticRegression", {"max_iter": 300}))
    wait_condition(
        kubectl, "trainingjob", "good", namespace, "Succeeded", timeout=400, unless=("Failed", "True")
    )
    good = status(kubectl, "trainingjob", "good", namespace)
    serving = {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris"},
        "spec": {
            "model": {"trainingJobRef": {"name": "good"}},
            "replicas": 1,
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        },
    }
    apply(kubectl, namespace, serving)
    wait_condition(kubectl, "modeldeployment", "iris", namespace, "Ready", timeout=300)

    # A one-split tree cannot tell iris's three species apart as well as the logistic regression does.
    worse = training_job(
        "worse",
        "DecisionTreeClassifier",
        {"max_depth": 1},
        gate={"noWorseThan": {"modelDeploymentRef": {"name": "iris"}, "metrics": ["accuracy"]}},
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
    # kept for inspection, and the ModelDeployment still serves the good model
    assert result["model"]["sha256"] != good["model"]["sha256"]
    assert status(kubectl, "modeldeployment", "iris", namespace)["model"]["sha256"] == good["model"]["sha256"]
