"""A load generator in the cluster (the demo's, ``demo.LOAD``): V2 requests through a ModelDeployment's
Service, for rollouts and Monitors to measure; rows drawn at random from the ones given, optionally with
features shifted. Every 2 s it prints its counts so far as one JSON line.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

from support.e2e import Kubectl, Obj, demo, start_pod, status
from support.polling import wait_for


def start_load(
    kubectl: Kubectl,
    namespace: str,
    md: str,
    image: str,
    rows: Sequence[Sequence[float]],
    *,
    pause: float = 0.01,
    shift: dict[int, float] | None = None,
) -> str:
    """Start a load generator pod against ModelDeployment ``md``; returns the pod's name once it has had
    answers. ``shift`` adds a constant to features (by column index) of every row."""
    url = status(kubectl, "modeldeployment", md, namespace)["url"].rstrip("/") + f"/v2/models/{md}/infer"
    pod = f"load-{uuid.uuid4().hex[:6]}"
    args = [url, json.dumps([list(r) for r in rows]), str(pause), json.dumps(shift or {})]
    start_pod(kubectl, namespace, pod, image, ["python3", "-c", demo.LOAD, *args])
    try:
        wait_for(lambda: load_counts(kubectl, namespace, pod).get("ok", 0) > 20, 120, "the load generator")
    except AssertionError as error:
        log = kubectl("logs", pod, "-n", namespace, "--tail=5", check=False)
        raise AssertionError(f"{error}\nits log: {log.stdout[-2000:]}{log.stderr[-1000:]}") from None
    return pod


def load_counts(kubectl: Kubectl, namespace: str, pod: str) -> Obj:
    """The load generator's counts so far (empty before its first report)."""
    out = kubectl("logs", pod, "-n", namespace, "--tail=1", check=False).stdout.strip()
    return json.loads(out) if out.startswith("{") else {}


def stop_load(kubectl: Kubectl, namespace: str, pod: str) -> Obj:
    """The last counts, then the pod goes."""
    counts = load_counts(kubectl, namespace, pod)
    kubectl("delete", "pod", pod, "-n", namespace, "--wait=false", check=False)
    return counts
