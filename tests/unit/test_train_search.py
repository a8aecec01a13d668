"""kubeloop.search: trials expanded deterministically from the TrainingJob's search block."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kubeloop.search import SearchSpecError, best_trial, expand_trials

GRID = [{"name": "n_estimators", "values": [10, 50]}, {"name": "max_depth", "values": [2, 4, None]}]


def test_grid_is_every_combination_in_a_stable_order() -> None:
    trials = expand_trials("grid", GRID, max_trials=10)
    assert len(trials) == 6
    assert trials[0] == {"max_depth": 2, "n_estimators": 10}
    assert expand_trials("grid", list(reversed(GRID)), max_trials=10) == trials  # order written is irrelevant


def test_grid_larger_than_max_trials_is_a_seeded_sample() -> None:
    a = expand_trials("grid", GRID, max_trials=4, seed=7)
    assert len(a) == 4 and len({str(t) for t in a}) == 4
    assert a == expand_trials("grid", GRID, max_trials=4, seed=7)
    assert all(t in expand_trials("grid", GRID, max_trials=10) for t in a)


def test_random_search_is_reproducible_and_respects_ranges() -> None:
    params = [
        {"name": "C", "min": 0.001, "max": 100.0, "log": True},
        {"name": "max_iter", "min": 100, "max": 500, "integer": True},
        {"name": "solver", "values": ["lbfgs", "saga"]},
    ]
    a = expand_trials("random", params, max_trials=6, seed=42)
    assert a == expand_trials("random", params, max_trials=6, seed=42)
    assert a != expand_trials("random", params, max_trials=6, seed=43)
    assert len(a) == 6
    for t in a:
        assert 0.001 <= t["C"] <= 100 and isinstance(t["max_iter"], int) and 100 <= t["max_iter"] <= 500


def test_random_search_over_a_small_space_stops_without_duplicates() -> None:
    trials = expand_trials("random", [{"name": "k", "values": [1, 2, 3]}], max_trials=10)
    assert sorted(t["k"] for t in trials) == [1, 2, 3]


@pytest.mark.parametrize(
    ("strategy", "params", "message"),
    [
        ("grid", [{"name": "C", "min": 0.1, "max": 1.0}], "grid search needs a list of values"),
        ("bayes", GRID, "must be 'grid' or 'random'"),
        ("random", [{"name": "C", "min": 0.0, "max": 1.0, "log": True}], "log-scale range needs min > 0"),
        ("random", [], "is empty"),
    ],
)
def test_bad_search_blocks_say_what_to_fix(strategy: str, params: list, message: str) -> None:
    with pytest.raises(SearchSpecError, match=message):
        expand_trials(strategy, params, max_trials=3)


def test_best_trial_by_objective() -> None:
    trials = [
        {"metrics": {"rmse": 3.0}},
        {"metrics": {"rmse": 2.0}},
        {"metrics": {}},
        {"metrics": {"rmse": 2.0}},
    ]
    assert best_trial(trials, "rmse", maximize=False) == 1
    assert best_trial(trials, "rmse", maximize=True) == 0
    assert best_trial([{"metrics": {}}], "accuracy") is None


def test_search_module_imports_nothing_outside_the_standard_library() -> None:
    # The controller imports it; the operator image has no numpy or scikit-learn.
    code = (
        "import sys, kubeloop.search; bad = [m for m in sys.modules if m.split('.')[0] in "
        "('numpy', 'sklearn', 'pandas')]; print(bad); sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
