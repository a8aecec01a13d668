"""TrainingJob on a real node: the allow-list, retries of disruptions but not of data errors, a search."""

from __future__ import annotations

import hashlib
import itertools
import time

from support.e2e import (
    STORE_ROOT,
    Kubectl,
    apply,
    events,
    get,
    iris_dataset,
    items,
    job_active,
    status,
    training_job,
    wait_condition,
    wait_for,
)


def test_an_estimator_outside_the_allow_list_never_starts_a_pod(
    kubectl: Kubectl, namespace: str, operator_installed: dict[str, str]
) -> None:
    apply(kubectl, namespace, iris_dataset(), training_job("forbidden", "Pipeline", {"steps": []}))

    failed = wait_condition(kubectl, "trainingjob", "forbidden", namespace, "Failed", timeout=60)
    assert failed["reason"] == "EstimatorNotAllowed", failed
    assert "'Pipeline' is not in the operator's allow-list" in failed["message"], failed
    assert "LogisticRegression" in failed["message"], "the message should say what is allowed"
    assert any(e["reason"] == "EstimatorNotAllowed" for e in events(kubectl, namespace, "forbidden"))
    # The Dataset's ingest runs meanwhile; nothing of the TrainingJob may: no Job, no Pod, not even later.
    time.sleep(5)
    selector = "kubeloop.io/trainingjob=forbidden"
    assert items(kubectl, "jobs", namespace, selector) == []
    assert items(kubectl, "pods", namespace, selector) == []
    assert all(
        p["metadata"]["labels"].get("app.kubernetes.io/component") != "train"
        for p in items(kubectl, "pods", namespace)
    )


def test_a_memory_limit_too_small_is_refused_before_a_pod_and_a_kill_is_said(
    kubectl: Kubectl, namespace: str, operator_installed: dict[str, str]
) -> None:
    """A TrainingJob whose pods' limit cannot hold even the trainer fails before any pod (MemoryTooSmall);
    an ingest pod the kernel kills for memory (OOMKilled, no result written) fails its Dataset saying so,
    with the limit, rather than with a log tail."""
    small = {"requests": {"cpu": "100m", "memory": "48Mi"}, "limits": {"memory": "48Mi"}}
    starved = {**iris_dataset("starved"), "spec": {**iris_dataset()["spec"], "resources": small}}
    tight = {"requests": {"cpu": "100m", "memory": "100Mi"}, "limits": {"memory": "100Mi"}}
    apply(
        kubectl,
        namespace,
        iris_dataset(),
        starved,
        training_job("tight", "LogisticRegression", resources=tight),
    )
    refused = wait_condition(kubectl, "trainingjob", "tight", namespace, "Failed", timeout=180)
    assert refused["status"] == "True" and refused["reason"] == "MemoryTooSmall", refused
    assert "150 rows x 5 columns" in refused["message"] and "limit 100Mi" in refused["message"], refused
    assert items(kubectl, "jobs", namespace, "kubeloop.io/trainingjob=tight") == []

    def ingest_failed() -> dict[str, str] | None:
        said = status(kubectl, "dataset", "starved", namespace).get("conditions") or []
        found = {c["type"]: c for c in said}
        validated = found.get("Validated", {})
        return validated if validated.get("status") == "False" else None

    failed = wait_for(ingest_failed, 300, "the starved ingest to fail", interval=3)
    assert failed["reason"] == "OutOfMemory", failed
    assert "(48Mi, OOMKilled)" in failed["message"] and "resources.limits.memory" in failed["message"], failed


def test_a_killed_training_pod_is_retried_but_a_data_error_is_not(
    kubectl: Kubectl, namespace: str, operator_installed: dict[str, str]
) -> None:
    # A forest takes a few seconds to fit, export and check: long enough to be caught running.
    sturdy = training_job(
        "sturdy", "RandomForestClassifier", {"n_estimators": 150, "random_state": 0}, backoffLimit=2
    )
    # C must be positive: scikit-learn refuses the parameter, the runtime exits 2 (a data/code error).
    broken = training_job("broken", "LogisticRegression", {"C": -1.0}, backoffLimit=3)
    apply(kubectl, namespace, iris_dataset(), sturdy, broken)

    def running_pod() -> str | None:
        for pod in items(kubectl, "pods", namespace, "kubeloop.io/trainingjob=sturdy"):
            states = pod["status"].get("containerStatuses") or [{}]
            if "running" in states[0].get("state", {}):
                return str(pod["metadata"]["name"])
        return None

    victim = wait_for(running_pod, 240, "the training pod of sturdy to run", interval=0.3)
    # A disruption: the pod is killed at once, mid-run, as a node loss or a forced deletion would.
    kubectl("delete", "pod", victim, "-n", namespace, "--grace-period=0", "--force", "--wait=false")

    wait_condition(
        kubectl, "trainingjob", "sturdy", namespace, "Succeeded", timeout=300, unless=("Failed", "True")
    )
    done = status(kubectl, "trainingjob", "sturdy", namespace)
    assert done["metrics"]["accuracy"] >= 0.85, done["metrics"]
    (job,) = items(kubectl, "jobs", namespace, "kubeloop.io/trainingjob=sturdy")
    assert job["status"].get("failed", 0) >= 1, f"the killed pod is not counted: {job['status']}"
    assert job["status"].get("succeeded") == 1, job["status"]
    assert victim not in {
        p["metadata"]["name"] for p in items(kubectl, "pods", namespace, "kubeloop.io/trainingjob=sturdy")
    }

    failed = wait_condition(kubectl, "trainingjob", "broken", namespace, "Failed", timeout=120)
    assert failed["reason"] == "TrainingFailed", failed
    assert "FitFailed" in failed["message"] and "'C' parameter" in failed["message"], failed["message"]
    trial = status(kubectl, "trainingjob", "broken", namespace)["trials"][0]
    assert trial["state"] == "Failed" and "FitFailed" in trial["message"], trial
    (job,) = items(kubectl, "jobs", namespace, "kubeloop.io/trainingjob=broken")
    job_failed = {c["type"]: c for c in job["status"]["conditions"]}["Failed"]
    assert job_failed["reason"] == "PodFailurePolicy", job_failed
    # Failed at once: one pod, never retried although backoffLimit allows 3 retries.
    assert job["status"].get("failed") == 1, job["status"]
    assert len(items(kubectl, "pods", namespace, "kubeloop.io/trainingjob=broken")) == 1


def test_a_search_of_six_trials_three_at_a_time_keeps_the_best(
    kubectl: Kubectl, namespace: str, operator_installed: dict[str, str]
) -> None:
    grid = {"C": [0.01, 0.1, 10.0], "fit_intercept": [True, False]}
    search = {
        "strategy": "grid",
        "parameters": [{"name": k, "values": v} for k, v in grid.items()],
        "maxTrials": 6,
        "parallelism": 3,
        "objective": {"metric": "f1_macro", "direction": "maximize"},
    }
    apply(
        kubectl,
        namespace,
        iris_dataset(),
        training_job("search", "LogisticRegression", {"max_iter": 300}, search=search),
    )

    most_at_once = 0
    selector = "kubeloop.io/trainingjob=search"

    def finished() -> bool:
        nonlocal most_at_once
        most_at_once = max(
            most_at_once, sum(job_active(j) for j in items(kubectl, "jobs", namespace, selector))
        )
        succeeded = get(kubectl, "trainingjob", "search", namespace).get("status", {}).get("conditions", [])
        return any(c["type"] == "Succeeded" and c["status"] in ("True", "False") for c in succeeded)

    wait_for(finished, 600, "the search to finish")
    wait_condition(kubectl, "trainingjob", "search", namespace, "Succeeded", timeout=5)
    assert most_at_once == 3, f"at most {most_at_once} trials ran at once, parallelism is 3"
    # Once the run is recorded, its finished Jobs beyond the history limit (3 succeeded by default) go.
    wait_for(lambda: len(items(kubectl, "jobs", namespace, selector)) == 3, 60, "the trial Jobs to be pruned")

    done = status(kubectl, "trainingjob", "search", namespace)
    trials = done["trials"]
    assert len(trials) == 6, trials
    wanted = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    # Every grid point once (compared as values: the API may give 10.0 back as 10).
    assert len(trials) == len(wanted) and all(t["params"] in wanted for t in trials), trials
    assert all(sum(t["params"] == p for t in trials) == 1 for p in wanted), trials
    for trial in trials:
        assert trial["state"] == "Succeeded", trial
        assert {"accuracy", "f1_macro"} <= set(trial["metrics"]), trial

    best = trials[done["bestTrial"]]
    assert best["metrics"]["f1_macro"] == max(t["metrics"]["f1_macro"] for t in trials)
    # The job's model is the best trial's: its metrics and its parameters.
    assert done["metrics"] == best["metrics"]
    assert {k: done["model"]["params"][k] for k in grid} == best["params"], done["model"]["params"]
    model_file = next(STORE_ROOT.glob(f"**/models/{done['model']['sha256']}/model.onnx"))
    assert hashlib.sha256(model_file.read_bytes()).hexdigest() == done["model"]["sha256"]


def test_a_dataset_and_a_search_named_with_230_characters_succeed(
    kubectl: Kubectl, namespace: str, operator_installed: dict[str, str]
) -> None:
    """Names may have 253 characters; label values and Job names 63. The children are named and labelled
    with a hashed form, and found again by the same one."""
    dataset = "d" * 115 + "." + "e" * 114  # 230 characters, a valid DNS subdomain
    name = "t" * 230
    search = {
        "strategy": "grid",
        "parameters": [{"name": "C", "values": [0.5, 1.0]}],
        "parallelism": 2,
        "objective": {"metric": "accuracy"},
    }
    job = training_job(name, "LogisticRegression", {"max_iter": 300}, search=search)
    job["spec"]["datasetRef"]["name"] = dataset
    apply(kubectl, namespace, iris_dataset(dataset), job)

    ready = wait_condition(kubectl, "dataset", dataset, namespace, "Ready", timeout=300)
    assert ready["reason"] == "Ingested", ready
    done = wait_condition(
        kubectl, "trainingjob", name, namespace, "Succeeded", timeout=600, unless=("Failed", "True")
    )
    assert done["reason"] == "Trained", done
    trials = status(kubectl, "trainingjob", name, namespace)["trials"]
    assert [t["state"] for t in trials] == ["Succeeded", "Succeeded"], trials
    jobs = items(kubectl, "jobs", namespace, "app.kubernetes.io/component=train")
    assert len(jobs) == 2 and all(len(j["metadata"]["name"]) <= 63 for j in jobs), jobs
