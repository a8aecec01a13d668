"""The chart's alerting rules and Grafana dashboard, checked by Prometheus's own tools: the rules file is
valid, its unit tests (tests/prometheus/rules_test.yaml) fire and hold back every alert, the chart renders
exactly that file and that dashboard, and every dashboard query parses. No API server needed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from support.cluster import binary
from support.prometheus import (
    DASHBOARD,
    REPO,
    RULES,
    dashboard,
    panel_queries,
    prometheus_bin_dir,
    substitute,
)

RULES_TEST = REPO / "tests" / "prometheus" / "rules_test.yaml"
CHART = REPO / "helm" / "kubeloop"
# What a dashboard query gets from Grafana in place of its variables (any valid value will do for parsing).
VARIABLES = {"namespace": "ml", "modeldeployment": ".*", "monitor": ".*", "__rate_interval": "1m"}


def promtool(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(prometheus_bin_dir() / "promtool"), *map(str, args)], cwd=cwd, capture_output=True, text=True
    )


def alert_names(groups: dict[str, Any]) -> list[str]:
    return [rule["alert"] for group in groups["groups"] for rule in group["rules"] if "alert" in rule]


def render(*sets: str) -> list[dict[str, Any]]:
    args = [binary("helm"), "template", "kubeloop", str(CHART), "--kube-version", "1.34.0"]
    for s in sets:
        args += ["--set", s]
    res = subprocess.run(args, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return [doc for doc in yaml.safe_load_all(res.stdout) if doc]


def test_rules_file_is_valid() -> None:
    res = promtool("check", "rules", RULES)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(alert_names(yaml.safe_load(RULES.read_text())))} rules found" in res.stdout


def test_every_alert_fires_and_holds_back_in_the_unit_tests() -> None:
    """promtool's unit tests pass, and each alert has a case where it fires and one where it must not."""
    res = promtool("test", "rules", RULES_TEST.name, cwd=RULES_TEST.parent)
    assert res.returncode == 0, res.stdout + res.stderr
    cases = [
        case
        for test in yaml.safe_load(RULES_TEST.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    for alert in alert_names(yaml.safe_load(RULES.read_text())):
        mine = [case for case in cases if case["alertname"] == alert]
        assert any(case["exp_alerts"] for case in mine), f"{alert} is never expected to fire"
        # promtool matches the alerts exactly, so a firing case also proves the series beside it stay silent
        assert any(not case["exp_alerts"] for case in mine), f"{alert} is never expected to stay silent"


def test_chart_renders_the_rules_and_the_dashboard_only_when_asked(tmp_path: Path) -> None:
    kinds = {doc["kind"] for doc in render()}
    assert not kinds & {"PrometheusRule", "PodMonitor"}, "the monitoring.coreos.com CRDs need not exist"
    assert not [d for d in render() if d["kind"] == "ConfigMap"], "no dashboard unless asked"

    docs = render(
        "monitoring.rules.enabled=true",
        "monitoring.podMonitor.enabled=true",
        "monitoring.dashboard.enabled=true",
        "monitoring.labels.release=kube-prometheus-stack",
    )
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    rendered = tmp_path / "rendered-rules.yaml"
    rendered.write_text(yaml.safe_dump(rule["spec"]))
    res = promtool("check", "rules", rendered)
    assert res.returncode == 0, res.stdout + res.stderr

    monitors = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "PodMonitor"}
    servers, operator = monitors["kubeloop-servers"], monitors["kubeloop-operator"]
    assert servers["namespaceSelector"] == {"any": True}
    assert servers["selector"]["matchLabels"]["app.kubernetes.io/component"] == "server"
    assert {r["targetLabel"] for r in servers["podMetricsEndpoints"][0]["relabelings"]} == {
        "modeldeployment",
        "track",
    }
    assert operator["podMetricsEndpoints"][0] == {
        "port": "metrics",
        "path": "/metrics",
        "interval": "15s",
        "honorLabels": True,
    }

    (board,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(board["data"]["kubeloop-models.json"]) == json.loads(DASHBOARD.read_text())


def test_dashboard_has_the_panels_and_every_query_parses() -> None:
    board = dashboard()
    titles = " | ".join(p["title"] for p in board["panels"]).lower()
    for topic in ("traffic", "latency p99", "errors", "drift per feature", "canary", "rollouts", "retrains"):
        assert topic in titles, f"no {topic} panel in {titles}"
    queries = panel_queries(board)
    assert len(queries) == len(board["panels"])
    variables = [v["name"] for v in board["templating"]["list"]]
    for title, expr in queries:
        res = promtool("--experimental", "promql", "format", substitute(expr, VARIABLES))
        assert res.returncode == 0, f"{title}: {res.stderr}"
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            query = substitute(var["query"]["query"], VARIABLES)
            assert query.startswith("label_values(") and query.endswith(")")
            res = promtool(
                "--experimental", "promql", "format", query[len("label_values(") : -1].rsplit(",", 1)[0]
            )
            assert res.returncode == 0, f"variable {var['name']}: {res.stderr}"
    assert set(variables) >= {"datasource", "namespace", "modeldeployment", "monitor"}


def test_the_local_clusters_prometheus_config_is_valid_and_loads_the_rules(tmp_path: Path) -> None:
    """cluster/localcluster.py's scrape config (written when it starts Prometheus) passes promtool, with
    the chart's rules file in it."""
    sys.path.insert(0, str(REPO / "cluster"))
    try:
        import localcluster
    finally:
        sys.path.remove(str(REPO / "cluster"))
    kubeconfig = tmp_path / "prometheus.kubeconfig"
    kubeconfig.write_text("{}")
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps(localcluster.prometheus_config(kubeconfig)))
    res = promtool("check", "config", config)
    assert res.returncode == 0, res.stdout + res.stderr
    found = f"SUCCESS: {len(alert_names(yaml.safe_load(RULES.read_text())))} rules found"
    assert f"Checking {RULES}" in res.stdout and found in res.stdout
