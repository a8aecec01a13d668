#!/usr/bin/env python3
"""Figures for the local cluster: cold build time, warm `up` time, pod start latency.

    sudo python3 bench/cluster_bench.py [--pods N]

Cold build time is what build-binaries.sh recorded when it built the binaries (a cold build takes tens
of minutes; rerun it with an empty KUBELOOP_CACHE to measure again). Warm `up` is measured here from a
stopped cluster with the binaries cached: control plane only, then the full node. Pod start latency is
create → Ready for a pod of the cached pause image (small, already on the node), N times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLUSTER = [sys.executable, str(REPO / "cluster" / "localcluster.py")]


def timed(cmd: list[str]) -> float:
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=10)
    args = parser.parse_args()
    bins = Path(
        subprocess.run(
            [str(REPO / "cluster" / "build-binaries.sh")], check=True, stdout=subprocess.PIPE, text=True
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    cold = (bins / "BUILD_SECONDS").read_text().strip() if (bins / "BUILD_SECONDS").exists() else "unknown"
    kubectl = [str(bins / "kubectl"), "--kubeconfig", str(REPO / ".kube" / "config")]

    subprocess.run([*CLUSTER, "down"], check=True, stderr=subprocess.DEVNULL)
    control_plane = timed([*CLUSTER, "up", "--control-plane-only"])
    subprocess.run([*CLUSTER, "down"], check=True, stderr=subprocess.DEVNULL)
    full = timed([*CLUSTER, "up"])

    pause = json.loads(
        subprocess.run(
            [*kubectl, "get", "node", "-o", "json"], check=True, stdout=subprocess.PIPE, text=True
        ).stdout
    )["items"][0]["status"]["images"]
    pause_ref = next(n for img in pause for n in img["names"] if "pause" in n)
    latencies = []
    for i in range(args.pods):
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"bench-{i}", "namespace": "default"},
            "spec": {"containers": [{"name": "p", "image": pause_ref, "imagePullPolicy": "Never"}]},
        }
        t0 = time.monotonic()
        subprocess.run(
            [*kubectl, "create", "-f", "-"],
            input=json.dumps(pod),
            text=True,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(
            [*kubectl, "wait", "--for=condition=Ready", f"pod/bench-{i}", "--timeout=120s"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        latencies.append(time.monotonic() - t0)
        subprocess.run(
            [*kubectl, "delete", "pod", f"bench-{i}", "--wait=false"], check=True, stdout=subprocess.DEVNULL
        )
    print(f"cold build of the cluster binaries:     {cold} s (recorded by cluster/build-binaries.sh)")
    print(f"warm up, control plane only:            {control_plane:.1f} s")
    print(f"warm up, control plane and node:        {full:.1f} s")
    print(
        f"pod start latency, create to Ready:     p50 {statistics.median(latencies):.2f} s, "
        f"max {max(latencies):.2f} s over {len(latencies)} pods (measured with kubectl, which adds ~0.1 s)"
    )


if __name__ == "__main__":
    main()
