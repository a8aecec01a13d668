#!/usr/bin/env python3
"""The whole loop on the local cluster: the operator installed by Helm, the samples applied, a prediction,
then traffic, one feature shifted, the Monitor flagging it, a retrain, and its model rolled out by canary.

    python3 cluster/demo.py [--namespace kubeloop-demo] [--no-loop]

Expects a running cluster with the project's images on its node (`make demo` does both first). Prints each
step as it happens, with the time since the start, then where to look. Standard library only; the e2e tests
reuse `install_operator`, `wait_for_condition` and the load generator `LOAD`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RELEASE, RELEASE_NAMESPACE = "kubeloop", "kubeloop-system"
# The node-local artifact store that localcluster.py makes (owned by the pods' user, 65532).
STORE_URI = "file://" + os.environ.get("KUBELOOP_CLUSTER_STATE", "/var/lib/kubeloop-cluster") + "/store"
# The restricted pod security every pod of ours runs under (the e2e tests' pods too).
RESTRICTED = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
# Two iris flowers as a V2 request to the sample ModelDeployment.
IRIS_REQUEST = {
    "inputs": [
        {
            "name": "input",
            "shape": [2, 4],
            "datatype": "FP32",
            "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3],
        }
    ]
}


# A load generator, run in a pod (the trainer image): V2 requests through a ModelDeployment's Service, one
# new connection per request (kube-proxy balances connections, so this spreads the requests over the pods as
# a fleet of clients would); rows drawn at random from the ones given ("iris": the iris flowers), with
# features shifted by a constant (by column index). Every 2 s it prints its counts so far as one JSON line:
# answers by model version, HTTP errors by code, connection errors by kind.
LOAD = """
import json, random, sys, time, urllib.error, urllib.request
url, rows, pause, shift = sys.argv[1], sys.argv[2], float(sys.argv[3]), json.loads(sys.argv[4])
if rows == "iris":
    from sklearn.datasets import load_iris
    rows = [[round(float(v), 2) for v in r] for r in load_iris().data]
else:
    rows = json.loads(rows)
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
# The iris feature the demo shifts: petal length, by about one standard deviation and a half.
SHIFTED_FEATURE, SHIFT_CM = 2, 2.5


def bin_dir() -> Path:
    out = subprocess.run(
        [str(REPO / "cluster" / "build-binaries.sh")], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def kubeconfig() -> str:
    return os.environ.get("KUBECONFIG") or str(REPO / ".kube" / "config")


def kubectl(*args: str, input: str | None = None, check: bool = True) -> str:
    res = subprocess.run(
        [str(bin_dir() / "kubectl"), "--kubeconfig", kubeconfig(), *args],
        input=input,
        capture_output=True,
        text=True,
    )
    if check and res.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed:\n{res.stderr}")
    return res.stdout


def build_images() -> dict[str, str]:
    out = subprocess.run(
        [str(REPO / "cluster" / "build-images.sh"), "--import"], check=True, stdout=subprocess.PIPE, text=True
    )
    refs: dict[str, str] = json.loads(out.stdout.strip().splitlines()[-1])
    return refs


def install_operator(
    images: dict[str, str], store_uri: str = STORE_URI, values: tuple[str, ...] = ()
) -> None:
    """helm upgrade --install of the chart with these images (and `values`, more `--set key=value`s); waits
    for the operator to be Ready. Values not given are the chart's defaults, not the release's last ones."""
    repository, tag = images["operator"].rsplit(":", 1)
    subprocess.run(
        [
            str(bin_dir() / "helm"),
            "--kubeconfig",
            kubeconfig(),
            "upgrade",
            "--install",
            RELEASE,
            str(REPO / "helm" / "kubeloop"),
            "--namespace",
            RELEASE_NAMESPACE,
            "--create-namespace",
            "--wait",
            "--timeout",
            "5m",
            "--set",
            f"image.repository={repository}",
            "--set",
            f"image.tag={tag}",
            "--set",
            "image.pullPolicy=Never",
            "--set",
            "operator.imagePullPolicy=Never",
            "--set",
            f"operator.trainerImage={images['trainer']}",
            "--set",
            f"operator.serverImage={images['server']}",
            "--set",
            f"operator.storeURI={store_uri}",
            *(arg for value in values for arg in ("--set", value)),
        ],
        check=True,
    )


def conditions(kind: str, name: str, namespace: str) -> dict[str, dict[str, str]]:
    out = kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if not out:
        return {}
    return {c["type"]: c for c in json.loads(out).get("status", {}).get("conditions", [])}


def wait_for_condition(
    kind: str, name: str, namespace: str, wanted: str, timeout: float, failed: str | None = None
) -> dict[str, dict[str, str]]:
    """Poll until condition `wanted` is True (or `failed` is True, or time runs out); print changes."""
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        conds = conditions(kind, name, namespace)
        summary = ", ".join(f"{t}={c['status']}({c.get('reason', '')})" for t, c in sorted(conds.items()))
        if summary != last:
            print(f"  {kind}/{name}: {summary or 'no status yet'}", flush=True)
            last = summary
        if conds.get(wanted, {}).get("status") == "True":
            return conds
        if failed and conds.get(failed, {}).get("status") == "True":
            raise SystemExit(f"{kind}/{name} failed: {conds[failed].get('message')}")
        time.sleep(2)
    raise SystemExit(f"{kind}/{name} did not become {wanted} within {timeout:.0f}s: {last}")


def predict_in_cluster(namespace: str, url: str, image: str, body: dict) -> str:  # type: ignore[type-arg]
    """POST a V2 request to the Service from a pod inside the cluster; returns the response body."""
    # A client as real ones are: it retries a refused or timed-out connection for a while (a new pod's
    # traffic is refused until the NetworkPolicy enforcer has added it), and says what failed if it gives up.
    script = (
        "import sys, time, urllib.error, urllib.request\n"
        f"req = urllib.request.Request({url!r}, data=sys.argv[1].encode(), "
        "headers={'Content-Type': 'application/json'})\n"
        "for attempt in range(30):\n"
        "    try:\n"
        "        print(urllib.request.urlopen(req, timeout=10).read().decode())\n"
        "        break\n"
        "    except urllib.error.HTTPError:\n"
        "        raise\n"
        "    except OSError as error:\n"
        "        print('attempt', attempt, 'failed:', error, file=sys.stderr, flush=True)\n"
        "        time.sleep(2)\n"
        "else:\n"
        "    raise SystemExit('gave up')\n"
    )
    overrides = {
        "spec": {
            "containers": [
                {
                    "name": "client",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-c", script, json.dumps(body)],
                    "securityContext": RESTRICTED,
                }
            ]
        }
    }
    name = f"client-{int(time.time())}"
    kubectl(
        "run",
        name,
        "-n",
        namespace,
        "--image",
        image,
        "--restart=Never",
        "--overrides",
        json.dumps(overrides),
    )
    kubectl(
        "wait", f"pod/{name}", "-n", namespace, "--for=jsonpath={.status.phase}=Succeeded", "--timeout=180s"
    )
    out = kubectl("logs", name, "-n", namespace)
    kubectl("delete", "pod", name, "-n", namespace, "--wait=false")
    return out.strip().splitlines()[-1]  # the answer; the lines before it are refused attempts


class Clock:
    """Prints each step with the time since the demo began."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def say(self, message: str) -> None:
        elapsed = int(time.monotonic() - self.t0)
        print(f"[{elapsed // 60:2d}:{elapsed % 60:02d}] {message}", flush=True)


def get(kind: str, name: str, namespace: str) -> dict:  # type: ignore[type-arg]
    out = kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(out) if out else {}


def wait_until(what: str, check, timeout: float):  # type: ignore[no-untyped-def]
    """Poll ``check`` every 3 s until it returns something true; its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(3)
    raise SystemExit(f"{what}: not within {timeout:.0f}s")


def start_load(namespace: str, name: str, image: str, url: str, shift: dict[int, float]) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/name": "demo-load"}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "containers": [
                {
                    "name": "load",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-c", LOAD, url, "iris", "0.02", json.dumps(shift)],
                    "securityContext": RESTRICTED,
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "128Mi"},
                        "limits": {"memory": "256Mi"},
                    },
                }
            ],
        },
    }
    kubectl("delete", "pod", name, "-n", namespace, "--ignore-not-found", "--wait=true")
    kubectl("apply", "-f", "-", input=json.dumps(pod))


def load_counts(namespace: str, name: str) -> dict:  # type: ignore[type-arg]
    out = kubectl("logs", name, "-n", namespace, "--tail=1", check=False).strip()
    return json.loads(out) if out.startswith("{") else {}


def condition(obj: dict, kind: str) -> dict:  # type: ignore[type-arg]
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), {})


def close_the_loop(ns: str, image: str, url: str, clock: Clock) -> None:
    """Traffic, a shift, drift, a retrain, a canary, a promotion: each step as it is seen in status."""
    interval = get("monitor", "iris", ns)["spec"].get("interval", "1m")
    served = get("modeldeployment", "iris", ns)["status"]["model"]["sha256"]
    clock.say(f"6. traffic from the training distribution (a load pod); the Monitor checks every {interval}")
    start_load(ns, "demo-load", image, url, {})
    wait_until("answers", lambda: load_counts(ns, "demo-load").get("ok", 0) > 20, 180)
    verdict = wait_until("a drift verdict", lambda: judged(ns, ("True", "False")), 300)
    clock.say(
        f"   Monitor iris: Drifted={verdict['status']} ({verdict['reason']}): {verdict['message'][:150]}"
    )

    clock.say(f"7. the same traffic with feature {SHIFTED_FEATURE} (petal length) shifted by +{SHIFT_CM} cm")
    start_load(ns, "demo-load", image, url, {SHIFTED_FEATURE: SHIFT_CM})
    verdict = wait_until("drift", lambda: judged(ns, ("True",)), 600)
    clock.say(f"   Monitor iris: Drifted=True: {verdict['message'][:200]}")
    action = wait_until("a retrain", lambda: last_action(ns, "Retrain"), 180)
    job = action["trainingJob"]
    clock.say(f"8. the Monitor retrains: TrainingJob {job}, against the newest Dataset version")
    wait_for_condition("trainingjob", job, ns, "Succeeded", 600, failed="Failed")
    new_sha = (get("trainingjob", job, ns).get("status", {}).get("model") or {}).get("sha256", "")
    if new_sha == served:
        clock.say("   the retrained model is the one serving (same digest): nothing to roll out")
    else:
        clock.say(f"   model {new_sha[:12]} passed its gate; updatePolicy Auto rolls it out by canary")
        status = follow_canary(ns, new_sha, clock)
        last = status["lastRollout"]
        clock.say(f"9. {last['result']}: {last.get('message', '')[:200]}")
        clock.say(f"   serving now: {status['model']['sha256'][:12]} (was {served[:12]})")
    counts = load_counts(ns, "demo-load")
    kubectl("delete", "pod", "demo-load", "-n", ns, "--wait=false", check=False)
    failed = sum(counts.get("codes", {}).values()) + sum(counts.get("errors", {}).values())
    answers, versions = counts.get("ok", 0), counts.get("versions")
    clock.say(
        f"   the load generator: {answers} answers, {failed} failed; answers by model version {versions}"
    )


def judged(ns: str, wanted: tuple[str, ...]) -> dict | None:  # type: ignore[type-arg]
    """The Monitor's Drifted condition once its status is one of ``wanted``."""
    drifted = condition(get("monitor", "iris", ns), "Drifted")
    return drifted if drifted.get("status") in wanted else None


def last_action(ns: str, kind: str) -> dict | None:  # type: ignore[type-arg]
    action = get("monitor", "iris", ns).get("status", {}).get("lastAction") or {}
    return action if action.get("type") == kind else None


def follow_canary(ns: str, sha: str, clock: Clock, timeout: float = 900) -> dict:  # type: ignore[type-arg]
    """Print the canary's phases as they change until the rollout of ``sha`` ends; the status then."""
    deadline, shown = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        status = get("modeldeployment", "iris", ns).get("status", {})
        last = status.get("lastRollout") or {}
        if last.get("sha256") == sha and last.get("result") in ("Promoted", "RolledBack"):
            return status
        canary = status.get("canary") or {}
        verdicts = tuple(c.get("verdict") for c in canary.get("checks") or [])
        seen = (canary.get("phase"), canary.get("step"), verdicts)
        if canary and seen != shown:
            shown = seen
            checks = "; ".join(f"{c['name']} {c['verdict']}" for c in canary.get("checks") or [])
            clock.say(
                f"   canary {canary.get('phase')}: weight {canary.get('weight')}%, "
                f"{canary.get('replicas')} pod(s){', checks: ' + checks if checks else ''}"
            )
        time.sleep(3)
    raise SystemExit(f"the canary of {sha[:12]} did not end within {timeout:.0f}s")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--namespace", default="kubeloop-demo")
    parser.add_argument("--no-loop", action="store_true", help="stop after the first prediction")
    args = parser.parse_args()
    ns = args.namespace
    clock = Clock()
    clock.say("1. images (built when their inputs changed, imported into the node)")
    images = build_images()
    clock.say("2. the operator, installed with Helm")
    install_operator(images)
    clock.say(
        f"3. the samples, applied in namespace {ns} (the demo's own: made afresh, so a rerun shows the loop)"
    )
    kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=true", "--timeout=180s")
    kubectl("create", "namespace", ns)
    kubectl("apply", "-n", ns, "-f", str(REPO / "manifests" / "samples"))
    clock.say("4. data, training, serving")
    wait_for_condition("dataset", "iris", ns, "Ready", 300)
    wait_for_condition("trainingjob", "iris-logreg", ns, "Succeeded", 600, failed="Failed")
    wait_for_condition("modeldeployment", "iris", ns, "Ready", 300)
    url = json.loads(kubectl("get", "modeldeployment", "iris", "-n", ns, "-o", "json"))["status"]["url"]
    infer_url = url.rstrip("/") + "/v2/models/iris/infer"
    clock.say(f"5. a prediction through the Service, from a pod: POST {infer_url}")
    print("  ", predict_in_cluster(ns, infer_url, images["trainer"], IRIS_REQUEST), flush=True)
    if not args.no_loop:
        close_the_loop(ns, images["trainer"], infer_url, clock)
    print(kubectl("get", "kubeloop", "-n", ns))
    clock.say("done. Where to look:")
    print(f"""  export KUBECONFIG={kubeconfig()}
  kubectl get kubeloop -n {ns}                       # the four kinds, their conditions
  kubectl describe monitor iris -n {ns}              # drift per feature, SLOs, the last action
  kubectl get events -n {ns} --sort-by=.lastTimestamp  # every decision: Retrain, CanaryStarted, Promoted...
  kubectl get modeldeployment iris -n {ns} -o jsonpath='{{.status.lastRollout}}'
  {REPO / "helm" / "kubeloop" / "files" / "dashboard.json"}   # the Grafana dashboard of the loop""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
