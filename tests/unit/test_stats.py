"""kubeloop.stats: the baseline shape of docs/contracts.md and drift tests checked against scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from kubeloop import stats


def test_numeric_summary_follows_the_contract() -> None:
    values = np.random.default_rng(0).normal(5.0, 1.0, 1000)
    values[:7] = np.nan
    s = stats.numeric_summary(values)
    assert s["kind"] == "numeric" and s["nulls"] == 7
    assert len(s["edges"]) <= 10 and s["edges"] == sorted(set(s["edges"]))
    assert len(s["counts"]) == len(s["edges"]) + 1 and sum(s["counts"]) == 993
    assert max(s["counts"]) - min(s["counts"]) <= 2  # quantile bins: equal mass
    assert s["min"] == pytest.approx(np.nanmin(values)) and s["std"] == pytest.approx(np.nanstd(values))


def test_bins_are_left_open_right_closed() -> None:
    # bin i is (edges[i-1], edges[i]]: a value equal to an edge belongs to the bin it closes
    assert stats.bin_counts([1.0, 2.0], np.array([0.5, 1.0, 1.5, 2.0, 2.5, np.nan])) == [2, 2, 1]


def test_constant_and_low_cardinality_columns_give_valid_edges() -> None:
    assert stats.numeric_summary(np.full(50, 3.0))["edges"] == []
    s = stats.numeric_summary(np.array([0, 0, 0, 1, 1, 2] * 10, dtype=float))
    assert s["edges"] == sorted(set(s["edges"])) and sum(s["counts"]) == 60


def test_categorical_summary_is_deterministic_and_capped() -> None:
    s = stats.categorical_summary(["b", "a", "b", None, "c", "a", float("nan")])
    assert s == {"kind": "categorical", "categories": ["a", "b", "c"], "counts": [2, 2, 1], "nulls": 2}
    capped = stats.categorical_summary([str(i) for i in range(200)], max_categories=50)
    assert len(capped["categories"]) == 50
    assert stats.category_counts(["a", "b"], ["a", "z", "b", "a", None]) == [2, 1, 1]


def test_psi_is_zero_for_equal_and_grows_with_shift() -> None:
    base = [100, 100, 100, 100]
    assert stats.psi(base, base) == pytest.approx(0.0)
    assert stats.psi(base, [130, 110, 90, 70]) < stats.psi(base, [250, 100, 40, 10])
    with pytest.raises(ValueError, match="empty distribution"):
        stats.psi(base, [0, 0, 0, 0])


def test_js_distance_matches_scipy() -> None:
    from scipy.spatial.distance import jensenshannon

    p, q = [10, 20, 30, 40], [40, 30, 20, 10]
    assert stats.js_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2))


def test_chi2_is_scipys_two_sample_contingency_test() -> None:
    expected, actual = [50, 30, 20], [40, 35, 25]
    stat, p = stats.chi2_test(expected, actual)
    ref = scipy_stats.chi2_contingency(np.array([expected, actual]), correction=False)
    assert stat == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue, rel=1e-6)
    for x, dof in [(0.5, 1), (3.0, 4), (25.0, 9), (80.0, 40)]:
        assert stats.chi2_sf(x, dof) == pytest.approx(scipy_stats.chi2.sf(x, dof), rel=1e-7)


def test_ks_binned_detects_shift_and_not_noise() -> None:
    rng = np.random.default_rng(1)
    edges = stats.quantile_edges(rng.normal(size=5000))
    base = stats.bin_counts(edges, rng.normal(size=5000))
    same = stats.bin_counts(edges, rng.normal(size=2000))
    shifted = stats.bin_counts(edges, rng.normal(0.5, 1, size=2000))
    assert stats.ks_binned(base, same)[1] > 0.05
    d, p = stats.ks_binned(base, shifted)
    assert p < 1e-6 and d > 0.1
    assert stats.kolmogorov_sf(1.36) == pytest.approx(scipy_stats.kstwobign.sf(1.36), abs=1e-6)


def test_multiple_testing_corrections_match_statsmodels_definitions() -> None:
    p = [0.01, 0.04, 0.03, 0.20]
    assert stats.adjust_pvalues(p, "bonferroni") == pytest.approx([0.04, 0.16, 0.12, 0.8])
    assert stats.adjust_pvalues(p, "holm") == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert stats.adjust_pvalues(p, "bh") == pytest.approx([0.04, 0.0533333, 0.0533333, 0.2])
    with pytest.raises(ValueError, match="use none, bonferroni, holm or bh"):
        stats.adjust_pvalues(p, "fdr")
