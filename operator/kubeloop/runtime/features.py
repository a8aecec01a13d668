"""Categorical features: the scikit-learn pipeline that encodes them, and its ONNX graph's raw inputs.

A model with a categorical (string) feature is a Pipeline whose first step is a ColumnTransformer: numeric
columns pass through (median-imputed when the training rows have gaps), string columns are one-hot encoded.
One-hot rather than ordinal even for trees: one encoding every allowed estimator handles correctly (an
ordinal code would make a linear model read an order into the categories), and unknown categories have
one meaning for all of them — all zeros, no category. skl2onnx exports the whole pipeline as one graph
whose inputs are the raw columns, one per feature in feature order, named like it: ``tensor(float)
[N, 1]`` for a numeric or bool feature, ``tensor(string) [N, 1]`` for a categorical one. So a client sends
the values it has and the server feeds them by the graph's own signature, with no code per model.

A missing category is the empty string: ONNX strings have no null.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

UNKNOWN_POLICIES = ("ignore", "error")
MISSING = ""  # a null category, in training and in requests
# Rows added to the parity check with a category training never saw (one per categorical feature).
UNSEEN = "\x00kubeloop-unseen"


def categorical(frame: pd.DataFrame, doc: dict[str, Any], features: list[str]) -> list[str]:
    """The features the baseline counts by category whose values are not numbers (a bool is 0 or 1)."""
    return [
        f
        for f in features
        if doc["features"].get(f, {}).get("kind") != "numeric" and not pd.api.types.is_numeric_dtype(frame[f])
    ]


def table(frame: pd.DataFrame, features: list[str], categories: list[str]) -> pd.DataFrame:
    """The feature columns as both models see them: numbers as float32 (ONNX runs in float32), categories
    as Python strings, a missing one as ``MISSING``."""
    out = {}
    for f in features:
        column = frame[f]
        if f in categories:
            out[f] = column.astype(object).where(column.notna(), MISSING).map(str).astype(object)
        else:
            out[f] = column.astype("float64").to_numpy().astype(np.float32)
    return pd.DataFrame(out, index=frame.index)


def pipeline(estimator: Any, x: pd.DataFrame, categories: list[str], unknown: str) -> Any:
    """``estimator`` behind the encoding of ``x``'s columns; ``unknown`` is ignore (all-zero one-hot) or
    error (the model refuses a row with a category training did not see)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    numeric = [c for c in x.columns if c not in categories]
    steps: list[tuple[str, Any, list[str]]] = []
    if numeric:
        gaps = bool(x[numeric].isna().to_numpy().any())
        # Most estimators refuse NaN; the imputer is part of the graph, so serving does the same.
        steps.append(("numeric", SimpleImputer(strategy="median") if gaps else "passthrough", numeric))
    encoder = OneHotEncoder(handle_unknown=unknown, sparse_output=False, dtype=np.float32)
    steps.append(("categorical", encoder, categories))
    return Pipeline([("features", ColumnTransformer(steps)), ("model", estimator)])


def initial_types(x: pd.DataFrame, categories: list[str]) -> list[tuple[str, Any]]:
    """The graph's inputs: one per feature, in feature order, float or string."""
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    return [
        (c, StringTensorType([None, 1]) if c in categories else FloatTensorType([None, 1])) for c in x.columns
    ]


def feed(x: pd.DataFrame, categories: list[str]) -> dict[str, np.ndarray]:
    """ONNX Runtime's inputs for the rows of ``x``."""
    return {
        c: x[[c]].to_numpy(dtype=object if c in categories else np.float32).reshape(-1, 1) for c in x.columns
    }


def with_unseen(x: pd.DataFrame, categories: list[str], rows: int = 5) -> pd.DataFrame:
    """Held-out rows again, each categorical feature in turn set to a category training never saw, so that
    parity covers what the unknown-category policy does (ignore only: with error both models refuse)."""
    head = x.head(rows)
    parts = [x]
    for c in categories:
        changed = head.copy()
        changed[c] = UNSEEN
        parts.append(changed)
    return pd.concat(parts, ignore_index=True)


def categories_of(x: pd.DataFrame) -> list[str]:
    """The categorical columns of a ``table``: its string ones."""
    return [c for c in x.columns if x[c].dtype == object]


def signature(x: pd.DataFrame, categories: list[str], model: Any) -> list[dict[str, Any]]:
    """The card's features: name, type and, for a categorical one, the categories the fitted ``pipeline``
    knows (the server refuses others when the policy is error)."""
    encoder = model.named_steps["features"].named_transformers_["categorical"]
    known = {c: [str(v) for v in cats] for c, cats in zip(categories, encoder.categories_, strict=True)}
    return [
        {"name": c, "type": "string", "categories": known[c]}
        if c in categories
        else {"name": c, "type": "float"}
        for c in x.columns
    ]


def graph_inputs(described: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The card's ``inputSignature.inputs``: the graph's, one [rows, 1] column per feature."""
    return [
        {"name": f["name"], "type": "string" if f["type"] == "string" else "float32", "shape": [None, 1]}
        for f in described
    ]


def encoded_names(model: Any) -> list[str]:
    """The columns the estimator sees (``city=Paris`` for a one-hot column), for feature importances."""
    names = model.named_steps["features"].get_feature_names_out()
    return [str(n).split("__", 1)[1] for n in names]
