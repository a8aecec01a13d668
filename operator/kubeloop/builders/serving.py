"""The inference service of a ModelDeployment: Deployment, Service, NetworkPolicy, with autoscaling an HPA."""

from __future__ import annotations

from kubeloop.api.common import duration_seconds
from kubeloop.api.modeldeployment import ModelDeploymentSpec
from kubeloop.builders.common import (
    RUNTIME_COMMAND,
    Manifest,
    Mounts,
    container_security_context,
    pod_security_context,
    resources,
    store_env_from,
)
from kubeloop.builders.settings import Settings
from kubeloop.contract import LABEL_COMPONENT, LABEL_TRACK, child_labels, owner_selector

PORT = 8080
MODEL_DIR = "/var/run/kubeloop/model"
AUTH_DIR = "/var/run/kubeloop/auth"
MODEL_DIGEST_ANNOTATION = "kubeloop.io/model-sha256"
DEFAULT_RESOURCES: Manifest = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
# On SIGTERM the server reports not ready but keeps serving for DRAIN_DELAY seconds, and after that until
# no connection arrived for DRAIN_QUIET seconds, so the endpoint is gone from every node's proxy rules
# before it stops accepting (a busy node's kube-proxy was seen to lag 5 s); the quiet wait and what is in
# flight take at most DRAIN_TIMEOUT seconds. The grace period covers all, so the kubelet never kills it
# mid-request.
DRAIN_DELAY_SECONDS = 5
DRAIN_QUIET_SECONDS = 2
DRAIN_TIMEOUT_SECONDS = 10
TERMINATION_GRACE_SECONDS = DRAIN_DELAY_SECONDS + DRAIN_TIMEOUT_SECONDS + 5
FETCH_RESOURCES: Manifest = {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}


STABLE, CANARY = "stable", "canary"


def selector(name: str) -> dict[str, str]:
    """The server pods of one ModelDeployment, stable and canary (the Service's selector)."""
    return {LABEL_COMPONENT: "server", **owner_selector("ModelDeployment", name)}


def track_selector(name: str, track: str) -> dict[str, str]:
    """The pods of one track (a Deployment's selector): the HPA scales the stable pods alone."""
    return {**selector(name), LABEL_TRACK: track}


def deployment_name(name: str, track: str) -> str:
    """The stable Deployment keeps the ModelDeployment's name (<= 52 characters); the canary's adds 7."""
    return name if track == STABLE else f"{name}-canary"


def service_url(name: str, namespace: str) -> str:
    return f"http://{name}.{namespace}.svc:{PORT}"


def fetch_args(uri: str, sha256: str) -> list[str]:
    """`fetch` copies the model directory (…/models/<sha256>) into the pod and verifies model.onnx."""
    return ["fetch", "--uri", uri, "--sha256", sha256, "--dest", MODEL_DIR]


def serve_args(name: str, sha256: str, spec: ModelDeploymentSpec) -> list[str]:
    """`serve` refuses to become ready unless the model it loaded has the expected digest."""
    args = ["serve", "--model-dir", MODEL_DIR, "--expected-sha256", sha256, "--port", str(PORT)]
    args += ["--model-name", name]
    args += ["--drain-delay", str(DRAIN_DELAY_SECONDS), "--drain-quiet", str(DRAIN_QUIET_SECONDS)]
    args += ["--drain-timeout", str(DRAIN_TIMEOUT_SECONDS)]
    if spec.auth is not None:
        args += ["--auth-token-file", f"{AUTH_DIR}/{spec.auth.token_secret_ref.key}"]
    return args


def deployment(
    *,
    name: str,
    namespace: str,
    spec: ModelDeploymentSpec,
    uri: str,
    sha256: str,
    settings: Settings,
    track: str = STABLE,
    replicas: int | None = None,
) -> Manifest:
    """The server pods of one track: `fetch` pulls and verifies the model into an emptyDir, then `serve`
    serves it.

    The model digest is a pod-template annotation, so a new model rolls out as a new ReplicaSet and the
    operator can tell which pods run which model. ``replicas`` is the canary's count; the stable count is
    the spec's, or the HPA's (left out of the manifest, so the two never fight).
    """
    mounts = Mounts()
    mounts.store(settings.store_uri, read_only=True)
    if spec.auth is not None:
        mounts.secret("auth", spec.auth.token_secret_ref.name, AUTH_DIR)
    mounts.add({"name": "model", "emptyDir": {"sizeLimit": "2Gi"}}, MODEL_DIR, read_only=True)
    common = {
        "image": settings.server_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": RUNTIME_COMMAND,
        "securityContext": container_security_context(),
    }
    # Only fetch writes the model; serve mounts it read-only.
    fetch_mounts = [{**m, "readOnly": False} if m["name"] == "model" else m for m in mounts.mounts]
    fetch = {
        **common,
        "name": "fetch",
        "args": fetch_args(uri, sha256),
        "envFrom": store_env_from(settings),
        "resources": FETCH_RESOURCES,
        "volumeMounts": fetch_mounts,
    }
    serve = {
        **common,
        "name": "serve",
        "args": serve_args(name, sha256, spec),
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "resources": resources(spec.resources, DEFAULT_RESOURCES),
        "volumeMounts": [m for m in mounts.mounts if m["name"] in ("tmp", "model", "auth")],
    }
    strategy = spec.rollout.strategy if spec.rollout else "Rolling"
    deployment_strategy: Manifest = (
        {"type": "Recreate"}
        if strategy == "Recreate"
        else {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    )
    pod_labels = {**child_labels("ModelDeployment", name, "server"), **track_selector(name, track)}
    manifest: Manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": deployment_name(name, track), "namespace": namespace, "labels": pod_labels},
        "spec": {
            "selector": {"matchLabels": track_selector(name, track)},
            "strategy": deployment_strategy,
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {
                        MODEL_DIGEST_ANNOTATION: sha256,
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
                    "securityContext": pod_security_context(),
                    "initContainers": [fetch],
                    "containers": [serve],
                    "volumes": mounts.volumes,
                },
            },
        },
    }
    if track == CANARY:
        manifest["spec"]["replicas"] = replicas if replicas is not None else 1
    elif spec.autoscaling is None:
        # With autoscaling the HPA owns the replica count; setting it here would fight it.
        manifest["spec"]["replicas"] = stable_replicas(spec)
    return manifest


def stable_replicas(spec: ModelDeploymentSpec) -> int:
    """The stable replicas the spec asks for (autoscaling: its minimum, until the HPA says otherwise)."""
    if spec.autoscaling is not None:
        return spec.autoscaling.min_replicas
    return 1 if spec.replicas is None else spec.replicas


def canary_replicas(stable: int, weight: int) -> int:
    """Canary pods for a weight, next to ``stable`` unchanged pods: the share stable * w / (100 - w) gives,
    rounded, never 0 (a canary without pods gets no traffic), at most 9 times stable (weight 90)."""
    base = max(stable, 1)
    wanted = round(base * weight / (100 - weight)) if weight < 100 else 9 * base
    return max(1, min(wanted, 9 * base, 100))


def disruption_budget(*, name: str, namespace: str, spec: ModelDeploymentSpec) -> Manifest | None:
    """With two or more stable replicas, a voluntary eviction (a node drain) takes at most one at a time."""
    if stable_replicas(spec) < 2 and (spec.autoscaling is None or spec.autoscaling.max_replicas < 2):
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": child_labels("ModelDeployment", name, "server"),
        },
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": track_selector(name, STABLE)}},
    }


def service(*, name: str, namespace: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": child_labels("ModelDeployment", name, "server"),
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector(name),
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def network_policy(*, name: str, namespace: str, spec: ModelDeploymentSpec, settings: Settings) -> Manifest:
    """Ingress to the server pods (both tracks) only on the serving port, only from the peers the spec
    allows plus the operator and the metrics scraper; egress is left alone (the pods reach the store)."""
    # Absent allowFrom: every pod of the ModelDeployment's own namespace, and no other (a tenant's model is
    # its own until it says otherwise).
    allowed = (
        [{"podSelector": {}}]
        if spec.network is None or spec.network.allow_from is None
        else [peer.wire() for peer in spec.network.allow_from]
    )
    always = [
        dict(peer) for peer in (settings.operator_peer, settings.metrics_scraper_peer) if peer is not None
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": child_labels("ModelDeployment", name, "server"),
        },
        "spec": {
            "podSelector": {"matchLabels": selector(name)},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": PORT}], "from": allowed + always}],
        },
    }


def autoscaler(*, name: str, namespace: str, spec: ModelDeploymentSpec) -> Manifest | None:
    if spec.autoscaling is None:
        return None
    scaling = spec.autoscaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": child_labels("ModelDeployment", name, "server"),
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": scaling.min_replicas,
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": round(duration_seconds(scaling.scale_down_stabilization))
                }
            },
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": scaling.target_cpu_utilization,
                        },
                    },
                }
            ],
        },
    }
