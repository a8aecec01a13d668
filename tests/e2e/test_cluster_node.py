"""The local node runs real containers: images built here, Services by DNS name, Jobs and their logs."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

from support.polling import wait_for

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def _apply(kubectl: Kubectl, *objects: dict) -> None:  # type: ignore[type-arg]
    kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
    )


def _wait(kubectl: Kubectl, namespace: str, *args: str) -> None:
    """kubectl wait/rollout, and on a time-out the pods' state and events, to say why."""
    res = kubectl(*args, "-n", namespace, check=False)
    if res.returncode != 0:
        pods = kubectl("describe", "pods", "-n", namespace, check=False).stdout
        raise AssertionError(f"kubectl {' '.join(args)}: {res.stderr}\n{pods[-4000:]}")


def _pod_spec(image: str, command: list[str]) -> dict:  # type: ignore[type-arg]
    return {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "main",
                "image": image,
                "imagePullPolicy": "Never",
                "command": command,
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}},
            }
        ],
    }


def test_a_locally_built_image_serves_a_service_reached_by_dns_name_from_a_job(
    kubectl: Kubectl, namespace: str, images: dict[str, str]
) -> None:
    image = images["trainer"]
    labels = {"app": "web"}
    web_spec = _pod_spec(image, ["python3", "-m", "http.server", "8080", "--directory", "/opt/kubeloop"])
    web_spec["containers"][0]["readinessProbe"] = {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}
    _apply(
        kubectl,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": web_spec},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    _wait(kubectl, namespace, "rollout", "status", "deployment/web", "--timeout=180s")

    # A client as real ones are: it retries for a while and says what failed when it gives up.
    fetch = (
        "import time, urllib.request\n"
        "for attempt in range(30):\n"
        "    try:\n"
        f"        url = 'http://web.{namespace}.svc.cluster.local/'\n"
        "        body = urllib.request.urlopen(url, timeout=5).read()\n"
        "        break\n"
        "    except OSError as error:\n"
        "        print('attempt', attempt, 'failed:', error, flush=True)\n"
        "        time.sleep(2)\n"
        "else:\n"
        "    raise SystemExit('gave up')\n"
        "print('fetched', len(body), 'bytes; bin listed:', b'bin/' in body)\n"
    )
    job_spec = _pod_spec(image, ["python3", "-c", fetch])
    job_spec["restartPolicy"] = "Never"
    _apply(
        kubectl,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "client", "namespace": namespace},
            "spec": {"backoffLimit": 0, "template": {"spec": job_spec}},
        },
    )

    def finished() -> dict[str, int] | None:
        counts = json.loads(kubectl("get", "job", "client", "-n", namespace, "-o", "json").stdout)["status"]
        return counts if counts.get("succeeded") or counts.get("failed") else None

    counts = wait_for(finished, 180, "the client Job to finish")
    logs = kubectl("logs", "job/client", "-n", namespace).stdout
    assert counts.get("succeeded") == 1, f"the client failed:\n{logs}"
    assert "bin listed: True" in logs, logs


def test_deleting_a_deployment_garbage_collects_its_pods(
    kubectl: Kubectl, namespace: str, images: dict[str, str]
) -> None:
    labels = {"app": "sleeper"}
    _apply(
        kubectl,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "sleeper", "namespace": namespace},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": _pod_spec(images["trainer"], ["sleep", "3600"]),
                },
            },
        },
    )
    _wait(kubectl, namespace, "rollout", "status", "deployment/sleeper", "--timeout=180s")
    kubectl("delete", "deployment", "sleeper", "-n", namespace, "--cascade=background")
    kubectl("wait", "--for=delete", "pod", "-l", "app=sleeper", "-n", namespace, "--timeout=120s")
    assert kubectl("get", "replicasets", "-n", namespace, "-o", "name").stdout.strip() == ""
