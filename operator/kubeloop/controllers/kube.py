"""A small client for the few API calls the operator makes (server-side apply, get, list, status patch)."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, cast

import kubernetes

Obj = dict[str, Any]
FIELD_MANAGER = "kubeloop"
# How the API server refuses new objects in a namespace being deleted (cause NamespaceTerminating).
NAMESPACE_TERMINATING = "because it is being terminated"
# Resource paths of the child kinds the operator manages.
PLURALS = {
    "Job": "jobs",
    "Deployment": "deployments",
    "Service": "services",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "Pod": "pods",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "NetworkPolicy": "networkpolicies",
    "EndpointSlice": "endpointslices",
    "Dataset": "datasets",
    "TrainingJob": "trainingjobs",
    "ModelDeployment": "modeldeployments",
    "Monitor": "monitors",
}


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class NotFound(KubeError):
    pass


def load_client() -> Any:
    """An ApiClient from the in-cluster service account, else from the kubeconfig (KUBECONFIG)."""
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        # KUBECONFIG as it is now: the client library reads it once, when it is imported.
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
    return kubernetes.client.ApiClient()


def path(api_version: str, kind: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    parts = [base, "namespaces", namespace, PLURALS[kind], *(p for p in (name, sub) if p)]
    return "/".join(parts)


class Kube:
    def __init__(self, client: Any) -> None:
        self.client = client

    def _call(
        self,
        method: str,
        url_path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Obj:
        method, url, headers, data, _ = self.client.param_serialize(
            method,
            url_path,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.client.call_api(method, url, headers, data)
        text = response.read()
        payload = json.loads(text) if text else {}
        if response.status >= 400:
            message = (
                payload.get("message", str(text)[:500]) if isinstance(payload, dict) else str(text)[:500]
            )
            raise (NotFound if response.status == 404 else KubeError)(response.status, message)
        return cast(Obj, payload)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        try:
            return self._call("GET", path(api_version, kind, namespace, name))
        except NotFound:
            return None

    def list(
        self, api_version: str, kind: str, namespace: str, selector: dict[str, str] | None = None
    ) -> list[Obj]:
        query = [("labelSelector", ",".join(f"{k}={v}" for k, v in selector.items()))] if selector else []
        items = self._call("GET", path(api_version, kind, namespace), query=query).get("items", [])
        return cast(list[Obj], items)

    def apply(self, manifest: Obj) -> Obj:
        """Server-side apply: creates or updates, and only touches the fields this operator sets."""
        meta = manifest["metadata"]
        return self._call(
            "PATCH",
            path(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"]),
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            body=manifest,
            content_type="application/apply-patch+yaml",
        )

    def create(self, manifest: Obj) -> Obj | None:
        """Create unless it exists (Jobs are immutable: an existing one is never changed). None if it
        existed, or if its namespace is being deleted: the owner goes with it, nothing is to be made."""
        meta = manifest["metadata"]
        try:
            return self._call(
                "POST", path(manifest["apiVersion"], manifest["kind"], meta["namespace"]), body=manifest
            )
        except KubeError as error:
            if error.status == 409 or (error.status == 403 and NAMESPACE_TERMINATING in str(error)):
                return None
            raise

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        with contextlib.suppress(NotFound):
            self._call(
                "DELETE", path(api_version, kind, namespace, name), body={"propagationPolicy": "Background"}
            )

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str, status: Obj) -> Obj:
        return self._call(
            "PATCH",
            path(api_version, kind, namespace, name, "status"),
            # Named, so a user's managedFields show the operator owning status and nothing else.
            query=[("fieldManager", FIELD_MANAGER)],
            body={"status": status},
            content_type="application/merge-patch+json",
        )
