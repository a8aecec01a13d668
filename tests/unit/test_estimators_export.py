"""Every estimator on the allow-list trains, exports to ONNX and agrees with scikit-learn: the list
promises it ("an allowed estimator always yields an ONNX model"), and a converter that cannot take one
must fail here rather than in a user's TrainingJob (HistGradientBoosting did, with ExportFailed)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris

from kubeloop.runtime import estimators, train


@pytest.mark.parametrize("name", sorted(estimators.ALLOWED))
def test_an_allowed_estimator_exports_an_onnx_model_that_agrees(name: str) -> None:
    task = estimators.task_of(name)
    x, y = (load_iris if task == "classification" else load_diabetes)(return_X_y=True)
    x = x.astype(np.float32)
    model = estimators.build(name, {})
    model.fit(x, y)
    onnx_bytes = train.export_onnx(model, x.shape[1], task)
    report = train.parity(task, model, onnx_bytes, x[::5], {})  # raises where the two disagree
    assert report["rows"] == len(x[::5]), report
