"""Credentials of a ServiceAccount for a process run outside the cluster (the operator in-process)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml


def token_kubeconfig(kubectl: Any, sa: str, namespace: str, path: Path) -> Path:
    """A kubeconfig of the test cluster whose only credential is a token of the ServiceAccount."""
    config = json.loads(kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    token = kubectl("create", "token", sa, "-n", namespace, "--duration=2h").stdout.strip()
    config["users"] = [{"name": sa, "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = sa
    path.write_text(yaml.safe_dump(config))
    return path
