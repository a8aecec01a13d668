"""The estimator allow-list: names a TrainingJob may use, each mapped to one scikit-learn class.

A spec string only ever selects a key of this table; nothing is imported from a name a user wrote. Every
entry is one skl2onnx can convert, so an allowed estimator always yields an ONNX model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # scikit-learn is imported only when an estimator is built
    from sklearn.base import BaseEstimator

# name -> (module, class, task). The module/class pairs are literals of this file, never user input.
ALLOWED: dict[str, tuple[str, str, str]] = {
    "LogisticRegression": ("sklearn.linear_model", "LogisticRegression", "classification"),
    "RidgeClassifier": ("sklearn.linear_model", "RidgeClassifier", "classification"),
    "SGDClassifier": ("sklearn.linear_model", "SGDClassifier", "classification"),
    "DecisionTreeClassifier": ("sklearn.tree", "DecisionTreeClassifier", "classification"),
    "RandomForestClassifier": ("sklearn.ensemble", "RandomForestClassifier", "classification"),
    "ExtraTreesClassifier": ("sklearn.ensemble", "ExtraTreesClassifier", "classification"),
    "GradientBoostingClassifier": ("sklearn.ensemble", "GradientBoostingClassifier", "classification"),
    "HistGradientBoostingClassifier": (
        "sklearn.ensemble",
        "HistGradientBoostingClassifier",
        "classification",
    ),
    "KNeighborsClassifier": ("sklearn.neighbors", "KNeighborsClassifier", "classification"),
    "GaussianNB": ("sklearn.naive_bayes", "GaussianNB", "classification"),
    "SVC": ("sklearn.svm", "SVC", "classification"),
    "MLPClassifier": ("sklearn.neural_network", "MLPClassifier", "classification"),
    "LinearRegression": ("sklearn.linear_model", "LinearRegression", "regression"),
    "Ridge": ("sklearn.linear_model", "Ridge", "regression"),
    "Lasso": ("sklearn.linear_model", "Lasso", "regression"),
    "ElasticNet": ("sklearn.linear_model", "ElasticNet", "regression"),
    "DecisionTreeRegressor": ("sklearn.tree", "DecisionTreeRegressor", "regression"),
    "RandomForestRegressor": ("sklearn.ensemble", "RandomForestRegressor", "regression"),
    "ExtraTreesRegressor": ("sklearn.ensemble", "ExtraTreesRegressor", "regression"),
    "GradientBoostingRegressor": ("sklearn.ensemble", "GradientBoostingRegressor", "regression"),
    "HistGradientBoostingRegressor": ("sklearn.ensemble", "HistGradientBoostingRegressor", "regression"),
    "KNeighborsRegressor": ("sklearn.neighbors", "KNeighborsRegressor", "regression"),
    "SVR": ("sklearn.svm", "SVR", "regression"),
    "MLPRegressor": ("sklearn.neural_network", "MLPRegressor", "regression"),
}

# Accept the full dotted name a person copies from scikit-learn's docs, but only for listed classes.
_BY_DOTTED = {f"{mod}.{cls}": name for name, (mod, cls, _) in ALLOWED.items()}
_BY_DOTTED.update({f"sklearn.{mod.split('.')[1]}.{cls}": name for name, (mod, cls, _) in ALLOWED.items()})


class NotAllowedError(ValueError):
    """The estimator is not on the allow-list or its parameters are not its own."""


def canonical_name(name: str) -> str:
    if name in ALLOWED:
        return name
    if name in _BY_DOTTED:
        return _BY_DOTTED[name]
    raise NotAllowedError(
        f"estimator {name!r} is not on the allow-list; use one of: {', '.join(sorted(ALLOWED))}"
    )


def task_of(name: str) -> str:
    return ALLOWED[canonical_name(name)][2]


def build(name: str, params: dict[str, Any] | None = None) -> BaseEstimator:
    """A new, unfitted estimator; unknown parameter names are refused with the valid ones listed."""
    module, cls_name, _ = ALLOWED[canonical_name(name)]
    cls = getattr(importlib.import_module(module), cls_name)
    valid = set(cls().get_params())
    unknown = sorted(set(params or {}) - valid)
    if unknown:
        raise NotAllowedError(
            f"{cls_name} has no parameter {', '.join(map(repr, unknown))}; valid: {', '.join(sorted(valid))}"
        )
    try:
        return cls(**(params or {}))
    except (TypeError, ValueError) as exc:
        raise NotAllowedError(f"{cls_name}: bad params: {exc}") from None
