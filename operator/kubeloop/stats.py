"""Statistics shared by ingest (baseline), serve (histograms) and Monitor (drift tests).

numpy only: the server image has no scipy or pandas. The baseline shape is the one in docs/contracts.md:
numeric features carry interior quantile ``edges`` with ``len(counts) == len(edges) + 1`` where bin ``i`` is
``(edges[i-1], edges[i]]``; categorical features carry ``categories`` and ``counts``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

MAX_BINS = 10
# Hashed identifiers or free text would make a baseline as large as the data; the rest is implied by
# rows - nulls - sum(counts) and is what the server counts under "__other__".
MAX_CATEGORIES = 50
OTHER = "__other__"
# Keeps empty bins from making PSI / KL infinite; the usual choice in PSI implementations.
EPSILON = 1e-4


def quantile_edges(values: np.ndarray, max_bins: int = MAX_BINS) -> list[float]:
    """Interior cut points of (at most) ``max_bins`` quantile bins, strictly increasing."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return []
    qs = np.linspace(0.0, 1.0, max_bins + 1)[1:-1]
    cuts = np.quantile(finite, qs, method="linear")
    edges = sorted({float(c) for c in cuts})
    # An edge equal to the maximum would leave the last bin empty by construction.
    top = float(finite.max())
    return [e for e in edges if e < top]


def bin_counts(edges: Sequence[float], values: np.ndarray) -> list[int]:
    """Counts per bin ``(edges[i-1], edges[i]]``; NaN values are not counted."""
    vals = np.asarray(values, dtype=np.float64)
    vals = vals[~np.isnan(vals)]
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), vals, side="left")
    return [int(c) for c in np.bincount(idx, minlength=len(edges) + 1)]


def numeric_summary(values: np.ndarray, max_bins: int = MAX_BINS) -> dict[str, Any]:
    vals = np.asarray(values, dtype=np.float64)
    nulls = int(np.isnan(vals).sum())
    present = vals[~np.isnan(vals)]
    edges = quantile_edges(present, max_bins)
    summary: dict[str, Any] = {
        "kind": "numeric",
        "edges": edges,
        "counts": bin_counts(edges, present),
        "nulls": nulls,
    }
    if present.size:
        summary.update(
            min=float(present.min()),
            max=float(present.max()),
            mean=float(present.mean()),
            std=float(present.std()),
        )
    else:
        summary.update(min=None, max=None, mean=None, std=None)
    return summary


def categorical_summary(values: Iterable[Any], max_categories: int = MAX_CATEGORIES) -> dict[str, Any]:
    """Most frequent categories first (ties by name, so the output is deterministic)."""
    freq: dict[str, int] = {}
    nulls = 0
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            nulls += 1
            continue
        key = str(v)
        freq[key] = freq.get(key, 0) + 1
    ranked = sorted(freq.items(), key=lambda kv: (-kv[1], kv[0]))[:max_categories]
    return {
        "kind": "categorical",
        "categories": [k for k, _ in ranked],
        "counts": [c for _, c in ranked],
        "nulls": nulls,
    }


def category_counts(categories: Sequence[str], values: Iterable[Any]) -> list[int]:
    """Counts of ``values`` over the baseline's ``categories``, plus a last slot for anything else."""
    index = {c: i for i, c in enumerate(categories)}
    counts = [0] * (len(categories) + 1)
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        counts[index.get(str(v), len(categories))] += 1
    return counts


# ---------------------------------------------------------------------------------------------- drift


def _proportions(counts: Sequence[float]) -> npt.NDArray[np.float64]:
    arr = np.asarray(counts, dtype=np.float64)
    total = float(arr.sum())
    if total <= 0:
        raise ValueError("cannot compare an empty distribution (all counts are zero)")
    proportions: npt.NDArray[np.float64] = arr / total
    return proportions


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index over the same bins (counts or proportions)."""
    e = np.clip(_proportions(expected), EPSILON, None)
    a = np.clip(_proportions(actual), EPSILON, None)
    return float(np.sum((a - e) * np.log(a / e)))


def js_distance(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Jensen-Shannon distance (base 2, so in [0, 1])."""
    p, q = _proportions(expected), _proportions(actual)
    m = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        mask = x > 0
        return float(np.sum(x[mask] * np.log2(x[mask] / m[mask])))

    return math.sqrt(max(0.0, (kl(p) + kl(q)) / 2))


def ks_binned(expected: Sequence[float], actual: Sequence[float]) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov on binned counts: (statistic, asymptotic p-value).

    The server only exports histograms, so the statistic is the largest CDF gap at the bin edges, a lower
    bound of the exact one; ``n`` and ``m`` are the counts' totals.
    """
    n, m = float(np.sum(expected)), float(np.sum(actual))
    d = float(np.max(np.abs(np.cumsum(_proportions(expected)) - np.cumsum(_proportions(actual)))))
    en = math.sqrt(n * m / (n + m))
    return d, kolmogorov_sf((en + 0.12 + 0.11 / en) * d)


def kolmogorov_sf(x: float) -> float:
    """P(K > x) for the Kolmogorov distribution (series; exact enough for testing)."""
    if x <= 0:
        return 1.0
    if x < 0.27:  # the series converges slowly here and the answer is 1 to 1e-9 anyway
        return 1.0
    total = float(sum((-1) ** (k - 1) * math.exp(-2 * k * k * x * x) for k in range(1, 101)))
    return min(1.0, max(0.0, 2 * total))


def chi2_test(expected: Sequence[float], actual: Sequence[float]) -> tuple[float, float]:
    """Chi-square goodness of fit of ``actual`` counts against ``expected`` proportions: (stat, p)."""
    obs = np.asarray(actual, dtype=np.float64)
    exp = np.clip(_proportions(expected), EPSILON, None)
    exp = exp / exp.sum() * obs.sum()
    stat = float(np.sum((obs - exp) ** 2 / exp))
    return stat, chi2_sf(stat, len(obs) - 1)


def chi2_sf(x: float, dof: int) -> float:
    """Survival function of chi-square: the regularized upper incomplete gamma Q(k/2, x/2)."""
    if dof <= 0:
        return 1.0
    if x <= 0:
        return 1.0
    return _gamma_q(dof / 2.0, x / 2.0)


def _gamma_q(a: float, x: float) -> float:
    # Numerical Recipes' split: series for P when x < a + 1, Lentz continued fraction for Q otherwise.
    gln = math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        ap = a
        for _ in range(1000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(-x + a * math.log(x) - gln))
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(-x + a * math.log(x) - gln) * h)


def adjust_pvalues(pvalues: Sequence[float], method: str = "holm") -> list[float]:
    """Multiple-testing correction: ``none``, ``bonferroni``, ``holm`` or ``bh`` (Benjamini-Hochberg)."""
    p = [float(v) for v in pvalues]
    n = len(p)
    if n == 0 or method == "none":
        return p
    if method == "bonferroni":
        return [min(1.0, v * n) for v in p]
    order = sorted(range(n), key=lambda i: p[i])
    out = [0.0] * n
    if method == "holm":
        running = 0.0
        for rank, i in enumerate(order):
            running = max(running, min(1.0, (n - rank) * p[i]))
            out[i] = running
        return out
    if method == "bh":
        running = 1.0
        for rank in range(n - 1, -1, -1):
            i = order[rank]
            running = min(running, p[i] * n / (rank + 1))
            out[i] = min(1.0, running)
        return out
    raise ValueError(f"unknown multiple-testing correction {method!r}: use none, bonferroni, holm or bh")
