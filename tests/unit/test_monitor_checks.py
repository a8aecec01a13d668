"""The Monitor's windows and verdicts (pure): real server counters over scrapes, a shifted feature named."""

from __future__ import annotations

import datetime

import numpy as np

from kubeloop import analysis, stats
from kubeloop.controllers.metricsource import Scrape
from kubeloop.controllers.monitor import drift_check, window_totals
from kubeloop.runtime.serve.examples import training_data
from kubeloop.runtime.serve.metrics import Metrics
from kubeloop.runtime.serve.model import Model

T0 = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)


def traffic(
    model: Model, metrics: Metrics, rows: int, shift: float = 0.0, seed: int = 0, errors: int = 0
) -> None:
    x, _ = training_data("logistic_regression")
    x = x[np.random.default_rng(seed).choice(len(x), rows, replace=False)].copy()
    x[:, 3] += shift
    for _ in range(rows):
        metrics.request("v2", 200, 0.002)
    for _ in range(errors):
        metrics.request("v2", 500, 0.002)
    metrics.batch(x, model.predict(x))


def sample(metrics: Metrics) -> analysis.Sample:
    return analysis.parse_metrics(metrics.render().decode())


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def test_the_window_counts_only_its_own_traffic(model: Model) -> None:
    """Requests before the window's first scrape are not in it; a pod started inside it counts from 0."""
    old, new = Metrics(model), Metrics(model)
    traffic(model, old, 500)  # before the window
    scrapes = [Scrape(at(0), {"old": (sample(old), "2026-12-01T11:00:00Z")})]
    traffic(model, old, 100, errors=3)
    traffic(model, new, 50)  # a pod that started at 15 s
    scrapes.append(
        Scrape(
            at(30),
            {"old": (sample(old), "2026-12-01T11:00:00Z"), "new": (sample(new), "2026-12-01T12:00:15Z")},
        )
    )
    totals, span = window_totals(scrapes, at(0))
    assert span == 30 and totals.requests() == 153 and totals.errors() == 3
    # A window that starts later than every scrape but the last: no increase yet from the pod that was
    # serving before it, and all of the requests of the pod that started inside it.
    totals, span = window_totals(scrapes, at(10))
    assert span == 0 and totals.requests() == 50 and totals.errors() == 0
    totals, span = window_totals(scrapes, at(20))
    assert span == 0 and totals.requests() == 0


def test_training_like_traffic_passes_and_a_shift_is_named(model: Model) -> None:
    baseline = model.baseline
    calm, shifted = Metrics(model), Metrics(model)
    start = [Scrape(at(0), {"p": (sample(calm), "")})]
    traffic(model, calm, 600, seed=1)
    verdict = stats.judge_drift(
        baseline,
        window_totals([*start, Scrape(at(60), {"p": (sample(calm), "")})], at(0))[0].feature_counts(baseline),
    )
    check = drift_check(verdict)
    assert check.verdict == "pass", check.message

    start = [Scrape(at(0), {"p": (sample(shifted), "")})]
    traffic(model, shifted, 600, shift=3.0, seed=2)
    totals, _ = window_totals([*start, Scrape(at(60), {"p": (sample(shifted), "")})], at(0))
    verdict = stats.judge_drift(baseline, totals.feature_counts(baseline))
    check = drift_check(verdict)
    assert check.verdict == "fail" and check.message.startswith("1 of 20 features drifted: f3"), check.message
    assert check.value is not None and check.value > 0.2


def test_an_slo_error_rate_needs_evidence() -> None:
    def totals(ok: int, failed: int) -> analysis.Totals:
        text = (
            f'kubeloop_requests_total{{model="m",protocol="v2",code="200"}} {ok}\n'
            f'kubeloop_requests_total{{model="m",protocol="v2",code="500"}} {failed}\n'
        )
        return analysis.Totals(analysis.parse_metrics(text).series)

    assert analysis.slo_error_check(totals(0, 0), 0.01, 100).verdict == "inconclusive"  # 0/0
    assert analysis.slo_error_check(totals(98, 2), 0.01, 100).verdict == "pass"  # noise at 100 requests
    assert analysis.slo_error_check(totals(900, 100), 0.01, 100).verdict == "fail"


def test_a_shift_that_empties_the_lowest_bins_is_still_judged(model: Model) -> None:
    """Buckets that did not grow in the window are counts of 0, not missing: a shift of 4 standard deviations
    leaves its low bins empty and must be flagged, not left out as 'bins differ from the baseline'."""
    metrics = Metrics(model)
    start = [Scrape(at(0), {"p": (sample(metrics), "")})]
    traffic(model, metrics, 600, shift=40.0, seed=3)
    totals, _ = window_totals([*start, Scrape(at(60), {"p": (sample(metrics), "")})], at(0))
    counts = totals.feature_counts(model.baseline)
    assert "f3" in counts and counts["f3"][0] == 0
    check = drift_check(stats.judge_drift(model.baseline, counts))
    assert check.verdict == "fail" and "f3" in check.message, check.message
