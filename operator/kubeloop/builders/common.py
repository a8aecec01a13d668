"""Pieces every child object shares: names, labels, the restricted pod security, the runtime contract."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlparse

from kubeloop import contract
from kubeloop.api.common import ResourceRequirements
from kubeloop.builders.settings import Settings
from kubeloop.contract import (
    EXIT_DATA_ERROR,
    MAX_NAME,
    PVC_ROOT,
    RUNTIME_UID,
    TERMINATION_LOG,
)

Manifest = dict[str, Any]
RUNTIME_COMMAND = list(contract.RUNTIME_COMMAND)


def resources(spec: ResourceRequirements | None, default: Manifest) -> Manifest:
    if spec is None:
        return default
    return spec.wire()


def pod_security_context() -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUNTIME_UID,
        "runAsGroup": RUNTIME_UID,
        "fsGroup": RUNTIME_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> Manifest:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def config_env(config: Manifest) -> Manifest:
    """The KUBELOOP_CONFIG variable: the runtime's whole input, as compact, key-sorted JSON."""
    return {"name": "KUBELOOP_CONFIG", "value": json.dumps(config, sort_keys=True, separators=(",", ":"))}


def store_env_from(settings: Settings) -> list[Manifest]:
    """The store's credentials Secret as env vars; optional so a file store needs none."""
    if not settings.store_secret:
        return []
    return [{"secretRef": {"name": settings.store_secret, "optional": True}}]


class Mounts:
    """Volumes and mounts of one pod, built up piece by piece without duplicate volumes."""

    def __init__(self) -> None:
        self.volumes: list[Manifest] = [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
        self.mounts: list[Manifest] = [{"name": "tmp", "mountPath": "/tmp"}]

    def add(self, volume: Manifest, mount_path: str, read_only: bool) -> None:
        if any(v["name"] == volume["name"] for v in self.volumes):
            return
        self.volumes.append(volume)
        self.mounts.append({"name": volume["name"], "mountPath": mount_path, "readOnly": read_only})

    def store(self, store_uri: str, read_only: bool = False) -> None:
        """Mount the artifact store when it is a volume (s3:// needs no mount)."""
        parsed = urlparse(store_uri)
        if parsed.scheme == "pvc":
            self.pvc(parsed.netloc, read_only)
        elif parsed.scheme == "file":
            # A directory of the node: for single-node clusters and demos.
            self.add(
                {"name": "store", "hostPath": {"path": parsed.path, "type": "DirectoryOrCreate"}},
                parsed.path,
                read_only,
            )

    def pvc(self, claim: str, read_only: bool) -> None:
        self.add(
            {
                "name": f"pvc-{claim}"[:MAX_NAME],
                "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only},
            },
            f"{PVC_ROOT}/{claim}",
            read_only,
        )

    def secret(self, name: str, secret: str, mount_path: str) -> None:
        self.add({"name": name, "secret": {"secretName": secret, "defaultMode": 0o440}}, mount_path, True)


def job(
    *,
    name: str,
    namespace: str,
    labels: dict[str, str],
    container: Manifest,
    mounts: Mounts,
    backoff_limit: int,
    active_deadline_seconds: int,
) -> Manifest:
    """A batch/v1 Job running one runtime container under the runtime contract."""
    container = {
        **container,
        "terminationMessagePath": TERMINATION_LOG,
        # When the runtime dies before writing its result, the log tail still tells the user why.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security_context(),
        "volumeMounts": mounts.mounts,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "backoffLimit": backoff_limit,
            "activeDeadlineSeconds": active_deadline_seconds,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": container["name"],
                            "operator": "In",
                            "values": [EXIT_DATA_ERROR],
                        },
                    },
                    # Evictions, preemption and node drains are not the run's fault: retry without counting.
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                ]
            },
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security_context(),
                    "containers": [container],
                    "volumes": mounts.volumes,
                },
            },
        },
    }
