"""A model change drains the old pods before they stop; a pod that cannot load the model says why."""

from __future__ import annotations

import json

from kubeloop.api.modeldeployment import ModelDeploymentSpec
from kubeloop.builders.serving import MODEL_DIGEST_ANNOTATION, deployment
from kubeloop.builders.settings import Settings
from kubeloop.controllers.modeldeployment import load_failure
from kubeloop.runtime.serve.cli import parse_args

SHA, OTHER = "a" * 64, "b" * 64


def test_the_server_drains_within_the_grace_period() -> None:
    spec = ModelDeploymentSpec.model_validate({"model": {"uri": "s3://b/models/x", "sha256": SHA}})
    dep = deployment(
        name="iris",
        namespace="ml",
        spec=spec,
        uri="s3://b/models/x",
        sha256=SHA,
        settings=Settings(store_uri="s3://b", trainer_image="t:1", server_image="s:1"),
    )
    pod = dep["spec"]["template"]["spec"]
    config = parse_args(pod["containers"][0]["args"][1:])
    assert config.drain_delay > 0, (
        "without a delay the endpoint may still get requests after the listener closed"
    )
    assert config.drain_quiet > 0, "a node whose proxy rules lag must still find the old pod listening"
    assert pod["terminationGracePeriodSeconds"] >= config.drain_delay + config.drain_timeout
    assert dep["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }


def pod(sha: str, init: dict | None = None, main: dict | None = None, deleting: bool = False) -> dict:  # type: ignore[type-arg]
    meta = {"name": "iris-1", "annotations": {MODEL_DIGEST_ANNOTATION: sha}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "status": {
            "initContainerStatuses": [{"name": "fetch", **(init or {})}],
            "containerStatuses": [{"name": "serve", **(main or {})}],
        },
    }


MISMATCH = {
    "lastState": {
        "terminated": {
            "exitCode": 2,
            "message": json.dumps(
                {"ok": False, "reason": "ChecksumMismatch", "message": "checksum mismatch for x"}
            ),
        }
    },
    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
}


def test_a_pod_that_cannot_fetch_the_model_says_why() -> None:
    reason, message = load_failure([pod(SHA, init=MISMATCH)], SHA) or ("", "")
    assert reason == "ChecksumMismatch"
    assert message == "pod iris-1: fetch failed: checksum mismatch for x"


def test_a_load_failure_without_a_result_still_names_the_exit() -> None:
    crashed = {"state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
    assert load_failure([pod(SHA, main=crashed)], SHA) == (
        "OOMKilled",
        "pod iris-1: serve failed: exit code 137",
    )


def test_healthy_other_model_and_deleted_pods_are_no_failure() -> None:
    running = {"state": {"running": {}}}
    assert (
        load_failure([pod(SHA, init={"state": {"terminated": {"exitCode": 0}}}, main=running)], SHA) is None
    )
    assert load_failure([pod(OTHER, init=MISMATCH)], SHA) is None
    assert load_failure([pod(SHA, init=MISMATCH, deleting=True)], SHA) is None
