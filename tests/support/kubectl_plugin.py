"""`kubectl kubeloop ...` as a user runs it: the pinned kubectl, finding the plugin on PATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support.cluster import kubectl_binary

# The venv the tests run in holds the console script kubectl-kubeloop, where `pip install` puts it.
VENV_BIN = Path(sys.executable).parent


def plugin(
    *args: str, kubeconfig: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`kubectl kubeloop <args> [--kubeconfig <kubeconfig>]`; the environment's KUBECONFIG otherwise."""
    flags = ["--kubeconfig", str(kubeconfig)] if kubeconfig else []
    return subprocess.run(
        [kubectl_binary(), "kubeloop", *args, *flags],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})},
    )
