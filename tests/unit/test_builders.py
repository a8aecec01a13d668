"""Builders are pure: spec in, manifest out. Table-driven over the cases a user would write."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubeloop.api.dataset import DatasetSpec
from kubeloop.api.modeldeployment import ModelDeploymentSpec
from kubeloop.api.trainingjob import TrainingJobSpec
from kubeloop.builders.dataset import ingest_job, ingest_job_name
from kubeloop.builders.serving import (
    MODEL_DIGEST_ANNOTATION,
    MODEL_DIR,
    autoscaler,
    deployment,
    disruption_budget,
    service,
)
from kubeloop.builders.settings import Settings, SettingsError, image_allowed
from kubeloop.builders.training import gate_config, training_job, trial_job_name
from kubeloop.contract import child_name

SHA = "a" * 64
SETTINGS = Settings(
    trainer_image="registry.local/trainer:1",
    server_image="registry.local/server:1",
    store_uri="s3://models/kubeloop",
    store_secret="store-creds",
)


def config_of(container: dict[str, Any]) -> dict[str, Any]:
    env = {e["name"]: e["value"] for e in container["env"]}
    return json.loads(env["KUBELOOP_CONFIG"])  # type: ignore[no-any-return]


def volumes(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod["volumes"]}


def assert_restricted(pod: dict[str, Any]) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod.get("initContainers", []) + pod["containers"]:
        assert c["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }


@pytest.mark.parametrize(
    ("source", "expect_volume", "expect_env_from"),
    [
        ({"builtin": "iris"}, None, None),
        ({"url": "https://example.com/d.csv"}, None, None),
        ({"pvc": {"claimName": "data", "path": "x.csv"}}, "pvc-data", None),
        ({"configMapRef": {"name": "small", "key": "d.csv"}}, "source", None),
        ({"s3": {"uri": "s3://bucket/d.csv", "credentialsSecretRef": {"name": "s3"}}}, None, "s3"),
    ],
)
def test_ingest_job(source: dict[str, Any], expect_volume: str | None, expect_env_from: str | None) -> None:
    spec = DatasetSpec.model_validate({"source": source})
    job = ingest_job(name="iris", namespace="ml", spec=spec, generation=3, refresh=1, settings=SETTINGS)
    assert job["metadata"]["name"] == "iris-ingest-3-1" == ingest_job_name("iris", 3, 1)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.local/trainer:1"
    assert container["command"] == ["python", "-m", "kubeloop.runtime"] and container["args"] == ["ingest"]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["envFrom"][0] == {"secretRef": {"name": "store-creds", "optional": True}}
    config = config_of(container)
    assert (config["namespace"], config["name"], config["storeURI"]) == ("ml", "iris", "s3://models/kubeloop")
    assert config["source"] == source
    if expect_volume:
        assert expect_volume in volumes(pod)
    if expect_env_from:
        assert container["envFrom"][-1] == {"secretRef": {"name": expect_env_from, "optional": False}}
    assert pod["restartPolicy"] == "Never"
    assert_restricted(pod)
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [2]
    assert rules[1] == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }


def test_privacy_hash_key_is_a_mounted_file_not_config() -> None:
    spec = DatasetSpec.model_validate(
        {
            "source": {"builtin": "wine"},
            "privacy": {"hash": ["name"], "hashKeySecretRef": {"name": "pepper", "key": "k"}},
        }
    )
    job = ingest_job(name="w", namespace="ml", spec=spec, generation=1, refresh=0, settings=SETTINGS)
    pod = job["spec"]["template"]["spec"]
    assert volumes(pod)["hash-key"]["secret"]["secretName"] == "pepper"
    privacy = config_of(pod["containers"][0])["privacy"]
    assert privacy == {"drop": [], "hash": ["name"], "hashKeyPath": "/var/run/kubeloop/hash-key/k"}
    assert "pepper" not in json.dumps(privacy), "the config names the file, not the Secret"


def test_url_headers_are_a_mounted_secret_not_config() -> None:
    spec = DatasetSpec.model_validate(
        {"source": {"url": "https://example.com/d.csv", "headersSecretRef": {"name": "api-token"}}}
    )
    job = ingest_job(name="d", namespace="ml", spec=spec, generation=1, refresh=0, settings=SETTINGS)
    pod = job["spec"]["template"]["spec"]
    assert volumes(pod)["url-headers"]["secret"]["secretName"] == "api-token"
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "url-headers")
    assert mount["readOnly"] and mount["mountPath"] == "/var/run/kubeloop/url-headers"
    assert config_of(pod["containers"][0])["urlHeadersPath"] == "/var/run/kubeloop/url-headers"
    assert_restricted(pod)


@pytest.mark.parametrize(
    ("store", "volume"),
    [
        ("s3://b/p", None),
        ("file:///var/lib/kubeloop/store", "store"),
        ("pvc://artifacts/kubeloop", "pvc-artifacts"),
    ],
)
def test_store_volume(store: str, volume: str | None) -> None:
    settings = Settings(store_uri=store)
    job = ingest_job(
        name="d",
        namespace="ml",
        spec=DatasetSpec.model_validate({"source": {"builtin": "iris"}}),
        generation=1,
        refresh=0,
        settings=settings,
    )
    pod = job["spec"]["template"]["spec"]
    names = set(volumes(pod)) - {"tmp"}
    assert names == ({volume} if volume else set())
    if volume == "pvc-artifacts":
        assert {"name": "pvc-artifacts", "mountPath": "/mnt/pvc/artifacts", "readOnly": False} in (
            pod["containers"][0]["volumeMounts"]
        )


TRAIN = {
    "datasetRef": {"name": "iris"},
    "model": {"estimator": "LogisticRegression", "params": {"max_iter": 200}},
}


@pytest.mark.parametrize(
    ("extra", "trial", "params", "image", "command"),
    [
        ({}, 0, {}, "registry.local/trainer:1", ["python", "-m", "kubeloop.runtime"]),
        (
            {"backoffLimit": 0, "activeDeadlineSeconds": 60},
            4,
            {"C": 10.0},
            "registry.local/trainer:1",
            ["python", "-m", "kubeloop.runtime"],
        ),
        ({"image": "me/custom:2"}, 0, {}, "me/custom:2", None),
    ],
)
def test_training_job(
    extra: dict[str, Any], trial: int, params: dict[str, Any], image: str, command: Any
) -> None:
    spec = TrainingJobSpec.model_validate({**TRAIN, **extra})
    dataset = {"name": "iris", "version": "abc", "artifactURI": "s3://b/datasets/ml/iris/abc"}
    job = training_job(
        name="iris-lr",
        namespace="ml",
        spec=spec,
        generation=2,
        trial=trial,
        params=params,
        dataset=dataset,
        settings=SETTINGS,
    )
    assert job["metadata"]["name"] == trial_job_name("iris-lr", 2, trial) == f"iris-lr-2-trial-{trial}"
    assert job["spec"]["backoffLimit"] == spec.backoff_limit
    assert job["spec"]["activeDeadlineSeconds"] == spec.active_deadline_seconds
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == image
    assert container.get("command") == command
    config = config_of(container)
    assert config["trial"] == {"index": trial, "params": params}
    assert config["model"]["params"] == {"max_iter": 200, **params}
    assert config["model"]["estimator"] == spec.model.estimator
    assert config["dataset"] == dataset
    assert "search" not in config and "spec" not in config
    assert job["spec"]["template"]["metadata"]["labels"]["kubeloop.io/trial"] == str(trial)


def first_trial_job(spec: TrainingJobSpec, serving_metrics: dict[str, float] | None = None) -> dict[str, Any]:
    """The Job of trial 0 of ``spec``'s first generation, on a fixed iris version."""
    return training_job(
        name="iris-lr",
        namespace="ml",
        spec=spec,
        generation=1,
        trial=0,
        params={},
        dataset={"name": "iris", "version": "abc", "artifactURI": "s3://b/datasets/ml/iris/abc"},
        settings=SETTINGS,
        serving_metrics=serving_metrics,
    )


def test_training_job_passes_the_unknown_category_policy_to_the_trainer() -> None:
    spec = TrainingJobSpec.model_validate({**TRAIN, "categorical": {"unknown": "error"}})
    job = first_trial_job(spec)
    assert config_of(job["spec"]["template"]["spec"]["containers"][0])["categorical"] == {"unknown": "error"}


@pytest.mark.parametrize(
    ("extra", "replicas", "strategy", "hpa"),
    [
        ({}, 1, "RollingUpdate", False),
        ({"replicas": 3, "rollout": {"strategy": "Recreate"}}, 3, "Recreate", False),
        ({"autoscaling": {"minReplicas": 2, "maxReplicas": 5}}, None, "RollingUpdate", True),
    ],
)
def test_serving(extra: dict[str, Any], replicas: int | None, strategy: str, hpa: bool) -> None:
    spec = ModelDeploymentSpec.model_validate({"model": {"uri": "s3://b/models/x", "sha256": SHA}, **extra})
    dep = deployment(
        name="iris", namespace="ml", spec=spec, uri="s3://b/models/x", sha256=SHA, settings=SETTINGS
    )
    assert dep["spec"].get("replicas") == replicas
    assert dep["spec"]["strategy"]["type"] == strategy
    template = dep["spec"]["template"]
    assert template["metadata"]["annotations"][MODEL_DIGEST_ANNOTATION] == SHA
    pod = template["spec"]
    assert_restricted(pod)
    (fetch,), (serve,) = pod["initContainers"], pod["containers"]
    assert fetch["args"] == ["fetch", "--uri", "s3://b/models/x", "--sha256", SHA, "--dest", MODEL_DIR]
    assert serve["args"][:5] == ["serve", "--model-dir", MODEL_DIR, "--expected-sha256", SHA]
    assert fetch["image"] == serve["image"] == "registry.local/server:1"
    assert serve["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert serve["ports"][0]["containerPort"] == 8080
    assert "envFrom" not in serve, "only fetch needs the store credentials"
    model_mounts = {
        m["name"]: m["readOnly"] for c in (fetch, serve) for m in c["volumeMounts"] if m["name"] == "model"
    }
    assert model_mounts == {"model": True}
    assert [m["readOnly"] for m in fetch["volumeMounts"] if m["name"] == "model"] == [False]
    svc = service(name="iris", namespace="ml")
    # The Service selects stable and canary pods; the Deployment (and so the HPA) the stable ones alone.
    assert svc["spec"]["selector"].items() < dep["spec"]["selector"]["matchLabels"].items()
    assert dep["spec"]["selector"]["matchLabels"]["kubeloop.io/track"] == "stable"
    assert (autoscaler(name="iris", namespace="ml", spec=spec) is not None) == hpa


def test_a_canary_deployment_is_selected_by_the_service_not_by_the_stable_deployment() -> None:
    spec = ModelDeploymentSpec.model_validate(
        {"model": {"uri": "s3://b/models/x", "sha256": SHA}, "replicas": 3}
    )
    args = {"name": "iris", "namespace": "ml", "spec": spec, "uri": "s3://b/models/x", "settings": SETTINGS}
    stable = deployment(**args, sha256=SHA)
    canary = deployment(**args, sha256="c" * 64, track="canary", replicas=1)
    svc = service(name="iris", namespace="ml")
    canary_labels = canary["spec"]["template"]["metadata"]["labels"]
    assert canary["metadata"]["name"] == "iris-canary" and canary["spec"]["replicas"] == 1
    assert svc["spec"]["selector"].items() <= canary_labels.items()
    assert not stable["spec"]["selector"]["matchLabels"].items() <= canary_labels.items()
    hpa_spec = ModelDeploymentSpec.model_validate(
        {"model": {"uri": "s3://b/models/x", "sha256": SHA}, "autoscaling": {"maxReplicas": 4}}
    )
    hpa = autoscaler(name="iris", namespace="ml", spec=hpa_spec)
    assert hpa is not None and hpa["spec"]["scaleTargetRef"]["name"] == stable["metadata"]["name"]
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300  # the 5m default
    budget = disruption_budget(name="iris", namespace="ml", spec=spec)
    assert budget is not None and budget["spec"]["selector"] == stable["spec"]["selector"]
    assert (
        disruption_budget(name="iris", namespace="ml", spec=spec.model_copy(update={"replicas": 1})) is None
    )


def test_child_names_are_deterministic_and_short() -> None:
    long = "x" * 120
    name = child_name(long, "7", "trial", "12")
    assert len(name) <= 63 and name.endswith("-7-trial-12")
    assert name == child_name(long, "7", "trial", "12")
    assert name != child_name("y" + long[1:], "7", "trial", "12")


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"KUBELOOP_IMAGE_PULL_POLICY": "Sometimes"}, "KUBELOOP_IMAGE_PULL_POLICY"),
        ({"KUBELOOP_STORE_URI": "ftp://x"}, "KUBELOOP_STORE_URI"),
        ({"KUBELOOP_RESYNC_SECONDS": "soon"}, "KUBELOOP_RESYNC_SECONDS"),
    ],
)
def test_settings_errors_name_the_variable(env: dict[str, str], error: str) -> None:
    with pytest.raises(SettingsError, match=error):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("image", "allowed", "expected"),
    [
        ("registry.example.com/team/trainer:2", (), False),  # custom images are off by default
        ("registry.example.com/team/trainer:2", ("registry.example.com/team/",), True),
        ("registry.example.com/team/a/b@sha256:" + "0" * 64, ("registry.example.com/team/",), True),
        ("registry.example.com/team-evil/x:1", ("registry.example.com/team/",), False),
        ("registry.example.com/team/", ("registry.example.com/team/",), False),
        ("registry.example.com/team/trainer", ("registry.example.com/team/trainer",), True),
        ("registry.example.com/team/trainer:2", ("registry.example.com/team/trainer",), True),
        ("r.io/team/trainer@sha256:" + "0" * 64, ("r.io/team/trainer",), True),
        ("registry.example.com/team/trainer-evil:2", ("registry.example.com/team/trainer",), False),
        ("registry.example.com/team/trainer/sub:2", ("registry.example.com/team/trainer",), False),
        ("other.io/trainer:1", ("registry.example.com/team/", "other.io/trainer"), True),
    ],
)
def test_image_allowed(image: str, allowed: tuple[str, ...], expected: bool) -> None:
    assert image_allowed(image, allowed) is expected


def test_allowed_training_images_from_env() -> None:
    settings = Settings.from_env({"KUBELOOP_ALLOWED_TRAINING_IMAGES": "r.io/team/, r.io/shared/trainer"})
    assert settings.allowed_training_images == ("r.io/team/", "r.io/shared/trainer")
    assert Settings.from_env({}).allowed_training_images == ()
    with pytest.raises(SettingsError, match="KUBELOOP_ALLOWED_TRAINING_IMAGES"):
        Settings.from_env({"KUBELOOP_ALLOWED_TRAINING_IMAGES": "/abs"})


def test_settings_from_env() -> None:
    settings = Settings.from_env({"KUBELOOP_ALLOWED_ESTIMATORS": "Ridge, SVC", "KUBELOOP_STORE_SECRET": "s"})
    assert settings.allowed_estimators == ("Ridge", "SVC")
    assert settings.store_secret == "s"
    assert settings.image_pull_policy == "IfNotPresent"


NO_WORSE = {"noWorseThan": {"modelDeploymentRef": {"name": "iris"}, "tolerance": 0.01}}


@pytest.mark.parametrize(
    ("gate", "serving", "config"),
    [
        (None, None, None),
        ({"minimums": {"accuracy": 0.9}}, None, {"minimums": {"accuracy": 0.9}}),
        # noWorseThan is resolved by the controller; without serving metrics (nothing served) it adds nothing
        (NO_WORSE, None, None),
        (NO_WORSE, {}, None),
        (NO_WORSE, {"accuracy": 0.94}, {"servingMetrics": {"accuracy": 0.94}}),
        (
            {"minimums": {"accuracy": 0.9}, "maximums": {"rmse": 2.0}, **NO_WORSE},
            {"accuracy": 0.94, "rmse": 1.5},
            {
                "minimums": {"accuracy": 0.9},
                "maximums": {"rmse": 2.0},
                "servingMetrics": {"accuracy": 0.94, "rmse": 1.5},
            },
        ),
    ],
)
def test_training_gate_config(
    gate: dict[str, Any] | None, serving: dict[str, float] | None, config: dict[str, Any] | None
) -> None:
    spec = TrainingJobSpec.model_validate({**TRAIN, **({"gate": gate} if gate else {})})
    job = first_trial_job(spec, serving_metrics=serving)
    assert config_of(job["spec"]["template"]["spec"]["containers"][0]).get("gate") == config
    assert (gate_config(spec.wire().get("gate"), serving) or None) == config
