"""Batch scoring on a real node: spec.batch scores a Dataset with the served model as an Indexed Job."""

from __future__ import annotations

from support.e2e import (
    Kubectl,
    Obj,
    apply,
    get,
    iris_dataset,
    items,
    status,
    store_listing,
    training_job,
    wait_condition,
)

SMALL = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


def scoring_deployment(name: str, dataset: str, shards: int) -> Obj:
    return {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"trainingJobRef": {"name": "iris-lr"}},
            "resources": SMALL,
            "batch": {"datasetRef": {"name": dataset}, "shards": shards, "resources": SMALL},
        },
    }


def test_a_batch_scores_every_row_of_the_dataset_with_the_served_model(
    kubectl: Kubectl, namespace: str, operator_installed: dict[str, str]
) -> None:
    wine: Obj = {
        **iris_dataset("wine"),
        "spec": {"source": {"builtin": "wine"}, "schema": {"target": "target"}},
    }
    apply(
        kubectl,
        namespace,
        iris_dataset(),
        wine,
        training_job("iris-lr", "LogisticRegression", {"max_iter": 300}),
        scoring_deployment("iris", "iris", shards=2),
        # The iris model on the wine data: none of its feature columns is there.
        scoring_deployment("misfit", "wine", shards=1),
    )

    scored = wait_condition(
        kubectl,
        "modeldeployment",
        "iris",
        namespace,
        "BatchScored",
        timeout=420,
        unless=("BatchScored", "False"),
    )
    served = status(kubectl, "modeldeployment", "iris", namespace)
    dataset = status(kubectl, "dataset", "iris", namespace)
    batch = served["batch"]
    assert batch["state"] == "Succeeded", batch
    assert batch["rows"] == dataset["rows"] == 150, batch
    assert batch["modelSha256"] == served["model"]["sha256"], "scored with exactly the served digest"
    assert batch["datasetVersion"] == dataset["version"] and batch["inputURI"] == dataset["artifactURI"]
    assert batch["shards"] == 2 and batch["succeededShards"] == 2, batch
    prefix = f"/scores/{namespace}/iris/{dataset['version']}-{served['model']['sha256'][:16]}/manifest.json"
    assert batch["outputURI"].endswith(prefix), batch
    assert scored["reason"] == "Scored"
    assert f"scored 150 rows of Dataset iris version {dataset['version']}" in scored["message"], scored

    # The Indexed Job: one index per shard, retried per index, restricted pods.
    (job,) = items(kubectl, "jobs", namespace, "kubeloop.io/modeldeployment=iris")
    assert job["metadata"]["name"] == batch["job"]
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["backoffLimitPerIndex"]) == ("Indexed", 2, 2)
    pods = items(kubectl, "pods", namespace, f"job-name={batch['job']}")
    assert sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods) == [
        "0",
        "1",
    ]
    for pod in pods:
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True

    # In the store: the output part (iris is one part: index 1 had none to score) and the manifest.
    listing = store_listing(kubectl, namespace, operator_installed["trainer"], namespace)
    output = prefix.strip("/").rsplit("/", 1)[0]
    keys = {k for k in listing["keys"] if k.startswith(output)}
    assert {f"{output}/part-00000.parquet", f"{output}/manifest.json"} <= keys, listing["keys"]

    failed = wait_condition(
        kubectl, "modeldeployment", "misfit", namespace, "BatchScored", "False", timeout=300
    )
    assert failed["reason"] == "MissingFeature", failed
    assert "the snapshot has no column(s)" in failed["message"] and "petal" in failed["message"], failed
    misfit = status(kubectl, "modeldeployment", "misfit", namespace)["batch"]
    assert misfit["state"] == "Failed" and "index 0" in misfit["message"], misfit
    assert (
        get(kubectl, "modeldeployment", "misfit", namespace)["status"]["model"]["sha256"]
        == batch["modelSha256"]
    )
