"""Model directories built in-process from scikit-learn, for the tests and the benchmark.

Needs the ``trainer`` extra (scikit-learn, skl2onnx); the server never imports this module.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
from skl2onnx import to_onnx
from sklearn.base import BaseEstimator
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression

from kubeloop import stats
from kubeloop.contract import BASELINE_FILE, MODEL_FILE, MODEL_MARKER

KINDS = ("random_forest", "logistic_regression", "linear_regression")


def training_data(
    kind: str, n_features: int = 20, rows: int = 2000
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64] | npt.NDArray[np.float64]]:
    if kind == "linear_regression":
        x, y = make_regression(n_samples=rows, n_features=n_features, random_state=0)
    else:
        x, y = make_classification(
            n_samples=rows, n_features=n_features, n_informative=10, n_classes=3, random_state=0
        )
    return x.astype(np.float32), y


def build_model_dir(
    dest: Path,
    kind: str = "random_forest",
    n_features: int = 20,
    classes: list[object] | None = None,
    baseline: bool = True,
    name: str | None = None,
) -> BaseEstimator:
    """Write model.onnx, model-card.json (and baseline.json); return the fitted estimator.

    The RandomForest is the benchmark's: 100 trees, depth 8, 20 features, 3 classes.
    """
    x, y = training_data(kind, n_features)
    estimator: BaseEstimator
    if kind == "random_forest":
        estimator = RandomForestClassifier(n_estimators=100, max_depth=8, random_state=0, n_jobs=1)
    elif kind == "logistic_regression":
        estimator = LogisticRegression(max_iter=1000)
    elif kind == "linear_regression":
        estimator = LinearRegression()
    else:
        raise ValueError(f"unknown kind {kind!r}; one of {KINDS}")
    estimator.fit(x, y)
    options = {id(estimator): {"zipmap": False}} if kind != "linear_regression" else None
    onx = to_onnx(estimator, x[:1], options=options, target_opset={"": 17, "ai.onnx.ml": 3})
    data = onx.SerializeToString()
    dest.mkdir(parents=True, exist_ok=True)
    (dest / MODEL_FILE).write_bytes(data)
    features = [f"f{i}" for i in range(n_features)]
    card: dict[str, object] = {
        "name": name or kind.replace("_", "-"),
        "features": features,
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    if kind == "linear_regression":
        card["task"] = "regression"
    else:
        card.update(task="classification", classes=classes or ["low", "mid", "high"])
    (dest / MODEL_MARKER).write_text(json.dumps(card))
    if baseline:
        doc = {
            "version": 1,
            "rows": len(x),
            "features": {f: stats.numeric_summary(x[:, i]) for i, f in enumerate(features)},
            "target": stats.numeric_summary(np.asarray(y, dtype=np.float64)),
        }
        (dest / BASELINE_FILE).write_text(json.dumps(doc))
    return estimator
