"""Prometheus metrics kept as plain counters and rendered only when scraped.

The request path does no more than a dict increment, a bisect and a copy of its rows into preallocated
buffers: per-feature and per-class counts are computed from the buffers in one vectorised pass when they
are full (about ``FLUSH_VALUES`` input values) or scraped. Nothing per request stays alive until then, so
the cyclic GC has nothing new to walk, and one pass stays near 0.1 ms: binning 4096 queued requests at
once was a 6.5 ms stall every 4096 requests, which was the p99 at one connection. Names and labels:
docs/contracts.md.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from kubeloop import stats

from .limits import HEADER_TIMEOUT, IDLE_TIMEOUT, LINGER_TIMEOUT, REQUEST_TIMEOUT, UNREAD_ANSWERS
from .model import Inputs, Mixed, Model, Prediction, Rows

LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# Regression outputs without a numeric target in the baseline still get a (coarse) histogram.
DEFAULT_VALUE_BUCKETS = (-1000.0, -100.0, -10.0, -1.0, 0.0, 1.0, 10.0, 100.0, 1000.0)
# Input values buffered between binning passes: bounds the pause of one pass (~0.1 ms) and its memory.
FLUSH_VALUES = 4096


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(v: float) -> str:
    return repr(float(v)) if v not in (float("inf"), float("-inf")) else ("+Inf" if v > 0 else "-Inf")


def _category_index(categories: list[str]) -> dict[float, int]:
    """Model inputs are numbers: the category "3" arrives as 3.0, a bool's "True" as 1.0."""
    index: dict[float, int] = {}
    for i, category in enumerate(categories):
        key = {"true": 1.0, "false": 0.0}.get(category.lower())
        if key is None:
            try:
                key = float(category)
            except ValueError:
                continue  # a text category cannot arrive as a number: its values count as __other__
        index.setdefault(key, i)
    return index


def float32_cuts(bounds: Sequence[float] | npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Bounds as the float32 values the model's inputs and outputs are: training computed them in float64
    from data such as 5.8, which arrives as float32 5.8000002; compared with the float64 bound it would move
    to the next bin. (Quantile edges are data values, so on data with repeated values a large share of
    the rows sits exactly on an edge: iris traffic showed PSI 0.74 against its own baseline.)"""
    return np.asarray(bounds, dtype=np.float32).astype(np.float64)


class Histogram:
    """Per-bucket (not cumulative) counts; bucket i holds values in (bounds[i-1], bounds[i]]."""

    __slots__ = ("bounds", "counts", "cuts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = [float(b) for b in bounds]
        self.cuts = float32_cuts(self.bounds).tolist()  # what float32 values are binned by (add)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def add(self, values: npt.NDArray[np.float32]) -> None:
        finite = values[np.isfinite(values)].astype(np.float64)
        for i, c in enumerate(stats.bin_counts(self.cuts, finite)):
            self.counts[i] += c
        self.sum += float(finite.sum())

    def render(self, name: str, labels: str, out: list[str]) -> None:
        render_histogram(name, labels, self.bounds, self.counts, self.sum, out)


def render_histogram(
    name: str, labels: str, bounds: Sequence[float], counts: Sequence[int], total_sum: float, out: list[str]
) -> None:
    """Prometheus buckets are cumulative; ``counts`` are per bucket, the last one above every bound."""
    total = 0
    for bound, count in zip([*bounds, float("inf")], counts, strict=True):
        total += count
        out.append(f'{name}_bucket{{{labels},le="{_num(bound)}"}} {total}')
    out.append(f"{name}_sum{{{labels}}} {float(total_sum)!r}")
    out.append(f"{name}_count{{{labels}}} {total}")


class FeatureBins:
    """The numeric features' histograms on the baseline's edges, binned a buffer of rows at a time.

    A value's bucket is the number of its feature's edges below it (searchsorted, left), as
    ``stats.bin_counts`` gives it in training; all features' buckets are then counted by one bincount.
    (A broadcast comparison of every value with every edge was slower: its reduction over the short
    edge axis costs more than a searchsorted per feature.)
    """

    def __init__(self, features: list[tuple[int, str, list[float]]]) -> None:
        """``features``: (input column, label-escaped name, the baseline's edges) of each numeric feature."""
        self.columns = [j for j, _, _ in features]
        self.names = [name for _, name, _ in features]
        self.edges = [np.array([float(b) for b in e]) for _, _, e in features]
        self._cuts = [float32_cuts(e) for e in self.edges]  # the inputs are float32
        width = max((len(e) for e in self.edges), default=0) + 1
        self._offsets = np.arange(len(self.edges)) * width
        self.counts = np.zeros((len(self.edges), width), dtype=np.int64)
        self.sums = np.zeros(len(self.edges))

    def add(self, x: Rows) -> None:
        """``x``: rows of every model input; NaN and infinities are not counted (as in the baseline)."""
        if not self.columns:
            return
        values = x[:, self.columns].astype(np.float64)
        bins = np.empty(values.shape, dtype=np.intp)
        for i, cuts in enumerate(self._cuts):
            bins[:, i] = np.searchsorted(cuts, values[:, i], side="left")
        finite = np.isfinite(values)
        bins += self._offsets
        self.counts += np.bincount(bins[finite], minlength=self.counts.size).reshape(self.counts.shape)
        self.sums += np.where(finite, values, 0.0).sum(axis=0)

    def render(self, name: str, labels: str, out: list[str]) -> None:
        for i, feature in enumerate(self.names):
            edges = self.edges[i].tolist()
            counts = self.counts[i, : len(edges) + 1].tolist()
            render_histogram(name, f'{labels},feature="{feature}"', edges, counts, float(self.sums[i]), out)


class ConnectionCounts:
    """What the connection limits did, counted from the start of the process (before a model loads)."""

    def __init__(self) -> None:
        self.refused = 0  # answered 503 and closed at once: max_connections were open
        # Closed by the server, by reason; every reason from 0, so that a first one is a rise.
        reasons = (HEADER_TIMEOUT, REQUEST_TIMEOUT, IDLE_TIMEOUT, LINGER_TIMEOUT, UNREAD_ANSWERS)
        self.closed = dict.fromkeys(reasons, 0)


class Metrics:
    def __init__(self, model: Model) -> None:
        self.model_label = f'model="{_label(model.name)}"'
        self.info_labels = f'{self.model_label},version="{_label(model.version)}",sha256="{model.sha256}"'
        self.features = model.card.features
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, Histogram] = {}
        self.batch_sizes = Histogram(BATCH_BUCKETS)
        self.ready = False
        # Rows since the last binning pass; sized so that one pass bins about FLUSH_VALUES values. A mixed
        # model's numbers and strings (its categorical features) are buffered apart, as they arrive.
        capacity = min(1024, max(16, FLUSH_VALUES // len(self.features)))
        columns = model.numeric if model.mixed else self.features
        self._x = np.empty((capacity, len(columns)), dtype=np.float32)
        self._s = np.empty((capacity, len(model.categorical)), dtype=object)
        self._labels = np.empty(capacity, dtype=np.int64)
        self._values = np.empty(capacity, dtype=np.float32)
        self._rows = 0

        self.classes = [str(c) for c in model.card.classes]
        self.class_counts = np.zeros(len(self.classes), dtype=np.int64)
        baseline = model.baseline.get("features", {})
        target = model.baseline.get("target") or {}
        self.prediction_values = Histogram(
            target["edges"]
            if target.get("kind") == "numeric" and target.get("edges")
            else DEFAULT_VALUE_BUCKETS
        )
        # Features the baseline knows, on its bins, so drift needs nothing but these series.
        numeric: list[tuple[int, str, list[float]]] = []
        self.categorical: list[tuple[int, str, list[str], dict[float, int], list[int]]] = []
        # A mixed model's string inputs: (column in the strings, label, categories, index, counts).
        self.strings: list[tuple[int, str, list[str], dict[str, int], list[int]]] = []
        for feature in model.categorical:
            spec = baseline.get(feature) or {}
            if spec.get("kind") == "categorical" and isinstance(spec.get("categories"), list):
                cats = [str(c) for c in spec["categories"]]
                index = {c: i for i, c in enumerate(cats)}
                j = model.categorical.index(feature)
                self.strings.append((j, _label(feature), cats, index, [0] * (len(cats) + 1)))
        for j, feature in enumerate(columns):
            spec = baseline.get(feature) or {}
            if spec.get("kind") == "numeric" and isinstance(spec.get("edges"), list):
                numeric.append((j, _label(feature), spec["edges"]))
            elif spec.get("kind") == "categorical" and isinstance(spec.get("categories"), list):
                cats = [str(c) for c in spec["categories"]]
                self.categorical.append(
                    (j, _label(feature), cats, _category_index(cats), [0] * (len(cats) + 1))
                )
        self.numeric = FeatureBins(numeric)

    def request(self, protocol: str, code: int, seconds: float) -> None:
        key = (protocol, code)
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.latency.get(protocol)
        if hist is None:
            hist = self.latency[protocol] = Histogram(LATENCY_BUCKETS)
        hist.observe(seconds)

    def batch(self, x: Inputs, pred: Prediction) -> None:
        """One ORT call's inputs and outputs, copied into the buffers; binned when they are full."""
        n = len(x)
        numbers: Rows
        strings = None
        if isinstance(x, Mixed):
            numbers, strings = x.numbers, x.strings
        else:
            numbers = x
        self.batch_sizes.observe(n)
        labels, _, values = pred
        capacity = len(self._x)
        done = 0
        while done < n:
            start = self._rows
            take = min(capacity - start, n - done)
            end = start + take
            self._x[start:end] = numbers[done : done + take]
            if strings is not None:
                self._s[start:end] = strings[done : done + take]
            if labels is not None:
                self._labels[start:end] = labels[done : done + take]
            elif values is not None:
                self._values[start:end] = values[done : done + take]
            self._rows = end
            done += take
            if end == capacity:
                self.flush()

    def flush(self) -> None:
        rows, self._rows = self._rows, 0
        if not rows:
            return
        x = self._x[:rows]
        self.numeric.add(x)
        for j, _, cats, index, counts in self.categorical:
            other = len(cats)
            seen = [index.get(v, other) for v in x[:, j].tolist() if v == v]  # NaN (missing) is not counted
            for i, c in enumerate(np.bincount(seen, minlength=other + 1).tolist()):
                counts[i] += c
        for j, _, cats, names, counts in self.strings:
            other = len(cats)
            # "" is a missing value, which the baseline counts as a null, not as a category.
            found = [names.get(v, other) for v in self._s[:rows, j].tolist() if v]
            for i, c in enumerate(np.bincount(found, minlength=other + 1).tolist()):
                counts[i] += c
        if self.classes:
            self.class_counts += np.bincount(self._labels[:rows], minlength=len(self.classes))
        else:
            self.prediction_values.add(self._values[:rows])

    def render(self, connections: ConnectionCounts | None = None, open_connections: int = 0) -> bytes:
        self.flush()
        m = self.model_label
        out = [
            "# HELP kubeloop_model_info The model this process serves (1 once loaded).",
            "# TYPE kubeloop_model_info gauge",
            f"kubeloop_model_info{{{self.info_labels}}} 1",
            "# HELP kubeloop_model_ready 1 when loaded, digest-checked and self-tested, and not draining.",
            "# TYPE kubeloop_model_ready gauge",
            f"kubeloop_model_ready{{{m}}} {int(self.ready)}",
            "# HELP kubeloop_requests_total Inference and metadata requests by protocol and HTTP status.",
            "# TYPE kubeloop_requests_total counter",
        ]
        for (protocol, code), n in sorted(self.requests.items()):
            out.append(f'kubeloop_requests_total{{{m},protocol="{protocol}",code="{code}"}} {n}')
        out += [
            "# HELP kubeloop_request_duration_seconds Time from the first byte of a request to its answer.",
            "# TYPE kubeloop_request_duration_seconds histogram",
        ]
        for protocol, hist in sorted(self.latency.items()):
            hist.render("kubeloop_request_duration_seconds", f'{m},protocol="{protocol}"', out)
        out += [
            "# HELP kubeloop_batch_size Rows per ONNX Runtime call (micro-batches).",
            "# TYPE kubeloop_batch_size histogram",
        ]
        self.batch_sizes.render("kubeloop_batch_size", m, out)
        if self.classes:
            out += [
                "# HELP kubeloop_predictions_total Predictions by class.",
                "# TYPE kubeloop_predictions_total counter",
            ]
            for cls, n in zip(self.classes, self.class_counts.tolist(), strict=True):
                out.append(f'kubeloop_predictions_total{{{m},class="{_label(cls)}"}} {n}')
        else:
            out += [
                "# HELP kubeloop_prediction_value Predicted values (regression).",
                "# TYPE kubeloop_prediction_value histogram",
            ]
            self.prediction_values.render("kubeloop_prediction_value", m, out)
        if self.numeric.names:
            out += [
                "# HELP kubeloop_feature_value Input values on the bins of the training baseline.",
                "# TYPE kubeloop_feature_value histogram",
            ]
            self.numeric.render("kubeloop_feature_value", m, out)
        if self.categorical or self.strings:
            out += [
                "# HELP kubeloop_feature_category_total Input values by the baseline's categories.",
                "# TYPE kubeloop_feature_category_total counter",
            ]
            for _, feature, cats, _, counts in [*self.categorical, *self.strings]:
                for cat, n in zip([*cats, stats.OTHER], counts, strict=True):
                    out.append(
                        f'kubeloop_feature_category_total{{{m},feature="{feature}",'
                        f'category="{_label(cat)}"}} {n}'
                    )
        if connections is not None:
            out += [
                "# HELP kubeloop_connections_open Open client connections.",
                "# TYPE kubeloop_connections_open gauge",
                f"kubeloop_connections_open{{{m}}} {open_connections}",
                "# HELP kubeloop_connections_refused_total Connections answered 503 and closed at once: "
                "max-connections were open.",
                "# TYPE kubeloop_connections_refused_total counter",
                f"kubeloop_connections_refused_total{{{m}}} {connections.refused}",
                "# HELP kubeloop_connections_closed_total Connections closed by the server: a timeout ran "
                "out, or the client left its answers unread.",
                "# TYPE kubeloop_connections_closed_total counter",
            ]
            for reason, n in connections.closed.items():
                out.append(f'kubeloop_connections_closed_total{{{m},reason="{reason}"}} {n}')
        return ("\n".join(out) + "\n").encode()
