"""Prometheus and promtool for the tests: the binaries built by cluster/build-binaries.sh, a Prometheus run
beside the local cluster, and the dashboard's queries with their template variables filled in."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "helm" / "kubeloop" / "files" / "rules.yaml"
DASHBOARD = REPO / "helm" / "kubeloop" / "files" / "dashboard.json"


def prometheus_bin_dir() -> Path:
    """The directory of prometheus and promtool (cached; built from the Go module proxy the first time,
    minutes on 2 cores). Skips the test when they cannot be built, saying why (no Go, no proxy)."""
    res = subprocess.run(
        [str(REPO / "cluster" / "build-binaries.sh"), "prometheus"], capture_output=True, text=True
    )
    if res.returncode != 0:
        pytest.skip(f"prometheus and promtool cannot be built: {res.stderr.strip()[-600:]}")
    return Path(res.stdout.strip().splitlines()[-1])


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panel_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL expression) of every query target of every panel."""
    return [
        (panel["title"], target["expr"])
        for panel in board["panels"]
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Grafana's template variables in ``expr`` replaced (``$name`` and ``${name}``), longest names first
    so that ``$__rate_interval`` is not read as ``$__rate``. A variable left over is an error."""
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", variables[name]).replace("$" + name, variables[name])
    left = re.findall(r"\$\{?\w+", expr)
    if left:
        raise ValueError(f"template variables without a value: {left} in {expr}")
    return expr
