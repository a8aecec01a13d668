"""The Helm chart is well-formed and the plain install YAML is the chart's current rendering."""

from __future__ import annotations

import subprocess
from pathlib import Path

from support.cluster import binary

REPO = Path(__file__).resolve().parents[2]


def test_helm_lint_passes() -> None:
    res = subprocess.run(
        [binary("helm"), "lint", str(REPO / "helm" / "kubeloop")], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in res.stdout


def test_plain_manifests_are_the_current_rendering_of_the_chart(tmp_path: Path) -> None:
    """`make manifests` leaves manifests/install.yaml unchanged: it is not stale."""
    res = subprocess.run(
        ["make", "-s", "manifests", f"HELM={binary('helm')}"], cwd=REPO, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    diff = subprocess.run(
        ["git", "diff", "--stat", "--", "manifests/install.yaml"], cwd=REPO, capture_output=True, text=True
    )
    assert diff.stdout == "", (
        f"manifests/install.yaml is stale; run `make manifests` and commit it:\n{diff.stdout}"
    )
