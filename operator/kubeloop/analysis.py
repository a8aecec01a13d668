"""Canary and Monitor analysis on the inference servers' own counters: scrape text in, verdicts out.

Pure: the controller scrapes each pod's ``/metrics`` and hands the text here. ``parse_metrics`` reads one
scrape (``samples_from_prometheus`` reads the same series out of a Prometheus query); a ``Window`` turns the
scrapes of one group of pods (the canary's, the stable's) into the counters' increases over a time window;
the checks turn those ``Totals`` into ``Check`` verdicts. Series and labels are the ones
``kubeloop.runtime.serve.metrics`` exposes (docs/contracts.md). Every verdict is pass, fail or inconclusive,
and too little data is inconclusive, never a pass or a failure: no data counted as a failure is what stalled
or rolled back the rollouts of Flagger's and Argo Rollouts' users.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kubeloop import stats

Verdict = Literal["pass", "fail", "inconclusive"]
CheckName = Literal["errorRate", "latencyP99", "predictionDistance", "inputDrift"]
Labels = tuple[tuple[str, str], ...]
# (sample name, labels sorted by name): one series of one scrape.
SeriesKey = tuple[str, Labels]

REQUESTS = "kubeloop_requests_total"
LATENCY = "kubeloop_request_duration_seconds"
PREDICTIONS = "kubeloop_predictions_total"
PREDICTION_VALUE = "kubeloop_prediction_value"
FEATURE_VALUE = "kubeloop_feature_value"
FEATURE_CATEGORY = "kubeloop_feature_category_total"
# The counters a Window follows. Gauges (model info, readiness) have no increase, and a histogram's
# ``_sum`` is no counter when values can be negative (feature values, regression outputs).
COUNTERS = frozenset(
    {
        REQUESTS,
        f"{LATENCY}_bucket",
        PREDICTIONS,
        f"{PREDICTION_VALUE}_bucket",
        f"{FEATURE_VALUE}_bucket",
        FEATURE_CATEGORY,
    }
)
WINDOW_FORMAT = 1
# The labels the servers put on those series. Prometheus adds its target's labels (job, instance, namespace,
# pod, ...); only these are kept, so a series read from Prometheus has the key a direct scrape gives it.
SERVER_LABELS = frozenset({"model", "protocol", "code", "le", "class", "feature", "category"})

# ------------------------------------------------------------------------------------------- parsing

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# A label value's characters: anything but a quote, a backslash or a newline, or one of the three escapes.
_LABEL_VALUE = re.compile(r'"((?:[^"\\\n]|\\[\\"n])*)"')
_ESCAPE = re.compile(r"\\([\\\"n])")
# Go's ParseFloat as Prometheus writes it; Python's float() would also take "1_000", "infinity", " 1".
_FLOAT = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|Inf|inf)|NaN|nan")
_TIMESTAMP = re.compile(r"-?\d+")
_TYPES = frozenset({"counter", "gauge", "histogram", "summary", "untyped"})


@dataclass(frozen=True)
class Sample:
    """One scrape of one pod: every series in it, as floats.

    ``series`` maps (sample name, labels sorted by name) to the value, e.g.
    ``("kubeloop_requests_total", (("code", "200"), ("model", "iris"), ("protocol", "v2")))``.
    Label values are unescaped; ``le`` stays the text the server wrote (``"0.005"``, ``"+Inf"``).
    """

    series: Mapping[SeriesKey, float]


def parse_metrics(text: str) -> Sample:
    """Parse Prometheus text exposition (format 0.0.4) strictly.

    Raises ``ValueError`` naming the line on anything else (an HTML error page, a truncated line, a
    malformed label, a value Go's ParseFloat would refuse, a series given twice). Comments other than
    a well-formed ``# TYPE`` are ignored, as are empty lines and timestamps.
    """
    series: dict[SeriesKey, float] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.lstrip(" \t")
        if not line.strip():
            continue
        if line.startswith("#"):
            words = line[1:].split(maxsplit=3)
            if words[:1] == ["TYPE"] and (
                len(words) != 3 or not _NAME.fullmatch(words[1]) or words[2] not in _TYPES
            ):
                raise ValueError(f"line {number}: malformed TYPE comment: {_excerpt(line)}")
            continue
        try:
            key, end = _parse_series(line, 0)
            value = _parse_value(line, end)
        except ValueError as e:
            raise ValueError(f"line {number}: {e}: {_excerpt(line)}") from None
        if key in series:
            raise ValueError(f"line {number}: series given twice: {_excerpt(line)}")
        series[key] = value
    return Sample(series)


def _parse_series(line: str, pos: int) -> tuple[SeriesKey, int]:
    """``name{label="value",...}`` starting at ``pos``: the key and the index after it."""
    name = _NAME.match(line, pos)
    if name is None:
        raise ValueError("not a Prometheus sample (no metric name)")
    pos = name.end()
    labels: dict[str, str] = {}
    if pos < len(line) and line[pos] == "{":
        pos += 1
        while True:
            pos = _skip_blanks(line, pos)
            if pos < len(line) and line[pos] == "}":
                pos += 1
                break
            label = _LABEL_NAME.match(line, pos)
            if label is None:
                raise ValueError("malformed label name")
            pos = _skip_blanks(line, label.end())
            if pos >= len(line) or line[pos] != "=":
                raise ValueError(f"label {label[0]!r} has no '='")
            value = _LABEL_VALUE.match(line, _skip_blanks(line, pos + 1))
            if value is None:
                raise ValueError(f"label {label[0]!r} has no well-formed quoted value")
            if label[0] in labels:
                raise ValueError(f"label {label[0]!r} given twice")
            labels[label[0]] = _ESCAPE.sub(lambda m: "\n" if m[1] == "n" else m[1], value[1])
            pos = _skip_blanks(line, value.end())
            if pos < len(line) and line[pos] == ",":
                pos += 1
            elif pos >= len(line) or line[pos] != "}":
                raise ValueError("labels not closed by '}'")
    return (name[0], tuple(sorted(labels.items()))), pos


def _parse_value(line: str, pos: int) -> float:
    parts = line[pos:].split()
    if not line[pos : pos + 1].isspace() or not 1 <= len(parts) <= 2:
        raise ValueError("expected a value (and an optional timestamp) after the series")
    if not _FLOAT.fullmatch(parts[0]):
        raise ValueError(f"{parts[0]!r} is not a number")
    if len(parts) == 2 and not _TIMESTAMP.fullmatch(parts[1]):
        raise ValueError(f"{parts[1]!r} is not a timestamp")
    return float(parts[0])


def _skip_blanks(line: str, pos: int) -> int:
    while pos < len(line) and line[pos] in " \t":
        pos += 1
    return pos


def _excerpt(line: str) -> str:
    return repr(line if len(line) <= 120 else line[:117] + "...")


def _series_text(key: SeriesKey) -> str:
    """The exposition form of a series, e.g. ``kubeloop_requests_total{code="200",model="iris"}``."""
    name, labels = key
    escaped = (v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for _, v in labels)
    return name + "{" + ",".join(f'{k}="{v}"' for (k, _), v in zip(labels, escaped, strict=True)) + "}"


def samples_from_prometheus(doc: Any, pod_label: str = "pod") -> dict[str, list[tuple[float, Sample]]]:
    """Per pod, its samples in time order, from the JSON answer of a Prometheus range-vector query
    (``/api/v1/query`` of ``selector[range:step]``, resultType matrix).

    A subquery evaluates every series at the same step times, so the series of one pod at one time are one
    scrape, as ``parse_metrics`` gives it: the same keys (only ``SERVER_LABELS`` kept), the same values.
    Raises ``ValueError`` on an answer that is not a successful matrix, a series without the pod label or
    a value Prometheus would not write.
    """
    if not isinstance(doc, Mapping) or doc.get("status") != "success":
        error = doc.get("error") if isinstance(doc, Mapping) else None
        raise ValueError(f"the query failed: {str(error)[:200]}" if error else "not a Prometheus answer")
    data = doc.get("data")
    if not isinstance(data, Mapping) or data.get("resultType") != "matrix":
        raise ValueError("the answer is not a matrix (a range-vector query answers one)")
    result = data.get("result")
    if not isinstance(result, list):
        raise ValueError("the answer has no result list")
    by_pod: dict[str, dict[float, dict[SeriesKey, float]]] = {}
    for entry in result:
        metric = entry.get("metric") if isinstance(entry, Mapping) else None
        values = entry.get("values") if isinstance(entry, Mapping) else None
        if not isinstance(metric, Mapping) or not isinstance(values, list):
            raise ValueError("a series of the answer has no metric or values")
        name, pod = metric.get("__name__"), metric.get(pod_label)
        if not isinstance(name, str) or not isinstance(pod, str):
            raise ValueError(f"a series has no __name__ or {pod_label} label: {dict(metric)}"[:300])
        labels = tuple(sorted((k, str(v)) for k, v in metric.items() if k in SERVER_LABELS))
        # One pod scraped by two jobs (a PodMonitor and the annotations) gives each series twice: the same
        # counter, kept once.
        times = by_pod.setdefault(pod, {})
        for point in values:
            if not (isinstance(point, list) and len(point) == 2 and isinstance(point[0], (int, float))):
                raise ValueError(f"malformed point {point!r}"[:200])
            if not isinstance(point[1], str) or not _FLOAT.fullmatch(point[1]):
                raise ValueError(f"malformed value {point[1]!r}"[:200])
            times.setdefault(float(point[0]), {})[(name, labels)] = float(point[1])
    return {pod: [(t, Sample(times[t])) for t in sorted(times)] for pod, times in by_pod.items()}


# -------------------------------------------------------------------------------------------- window


class Window:
    """Increase of every counter series over a time window, summed over the pods of one group.

    Like Prometheus' ``increase()`` over one group (e.g. the canary's pods), without its extrapolation to
    the window's edges: the increases between the scrapes observed. Per pod the last values are kept. A
    value lower than the last one is a counter reset, and as a restart resets all of a pod's counters at
    once, one series that went down marks the whole scrape as the first of a new process: every value
    in it is all increase (Prometheus, per series, would miss the restart of a series that has already
    climbed past its old value). A pod first seen after the window began counts from 0 when ``fresh``
    (it started after the window began, so all its counts fall in the window), else from its first
    scrape (it was serving before the window began). A series first seen on a pod already observed
    counts from 0 (it did not exist at the last scrape). A pod that disappears keeps what it contributed.

    Only the series in ``COUNTERS`` are kept. Sums over a group mean something only when its pods serve
    one model: the histograms' buckets are that model's baseline bins.
    """

    def __init__(self) -> None:
        self._last: dict[str, dict[SeriesKey, float]] = {}
        self._increase: dict[SeriesKey, float] = {}

    @property
    def pods(self) -> tuple[str, ...]:
        """The pods observed in this window, in the order first seen."""
        return tuple(self._last)

    def observe(self, pod: str, sample: Sample, fresh: bool = False) -> None:
        """Add one scrape of ``pod``; ``fresh``: the pod started after the window began.

        Raises ``ValueError`` (and changes nothing) when a counter is negative or not finite.
        """
        current = {k: float(v) for k, v in sample.series.items() if k[0] in COUNTERS}
        for key, value in current.items():
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"pod {pod}: counter {_series_text(key)} is {value}")
        last = self._last.get(pod)
        if last is None:
            start: Mapping[SeriesKey, float] = {} if fresh else current
        elif any(value < last.get(key, 0.0) for key, value in current.items()):
            start = {}  # restarted: everything now counted happened since the restart
        else:
            start = last
        for key, value in current.items():
            # Kept at 0 too: a bucket that did not grow is a count (a strong shift empties the low bins),
            # and one left out would make the buckets differ from the baseline's, so no drift verdict.
            self._increase[key] = self._increase.get(key, 0.0) + (value - start.get(key, 0.0))
        # A series missing from one scrape keeps its last value, unless the pod restarted meanwhile.
        self._last[pod] = {**last, **current} if last is not None and start is last else current

    def totals(self) -> Totals:
        """The summed increases so far."""
        return Totals(dict(self._increase))

    def to_json(self) -> dict[str, Any]:
        """A JSON-able copy: the series (in exposition form) once, then per pod its last values and the
        increases, aligned with them (``null``: not in that pod's scrapes). Each series' name and labels
        are written once, not once per pod: 290 series of 3 pods of a 20-feature model take about 30 KB.
        """
        keys = list(dict.fromkeys([*self._increase, *(k for last in self._last.values() for k in last)]))

        def column(values: Mapping[SeriesKey, float], missing: float | None) -> list[float | int | None]:
            return [_compact(values[k]) if k in values else missing for k in keys]

        return {
            "version": WINDOW_FORMAT,
            "series": [_series_text(k) for k in keys],
            "increase": column(self._increase, 0),
            "pods": {pod: column(last, None) for pod, last in self._last.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Window:
        """The window ``to_json`` gave; ``ValueError`` on anything else."""
        if not isinstance(data, Mapping) or data.get("version") != WINDOW_FORMAT:
            raise ValueError(f"not a window of format {WINDOW_FORMAT}")
        texts, pods = data.get("series"), data.get("pods")
        if not isinstance(texts, list) or not isinstance(pods, Mapping):
            raise ValueError("a window has a list of series and a mapping of pods")
        keys = []
        for text in texts:
            key, end = _parse_series(str(text), 0)
            if end != len(str(text)):
                raise ValueError(f"malformed series {text!r}")
            keys.append(key)

        def values(column: object) -> dict[SeriesKey, float]:
            if not isinstance(column, list) or len(column) != len(keys):
                raise ValueError(f"a window's values are a list of {len(keys)}, one per series")
            out: dict[SeriesKey, float] = {}
            for key, value in zip(keys, column, strict=True):
                if value is None:
                    continue
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ValueError(f"{_series_text(key)}: {value!r} is not a number")
                out[key] = float(value)
            return out

        window = cls()
        window._increase = {k: v for k, v in values(data.get("increase")).items() if v}
        window._last = {str(pod): values(column) for pod, column in pods.items()}
        return window


def _compact(value: float) -> float | int:
    """Counts are integers: 12, not 12.0, in JSON."""
    return int(value) if value.is_integer() else value


# -------------------------------------------------------------------------------------------- totals


@dataclass(frozen=True)
class Totals:
    """Increases over a window, summed over a group's pods: ``series`` as in ``Sample``.

    The helpers sum over the labels they do not name (``model``, ``protocol``, ...).
    """

    series: Mapping[SeriesKey, float]

    def _select(self, name: str, **labels: str) -> Iterable[tuple[dict[str, str], float]]:
        for (n, pairs), value in self.series.items():
            if n == name:
                have = dict(pairs)
                if all(have.get(k) == v for k, v in labels.items()):
                    yield have, value

    def _cumulative(self, name: str, **labels: str) -> list[tuple[float, float]]:
        summed: dict[float, float] = {}
        for have, value in self._select(f"{name}_bucket", **labels):
            le = float(have["le"]) if "le" in have and _FLOAT.fullmatch(have["le"]) else math.nan
            if not math.isnan(le):
                summed[le] = summed.get(le, 0.0) + value
        return sorted(summed.items())

    def requests(self) -> float:
        """Requests of every code and protocol (v1 and v2, inference and metadata)."""
        return sum(v for _, v in self._select(REQUESTS))

    def errors(self) -> float:
        """Requests answered with a 5xx code (a 4xx is the client's error, not the model's)."""
        return sum(v for have, v in self._select(REQUESTS) if have.get("code", "").startswith("5"))

    def latency_buckets(self) -> list[tuple[float, float]]:
        """(``le``, cumulative count) of the request durations in seconds, over protocols, by ``le``."""
        return self._cumulative(LATENCY)

    def class_counts(self) -> dict[str, float]:
        """Predictions per class (classification); empty for a regression model."""
        out: dict[str, float] = {}
        for have, value in self._select(PREDICTIONS):
            cls = have.get("class", "")
            out[cls] = out.get(cls, 0.0) + value
        return out

    def prediction_buckets(self) -> list[tuple[float, float]]:
        """(``le``, cumulative count) of the predicted values (regression), by ``le``; empty otherwise."""
        return self._cumulative(PREDICTION_VALUE)

    def feature_counts(self, baseline: Mapping[str, Any]) -> dict[str, list[float]]:
        """Per feature of ``baseline`` (the parsed baseline.json), its counts per bin in the window.

        Exactly what ``stats.judge_drift`` takes as ``observed``: numeric features per bin (not
        cumulative) of the baseline's edges, categorical ones in the baseline's category order then
        ``__other__``. A feature without series, or whose series are on other bins or categories than
        the baseline's (a pod serving a model trained on another dataset version), is left out.
        """
        return _feature_counts(self, baseline)[0]


def _feature_counts(totals: Totals, baseline: Mapping[str, Any]) -> tuple[dict[str, list[float]], list[str]]:
    """(counts per feature, the features whose series are on other bins than the baseline's)."""
    counts: dict[str, list[float]] = {}
    mismatched: list[str] = []
    for name, summary in baseline.get("features", {}).items():
        if summary.get("kind") == "numeric":
            cumulative = totals._cumulative(FEATURE_VALUE, feature=name)
            if not cumulative:
                continue
            bounds = [float(e) for e in summary.get("edges", [])] + [math.inf]
            if [le for le, _ in cumulative] != bounds:
                mismatched.append(name)
                continue
            counts[name] = _per_bucket(cumulative)
        elif summary.get("kind") == "categorical":
            seen = {have.get("category", ""): v for have, v in totals._select(FEATURE_CATEGORY, feature=name)}
            if not seen:
                continue
            categories = [str(c) for c in summary.get("categories", [])] + [stats.OTHER]
            if not set(seen) <= set(categories):
                mismatched.append(name)
                continue
            counts[name] = [seen.get(c, 0.0) for c in categories]
    return counts, mismatched


def _per_bucket(cumulative: Sequence[tuple[float, float]]) -> list[float]:
    counts = [c for _, c in cumulative]
    return [c - p for c, p in zip(counts, [0.0, *counts[:-1]], strict=True)]


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float:
    """The ``q``-quantile of (``le``, cumulative count) buckets, exactly as PromQL's histogram_quantile.

    Linear within the bucket holding the rank, from 0 in the lowest bucket when its bound is positive
    (its bound itself when not); in the ``+Inf`` bucket, the highest finite bound. NaN without a ``+Inf``
    bucket, with fewer than two buckets or with no observations. As Prometheus does, buckets of the same
    bound are merged, relative differences under 1e-12 are taken for float noise and counts that go
    down are raised to the ones before (promql/quantile.go, bucketQuantile).
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    merged: list[list[float]] = []
    for le, count in sorted(buckets, key=lambda b: b[0]):
        if merged and merged[-1][0] == le:
            merged[-1][1] += count
        else:
            merged.append([le, count])
    if not merged or merged[-1][0] != math.inf:
        return math.nan
    previous = merged[0][1]
    for b in merged[1:]:
        delta = abs(b[1] - previous)
        if delta == 0:
            continue
        if delta / b[1] <= 1e-12:
            b[1] = previous
        else:
            previous = b[1]
    highest = merged[0][1]
    for b in merged[1:]:
        highest = b[1] = max(highest, b[1])
    if len(merged) < 2 or merged[-1][1] == 0:
        return math.nan
    rank = q * merged[-1][1]
    i = next((i for i, b in enumerate(merged[:-1]) if b[1] >= rank), len(merged) - 1)
    if i == len(merged) - 1:
        return merged[-2][0]
    if i == 0 and merged[0][0] <= 0:
        return merged[0][0]
    start, end, count = 0.0, merged[i][0], merged[i][1]
    if i > 0:
        start = merged[i - 1][0]
        count -= merged[i - 1][1]
        rank -= merged[i - 1][1]
    return start + (end - start) * (rank / count)


def p99(buckets: Iterable[tuple[float, float]]) -> float:
    """``histogram_quantile(0.99, buckets)``."""
    return histogram_quantile(0.99, buckets)


# -------------------------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class Check:
    """One analysis verdict, with what it rests on (what a canary's status shows).

    ``value`` is the measured value (an error share in [0, 1], a p99 in ms, a distance or a drift
    score), ``None`` when there was nothing to measure; ``threshold`` the limit it was held to;
    ``samples`` the number of requests (or values) measured; ``message`` one line for a person, with
    the numbers.
    """

    name: CheckName
    verdict: Verdict
    value: float | None
    threshold: float
    samples: float
    message: str


def error_rate_check(
    canary: Totals, stable: Totals, max_error_rate: float, min_requests: int, alpha: float = 0.05
) -> Check:
    """The canary's share of 5xx answers, held to ``max_error_rate`` and compared with the stable's.

    Inconclusive under ``min_requests`` canary requests. Pass when the share is at most
    ``max_error_rate``. Above it, fail only when the canary is also significantly worse than the stable
    (one-sided Fisher's exact test, p < ``alpha``): a share the stable has too is no fault of the canary.
    When the stable served fewer than ``min_requests`` requests (nothing to compare with), fail only when
    the share is significantly above ``max_error_rate`` itself (one-sided binomial test, p < ``alpha``).
    Otherwise pass: nothing shows the canary worse.
    """
    if not 0 <= max_error_rate <= 1:
        raise ValueError(f"maxErrorRate is a share in [0, 1], not {max_error_rate}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha is in (0, 1), not {alpha}")
    n, x = canary.requests(), canary.errors()
    ns, xs = stable.requests(), stable.errors()
    floor = max(1, min_requests)
    rate = x / n if n > 0 else None

    def check(verdict: Verdict, message: str) -> Check:
        return Check("errorRate", verdict, rate, max_error_rate, n, message)

    own = f"error rate {_share(x, n)}"
    theirs = f"stable's {_share(xs, ns)}" if ns > 0 else "the stable served none"
    if rate is None or n < floor:
        why = f"{_n(n)} canary requests ({_n(x)} errors), fewer than minRequests {min_requests}"
        return check("inconclusive", why)
    if rate <= max_error_rate:
        return check("pass", f"{own} <= {_pct(max_error_rate)} ({theirs})")
    if ns >= floor:
        p = stats.fisher_exact_greater(x, n, xs, ns)
        if p < alpha:
            why = f"{own} > {_pct(max_error_rate)} and above {theirs}: p = {p:.3g} < {alpha:g}"
            return check("fail", f"{why} (one-sided Fisher's exact test)")
        why = f"{own} > {_pct(max_error_rate)} but not significantly above {theirs}: p = {p:.3g}"
        return check("pass", f"{why} >= {alpha:g} (one-sided Fisher's exact test)")
    p = stats.binomial_sf(x, n, max_error_rate)
    few = f"the stable served {_n(ns)} requests (fewer than minRequests {min_requests})"
    why = f"{own} > {_pct(max_error_rate)}; {few}, so tested against {_pct(max_error_rate)} itself"
    if p < alpha:
        return check("fail", f"{why}: p = {p:.3g} < {alpha:g} (one-sided binomial test)")
    return check(
        "pass", f"{why}: not significantly above, p = {p:.3g} >= {alpha:g} (one-sided binomial test)"
    )


def slo_error_check(totals: Totals, max_error_rate: float, min_requests: int, alpha: float = 0.05) -> Check:
    """A Monitor's error-rate objective: the share of 5xx answers in the window, violated only when it is
    significantly above ``max_error_rate`` (one-sided binomial test, p < ``alpha``): 2 errors in 100
    requests against a 1 % objective is noise, not a breach. Inconclusive under ``min_requests``
    requests (0/0 included)."""
    n, x = totals.requests(), totals.errors()
    rate = x / n if n > 0 else None

    def check(verdict: Verdict, message: str) -> Check:
        return Check("errorRate", verdict, rate, max_error_rate, n, message)

    if rate is None or n < max(1, min_requests):
        return check(
            "inconclusive", f"{_n(n)} requests ({_n(x)} errors), fewer than minRequests {min_requests}"
        )
    own = f"error rate {_share(x, n)}"
    if rate <= max_error_rate:
        return check("pass", f"{own} <= {_pct(max_error_rate)}")
    p = stats.binomial_sf(x, n, max_error_rate)
    if p < alpha:
        return check(
            "fail", f"{own} > {_pct(max_error_rate)}: p = {p:.3g} < {alpha:g} (one-sided binomial test)"
        )
    return check("pass", f"{own} > {_pct(max_error_rate)} but not significantly: p = {p:.3g} >= {alpha:g}")


def latency_check(
    canary: Totals,
    max_p99_ms: float,
    min_requests: int,
    stable: Totals | None = None,
    subject: str = "canary",
) -> Check:
    """The canary's p99 request duration in ms (PromQL's histogram_quantile on the window's buckets).

    Inconclusive under ``min_requests`` requests, and when the p99 is in the ``+Inf`` bucket while the
    highest finite bound is within ``max_p99_ms`` (the histogram cannot tell whether it is over). Fail
    when above ``max_p99_ms``. The stable's p99 is in the message when ``stable`` has requests.
    """
    buckets = canary.latency_buckets()
    n = buckets[-1][1] if buckets and buckets[-1][0] == math.inf else 0.0
    seconds = p99(buckets) if n > 0 else math.nan
    value = None if math.isnan(seconds) else seconds * 1000

    def check(verdict: Verdict, message: str) -> Check:
        return Check("latencyP99", verdict, value, max_p99_ms, n, message)

    theirs = ""
    if stable is not None:
        stable_buckets = stable.latency_buckets()
        stable_p99 = p99(stable_buckets)
        if not math.isnan(stable_p99):
            theirs = f" (stable {_ms(stable_p99 * 1000)} over {_n(stable_buckets[-1][1])} requests)"
    if value is None or n < max(1, min_requests):
        return check(
            "inconclusive", f"{_n(n)} {subject} requests, fewer than minRequests {min_requests}{theirs}"
        )
    # PromQL answers the highest finite bound when the rank falls in the +Inf bucket: a lower bound only.
    above_all = len(buckets) >= 2 and buckets[-2][1] < 0.99 * n
    if above_all and value <= max_p99_ms:
        why = f"p99 above the highest bucket bound, {_ms(value)}, which is within maxP99 {_ms(max_p99_ms)}"
        return check("inconclusive", f"{why}: the histogram cannot tell ({_n(n)} requests){theirs}")
    shown = f"{'at least ' if above_all else ''}{_ms(value)}"
    if value > max_p99_ms:
        return check("fail", f"p99 {shown} > {_ms(max_p99_ms)} over {_n(n)} requests{theirs}")
    return check("pass", f"p99 {shown} <= {_ms(max_p99_ms)} over {_n(n)} requests{theirs}")


def prediction_distance_check(
    canary: Totals, stable: Totals, max_distance: float, min_requests: int
) -> Check:
    """Jensen-Shannon distance (base 2, in [0, 1]) between the canary's and the stable's predictions.

    Classification: the counts per class (the union of both sides' classes). Regression: the counts per
    bucket of the predicted values, on the bounds both histograms share (both are exact there; two
    models trained on different data versions have different bounds). Inconclusive when either side has
    fewer than ``min_requests`` predictions; fail above ``max_distance``.

    No bins are pooled: pooling on the stable's shares puts a class only the canary predicts together
    with the next rarest one, and a canary whose predictions all moved there measured 0. Sampling noise
    alone gives a distance of about sqrt((k - 1) / (8 ln 2) * (1/n + 1/m)) over k classes (simulated, 2,000
    draws against 1,000 stable predictions: 3 classes 0.056 at n = 100, 99th percentile 0.14; 10 classes
    0.13, 99th percentile 0.21, and 0.082 / 0.13 at n = 300), so the message gives that level beside
    the value: ``min_requests`` should make it well below ``max_distance``.
    """
    canary_classes, stable_classes = canary.class_counts(), stable.class_counts()
    if canary_classes or stable_classes:
        what = "predicted classes"
        classes = list(dict.fromkeys([*stable_classes, *canary_classes]))
        ours = [canary_classes.get(c, 0.0) for c in classes]
        theirs = [stable_classes.get(c, 0.0) for c in classes]
    else:
        what = "predicted values"
        canary_buckets, stable_buckets = dict(canary.prediction_buckets()), dict(stable.prediction_buckets())
        shared = sorted(set(canary_buckets) & set(stable_buckets))
        if not canary_buckets or not stable_buckets:
            ours, theirs = [], []
        elif len(shared) < 2:
            return Check(
                "predictionDistance",
                "inconclusive",
                None,
                max_distance,
                canary_buckets.get(math.inf, 0.0),
                "the canary's and the stable's prediction histograms share no bucket bound to compare on",
            )
        else:
            ours = _per_bucket([(le, canary_buckets[le]) for le in shared])
            theirs = _per_bucket([(le, stable_buckets[le]) for le in shared])
    n, ns = sum(ours), sum(theirs)
    floor = max(1, min_requests)
    if n < floor or ns < floor:
        why = f"{_n(n)} canary and {_n(ns)} stable predictions; each side needs minRequests {min_requests}"
        return Check("predictionDistance", "inconclusive", None, max_distance, n, why)
    distance = stats.js_distance(theirs, ours)
    bins = sum(1 for a, b in zip(ours, theirs, strict=True) if a + b > 0)
    noise = math.sqrt((bins - 1) / (8 * math.log(2)) * (1 / n + 1 / ns))
    verdict: Verdict = "fail" if distance > max_distance else "pass"
    why = f"Jensen-Shannon distance {distance:.3g} {'>' if verdict == 'fail' else '<='} {max_distance:g}"
    why += f" between the canary's and the stable's {what} ({_n(n)} and {_n(ns)} predictions;"
    why += f" noise alone would measure about {noise:.2g})"
    return Check("predictionDistance", verdict, distance, max_distance, n, why)


def input_drift_check(
    canary: Totals, baseline: Mapping[str, Any], max_drift: float | None, min_samples: int | None
) -> Check:
    """PSI of the canary's inputs against the training baseline, per feature (``stats.judge_drift``).

    ``value`` is the worst feature's PSI; the verdict is judge_drift's (fail when any feature's PSI is
    above ``max_drift``; inconclusive under ``min_samples`` values or when a feature has no counts on
    the baseline's bins). ``None`` takes judge_drift's defaults (psi 0.2, 200 values).
    """
    counts, mismatched = _feature_counts(canary, baseline)
    judged = stats.judge_drift(baseline, counts, method="psi", threshold=max_drift, min_samples=min_samples)
    scores = judged.scores
    worst = max(scores.values()) if scores else None
    samples = max((f.samples for f in judged.features), default=0.0)
    total = len(judged.features)
    if judged.verdict == "fail":
        failed = sorted((f for f in judged.features if f.verdict == "fail"), key=lambda f: -(f.score or 0.0))
        named = _some(f"{f.feature} {f.score:.3g}" for f in failed)
        why = f"psi above {judged.threshold:g} on {len(failed)} of {total} features: {named}"
    elif judged.verdict == "pass":
        top = max(judged.features, key=lambda f: f.score or 0.0)
        why = (
            f"psi at most {worst or 0.0:.3g} ({top.feature}) <= {judged.threshold:g} on all {total} features"
        )
        why += f" ({_n(samples)} values)"
    elif not judged.features:
        why = "the baseline has no features"
    else:
        unsure = [f for f in judged.features if f.verdict == "inconclusive"]
        reasons: dict[str, list[str]] = {}
        for f in unsure:
            reason = "the server's bins are not the baseline's" if f.feature in mismatched else f.reason
            reasons.setdefault(reason, []).append(f.feature)
        grouped = "; ".join(f"{_some(names)}: {reason}" for reason, names in reasons.items())
        why = f"could not judge {len(unsure)} of {total} features: {grouped}"
    return Check("inputDrift", judged.verdict, worst, judged.threshold, samples, why)


def _some(names: Iterable[str], shown: int = 3) -> str:
    """The first ``shown`` names, then how many more: status messages stay one short line."""
    items = list(names)
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


def _pct(share: float) -> str:
    return f"{100 * share:.3g} %"


def _share(x: float, n: float) -> str:
    return f"{_pct(x / n) if n else 'n/a'} ({_n(x)} of {_n(n)})"


def _n(count: float) -> str:
    """A count as a person reads it: 1295, not 1.3e+03 (fractional only from an extrapolating source)."""
    return str(int(count)) if float(count).is_integer() else f"{count:.4g}"


def _ms(ms: float) -> str:
    return f"{ms:.0f} ms" if abs(ms) >= 100 else f"{ms:.3g} ms"
