"""kubeloop.analysis: the servers' real exposition parsed, windows of counters, and each check's verdicts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from scipy import stats as scipy_stats

from kubeloop import analysis, stats
from kubeloop.analysis import Sample, Totals, Window
from kubeloop.runtime.serve.examples import build_model_dir, training_data
from kubeloop.runtime.serve.metrics import LATENCY_BUCKETS, Metrics
from kubeloop.runtime.serve.model import Model

# Names a user may give that the exposition must escape: quote, backslash, newline.
ODD_FEATURE = 'colour "a\\b"\nc'
ODD_CLASS = 'mid "m\\n"'
ODD_MODEL = 'iris "v2"\\x'


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    d = tmp_path_factory.mktemp("lr")
    build_model_dir(d, "logistic_regression")
    card = json.loads((d / "model-card.json").read_text())
    card["features"][1] = ODD_FEATURE
    card["classes"] = ["low", ODD_CLASS, "high"]
    (d / "model-card.json").write_text(json.dumps(card))
    baseline = json.loads((d / "baseline.json").read_text())
    del baseline["features"]["f1"]
    baseline["features"][ODD_FEATURE] = {
        "kind": "categorical",
        "categories": ["0", "1"],
        "counts": [1200, 800],  # of the baseline's 2,000 rows
        "nulls": 0,
    }
    (d / "baseline.json").write_text(json.dumps(baseline))
    return Model(d, name=ODD_MODEL)


def served(model: Model, x: np.ndarray, requests: list[tuple[str, int, float]]) -> Sample:
    """The parsed /metrics of a real server's Metrics after these requests and this input batch."""
    metrics = Metrics(model)
    for protocol, code, seconds in requests:
        metrics.request(protocol, code, seconds)
    metrics.batch(x, model.predict(x))
    return analysis.parse_metrics(metrics.render().decode())


def inputs(rows: int, seed: int = 0) -> np.ndarray:
    """Rows drawn from the model's own training data (so numeric features do not drift)."""
    x, _ = training_data("logistic_regression")
    x = x[np.random.default_rng(seed).choice(len(x), rows, replace=False)]
    x[:, 1] = np.arange(rows) % 3  # the categorical feature: "0", "1", and 2 (not a baseline category)
    return x


# ------------------------------------------------------------------------------------------ parsing


def test_the_servers_exposition_parses_to_what_it_counted(model: Model) -> None:
    x = inputs(300)
    x[7, 0] = np.nan  # not counted, as in the baseline
    requests = [("v2", 200, 0.0002), ("v2", 503, 0.03), ("v1", 200, 7.0), ("v2", 400, 0.0004)]
    sample = served(model, x, requests)
    totals = Totals(sample.series)  # a scrape is the increase from a fresh start
    assert totals.requests() == 4 and totals.errors() == 1
    latency = totals.latency_buckets()
    assert [le for le, _ in latency] == [*LATENCY_BUCKETS, math.inf]
    assert dict(latency)[0.00025] == 1 and dict(latency)[0.05] == 3 and dict(latency)[math.inf] == 4

    labels = model.predict(x).labels
    assert labels is not None
    predicted = np.bincount(labels, minlength=3).tolist()
    assert totals.class_counts() == dict(zip(["low", ODD_CLASS, "high"], predicted, strict=True))

    counts = totals.feature_counts(model.baseline)
    assert counts["f0"] == stats.bin_counts(model.baseline["features"]["f0"]["edges"], x[:, 0])
    assert counts[ODD_FEATURE] == [100, 100, 100]  # 0, 1, then 2 under __other__
    assert len(counts) == 20 and all(sum(c) == 300 for f, c in counts.items() if f != "f0")

    model_label = ("model", ODD_MODEL)
    assert sample.series[("kubeloop_model_ready", (model_label,))] == 0
    key = ("kubeloop_requests_total", (("code", "503"), model_label, ("protocol", "v2")))
    assert sample.series[key] == 1


def test_the_parser_agrees_with_prometheus_client_on_every_sample(model: Model) -> None:
    metrics = Metrics(model)
    metrics.request("v2", 200, 0.01)
    metrics.batch(inputs(50), model.predict(inputs(50)))
    text = metrics.render().decode()
    reference = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert analysis.parse_metrics(text).series == reference


def test_the_parser_reads_the_formats_corners() -> None:
    text = (
        '# HELP x A help text with \\ and " in it.\n'
        "# TYPE x counter\n"
        '  x{a="q\\"\\\\\\n", b = "2" ,} 1.5e3 1700000000000\n'
        "y +Inf\n"
        "z -Inf\n"
        "w NaN\n"
        "\n"
        "# a free comment\n"
        'v{le="+Inf"} 3\n'
    )
    series = analysis.parse_metrics(text).series
    assert series[("x", (("a", 'q"\\\n'), ("b", "2")))] == 1500.0
    assert series[("y", ())] == math.inf and series[("z", ())] == -math.inf
    assert math.isnan(series[("w", ())]) and series[("v", (("le", "+Inf"),))] == 3
    assert analysis.parse_metrics("").series == {}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("<html><body>502 Bad Gateway</body></html>", "line 1: not a Prometheus sample"),
        ('ok 1\nx{a="b} 1', "line 2: label 'a' has no well-formed quoted value"),
        ('x{a="b"} one', "'one' is not a number"),
        ("x 1_000", "'1_000' is not a number"),
        ("x infinity", "'infinity' is not a number"),
        ('x{a="\\q"} 1', "label 'a' has no well-formed quoted value"),
        ('x{a="1",a="2"} 1', "label 'a' given twice"),
        ('x{a="1" b="2"} 1', "labels not closed"),
        ("x 1\nx 2", "line 2: series given twice"),
        ("x", "expected a value"),
        ("x 1 2 3", "expected a value"),
        ("x 1 soon", "'soon' is not a timestamp"),
        ("# TYPE x countr", "line 1: malformed TYPE comment"),
        ('x{9a="1"} 1', "malformed label name"),
    ],
)
def test_the_parser_refuses_what_is_not_prometheus_text(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=r"^line") as e:
        analysis.parse_metrics(text)
    assert why in str(e.value)


# ------------------------------------------------------------------------------------------- window


def scrape(**values: float) -> Sample:
    """A scrape of requests_total per code, e.g. ``scrape(ok=10, err=1)``."""
    codes = {"ok": "200", "err": "500"}
    return Sample(
        {
            ("kubeloop_requests_total", (("code", codes[k]), ("model", "m"), ("protocol", "v2"))): v
            for k, v in values.items()
        }
        | {("kubeloop_model_ready", (("model", "m"),)): 1.0}
    )


def test_a_window_counts_increases_from_the_first_scrape_of_pods_already_serving() -> None:
    w = Window()
    w.observe("a", scrape(ok=100, err=5))
    w.observe("b", scrape(ok=40))
    assert w.totals().requests() == 0  # both were serving before the window: nothing counted yet
    w.observe("a", scrape(ok=130, err=6))
    w.observe("b", scrape(ok=50, err=2))  # err appears: all of it happened since the last scrape
    t = w.totals()
    assert (t.requests(), t.errors()) == (43, 3)
    assert all(name == "kubeloop_requests_total" for name, _ in t.series)  # gauges are no counters


def test_a_restart_makes_the_whole_scrape_new_counts() -> None:
    w = Window()
    w.observe("a", scrape(ok=100, err=5))
    w.observe("a", scrape(ok=120, err=5))
    # The process restarted: err went down, ok already climbed past its old value.
    w.observe("a", scrape(ok=150, err=1))
    t = w.totals()
    assert (t.requests(), t.errors()) == (20 + 151, 1)  # Prometheus per series would count ok as 30
    w.observe("a", scrape(ok=160, err=1))
    assert w.totals().requests() == 181


def test_fresh_pods_count_from_zero_and_vanished_pods_keep_their_counts() -> None:
    w = Window()
    w.observe("old", scrape(ok=1000))
    w.observe("new", scrape(ok=7, err=1), fresh=True)  # started after the window began
    w.observe("old", scrape(ok=1010))
    assert w.totals().requests() == 18
    # "new" is gone (scaled down or evicted): what it served stays in the window.
    w.observe("old", scrape(ok=1020))
    assert (w.totals().requests(), w.totals().errors()) == (28, 1)
    w.observe("old", scrape(ok=1020), fresh=True)  # fresh only matters on a pod's first scrape
    assert w.totals().requests() == 28
    assert w.pods == ("old", "new")


def test_a_series_missing_from_one_scrape_keeps_its_last_value() -> None:
    w = Window()
    w.observe("a", scrape(ok=10, err=2))
    w.observe("a", scrape(ok=12))
    w.observe("a", scrape(ok=13, err=3))  # err 2 -> 3 is one error, not a restart of 3
    assert (w.totals().requests(), w.totals().errors()) == (4, 1)


def test_a_window_survives_json_and_refuses_bad_counters() -> None:
    w = Window()
    w.observe("a", scrape(ok=10))
    w.observe("a", scrape(ok=15, err=1))
    odd = Sample({("kubeloop_feature_category_total", (("category", 'x"\\\n'), ("feature", "f"))): 3.0})
    w.observe("b", odd, fresh=True)
    copy = Window.from_json(json.loads(json.dumps(w.to_json())))
    assert copy.totals() == w.totals() and copy.pods == w.pods
    copy.observe("a", scrape(ok=17, err=1))
    assert copy.totals().requests() == 8
    with pytest.raises(ValueError, match="is -1"):
        w.observe("a", scrape(ok=20, err=-1))
    assert w.totals().requests() == 6  # nothing of the refused scrape was taken
    with pytest.raises(ValueError, match="format 1"):
        Window.from_json({"version": 2})
    with pytest.raises(ValueError, match="labels not closed"):
        Window.from_json({"version": 1, "series": ['x{a="1"'], "increase": [0], "pods": {}})
    with pytest.raises(ValueError, match="one per series"):
        Window.from_json({"version": 1, "series": ["x{}"], "increase": [], "pods": {}})


# ---------------------------------------------------------------------------------------------- p99


def test_p99_is_prometheus_histogram_quantile() -> None:
    buckets = [(0.1, 20.0), (0.25, 120.0), (0.5, 190.0), (1.0, 199.0), (math.inf, 200.0)]
    # By hand, as promql/quantile.go: rank 0.99 * 200 = 198 falls in (0.5, 1.0], which holds 9
    # observations, 8 of them up to the rank: 0.5 + 0.5 * 8 / 9.
    assert analysis.p99(buckets) == pytest.approx(0.5 + 0.5 * 8 / 9)
    assert analysis.histogram_quantile(0.5, buckets) == pytest.approx(0.1 + 0.15 * 80 / 100)
    assert analysis.histogram_quantile(0.05, buckets) == pytest.approx(0.1 * 10 / 20)  # from 0
    assert analysis.p99([(0.1, 10.0), (math.inf, 100.0)]) == 0.1  # in +Inf: the highest finite bound
    assert analysis.histogram_quantile(0.5, [(-1.0, 60.0), (0.0, 70.0), (math.inf, 100.0)]) == -1.0
    # Unordered, a bound given twice (merged), and a count that goes down (raised to the one before).
    messy = [
        (math.inf, 200.0),
        (0.25, 60.0),
        (0.1, 20.0),
        (0.25, 60.0),
        (1.0, 199.0),
        (0.5, 190.0),
        (0.75, 150.0),
    ]
    # 0.75 holds 190 (raised), so rank 198 falls in (0.75, 1.0] with 8 of its 9 up to the rank.
    assert analysis.p99(messy) == pytest.approx(0.75 + 0.25 * 8 / 9)
    assert math.isnan(analysis.p99([(0.1, 5.0), (1.0, 10.0)]))  # no +Inf bucket
    assert math.isnan(analysis.p99([(0.1, 0.0), (math.inf, 0.0)]))  # no observations
    assert math.isnan(analysis.p99([(math.inf, 10.0)]))  # one bucket


# -------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    "table",
    [(0, 10, 0, 10), (3, 10, 0, 10), (1, 5, 4, 6), (7, 20, 2, 30), (40, 1000, 5, 1000), (30, 1000, 28, 1000),
     (0, 0, 3, 9), (5, 5, 0, 5), (12000, 10**6, 9000, 10**6), (1, 100000, 0, 20)],
)  # fmt: skip
def test_fisher_exact_greater_matches_scipy(table: tuple[int, int, int, int]) -> None:
    x1, n1, x2, n2 = table
    expected = scipy_stats.fisher_exact([[x1, n1 - x1], [x2, n2 - x2]], alternative="greater")[1]
    # lgamma of millions carries about 1e-9 of relative error into the p-value.
    rel = 1e-9 if n1 + n2 < 10**5 else 1e-6
    assert stats.fisher_exact_greater(*table) == pytest.approx(expected, rel=rel, abs=1e-300)


def test_fisher_agrees_with_a_z_test_where_counts_are_large() -> None:
    # 1.2 % of 100,000 against 1.0 %: the pooled two-proportion z-test's one-sided p, about 1e-5.
    x1, n1, x2, n2 = 1200, 100_000, 1000, 100_000
    pooled = (x1 + x2) / (n1 + n2)
    z = (x1 / n1 - x2 / n2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z_p = 0.5 * math.erfc(z / math.sqrt(2))
    assert stats.fisher_exact_greater(x1, n1, x2, n2) == pytest.approx(z_p, rel=0.15)


@pytest.mark.parametrize(
    ("x", "n", "p"), [(0, 10, 0.1), (3, 200, 0.01), (40, 1000, 0.01), (1, 1, 0.5), (10, 10, 0.3),
                      (150, 10**7, 1e-5), (5, 100, 0.0), (5, 100, 1.0)],
)  # fmt: skip
def test_binomial_sf_matches_scipy(x: int, n: int, p: float) -> None:
    expected = scipy_stats.binom.sf(x - 1, n, p)
    rel = 1e-9 if n < 10**5 else 1e-6
    assert stats.binomial_sf(x, n, p) == pytest.approx(expected, rel=rel, abs=1e-300)


def test_count_tests_refuse_impossible_counts() -> None:
    with pytest.raises(ValueError, match="exceed"):
        stats.fisher_exact_greater(5, 4, 0, 1)
    with pytest.raises(ValueError, match="finite"):
        stats.binomial_sf(math.nan, 10, 0.1)


# ------------------------------------------------------------------------------------------- checks


def traffic(ok: float = 0, errors: float = 0, client_errors: float = 0) -> Totals:
    def key(code: str, protocol: str) -> analysis.SeriesKey:
        return ("kubeloop_requests_total", (("code", code), ("model", "m"), ("protocol", protocol)))

    # Split over both protocols: the checks sum them.
    return Totals(
        {
            key("200", "v2"): ok / 2,
            key("200", "v1"): ok / 2,
            key("503", "v2"): errors,
            key("400", "v1"): client_errors,
        }
    )


def test_error_rate_is_inconclusive_on_too_few_requests() -> None:
    check = analysis.error_rate_check(traffic(40, 10), traffic(1000), 0.01, min_requests=100)
    assert check.verdict == "inconclusive" and check.value == pytest.approx(0.2) and check.samples == 50
    assert "fewer than minRequests 100" in check.message
    empty = analysis.error_rate_check(traffic(), traffic(), 0.01, min_requests=0)
    assert empty.verdict == "inconclusive" and empty.value is None


def test_error_rate_passes_within_the_limit_and_client_errors_do_not_count() -> None:
    check = analysis.error_rate_check(traffic(990, 5, client_errors=300), traffic(1000, 1), 0.01, 100)
    assert check.verdict == "pass" and check.value == pytest.approx(5 / 1295)
    assert "0.386 % (5 of 1295)" in check.message and "stable's 0.0999 %" in check.message


def test_error_rate_fails_only_when_the_canary_is_worse_than_stable() -> None:
    worse = analysis.error_rate_check(traffic(960, 40), traffic(995, 5), 0.01, 100)
    assert worse.verdict == "fail" and worse.value == pytest.approx(0.04) and worse.samples == 1000
    assert "p = " in worse.message and "Fisher" in worse.message
    # Above the limit, but so is the stable (a shared dependency failing): not the canary's fault.
    shared = analysis.error_rate_check(traffic(970, 30), traffic(972, 28), 0.01, 100)
    assert shared.verdict == "pass" and "not significantly above stable's 2.8 %" in shared.message


def test_error_rate_without_a_stable_to_compare_is_tested_against_the_limit() -> None:
    few_stable = traffic(10)
    fail = analysis.error_rate_check(traffic(960, 40), few_stable, 0.01, 100)
    assert fail.verdict == "fail" and "binomial" in fail.message and "stable served 10" in fail.message
    # 1.5 % of 200 is what a true 1 % gives a third of the time: no evidence the canary is worse.
    unsure = analysis.error_rate_check(traffic(197, 3), few_stable, 0.01, 100)
    assert unsure.verdict == "pass" and "not significantly above" in unsure.message


def latency(counts: list[float]) -> Totals:
    """Per-bucket (not cumulative) request counts on the server's buckets, the last one above 5 s."""
    bounds = [*LATENCY_BUCKETS, math.inf]
    cumulative = np.cumsum(counts).tolist()
    series: dict[analysis.SeriesKey, float] = {}
    for le, c in zip(bounds, cumulative, strict=True):
        text = "+Inf" if le == math.inf else repr(le)
        series[("kubeloop_request_duration_seconds_bucket", (("le", text), ("protocol", "v2")))] = c
    return Totals(series)


def at(seconds: float, n: float) -> list[float]:
    counts = [0.0] * (len(LATENCY_BUCKETS) + 1)
    counts[[*LATENCY_BUCKETS, math.inf].index(seconds)] = n
    return counts


def test_latency_check_verdicts() -> None:
    fast = latency([a + b for a, b in zip(at(0.005, 990), at(0.01, 10), strict=True)])
    # p99: rank 990 is the last of the (0.0025, 0.005] bucket: 5 ms.
    check = analysis.latency_check(fast, max_p99_ms=8, min_requests=100)
    assert check.verdict == "pass" and check.value == pytest.approx(5.0) and check.samples == 1000
    slow = latency([a + b for a, b in zip(at(0.005, 900), at(0.05, 100), strict=True)])
    check = analysis.latency_check(slow, max_p99_ms=8, min_requests=100, stable=fast)
    # rank 990 is the 90th of the 100 in (0.025, 0.05]: 25 + 25 * 90 / 100 ms.
    assert check.verdict == "fail" and check.value == pytest.approx(47.5)
    assert "stable 5 ms over 1000 requests" in check.message
    few = analysis.latency_check(latency(at(0.05, 20)), max_p99_ms=8, min_requests=100)
    assert few.verdict == "inconclusive" and few.samples == 20


def test_latency_above_every_bucket_fails_or_is_inconclusive() -> None:
    beyond = latency([a + b for a, b in zip(at(0.005, 900), at(math.inf, 100), strict=True)])
    check = analysis.latency_check(beyond, max_p99_ms=100, min_requests=100)
    assert check.verdict == "fail" and check.value == 5000 and "at least 5000 ms" in check.message
    # maxP99 above the highest bound: the histogram cannot say whether the p99 is over it.
    check = analysis.latency_check(beyond, max_p99_ms=10_000, min_requests=100)
    assert check.verdict == "inconclusive" and "cannot tell" in check.message


def classes(**counts: float) -> Totals:
    return Totals(
        {("kubeloop_predictions_total", (("class", c), ("model", "m"))): n for c, n in counts.items()}
    )


def test_prediction_distance_on_classes() -> None:
    stable = classes(low=500, mid=300, high=200)
    same = analysis.prediction_distance_check(classes(low=52, mid=29, high=19), stable, 0.1, 100)
    assert same.verdict == "pass" and same.value is not None and same.value < 0.05 and same.samples == 100
    moved = analysis.prediction_distance_check(classes(low=20, mid=30, high=50), stable, 0.1, 100)
    expected = stats.js_distance([500, 300, 200], [20, 30, 50])
    assert moved.verdict == "fail" and moved.value == pytest.approx(expected)
    assert (
        "predicted classes (100 and 1000 predictions; noise alone would measure about 0.063)" in moved.message
    )
    # A class only the canary predicts counts in full (pooled with a rare one, it measured 0).
    stable = classes(low=500, mid=500)
    new_class = analysis.prediction_distance_check(classes(mid=50, high=50), stable, 0.1, 100)
    assert new_class.verdict == "fail" and new_class.value == pytest.approx(
        stats.js_distance([500, 500, 0], [0, 50, 50])
    )
    few = analysis.prediction_distance_check(classes(low=1000), classes(low=50), 0.1, 100)
    assert few.verdict == "inconclusive" and few.value is None and "50 stable" in few.message


def values(per_bucket: dict[float, float]) -> Totals:
    cumulative = np.cumsum(list(per_bucket.values())).tolist()
    return Totals(
        {
            ("kubeloop_prediction_value_bucket", (("le", "+Inf" if le == math.inf else repr(le)),)): c
            for le, c in zip(per_bucket, cumulative, strict=True)
        }
    )


def test_prediction_distance_on_regression_values_uses_the_shared_bounds() -> None:
    stable = values({0.0: 100, 1.0: 100, 2.0: 100, math.inf: 100})
    # Another baseline's bounds: 0.5 and 1.5 are the canary's own, 1.0 and 2.0 only the stable's.
    canary = values({0.0: 100, 0.5: 50, 1.5: 100, 3.0: 50, math.inf: 100})
    check = analysis.prediction_distance_check(canary, stable, 0.1, 100)
    # Shared: 0.0 and +Inf, so the comparison is on (-inf, 0] and above: 100/300 and 100/300.
    assert check.verdict == "pass" and check.value == pytest.approx(0.0)
    high = values({0.0: 10, 1.0: 10, 2.0: 80, math.inf: 300})
    assert analysis.prediction_distance_check(high, stable, 0.1, 100).verdict == "fail"
    apart = analysis.prediction_distance_check(values({5.0: 100, math.inf: 300}), stable, 0.1, 100)
    assert apart.verdict == "inconclusive" and "no bucket bound" in apart.message
    nothing = analysis.prediction_distance_check(Totals({}), Totals({}), 0.1, 100)
    assert nothing.verdict == "inconclusive"


def test_input_drift_verdicts(model: Model) -> None:
    baseline = model.baseline
    same = Window()
    same.observe("p", served(model, inputs(400), []), fresh=True)
    check = analysis.input_drift_check(same.totals(), baseline, max_drift=None, min_samples=None)
    assert check.threshold == 0.2 and check.samples == 400
    # The inputs' categorical feature is a third "2", which the baseline never saw: that feature drifts.
    assert check.verdict == "fail" and ODD_FEATURE.split("\n")[0] in check.message
    assert check.value == max(
        stats.judge_drift(baseline, same.totals().feature_counts(baseline)).scores.values()
    )

    x = inputs(400, seed=1)
    x[:, 1] = np.where(np.arange(400) < 240, 0, 1)  # the baseline's 60/40
    check = analysis.input_drift_check(Totals(served(model, x, []).series), baseline, 0.2, 200)
    assert check.verdict == "pass" and "on all 20 features" in check.message and check.value is not None
    x[:, 3] += 2.0  # a shift of 2 sd in one feature
    check = analysis.input_drift_check(Totals(served(model, x, []).series), baseline, 0.2, 200)
    assert check.verdict == "fail" and check.message.startswith("psi above 0.2 on 1 of 20 features: f3")

    few = analysis.input_drift_check(Totals(served(model, x[:50], []).series), baseline, 0.2, 200)
    assert few.verdict == "inconclusive" and "fewer than minSamples 200" in few.message
    assert "and 17 more" in few.message  # one line, however many features


def test_input_drift_on_other_bins_is_inconclusive(model: Model) -> None:
    other = json.loads(json.dumps(model.baseline))
    other["features"]["f0"]["edges"] = [e + 0.01 for e in other["features"]["f0"]["edges"]]
    x = inputs(400, seed=1)
    x[:, 1] = np.where(np.arange(400) < 240, 0, 1)
    totals = Totals(served(model, x, []).series)
    assert "f0" not in totals.feature_counts(other)
    check = analysis.input_drift_check(totals, other, 0.2, 200)
    assert check.verdict == "inconclusive" and "f0: the server's bins are not the baseline's" in check.message
