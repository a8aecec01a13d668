"""Hyperparameter search: expand a TrainingJob's ``search`` into the parameter sets of its trials.

Pure Python with no third-party imports, because both the controller (which creates one pod per trial and
must know the trials up front) and the runtime use it, and the operator image carries neither numpy nor
scikit-learn. Deterministic: the same parameters, strategy, maxTrials and seed give the same trials.

Parameters take the TrainingJob's ``search.parameters`` shape: a list of ``{"name": .., "values": [..]}`` or
``{"name": .., "min": a, "max": b, "integer": bool, "log": bool}`` (ranges: random search only).
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

Params = dict[str, Any]


class SearchSpecError(ValueError):
    """The search block cannot be expanded; the message says what to fix."""


def expand_trials(
    strategy: str, parameters: Sequence[Mapping[str, Any]], max_trials: int, seed: int = 0
) -> list[Params]:
    """Parameter sets of the trials, in trial order (trial ``i`` gets element ``i``)."""
    if max_trials < 1:
        raise SearchSpecError(f"search.maxTrials must be at least 1, got {max_trials}")
    if not parameters:
        raise SearchSpecError("search.parameters is empty: give at least one parameter to search over")
    specs = {str(p.get("name", "")): p for p in parameters}
    if "" in specs or len(specs) != len(parameters):
        raise SearchSpecError("every search parameter needs a distinct name")
    names = sorted(specs)  # sorted so the order in which the user wrote them does not matter
    if strategy == "grid":
        axes = [_grid_values(n, specs[n]) for n in names]
        grid = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes)]
        if len(grid) <= max_trials:
            return grid
        # More grid points than trials: a seeded sample, kept in grid order so trial numbers read naturally.
        picked = sorted(random.Random(seed).sample(range(len(grid)), max_trials))
        return [grid[i] for i in picked]
    if strategy == "random":
        rng = random.Random(seed)
        trials: list[Params] = []
        seen: set[str] = set()
        # Discrete spaces can be smaller than maxTrials; stop after enough attempts rather than loop.
        for _ in range(max_trials * 20):
            if len(trials) == max_trials:
                break
            candidate = {n: _sample(n, specs[n], rng) for n in names}
            key = json.dumps(candidate, sort_keys=True)
            if key not in seen:
                seen.add(key)
                trials.append(candidate)
        return trials
    raise SearchSpecError(f"search.strategy must be 'grid' or 'random', got {strategy!r}")


def best_trial(trials: Sequence[Mapping[str, Any]], metric: str, maximize: bool = True) -> int | None:
    """Index of the best trial by ``trial["metrics"][metric]``; trials without that metric are skipped.

    Ties go to the lower index, so a rerun picks the same trial.
    """
    best: int | None = None
    best_value = 0.0
    for i, trial in enumerate(trials):
        value = (trial.get("metrics") or {}).get(metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if best is None or (value > best_value if maximize else value < best_value):
            best, best_value = i, float(value)
    return best


def _grid_values(name: str, spec: Mapping[str, Any]) -> list[Any]:
    values = spec.get("values")
    if values is None:
        raise SearchSpecError(
            f"search parameter {name!r}: grid search needs a list of values; a range (min, max) needs "
            "strategy random"
        )
    if not isinstance(values, list) or not values:
        raise SearchSpecError(f"search parameter {name!r}: values must be a non-empty list")
    return values


def _sample(name: str, spec: Mapping[str, Any], rng: random.Random) -> Any:
    values = spec.get("values")
    if values is not None:
        if not isinstance(values, list) or not values:
            raise SearchSpecError(f"search parameter {name!r}: values must be a non-empty list")
        return values[rng.randrange(len(values))]
    lo, hi = spec.get("min"), spec.get("max")
    if not isinstance(lo, int | float) or not isinstance(hi, int | float) or lo > hi:
        raise SearchSpecError(
            f"search parameter {name!r}: give values, or min and max numbers with min <= max"
        )
    log = bool(spec.get("log", False))
    if log and lo <= 0:
        raise SearchSpecError(f"search parameter {name!r}: a log-scale range needs min > 0")
    draw = math.exp(rng.uniform(math.log(lo), math.log(hi))) if log else rng.uniform(lo, hi)
    if spec.get("integer", False):
        return min(math.floor(hi), max(math.ceil(lo), round(draw)))
    return float(f"{draw:.12g}")  # 0.30000000000000004 would leak into names and status
