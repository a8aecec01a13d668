"""The route table: every URL the server answers, matched exactly, built once (the model's when it loads).

A route says which method it takes, what kind of answer it gets, the protocol label its requests are
counted under in the metrics (``""``: not counted) and whether it needs a bearer token. Health never
needs one (the kubelet carries no token); metrics and the baseline only with ``--metrics-auth``, because
Prometheus scrapes and the operator reads them without one by default.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from .responses import error_body

# What a route answers. Plain ints, not an Enum: the dispatcher compares them on every request.
INFER_V2 = 0  # a V2 inference request, answered from the batch queue
PREDICT_V1 = 1  # a V1 :predict request, likewise
STATIC = 2  # ``body``, fixed once the route exists
READY = 3  # 200 with the model's digest, or 503 while loading or draining
MODEL_STATUS_V1 = 4  # V1 model status: its readiness changes over time
METRICS = 5  # Prometheus text

SERVER_METADATA = json.dumps({"name": "kubeloop", "version": "0.1.0", "extensions": []}).encode()


class Route(NamedTuple):
    method: bytes
    kind: int
    protocol: str  # "v2" | "v1": the requests' label in the metrics; "": not counted
    auth: bool
    body: bytes = b""


def server_routes(metrics_auth: bool = False) -> dict[bytes, Route]:
    """The routes that exist before a model is loaded."""
    return {
        b"/v2/health/live": Route(b"GET", STATIC, "", False, b'{"live":true}'),
        b"/v2/health/ready": Route(b"GET", READY, "", False),
        b"/v2": Route(b"GET", STATIC, "", False, SERVER_METADATA),
        b"/metrics": Route(b"GET", METRICS, "", metrics_auth),
    }


# The training baseline of the served model (baseline.json, docs/contracts.md), for the operator's drift
# checks: the operator has no access to the artifact store. A token only when /metrics needs one: its
# histograms already carry the baseline's bin edges and categories.
BASELINE = b"/kubeloop/v1/baseline"


def model_routes(
    name: str, version: str, metadata: bytes, auth: bool, baseline: bytes = b"{}", metrics_auth: bool = False
) -> dict[bytes, Route]:
    """A model's routes, under its name and under its name and version, and its baseline."""
    model = b"/v2/models/" + name.encode()
    routes: dict[bytes, Route] = {BASELINE: Route(b"GET", STATIC, "", metrics_auth, baseline)}
    for base in (model, model + b"/versions/" + version.encode()):
        routes[base] = Route(b"GET", STATIC, "v2", auth, metadata)
        routes[base + b"/ready"] = Route(b"GET", READY, "", False)
        routes[base + b"/infer"] = Route(b"POST", INFER_V2, "v2", auth)
    v1 = b"/v1/models/" + name.encode()
    routes[v1] = Route(b"GET", MODEL_STATUS_V1, "v1", auth)
    routes[v1 + b":predict"] = Route(b"POST", PREDICT_V1, "v1", auth)
    return routes


def not_found(url: bytes, model: tuple[str, str] | None) -> tuple[int, bytes]:
    """The answer for a URL with no route: say which model (``(name, version)``) this server serves."""
    parts = url.decode(errors="replace").split("/")
    if len(parts) > 3 and parts[1] in ("v1", "v2") and parts[2] == "models":
        if model is None:
            return 503, error_body("the model is not loaded yet")
        served, version = model
        name = parts[3].split(":", 1)[0]
        if name != served:
            return 404, error_body(f"model '{name}' is not served here; this server serves '{served}'")
        if len(parts) > 5 and parts[4] == "versions" and parts[5] != version:
            return 404, error_body(f"model '{name}' has no version '{parts[5]}'; it has '{version}'")
    return 404, error_body(f"no such endpoint: {url.decode(errors='replace')}")


def wrong_method(url: bytes, route: Route, method: bytes) -> bytes:
    return error_body(
        f"{url.decode(errors='replace')} takes {route.method.decode()}, not {method.decode(errors='replace')}"
    )
