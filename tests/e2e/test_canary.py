"""Canary rollouts on a real node: a good model is promoted step by step, bad ones are rolled back by the
check that should catch them, and a canary without traffic is never promoted on no evidence.

The models are built here (scikit-learn, exported to ONNX) and published into the operator's artifact store;
the bad ones are derived from the stable model by graph surgery (tests/support/bad_models.py): one fails on
some inputs, one is slow, one always predicts the same class. A load generator in the cluster sends
training-distribution rows through the Service, one new connection per request (kube-proxy balances
connections), for the whole rollout.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from kubeloop.runtime.serve.examples import build_model_dir, training_data
from support.bad_models import derive, publish_model
from support.e2e import Kubectl, Obj, apply, events, get, wait_condition, wait_for
from support.load import load_counts, start_load, stop_load

ANALYSIS = {
    "maxErrorRate": 0.02,
    "maxP99LatencyMs": 150,
    "maxPredictionDistance": 0.2,
    "maxDrift": 0.5,
    "minRequests": 60,
}


@pytest.fixture(scope="module")
def models(
    kubectl: Kubectl, operator_installed: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Obj]]:
    """The stable model, a good successor and three bad ones, in the operator's store: name -> uri, sha."""
    root: Path = tmp_path_factory.mktemp("canary-models")
    build_model_dir(root / "stable", kind="logistic_regression", name="canary")
    derived = {
        # Same answers, a new digest: a retrained model that is as good.
        "good": ("slow", {"milliseconds": 1}),
        "erroring": ("erroring", {"feature": 0}),
        "slow": ("slow", {"milliseconds": 400}),
        "divergent": ("divergent", {"constant_class": 0}),
    }
    for name, (kind, params) in derived.items():
        derive(root / "stable", root / name, kind, **params)  # type: ignore[arg-type]
    namespace = f"t-canary-models-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    try:
        published = {}
        for name in ("stable", *derived):
            uri, sha = publish_model(kubectl, namespace, root / name, operator_installed["trainer"])
            published[name] = {"uri": uri, "sha256": sha}
        yield published
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def rows() -> list[list[float]]:
    """Rows of the training distribution, for the load generator."""
    x, _ = training_data("logistic_regression", 20)
    picked = np.random.default_rng(0).choice(len(x), 300, replace=False)
    return [[round(float(v), 4) for v in x[i]] for i in picked]


def canary_md(name: str, model: Obj, **rollout: object) -> Obj:
    return {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": model["uri"], "sha256": model["sha256"]},
            "replicas": 2,
            "rollout": {
                "strategy": "Canary",
                "steps": [{"weight": 25, "pause": "20s"}, {"weight": 50, "pause": "20s"}],
                "analysis": ANALYSIS,
                "progressDeadline": "3m",
                **rollout,
            },
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        },
    }


def use_model(kubectl: Kubectl, namespace: str, name: str, model: Obj) -> None:
    patch = {"spec": {"model": {"uri": model["uri"], "sha256": model["sha256"]}}}
    kubectl("patch", "modeldeployment", name, "-n", namespace, "--type=merge", "-p", json.dumps(patch))


def canary_status(kubectl: Kubectl, namespace: str, name: str) -> Obj:
    return get(kubectl, "modeldeployment", name, namespace).get("status", {})


def wait_rollout(
    kubectl: Kubectl, namespace: str, name: str, sha: str, timeout: float
) -> tuple[Obj, list[Obj]]:
    """Poll until the rollout of ``sha`` ended; the last status and every canary status seen on the way."""
    seen: list[Obj] = []

    def ended() -> Obj | None:
        st = canary_status(kubectl, namespace, name)
        if st.get("canary"):
            seen.append(st["canary"])
        last = st.get("lastRollout") or {}
        done = last.get("sha256") == sha and (
            last.get("result") == "RolledBack"
            or (st.get("model", {}).get("sha256") == sha and not st.get("canary"))
        )
        return st if done else None

    final = wait_for(ended, timeout, f"the canary of {sha[:12]} to be promoted or rolled back", interval=2)
    return final, seen


def test_a_good_canary_is_promoted_step_by_step_without_a_failed_request(
    kubectl: Kubectl, namespace: str, models: dict[str, Obj], operator_installed: dict[str, str]
) -> None:
    stable, good = models["stable"], models["good"]
    apply(kubectl, namespace, canary_md("canary", stable))
    wait_condition(
        kubectl, "modeldeployment", "canary", namespace, "Ready", timeout=180, unless=("Degraded", "True")
    )
    load = start_load(kubectl, namespace, "canary", operator_installed["trainer"], rows())
    before = load_counts(kubectl, namespace, load)
    use_model(kubectl, namespace, "canary", good)

    final, seen = wait_rollout(kubectl, namespace, "canary", good["sha256"], timeout=360)
    after = stop_load(kubectl, namespace, load)
    print("load before the rollout:", before, "after:", after)
    print("last canary status seen:", json.dumps(seen[-1] if seen else None, indent=1))

    assert final["lastRollout"]["result"] == "Promoted", final["lastRollout"]
    assert final["model"]["sha256"] == good["sha256"]
    # Both steps ran, each with pods of the canary and every check passing before it went on.
    assert {c["step"] for c in seen} >= {0, 1}, [(c["step"], c["phase"]) for c in seen]
    analysed = [c for c in seen if c.get("checks")]
    assert analysed and {ch["name"] for ch in analysed[-1]["checks"]} == {
        "errorRate",
        "latencyP99",
        "predictionDistance",
        "inputDrift",
    }
    assert all(ch["verdict"] == "pass" for ch in analysed[-1]["checks"]), analysed[-1]["checks"]
    # The canary got a share of the requests near its replica share (2 stable pods, 1 then 2 canary pods).
    weights = [c["observedWeight"] for c in analysed if c.get("observedWeight") is not None]
    assert weights and 5 < weights[-1] < 80, weights
    reasons = [e["reason"] for e in events(kubectl, namespace, "canary")]
    assert {"CanaryStarted", "CanaryStepPassed", "CanaryPromoting", "Promoted"} <= set(reasons), reasons
    # Not one request failed, and the new model answered some.
    assert not after["codes"] and not after["errors"], after
    assert good["sha256"][:16] in after["versions"] and stable["sha256"][:16] in after["versions"], after
    # Promoted means no canary pods are left; the stable Deployment serves the new model.
    wait_for(
        lambda: not kubectl("get", "deploy", "canary-canary", "-n", namespace, check=False).stdout,
        60,
        "the canary Deployment to go",
    )


@pytest.mark.parametrize(
    ("bad", "check"),
    [("erroring", "errorRate"), ("slow", "latencyP99"), ("divergent", "predictionDistance")],
)
def test_a_bad_canary_is_rolled_back_naming_the_check(
    kubectl: Kubectl,
    namespace: str,
    models: dict[str, Obj],
    operator_installed: dict[str, str],
    bad: str,
    check: str,
) -> None:
    stable, model = models["stable"], models[bad]
    name = f"bad-{bad}"
    apply(kubectl, namespace, canary_md(name, stable))
    wait_condition(
        kubectl, "modeldeployment", name, namespace, "Ready", timeout=180, unless=("Degraded", "True")
    )
    load = start_load(kubectl, namespace, name, operator_installed["trainer"], rows())
    use_model(kubectl, namespace, name, model)

    final, _ = wait_rollout(kubectl, namespace, name, model["sha256"], timeout=300)
    time.sleep(5)  # requests in flight while the canary pods drain
    counts = stop_load(kubectl, namespace, load)
    print(bad, "rollout:", json.dumps(final.get("lastRollout"), indent=1), "load:", counts)

    last = final["lastRollout"]
    assert last["result"] == "RolledBack" and last["reason"] == check, last
    assert final["model"]["sha256"] == stable["sha256"], final["model"]
    rejected = final["rejected"][-1]
    assert rejected["sha256"] == model["sha256"] and rejected["reason"] == check, rejected
    progressing = {c["type"]: c for c in final["conditions"]}["Progressing"]
    assert progressing["reason"] in ("RolledBack", "ModelRejected"), progressing
    said = [e for e in events(kubectl, namespace, name) if e["reason"] == "RolledBack"]
    assert said and all(e["type"] == "Warning" for e in said), said
    assert any(check in e["message"] for e in said), [e["message"] for e in said]
    # The rollout itself lost no request: no connection failed, no 503 from a draining pod. Only the
    # erroring model's own answers are errors (500), and they are what the analysis rests on.
    assert not counts["errors"], counts
    assert set(counts["codes"]) <= ({"500"} if bad == "erroring" else set()), counts
    # It is not tried again: the canary Deployment stays away while the spec names the rejected model.
    time.sleep(10)
    st = canary_status(kubectl, namespace, name)
    assert not st.get("canary") and st["model"]["sha256"] == stable["sha256"], st
    assert not kubectl("get", "deploy", f"{name}-canary", "-n", namespace, check=False).stdout


def test_a_canary_without_traffic_is_held_then_rolled_back_at_its_deadline(
    kubectl: Kubectl, namespace: str, models: dict[str, Obj]
) -> None:
    stable, good = models["stable"], models["good"]
    md = canary_md("quiet", stable, progressDeadline="20s")
    md["spec"]["rollout"]["steps"] = [{"weight": 50, "pause": "10s"}]
    apply(kubectl, namespace, md)
    wait_condition(
        kubectl, "modeldeployment", "quiet", namespace, "Ready", timeout=180, unless=("Degraded", "True")
    )
    use_model(kubectl, namespace, "quiet", good)

    final, seen = wait_rollout(kubectl, namespace, "quiet", good["sha256"], timeout=240)
    held = [c for c in seen if c.get("checks")]
    assert held, seen
    assert all(ch["verdict"] == "inconclusive" for ch in held[-1]["checks"]), held[-1]["checks"]
    assert any("holding" in (c.get("message") or "") for c in held), [c.get("message") for c in held]
    last = final["lastRollout"]
    assert last["result"] == "RolledBack" and last["reason"] == "DeadlineExceeded", last
    assert final["model"]["sha256"] == stable["sha256"]
