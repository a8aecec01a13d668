"""The Grafana dashboard and the alerting rules against a real Prometheus beside the local cluster: every
panel's query returns data, and the alerts see the same labels. And Prometheus as the operator's metrics
source gives the verdicts direct scraping gives, on the same traffic: the canary's analysis reads
Prometheus while this test scrapes the same pods itself, and two Monitors watch the model, one from each
source.

Prometheus finds the inference servers and the operator by kubernetes_sd_configs (cluster/localcluster.py
`prometheus`, started here unless one runs already). A ModelDeployment serves a model with a second one in
canary beside it, a Monitor watches it with a drift check and a retrain action, and a load generator sends
rows with one feature shifted: drift, a retrain, a canary, traffic on both tracks. Then each panel's query,
with Grafana's template variables filled in, goes through Prometheus's HTTP API.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubeloop.api.modeldeployment import Analysis
from kubeloop.builders.serving import CANARY, STABLE
from kubeloop.controllers import canary
from kubeloop.runtime.serve.examples import build_model_dir, training_data
from support.bad_models import derive, publish_model
from support.cluster import LOCALCLUSTER
from support.e2e import Kubectl, Obj, apply, status, training_job, wait_condition, wait_for
from support.load import start_load, stop_load
from support.prometheus import dashboard, panel_queries, prometheus_bin_dir, substitute

PROMETHEUS = "http://10.244.0.1:9090"  # on the cluster's bridge: the operator's pod reaches it too
SHIFTED = 0  # the feature (column) the traffic shifts
# Grafana's $__rate_interval is at least 4 scrape intervals; localcluster.py scrapes every 5s.
RATE_INTERVAL = "20s"


def api(path: str, **params: str) -> Any:
    url = f"{PROMETHEUS}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as res:
        body = json.loads(res.read())
    assert body["status"] == "success", body
    return body["data"]


def ready() -> bool:
    try:
        with urllib.request.urlopen(f"{PROMETHEUS}/-/ready", timeout=2) as res:
            return bool(res.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def prometheus(node: Path) -> Iterator[str]:
    """Prometheus beside the cluster: the one running, or one started here and stopped afterwards."""
    prometheus_bin_dir()  # skips, saying why, when it cannot be built
    started = not ready()
    if started:
        subprocess.run([*LOCALCLUSTER, "prometheus"], check=True)
    try:
        yield PROMETHEUS
    finally:
        if started:
            subprocess.run([*LOCALCLUSTER, "prometheus", "--stop"], check=True)


ANALYSIS = {
    "maxErrorRate": 0.05,
    "maxP99LatencyMs": 500,
    "maxPredictionDistance": 0.2,
    "minRequests": 30,
    "source": {"prometheusURL": PROMETHEUS},
}


def md(name: str, model: Obj) -> Obj:
    return {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": model,
            "replicas": 2,
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
            # the next model stays in canary beside the stable one while the dashboard is read
            "rollout": {
                "strategy": "Canary",
                "steps": [{"weight": 50, "pause": "30m"}],
                "progressDeadline": "1h",
                "analysis": ANALYSIS,
            },
        },
    }


def test_every_dashboard_query_returns_data(
    kubectl: Kubectl,
    namespace: str,
    operator_installed: dict[str, str],
    prometheus: str,
    tmp_path: Path,
) -> None:
    build_model_dir(tmp_path / "a", kind="logistic_regression", name="dash")
    derive(tmp_path / "a", tmp_path / "b", "slow", milliseconds=1)  # same answers, a new digest
    features = json.loads((tmp_path / "a" / "model-card.json").read_text())["features"]
    models = {}
    for part in ("a", "b"):
        uri, sha = publish_model(kubectl, namespace, tmp_path / part, operator_installed["trainer"])
        models[part] = {"uri": uri, "sha256": sha}
    apply(kubectl, namespace, md("dash", models["a"]))
    wait_condition(
        kubectl, "modeldeployment", "dash", namespace, "Ready", timeout=180, unless=("Degraded", "True")
    )
    kubectl(
        "patch", "modeldeployment", "dash", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"model": models["b"]}}),
    )  # fmt: skip
    wait_for(
        lambda: (
            (status(kubectl, "modeldeployment", "dash", namespace).get("canary") or {}).get("phase")
            == "Analysing"
        ),
        180,
        "the canary to serve",
        interval=3,
    )
    watcher = {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "Monitor",
        "metadata": {"name": "dash"},
        "spec": {
            "deploymentRef": {"name": "dash"},
            "interval": "10s",
            "slo": {"maxErrorRate": 0.05, "window": "40s", "minRequests": 30},
            "drift": {"method": "psi", "window": "40s"},
            # its TrainingJob waits for a Dataset that never comes: the retrain decision is what counts
            "actions": {
                "retrain": {
                    "template": {"spec": training_job("x", "LogisticRegression")["spec"]},
                    "coolDown": "1h",
                    "maxRetrains": 1,
                }
            },
        },
    }
    apply(kubectl, namespace, watcher)
    # the same checks read from Prometheus, alerting only
    from_prometheus = {
        **watcher,
        "metadata": {"name": "dash-prom"},
        "spec": {
            **{k: v for k, v in watcher["spec"].items() if k != "actions"},
            "source": {"prometheusURL": PROMETHEUS},
        },
    }
    apply(kubectl, namespace, from_prometheus)
    # and one whose Prometheus does not answer: the source is what it reads, so it judges nothing
    unreachable = {
        **from_prometheus,
        "metadata": {"name": "dash-nowhere"},
        "spec": {**from_prometheus["spec"], "source": {"prometheusURL": "http://10.244.0.1:1"}},
    }
    apply(kubectl, namespace, unreachable)
    direct = DirectWindow(kubectl, namespace, models["b"]["sha256"], models["a"]["sha256"])
    x, _ = training_data("logistic_regression", 20)
    rows = [[round(float(v), 4) for v in r] for r in x[:300]]
    # +1 standard deviation: values still in every bin. (A shift that leaves the lowest bins without a
    # value in the window, +4, was judged inconclusive, not a drift: the Monitor's window keeps only the
    # buckets that grew, and a feature missing some of its baseline's buckets is left out.)
    load = start_load(kubectl, namespace, "dash", operator_installed["trainer"], rows, shift={SHIFTED: 1.0})
    direct.start()
    try:
        wait_for(
            lambda: status(kubectl, "monitor", "dash", namespace).get("retrains") == 1,
            180,
            "a retrain",
            interval=3,
        )
        board = dashboard()
        variables = {
            "namespace": namespace,
            "modeldeployment": "dash",
            "monitor": "dash",
            "__rate_interval": RATE_INTERVAL,
        }

        seen: dict[str, list[Obj]] = {}

        def every_panel_has_data() -> bool:
            for title, expr in panel_queries(board):
                seen[title] = api("/api/v1/query", query=substitute(expr, variables))["result"]
            return all(seen.values())

        try:
            wait_for(every_panel_has_data, 120, "data for every panel", interval=5)
        except AssertionError:
            targets = api("/api/v1/targets", state="active")["activeTargets"]
            pytest.fail(
                f"no data for {[t for t, r in seen.items() if not r]}\nresults: {json.dumps(seen)[:3000]}\n"
                f"targets: {json.dumps([(t['labels'], t['health'], t['lastError']) for t in targets])[:3000]}"
            )
        by_title = seen
        print(json.dumps(by_title, indent=1)[:6000])

        # what the panels show is what happened
        tracks = {s["metric"]["track"] for s in by_title["Traffic"] if float(s["value"][1]) > 0}
        assert tracks == {"stable", "canary"}, by_title["Traffic"]
        serving = {s["metric"]["sha256"] for s in by_title["Canary: serving pods by model"]}
        assert serving == {models["a"]["sha256"], models["b"]["sha256"]}, serving
        rollouts = {s["metric"]["reason"]: float(s["value"][1]) for s in by_title["Rollouts"]}
        assert rollouts["CanaryStarted"] >= 1 and rollouts["RolledBack"] == 0, rollouts
        retrains = {s["metric"]["reason"]: float(s["value"][1]) for s in by_title["Retrains"]}
        assert retrains["Retrain"] == 1, retrains
        drift = {s["metric"]["feature"]: float(s["value"][1]) for s in by_title["Drift per feature"]}
        assert max(drift, key=lambda f: drift[f]) == features[SHIFTED], drift
        errors = [float(s["value"][1]) for s in by_title["Errors (5xx share)"]]
        assert errors and all(e == 0 for e in errors), by_title["Errors (5xx share)"]

        # the template variables list this namespace's objects
        for var in board["templating"]["list"]:
            if var["type"] != "query":
                continue
            selector, label = substitute(var["query"]["query"], variables)[len("label_values(") : -1].rsplit(
                ",", 1
            )
            values = api(f"/api/v1/label/{label.strip()}/values", **{"match[]": selector})
            wanted = namespace if var["name"] == "namespace" else "dash"
            assert wanted in values, (var["name"], values)

        # the alerting rules (loaded from the chart's file) see the same series and labels
        def alerts() -> dict[str, str] | None:
            found = {
                a["labels"]["alertname"]: a["state"]
                for a in api("/api/v1/alerts")["alerts"]
                if a["labels"].get("namespace") == namespace
            }
            return found if {"KubeloopMonitorRetrained", "KubeloopInputDrift"} <= set(found) else None

        fired = wait_for(alerts, 60, "the retrain and drift alerts", interval=5)
        assert fired["KubeloopMonitorRetrained"] == "firing", fired
        assert fired["KubeloopInputDrift"] in ("pending", "firing"), fired  # for: 5m
        assert "KubeloopModelErrorRateHigh" not in fired and "KubeloopModelRolledBack" not in fired, fired

        # Prometheus and direct scraping, same traffic, same verdicts: the two Monitors...
        def drifted() -> Obj | None:
            seen = {
                n: {c["type"]: c for c in status(kubectl, "monitor", n, namespace).get("conditions") or []}
                for n in ("dash", "dash-prom")
            }
            return seen if all(s.get("Drifted", {}).get("status") == "True" for s in seen.values()) else None

        both = wait_for(drifted, 120, "both Monitors to find the drift", interval=5)
        by_source = {n: status(kubectl, "monitor", n, namespace) for n in ("dash", "dash-prom")}
        for name, got in by_source.items():
            assert got["features"][0]["feature"] == features[SHIFTED], (name, got["features"][:3])
            assert both[name]["SLOViolated"]["status"] == "False", (name, both[name]["SLOViolated"])
            assert both[name]["Ready"]["status"] == "True", (name, both[name]["Ready"])
        nowhere = {c["type"]: c for c in status(kubectl, "monitor", "dash-nowhere", namespace)["conditions"]}
        assert nowhere["Ready"]["status"] == "False", nowhere
        assert nowhere["Ready"]["reason"] == "MetricsUnavailable", nowhere
        assert nowhere["Drifted"]["status"] == "Unknown", nowhere
        failed = {
            n: {f["feature"] for f in got["features"] if f["verdict"] == "fail"}
            for n, got in by_source.items()
        }
        assert (
            failed["dash"] == failed["dash-prom"] or features[SHIFTED] in failed["dash"] & failed["dash-prom"]
        ), failed

        # ... and the canary's analysis, from Prometheus, against this test's own scrapes of its pods
        def judged() -> Obj | None:
            now = status(kubectl, "modeldeployment", "dash", namespace)["canary"]
            checks = now.get("checks") or []
            return now if checks and all(c["verdict"] != "inconclusive" for c in checks) else None

        wait_for(judged, 120, "the canary's checks from Prometheus to have enough requests", interval=3)
        time.sleep(6)  # one more round of the test's own scrapes after the operator's last look
        direct.stop()
        live = status(kubectl, "modeldeployment", "dash", namespace)["canary"]
        from_prom = {c["name"]: c for c in live["checks"]}
        # the test's window at the moment the operator last computed its checks
        at, checks = direct.checks_at(canary.parse_time(live["lastCheckTime"]))
        mine = {c.name: c for c in checks}
        print("the canary's status:", json.dumps(live), f"scraped by the test at {at}:", mine)
        assert set(from_prom) == set(mine) == {"errorRate", "latencyP99", "predictionDistance"}
        for name, check in mine.items():
            assert from_prom[name]["verdict"] == check.verdict == "pass", (name, from_prom[name], check)
            # The same requests but for the ends: read from Prometheus the window starts up to one step
            # (canary.SCRAPE_SECONDS) late and ends up to one scrape interval (5 s here) early.
            lasted = (at - canary.parse_time(live["windowStartTime"])).total_seconds()
            slack = check.samples / max(lasted, 1.0) * (canary.SCRAPE_SECONDS + 5) + 20
            assert abs(check.samples - from_prom[name]["samples"]) <= slack, (name, from_prom, check, slack)
    finally:
        direct.stop()
        stop_load(kubectl, namespace, load)


class DirectWindow:
    """The canary's analysis window as the operator computes it by scraping, run by this test from the
    host (the pod IPs are on the bridge), beside the operator's reading of Prometheus."""

    def __init__(self, kubectl: Kubectl, namespace: str, canary_sha: str, stable_sha: str) -> None:
        self.kubectl, self.namespace = kubectl, namespace
        self.shas = {CANARY: canary_sha, STABLE: stable_sha}
        self.memory: dict[str, Any] = {}
        self.history: list[tuple[datetime.datetime, list[Any]]] = []  # (when, the checks then)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def run(self) -> None:
        started = status(self.kubectl, "modeldeployment", "dash", self.namespace)["canary"]["windowStartTime"]
        window_start = canary.parse_time(started)
        key = (self.shas[CANARY], 0, started)
        while not self.done.wait(3):
            pods = json.loads(
                self.kubectl(
                    "get",
                    "pods",
                    "-n",
                    self.namespace,
                    "-l",
                    "kubeloop.io/modeldeployment=dash",
                    "-o",
                    "json",
                ).stdout
            )["items"]
            state = canary.observe_window(
                self.memory,
                key,
                window_start,
                canary.server_pods(pods, CANARY, self.shas[CANARY]),
                canary.server_pods(pods, STABLE, self.shas[STABLE]),
            )
            checks = canary.run_checks(Analysis.model_validate(ANALYSIS), state)
            self.history.append((datetime.datetime.now(datetime.UTC), checks))

    def stop(self) -> None:
        self.done.set()
        if self.thread.is_alive():
            self.thread.join(timeout=30)

    def checks_at(self, moment: datetime.datetime) -> tuple[datetime.datetime, list[Any]]:
        """The checks of the round nearest ``moment``."""
        assert self.history, "the test's own scrapes saw no pod"
        return min(self.history, key=lambda h: abs((h[0] - moment).total_seconds()))
