"""Drift: each method against SciPy on known distributions, and the verdict table of judge_drift."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import special
from scipy import stats as scipy_stats
from scipy.spatial.distance import jensenshannon

from kubeloop import stats

EDGES = stats.quantile_edges(np.random.default_rng(7).normal(size=20_000))


def normal_bins(mean: float = 0.0, sd: float = 1.0) -> np.ndarray:
    """Exact probabilities of N(mean, sd) on the quantile bins of a standard normal sample."""
    cdf = scipy_stats.norm.cdf(np.array([-np.inf, *EDGES, np.inf]), mean, sd)
    return np.diff(cdf)


def sample_bins(rng: np.random.Generator, n: int, mean: float = 0.0) -> list[int]:
    return stats.bin_counts(EDGES, rng.normal(mean, 1.0, n))


# ------------------------------------------------------------------------------- methods against scipy


@pytest.mark.parametrize("shift", [0.0, 0.1, 0.5, 1.5])
def test_psi_is_the_symmetric_kl_divergence(shift: float) -> None:
    e, a = normal_bins(), normal_bins(shift)
    exact = float(np.sum(special.rel_entr(a, e) + special.rel_entr(e, a)))
    assert stats.psi(e, a) == pytest.approx(exact, rel=1e-9, abs=1e-12)


def test_psi_clips_empty_bins_at_epsilon() -> None:
    e, a = np.array([0.5, 0.5, 0.0]), np.array([0.25, 0.25, 0.5])
    clipped = np.clip(e, stats.EPSILON, None)
    exact = float(np.sum((a - clipped) * np.log(a / clipped)))
    assert stats.psi(e, a) == pytest.approx(exact)
    assert np.isfinite(stats.psi([10, 0], [0, 10]))


def test_psi_of_unchanged_traffic_is_about_bins_over_requests() -> None:
    # n * PSI is asymptotically chi-square with (bins - 1) degrees of freedom: with 10 bins and 100
    # requests it averages about 0.09 when nothing changed, which is why a threshold needs minSamples.
    rng = np.random.default_rng(11)
    base = sample_bins(rng, 10_000)
    values = [stats.psi(base, sample_bins(rng, 100)) for _ in range(1000)]
    assert len(EDGES) + 1 == 10
    assert 0.085 < float(np.mean(values)) < 0.105


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_js_distance_matches_scipy_on_samples(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p, q = sample_bins(rng, 5000), sample_bins(rng, 300, mean=0.3 * seed)
    assert stats.js_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2), rel=1e-9)
    # with empty bins on one side, and disjoint supports (the maximum, 1)
    assert stats.js_distance([5, 0, 5], [0, 3, 7]) == pytest.approx(
        jensenshannon([5, 0, 5], [0, 3, 7], base=2)
    )
    assert stats.js_distance([1, 0], [0, 1]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("n", "m", "shift"), [(5000, 2000, 0.0), (5000, 300, 0.2), (1000, 100, 0.4), (150, 1000, 0.2)]
)
def test_ks_binned_is_scipys_ks_2samp_on_binned_values(n: int, m: int, shift: float) -> None:
    # On values that are the bin indices themselves, ks_2samp's statistic is exactly the CDF gap at the
    # edges; its asymptotic p-value (Smirnov's distribution) and ours (Stephens' approximation) agree
    # within a few per cent.
    rng = np.random.default_rng(n + m)
    x = np.searchsorted(EDGES, rng.normal(size=n))
    y = np.searchsorted(EDGES, rng.normal(shift, 1.0, m))
    a, b = np.bincount(x, minlength=10).tolist(), np.bincount(y, minlength=10).tolist()
    d, p = stats.ks_binned(a, b)
    ref = scipy_stats.ks_2samp(x, y, method="asymp")
    assert d == pytest.approx(ref.statistic, abs=1e-12)
    assert p == pytest.approx(ref.pvalue, rel=0.06, abs=1e-12)


def test_ks_binned_statistic_is_a_lower_bound_of_the_raw_one() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=3000), rng.normal(0.3, 1.0, 500)
    d, _ = stats.ks_binned(stats.bin_counts(EDGES, x), stats.bin_counts(EDGES, y))
    assert d <= scipy_stats.ks_2samp(x, y).statistic + 1e-12


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_chi2_matches_scipy_contingency_on_samples(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = np.array(sample_bins(rng, 4000), dtype=float)
    b = np.array(sample_bins(rng, 200 + 300 * seed, mean=0.1 * seed), dtype=float) * 1.37  # fractional
    stat, p = stats.chi2_test(a, b)
    ref = scipy_stats.chi2_contingency(np.array([a, b]), correction=False)
    assert stat == pytest.approx(ref.statistic, rel=1e-9) and p == pytest.approx(
        ref.pvalue, rel=1e-6, abs=1e-300
    )


def test_chi2_leaves_out_bins_empty_on_both_sides() -> None:
    stat, p = stats.chi2_test([50, 0, 30, 20], [40, 0, 35, 25])
    ref = scipy_stats.chi2_contingency(np.array([[50, 30, 20], [40, 35, 25]]), correction=False)
    assert (stat, p) == pytest.approx((ref.statistic, ref.pvalue))
    # a bin empty in the baseline but not in traffic (a new category) is evidence, not an error: it is
    # pooled with the rarest bins and still shows there
    base = [300, 200, 150, 100, 80, 60, 50, 30, 20, 10, 0]
    same = [b / 2 for b in base]
    assert stats.chi2_test(base, same)[1] > 0.99
    assert stats.chi2_test(base, [0.95 * b for b in same[:-1]] + [25])[1] < 1e-3  # 5 % new in 500
    with pytest.raises(ValueError, match="empty distribution"):
        stats.chi2_test([1, 2], [0, 0])


def test_sparse_bins_are_pooled_by_the_baseline_and_the_window_size_only() -> None:
    base = [500, 300, 150, 40, 6, 4]  # expected in 100 requests: 50, 30, 15, 4, 0.6, 0.4
    a, b = stats.pool_sparse_bins(base, [50, 30, 15, 4, 1, 0])
    assert a.tolist() == [500, 300, 150, 50] and b.tolist() == [50, 30, 15, 5]
    # the same bins whatever the window's counts
    assert stats.pool_sparse_bins(base, [10, 10, 10, 10, 30, 30])[1].tolist() == [10, 10, 10, 70]
    # a pool still under min_expected takes the next smallest bin
    a, b = stats.pool_sparse_bins([80, 12, 5, 3], [40, 6, 3, 1])  # expected 40, 6, 2.5, 1.5
    assert a.tolist() == [80, 20] and b.tolist() == [40, 10]
    stat, p = stats.chi2_test(base, [50, 30, 15, 4, 1, 0])
    ref = scipy_stats.chi2_contingency(np.array([[500, 300, 150, 50], [50, 30, 15, 5]]), correction=False)
    assert (stat, p) == pytest.approx((ref.statistic, ref.pvalue))
    unpooled = scipy_stats.chi2_contingency(np.array([base, [50, 30, 15, 4, 1, 0]]), correction=False)
    assert stats.chi2_test(base, [50, 30, 15, 4, 1, 0], min_expected=0)[0] == pytest.approx(
        unpooled.statistic
    )


def test_chi2_is_calibrated_on_a_sparse_categorical_feature() -> None:
    # 50 Zipf categories plus __other__, 100 requests: most bins expect under one value. Unpooled, the
    # rare categories seen once alarmed 1.8 % at p < 0.01 (4.4 % at 50 requests).
    rng = np.random.default_rng(9)
    p = 1.0 / np.arange(1, 61) ** 1.1
    p /= p.sum()

    def counts(n: int) -> np.ndarray:
        c = np.bincount(rng.choice(60, n, p=p), minlength=60)
        return np.append(c[:50], c[50:].sum())

    pv = np.array([stats.chi2_test(counts(10_000), counts(100))[1] for _ in range(2000)])
    assert float(np.mean(pv < 0.01)) <= 0.016 and 0.035 <= float(np.mean(pv < 0.05)) <= 0.065


def test_chi2_is_calibrated_when_the_baseline_is_small() -> None:
    # The baseline is a sample too: over 150-row baselines, 1,000 requests from the same distribution
    # must not alarm more often than the p-value says (a goodness-of-fit test did 99.9 %).
    rng = np.random.default_rng(8)
    p = np.array([stats.chi2_test(sample_bins(rng, 150), sample_bins(rng, 1000))[1] for _ in range(1000)])
    assert 0.03 <= float(np.mean(p < 0.05)) <= 0.07


def test_bh_matches_scipy_false_discovery_control() -> None:
    p = np.random.default_rng(4).uniform(0, 0.1, 12)
    assert stats.adjust_pvalues(p.tolist(), "bh") == pytest.approx(
        scipy_stats.false_discovery_control(p).tolist()
    )


# ------------------------------------------------------------------------------------ verdict table


def baseline() -> dict[str, Any]:
    """x: 4 equal numeric bins; c: categories a, b and 100 rows of others; k: a constant column."""
    return {
        "version": 1,
        "rows": 1000,
        "features": {
            "x": {"kind": "numeric", "edges": [-1.0, 0.0, 1.0], "counts": [250, 250, 250, 250], "nulls": 0},
            "c": {"kind": "categorical", "categories": ["a", "b"], "counts": [600, 300], "nulls": 0},
        },
    }


SAME = {"x": [50, 50, 50, 50], "c": [120, 60, 20]}
SHIFTED = {"x": [10, 30, 60, 100], "c": [120, 60, 20]}


@pytest.mark.parametrize("method", ["psi", "js", "ks", "chi2"])
@pytest.mark.parametrize(
    ("observed", "min_samples", "overall", "per_feature"),
    [
        (SAME, 100, "pass", {"x": "pass", "c": "pass"}),
        (SHIFTED, 100, "fail", {"x": "fail", "c": "pass"}),
        # fewer than minSamples: inconclusive however different, never a fail or a pass
        (
            {"x": [0, 0, 0, 99], "c": [99, 0, 0]},
            100,
            "inconclusive",
            {"x": "inconclusive", "c": "inconclusive"},
        ),
        # an empty window
        ({"x": [0, 0, 0, 0], "c": [0, 0, 0]}, 1, "inconclusive", {"x": "inconclusive", "c": "inconclusive"}),
        # a feature not observed at all, or observed on other bins (metrics of another model)
        ({"x": SAME["x"]}, 100, "inconclusive", {"x": "pass", "c": "inconclusive"}),
        ({"x": SAME["x"], "c": [120, 80]}, 100, "inconclusive", {"x": "pass", "c": "inconclusive"}),
        # a failed feature is drift even when another one cannot be judged
        ({"x": SHIFTED["x"], "c": [9, 0, 0]}, 100, "fail", {"x": "fail", "c": "inconclusive"}),
    ],
)
def test_verdict_table(
    method: stats.Method,
    observed: dict[str, list[float]],
    min_samples: int,
    overall: str,
    per_feature: dict[str, str],
) -> None:
    v = stats.judge_drift(baseline(), observed, method, min_samples=min_samples)
    assert v.verdict == overall, v.reason
    assert {f.feature: f.verdict for f in v.features} == per_feature
    assert v.drifted == [name for name, verdict in per_feature.items() if verdict == "fail"]
    for f in v.features:
        assert f.threshold == stats.DEFAULT_THRESHOLD[method] and f.reason
        assert (f.score is None) == (f.verdict == "inconclusive")
        assert (f.p_value is not None) == (f.method in stats.TEST_METHODS and f.verdict != "inconclusive")


def test_ks_on_a_categorical_feature_is_chi2() -> None:
    v = stats.judge_drift(baseline(), SAME, "ks")
    assert (v.feature("x").method, v.feature("c").method) == ("ks", "chi2")


def test_sample_count_is_the_window_total_and_fractional_counts_are_fine() -> None:
    v = stats.judge_drift(
        baseline(), {"x": [25.5, 25.5, 24.5, 24.5], "c": [60.3, 30.2, 9.9]}, "chi2", min_samples=100
    )
    assert v.verdict == "pass" and v.feature("x").samples == pytest.approx(100.0)
    under = stats.judge_drift(
        baseline(), {"x": [24.9, 25, 25, 25], "c": [60, 30, 10]}, "psi", min_samples=100
    )
    assert (
        under.feature("x").verdict == "inconclusive"
        and "fewer than minSamples 100" in under.feature("x").reason
    )


def test_holm_makes_a_borderline_feature_pass_that_none_fails() -> None:
    # One feature at p ~ 0.02 among five: drift at 0.05 when tested alone, not once five are tested.
    features = {
        f"f{i}": {"kind": "numeric", "edges": [0.0], "counts": [500, 500], "nulls": 0} for i in range(5)
    }
    observed = {f"f{i}": [100, 100] for i in range(5)} | {"f0": [118, 82]}
    doc = {"rows": 1000, "features": features}
    raw = stats.chi2_test([500, 500], [118, 82])[1]
    assert 0.01 < raw < 0.05
    verdicts = {
        c: stats.judge_drift(doc, observed, "chi2", 0.05, 100, c) for c in ("none", "bonferroni", "holm")
    }
    assert verdicts["none"].verdict == "fail" and verdicts["none"].drifted == ["f0"]
    assert verdicts["holm"].verdict == "pass" and verdicts["bonferroni"].verdict == "pass"
    f0 = verdicts["holm"].feature("f0")
    assert f0.p_value == pytest.approx(raw) and f0.adjusted_p_value == pytest.approx(5 * raw)
    # psi and js have no p-value and ignore the correction
    assert stats.judge_drift(doc, observed, "psi", 0.05, 100, "holm").feature("f0").adjusted_p_value is None


def test_holm_still_fails_a_clear_drift() -> None:
    features = {
        f"f{i}": {"kind": "numeric", "edges": [0.0], "counts": [500, 500], "nulls": 0} for i in range(5)
    }
    observed = {f"f{i}": [100, 100] for i in range(5)} | {"f3": [150, 50]}
    v = stats.judge_drift({"rows": 1000, "features": features}, observed, "ks", 0.01, 100, "holm")
    assert v.verdict == "fail" and v.drifted == ["f3"] and "f3" in v.reason


def test_score_equal_to_the_threshold_passes() -> None:
    doc, observed = baseline(), SHIFTED
    score = stats.psi(stats.baseline_counts(doc["features"]["x"]), observed["x"])
    assert stats.judge_drift(doc, observed, "psi", threshold=score).feature("x").verdict == "pass"
    assert stats.judge_drift(doc, observed, "psi", threshold=score * 0.999).feature("x").verdict == "fail"


def test_categorical_baseline_counts_include_the_implied_other() -> None:
    c = baseline()["features"]["c"]
    assert stats.baseline_counts(c, 1000) == [600, 300, 100]
    assert stats.baseline_counts(c | {"nulls": 40}, 1000) == [600, 300, 60]
    assert stats.baseline_counts(c) == [600, 300, 0]
    # a category never seen in training is drift (the baseline's "__other__" is empty)
    doc = baseline() | {"rows": 900}
    v = stats.judge_drift(doc, {"x": SAME["x"], "c": [100, 50, 50]}, "chi2")
    assert v.feature("c").verdict == "fail"


def test_baselines_that_cannot_show_drift_are_inconclusive() -> None:
    doc = {
        "rows": 100,
        "features": {
            "k": {"kind": "numeric", "edges": [], "counts": [100], "nulls": 0},
            "n": {"kind": "numeric", "edges": [], "counts": [0], "nulls": 100},
        },
    }
    v = stats.judge_drift(doc, {"k": [300], "n": [300]}, "psi")
    assert v.verdict == "inconclusive"
    assert "single bin" in v.feature("k").reason and "no values" in v.feature("n").reason
    assert stats.judge_drift({"rows": 0, "features": {}}, {}, "ks").verdict == "inconclusive"


def test_defaults_and_bad_arguments() -> None:
    v = stats.judge_drift(baseline(), SAME, "ks")
    assert (v.threshold, v.min_samples, v.correction) == (
        stats.DEFAULT_THRESHOLD["ks"],
        stats.DEFAULT_MIN_SAMPLES["ks"],
        "holm",
    )
    for kwargs, message in [
        ({"method": "kl"}, "unknown drift method"),
        ({"correction": "fdr"}, "unknown correction"),
        ({"method": "ks", "threshold": 1.5}, "out of range"),
        ({"threshold": 0.0}, "out of range"),
        ({"min_samples": 0}, "at least 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            stats.judge_drift(baseline(), SAME, **kwargs)
