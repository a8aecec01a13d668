"""The plugin's only door to the cluster: the API server, reached as kubectl reaches it.

The kubeconfig is found like kubectl finds it (--kubeconfig, else $KUBECONFIG, which may list several
files, else ~/.kube/config; inside a pod, the service account), --context picks a context, and the
namespace is -n, else the context's, else "default".
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from kubeloop.api import GROUP, KINDS, VERSION, Kind

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
TIMEOUT_SECONDS = 30


class CliError(Exception):
    """What the user sees as `error: ...`, with exit code 1."""


def resolve_kind(word: str) -> Kind:
    """A kind by any name kubectl accepts for it: Kind, singular, plural, short name, plural.group."""
    wanted = word.lower().removesuffix(f".{GROUP}")
    for kind in KINDS:
        if wanted in (kind.singular, kind.plural, *kind.short_names):
            return kind
    names = ", ".join(f"{k.singular} ({'/'.join(k.short_names)})" for k in KINDS)
    raise CliError(f"unknown kind {word!r}: use one of {names}")


def parse_ref(ref: str, default: Kind | None = None) -> tuple[Kind, str]:
    """`kind/name` (or a bare name when the command has a default kind)."""
    word, slash, name = ref.rpartition("/")
    if not slash:
        if default is None:
            raise CliError(f"{ref!r}: name the object as <kind>/<name>, e.g. modeldeployment/iris")
        return default, ref
    kind = resolve_kind(word)
    if default is not None and kind != default:
        raise CliError(f"{ref!r} is a {kind.kind}; this command takes a {default.kind}")
    if not name:
        raise CliError(f"{ref!r}: the name is missing")
    return kind, name


class Cluster:
    """The API server of one kubeconfig context, and the namespace the commands work in."""

    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
        # Connected on first use, so that a bad argument is reported before a bad kubeconfig.
        self._kubeconfig, self._context, self._namespace = kubeconfig, context, namespace
        self._api: client.ApiClient | None = None

    @property
    def api(self) -> client.ApiClient:
        if self._api is None:
            self._api = self._connect(self._kubeconfig, self._context)
        return self._api

    @property
    def namespace(self) -> str:
        if self._namespace is None:
            self._namespace = self._default_namespace(self._kubeconfig, self._context)
        return self._namespace

    @property
    def objects(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @staticmethod
    def _connect(kubeconfig: str | None, context: str | None) -> client.ApiClient:
        configuration = client.Configuration()
        files = kubeconfig or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
        found = [f for f in files.split(os.pathsep) if f and Path(f).expanduser().is_file()]
        try:
            if not found and not kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            elif not found:
                raise CliError(f"no kubeconfig at {files}: pass --kubeconfig or set KUBECONFIG")
            else:
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=files, context=context, client_configuration=configuration
                )
        except (config.ConfigException, OSError) as e:
            raise CliError(f"cannot load the kubeconfig ({files}): {e}") from None
        return client.ApiClient(configuration)

    @staticmethod
    def _default_namespace(kubeconfig: str | None, context: str | None) -> str:
        files = kubeconfig or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
        try:
            contexts, active = config.list_kube_config_contexts(config_file=files)  # type: ignore[no-untyped-call]
        except (config.ConfigException, OSError):
            return (
                SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
                if SERVICE_ACCOUNT_NAMESPACE.exists()
                else "default"
            )
        chosen = next((c for c in contexts if c.get("name") == context), active) if context else active
        return str(((chosen or {}).get("context") or {}).get("namespace") or "default")

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, _request_timeout=TIMEOUT_SECONDS, **kwargs)
        except ApiException as e:
            raise CliError(f"{what}: {api_message(e)}") from None
        except (OSError, urllib3.exceptions.HTTPError) as e:  # refused, timed out, TLS, retries spent
            raise CliError(f"{what}: cannot reach the API server: {e}") from None

    def get(self, kind: Kind, name: str) -> dict[str, Any]:
        objects = self.objects  # a kubeconfig that does not load is said as such
        what = f"{kind.singular} {name!r} in namespace {self.namespace!r}"
        try:
            obj = objects.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, kind.plural, name, _request_timeout=TIMEOUT_SECONDS
            )
        except ApiException as e:
            if e.status == 404:
                raise CliError(f"{what} not found") from None
            raise CliError(f"cannot read {what}: {api_message(e)}") from None
        except (OSError, urllib3.exceptions.HTTPError) as e:
            raise CliError(f"cannot read {what}: cannot reach the API server: {e}") from None
        return cast(dict[str, Any], obj)

    def list(self, kind: Kind) -> list[dict[str, Any]]:
        found = self._call(
            f"cannot list {kind.plural} in namespace {self.namespace!r}",
            self.objects.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            kind.plural,
        )
        items: list[dict[str, Any]] = found.get("items", [])
        for item in items:  # a list's items carry no kind
            item.setdefault("kind", kind.kind)
        return items

    def annotate(self, kind: Kind, name: str, annotations: Mapping[str, str]) -> None:
        self._call(
            f"cannot annotate {kind.singular} {name!r}",
            self.objects.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            kind.plural,
            name,
            {"metadata": {"annotations": dict(annotations)}},
        )

    def service_proxy(self, service: str, port: str, path: str, body: Any = None) -> Any:
        """GET (no body) or POST JSON through /api/v1/namespaces/<ns>/services/<svc>:<port>/proxy/<path>;
        the answer's JSON. An error answer (the API server's or the service's) is a CliError with its
        message."""
        url_path = f"/api/v1/namespaces/{self.namespace}/services/{service}:{port}/proxy/{path.lstrip('/')}"
        method = "GET" if body is None else "POST"
        what = f"{method} {url_path}"
        # The client has no typed call for a proxied POST with a body: the request is built as its typed
        # calls build theirs (the same authentication), then sent.
        method, url, headers, data, _ = self.api.param_serialize(
            method,
            url_path,
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self._call(what, self.api.call_api, method, url, headers, data)
        text = response.read()
        try:
            doc = json.loads(text) if text else None
        except ValueError:
            doc = None
        if response.status >= 400:
            message = doc.get("message") or doc.get("error") if isinstance(doc, dict) else None
            raise CliError(f"{what}: {response.status} {message or text[:300]!r}")
        if doc is None:
            raise CliError(f"{what}: the answer is not JSON: {text[:300]!r}")
        return doc


def api_message(e: ApiException) -> str:
    """The API server's (or the proxied service's) own message, not the client's dump of headers."""
    try:
        doc = json.loads(e.body or "")
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        message = doc.get("message") or doc.get("error")
        if message:
            return f"{e.status} {message}"
    body = (e.body or b"").decode(errors="replace") if isinstance(e.body, bytes) else (e.body or "")
    return f"{e.status} {e.reason}: {body.strip()[:300]}" if body.strip() else f"{e.status} {e.reason}"
