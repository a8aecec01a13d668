"""A table with string columns, ingested and trained by the runtime in-process, and the scikit-learn
pipeline of the same training rows beside it: what the served ONNX graph must agree with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kubeloop.runtime import features, ingest, train

CITIES = ["Paris", "Lyon", "Nice", "Lille", "Brest"]


def frame(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    """Two numeric columns, two string ones (``size`` with gaps), a label that depends on all but ``b``."""
    rng = np.random.default_rng(seed)
    city = rng.choice(CITIES, rows)
    a = rng.normal(size=rows)
    size = rng.choice(np.array(["S", "M", "L", None], dtype=object), rows)
    score = a + np.where(city == "Paris", 1.5, 0.0) - np.where(city == "Brest", 1.0, 0.0) + (size == "L")
    return pd.DataFrame(
        {
            "a": a.round(3),
            "city": city,
            "b": rng.normal(size=rows).round(3),
            "size": size,
            "label": np.where(score > 0.5, "yes", "no"),
        }
    )


@dataclass
class Trained:
    model_dir: Path
    sha256: str
    result: dict[str, Any]
    pipeline: Any  # the scikit-learn pipeline fitted in-process on the trainer's training rows
    x_test: pd.DataFrame


def train_categorical(
    tmp: Path, unknown: str = "ignore", estimator: str = "LogisticRegression", target: str = "label"
) -> Trained:
    """Ingest ``frame()`` from a CSV and train on it with the runtime; fit the reference pipeline."""
    data = tmp / "data"
    data.mkdir(parents=True, exist_ok=True)
    frame().to_csv(data / "d.csv", index=False)
    store = f"file://{tmp / 'store'}"
    ds = ingest.ingest(
        {
            "namespace": "ns",
            "name": "cities",
            "storeURI": store,
            "source": {"configMapRef": {"name": "c", "key": "d.csv"}},
            "configMapPath": str(data),
            "schema": {"target": target},
        }
    )
    config = {
        "namespace": "ns",
        "name": "cities-tj",
        "storeURI": store,
        "dataset": {"name": "cities", "version": ds["version"]},
        "model": {"estimator": estimator, "params": {"random_state": 0} if "Forest" in estimator else {}},
        "categorical": {"unknown": unknown},
    }
    result = train.train(config)
    # The trainer's own steps, again: its rows, its split, its pipeline, fitted here.
    snapshot, doc, _ = train.load_dataset(config)
    x, y, _, _ = train.prepare(snapshot, doc, config)
    assert isinstance(x, pd.DataFrame)
    from sklearn.model_selection import train_test_split

    stratify = y if result["task"] == "classification" else None
    x_train, x_test, y_train, _ = train_test_split(x, y, test_size=0.2, random_state=42, stratify=stratify)
    from kubeloop.runtime import estimators

    est = estimators.build(estimator, config["model"]["params"])  # type: ignore[index]
    if "random_state" not in config["model"]["params"]:  # type: ignore[index]
        est.set_params(random_state=42)  # as the trainer does
    pipeline = features.pipeline(est, x, features.categories_of(x), unknown).fit(x_train, y_train)
    sha = result["model"]["sha256"]
    return Trained(tmp / "store" / "models" / sha, sha, result, pipeline, x_test)
