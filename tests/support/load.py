"""A load generator in the cluster: V2 requests through a ModelDeployment's Service, for rollouts and
Monitors to measure. One new connection per request (kube-proxy balances connections, so this spreads the
requests over the pods as a fleet of clients would); rows drawn at random from the ones given, optionally
with one feature shifted. Every 2 s it prints its counts so far as one JSON line: answers by model version,
HTTP errors by code, connection errors by kind.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

from support.e2e import Kubectl, Obj, start_pod, status
from support.polling import wait_for

LOAD = """
import json, random, sys, time, urllib.error, urllib.request
url, rows, pause, shift = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]), json.loads(sys.argv[4])
# The input's name is the model's (metadata): a trained model's is "input", skl2onnx's default "X".
while True:
    try:
        with urllib.request.urlopen(url.rsplit("/infer", 1)[0], timeout=10) as answer:
            name = json.loads(answer.read())["inputs"][0]["name"]
        break
    except Exception as error:
        print("metadata:", type(error).__name__, str(error)[:80], flush=True)
        time.sleep(1)
ok, versions, codes, errors, printed = 0, {}, {}, {}, time.monotonic()
while True:
    row = list(random.choice(rows))
    for j, by in shift.items():
        row[int(j)] += by
    one = {"name": name, "shape": [1, len(row)], "datatype": "FP32", "data": row}
    body = json.dumps({"inputs": [one]})
    request = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            version = json.loads(answer.read())["model_version"]
            ok += 1
            versions[version] = versions.get(version, 0) + 1
    except urllib.error.HTTPError as error:
        codes[str(error.code)] = codes.get(str(error.code), 0) + 1
    except Exception as error:
        kind = type(error).__name__ + ": " + str(error)[:60]
        errors[kind] = errors.get(kind, 0) + 1
    if time.monotonic() - printed > 2:
        printed = time.monotonic()
        print(json.dumps({"ok": ok, "versions": versions, "codes": codes, "errors": errors}), flush=True)
    time.sleep(pause)
"""


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
    start_pod(kubectl, namespace, pod, image, ["python3", "-c", LOAD, *args])
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
