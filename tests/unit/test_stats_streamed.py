"""The baseline built batch by batch (NumericSketch, CategoryCounts) against the whole-column one."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kubeloop import stats


def sketch_of(values: np.ndarray, batch: int, capacity: int = stats.SKETCH_CAPACITY) -> stats.NumericSketch:
    sketch = stats.NumericSketch(capacity)
    for start in range(0, values.size, batch):
        sketch.add(values[start : start + batch])
    return sketch


def test_a_column_that_fits_the_sketch_gets_the_whole_column_baseline() -> None:
    values = np.random.default_rng(1).normal(size=3000)
    values[::50] = np.nan
    whole = stats.numeric_summary(values)
    assert sketch_of(values, values.size).summary() == whole
    streamed = sketch_of(values, 77).summary()
    assert streamed["edges"] == whole["edges"] and streamed["counts"] == whole["counts"]
    assert streamed["nulls"] == whole["nulls"] == 60
    assert streamed["std"] == pytest.approx(whole["std"], rel=1e-12)


def test_a_large_column_gets_quantile_bins_within_the_rank_error_whatever_the_batches() -> None:
    n, capacity = 400_000, 1024
    values = np.random.default_rng(2).lognormal(size=n)
    first = sketch_of(values, 1000, capacity).summary()
    other = sketch_of(values, 65_537, capacity).summary()
    assert (other["edges"], other["counts"]) == (first["edges"], first["counts"])  # batches do not matter
    assert sum(first["counts"]) == n and len(first["counts"]) == len(first["edges"]) + 1 == 10
    ordered = np.sort(values)
    bound = n / capacity * math.log2(n / capacity)  # values of rank error, at most
    for i, edge in enumerate(first["edges"], start=1):
        rank = np.searchsorted(ordered, edge, side="right")
        assert abs(rank - i * n / 10) <= bound, (i, rank)
    exact = stats.bin_counts(first["edges"], values)
    assert max(abs(a - b) for a, b in zip(first["counts"], exact, strict=True)) <= 2 * bound
    assert first["min"] == values.min() and first["max"] == values.max()
    assert first["mean"] == pytest.approx(values.mean(), rel=1e-9)


def test_category_counts_are_exact_up_to_the_capacity_and_keep_the_frequent_ones_beyond() -> None:
    counts = stats.CategoryCounts(capacity=8)
    counts.add(["b", "a"], [3, 3], nulls=2)
    counts.add(["a", "c"], [1, 5])
    assert counts.summary() == {
        "kind": "categorical",
        "categories": ["c", "a", "b"],
        "counts": [5, 4, 3],
        "nulls": 2,
    }
    for batch in range(100):  # 1,000 identifiers seen once each, and one category a third of the rows
        counts.add([f"id-{batch}-{i}" for i in range(10)] + ["paris"], [1] * 10 + [5])
    assert counts.distinct() <= 16
    top = counts.summary(max_categories=1)
    assert top["categories"] == ["paris"] and 500 - 1012 / 9 <= top["counts"][0] <= 500
