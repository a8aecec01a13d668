#!/usr/bin/env python3
"""What idle objects cost the operator: first-status latency, CPU, API requests and memory at N objects.

    .venv/bin/python bench/operator_scale.py [--counts 0,300,1000,3000] [--window 60]

Runs against $KUBECONFIG when it answers, else starts the local control plane (no node is needed: the
objects stay idle). The operator runs here as `kopf run` with the same code the image carries. For each N
it creates N objects at once in a fresh namespace (a quarter each of Datasets, TrainingJobs waiting for a
Dataset that does not exist, ModelDeployments waiting for a TrainingJob that does not exist, and Monitors
waiting for a ModelDeployment that does not exist; each Dataset starts an ingest Job whose pod stays
Pending), waits until every object has a status for its generation, lets the cluster settle, then
measures over the window:
- operator CPU-seconds per minute (utime + stime of its process, from /proc);
- API requests per second (the API server's apiserver_request_total, all clients; the figure that
  matters is the difference from N = 0, which holds the control plane's own traffic);
- operator RSS (VmRSS).
Targets (issue 9): at N = 1000 at most +1 CPU-s/min and +2 req/s over N = 0; every first status within
30 s of creating 1000 objects; RSS at N = 3000 at most 300 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes

REPO = Path(__file__).resolve().parents[1]
CLUSTER = [sys.executable, str(REPO / "cluster" / "localcluster.py")]
GROUP, VERSION = "kubeloop.io", "v1alpha1"
PLURALS = {
    "Dataset": "datasets",
    "TrainingJob": "trainingjobs",
    "ModelDeployment": "modeldeployments",
    "Monitor": "monitors",
}


def binaries() -> Path:
    out = subprocess.run(
        [str(REPO / "cluster" / "build-binaries.sh")], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def kubeconfig() -> Path:
    """$KUBECONFIG when it answers, else the local control plane (started here)."""
    given = os.environ.get("KUBECONFIG")
    if (
        given
        and subprocess.run(
            [str(binaries() / "kubectl"), "--kubeconfig", given, "get", "--raw", "/readyz"],
            capture_output=True,
        ).returncode
        == 0
    ):
        return Path(given)
    subprocess.run([*CLUSTER, "up", "--control-plane-only"], check=True)
    return REPO / ".kube" / "config"


def manifests(i: int) -> list[dict[str, Any]]:
    """Four idle objects: one of each kind."""

    def obj(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind,
            "metadata": {"name": f"{kind.lower()}-{i}"},
            "spec": spec,
        }

    return [
        obj("Dataset", {"source": {"builtin": "iris"}}),
        obj(
            "TrainingJob",
            {"datasetRef": {"name": f"missing-{i}"}, "model": {"estimator": "LogisticRegression"}},
        ),
        obj("ModelDeployment", {"model": {"trainingJobRef": {"name": f"missing-{i}"}}}),
        obj("Monitor", {"deploymentRef": {"name": f"missing-{i}"}, "drift": {}}),
    ]


def api_requests(kubectl: list[str]) -> float:
    text = subprocess.run(
        [*kubectl, "get", "--raw", "/metrics"], check=True, capture_output=True, text=True
    ).stdout
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("apiserver_request_total{")
    )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def with_status(custom: Any, namespace: str) -> int:
    done = 0
    for plural in PLURALS.values():
        items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"]
        done += sum(
            1
            for o in items
            if (o.get("status") or {}).get("observedGeneration") == o["metadata"]["generation"]
        )
    return done


def measure(
    n: int, window: float, pid: int, custom: Any, core: Any, kubectl: list[str], idle_rate: float
) -> dict[str, float]:
    namespace = f"scale-{n}-{int(time.time())}"
    core.create_namespace({"metadata": {"name": namespace}})
    objects = [m for i in range(n // 4) for m in manifests(i)]
    started = time.monotonic()

    def create(body: dict[str, Any]) -> None:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[body["kind"]], body)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, objects))
    created = time.monotonic() - started
    while with_status(custom, namespace) < len(objects):
        if time.monotonic() - started > 600:
            raise SystemExit(f"N={n}: not every object had a status after 600 s")
        time.sleep(0.5)
    first_status = time.monotonic() - started
    # Steady state: the cluster has stopped changing the children. The controller-manager works through
    # hundreds of new Jobs at its client rate limit (20 requests/s by default), and each change of a child
    # is real work for the operator; idle means after that. Settled: two 10 s samples in a row with the
    # API server's request rate at most 2/s above the empty cluster's.
    quiet, settle_started = 0, time.monotonic()
    while quiet < 2 and time.monotonic() - settle_started < 600:
        before, at = api_requests(kubectl), time.monotonic()
        time.sleep(10)
        rate = (api_requests(kubectl) - before - 1) / (time.monotonic() - at)
        quiet = quiet + 1 if rate <= idle_rate + 2 else 0
    settled = time.monotonic() - settle_started
    cpu0, req0, t0 = cpu_seconds(pid), api_requests(kubectl), time.monotonic()
    time.sleep(window)
    cpu1, req1, t1 = cpu_seconds(pid), api_requests(kubectl), time.monotonic()
    minutes = (t1 - t0) / 60
    figures = {
        "N": n,
        "create_s": round(created, 1),
        "first_status_s": round(first_status, 1),
        "settle_s": round(settled, 1),
        "cpu_s_per_min": round((cpu1 - cpu0) / minutes, 3),
        # Minus the bench's own /metrics read in the window.
        "api_req_per_s": round((req1 - req0 - 1) / (t1 - t0), 2),
        "rss_mib": round(rss_mib(pid), 1),
    }
    core.delete_namespace(namespace)
    gone = time.monotonic()
    while (
        namespace in [ns.metadata.name for ns in core.list_namespace().items]
        and time.monotonic() - gone < 600
    ):
        time.sleep(2)  # the next N starts on a quiet cluster
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--counts", default="0,300,1000,3000")
    parser.add_argument("--window", type=float, default=60.0, help="seconds of steady state measured per N")
    args = parser.parse_args()
    config = kubeconfig()
    kubectl = [str(binaries() / "kubectl"), "--kubeconfig", str(config)]
    subprocess.run(
        [*kubectl, "apply", "--server-side", "-f", str(REPO / "crds")], check=True, stdout=subprocess.DEVNULL
    )
    kubernetes.config.load_kube_config(str(config))
    api = kubernetes.client.ApiClient()
    custom, core = kubernetes.client.CustomObjectsApi(api), kubernetes.client.CoreV1Api(api)
    env = {
        **os.environ,
        "KUBECONFIG": str(config),
        "KUBELOOP_METRICS_PORT": "0",
        "KUBELOOP_STORE_URI": "s3://bench/store",
    }
    log_path = Path(tempfile.mkdtemp(prefix="operator-scale-")) / "operator.log"
    rows = []
    with log_path.open("w") as log:
        command = [str(Path(sys.executable).parent / "kopf"), "run", "-A", "--standalone"]
        operator = subprocess.Popen(
            [*command, "-m", "kubeloop.controllers.main"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            time.sleep(10)  # kopf lists every resource and fills its indexes before the first handler runs
            for n in [int(c) for c in args.counts.split(",")]:
                idle_rate = rows[0]["api_req_per_s"] if rows else 1.0  # N=0 first: the cluster's own rate
                rows.append(measure(n, args.window, operator.pid, custom, core, kubectl, idle_rate))
                print(json.dumps(rows[-1]), flush=True)
        finally:
            operator.terminate()
            operator.wait(timeout=60)
    base = rows[0] if rows and rows[0]["N"] == 0 else None
    print(f"\noperator log: {log_path}")
    header = ("N", "first status s", "CPU-s/min", "+ over N=0", "API req/s", "+ over N=0", "RSS MiB")
    print("".join(f"{h:>15}" for h in header))
    for row in rows:
        cpu_plus = row["cpu_s_per_min"] - base["cpu_s_per_min"] if base else float("nan")
        req_plus = row["api_req_per_s"] - base["api_req_per_s"] if base else float("nan")
        cells = (row["N"], row["first_status_s"], row["cpu_s_per_min"], f"{cpu_plus:+.3f}")
        cells += (row["api_req_per_s"], f"{req_plus:+.2f}", row["rss_mib"])
        print("".join(f"{c:>15}" for c in cells))


if __name__ == "__main__":
    main()
