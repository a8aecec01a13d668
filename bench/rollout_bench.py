#!/usr/bin/env python3
"""What a canary rollout costs: apply-to-promoted time against the sum of its pauses, and failed requests.

    make cluster-up && .venv/bin/python bench/rollout_bench.py [--pause 10] [--runs 1]

On the local cluster (KUBECONFIG, default .kube/config): builds the images if needed, installs the operator
with Helm, publishes two models with the same answers and different digests, serves the first with two
replicas and a 3-step canary (weights 20, 50, 80, each `--pause` seconds, every check configured), starts a
load generator in the cluster and switches to the second model. Prints, per run: seconds from the patch to
`status.model` naming the new digest with no canary left, the sum of the pauses, the overhead (the
difference: canary pods starting, analysis windows waiting for every canary pod, promotion), and the load
generator's requests, failures and connection errors over the rollout (the target is 0 failed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "cluster"), str(REPO / "operator")]
os.environ.setdefault("KUBECONFIG", str(REPO / ".kube" / "config"))

import demo  # noqa: E402

from kubeloop.runtime.serve.examples import build_model_dir, training_data  # noqa: E402
from support.bad_models import derive, publish_model  # noqa: E402
from support.load import start_load, stop_load  # noqa: E402
from support.polling import wait_for  # noqa: E402


def kubectl(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(demo.bin_dir() / "kubectl"), *args], check=check, capture_output=True, text=True, input=input
    )


def status(name: str, namespace: str) -> dict[str, Any]:
    out = kubectl("get", "modeldeployment", name, "-n", namespace, "-o", "json").stdout
    return json.loads(out).get("status", {})  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pause", type=float, default=10.0, help="seconds of each of the 3 steps")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()

    images = demo.build_images()
    demo.install_operator(images)
    namespace = f"bench-rollout-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            build_model_dir(root / "a", kind="logistic_regression", name="bench")
            models = [publish_model(kubectl, namespace, root / "a", images["trainer"])]
            for i in range(args.runs):
                derive(root / "a", root / f"b{i}", "slow", milliseconds=0.5 + i * 0.1)
                models.append(publish_model(kubectl, namespace, root / f"b{i}", images["trainer"]))
        pause = f"{args.pause:g}s"
        md = {
            "apiVersion": "kubeloop.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "bench", "namespace": namespace},
            "spec": {
                "model": {"uri": models[0][0], "sha256": models[0][1]},
                "replicas": 2,
                "rollout": {
                    "strategy": "Canary",
                    "steps": [{"weight": w, "pause": pause} for w in (20, 50, 80)],
                    "analysis": {
                        "maxErrorRate": 0.02,
                        "maxP99LatencyMs": 500,
                        "maxPredictionDistance": 0.2,
                        "minRequests": 30,
                    },
                    "progressDeadline": "5m",
                },
                "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
            },
        }
        kubectl("apply", "-f", "-", input=json.dumps(md))
        wait_for(
            lambda: (status("bench", namespace).get("model") or {}).get("sha256") == models[0][1],
            300,
            "the first model to serve",
        )
        x, _ = training_data("logistic_regression", 20)
        rows = [[round(float(v), 4) for v in r] for r in x[:300]]
        for uri, sha in models[1:]:
            load = start_load(kubectl, namespace, "bench", images["trainer"], rows)
            start = time.monotonic()
            patch = {"spec": {"model": {"uri": uri, "sha256": sha}}}
            kubectl(
                "patch", "modeldeployment", "bench", "-n", namespace, "--type=merge", "-p", json.dumps(patch)
            )

            def promoted(sha: str = sha) -> dict[str, Any] | None:
                st = status("bench", namespace)
                last = st.get("lastRollout") or {}
                if last.get("sha256") == sha and last.get("result") == "RolledBack":
                    raise SystemExit(f"the canary was rolled back: {last}")
                done = (st.get("model") or {}).get("sha256") == sha and not st.get("canary")
                return st if done else None

            wait_for(promoted, 900, "the promotion", interval=0.5)
            seconds = time.monotonic() - start
            time.sleep(3)
            counts = stop_load(kubectl, namespace, load)
            pauses = 3 * args.pause
            failed = sum(counts.get("codes", {}).values())
            errors = sum(counts.get("errors", {}).values())
            print(
                f"3-step canary, pauses {pauses:.0f} s: apply-to-promoted {seconds:.1f} s, overhead "
                f"{seconds - pauses:.1f} s ({seconds / pauses:.2f}x the pauses); "
                f"requests {counts.get('ok', 0)}, failed {failed}, connection errors {errors}",
                flush=True,
            )
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
