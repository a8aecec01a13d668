"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest

from kubeloop.runtime.serve.examples import build_model_dir
from kubeloop.runtime.serve.model import Model


@pytest.fixture(scope="session")
def model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    """A real logistic regression (20 features, a training baseline) loaded as the server loads it."""
    directory = tmp_path_factory.mktemp("lr")
    build_model_dir(directory, "logistic_regression")
    return Model(directory)
