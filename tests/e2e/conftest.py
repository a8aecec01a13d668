"""Fixtures of the end-to-end tests: the operator installed by Helm from the locally built images."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "cluster"))
import demo


@pytest.fixture(scope="session")
def operator_installed(node: Path, images: dict[str, str]) -> dict[str, str]:
    """helm upgrade --install of the chart with the project's images; the image references."""
    os.environ["KUBECONFIG"] = str(node)
    demo.install_operator(images)
    return images
