"""The memory a trial needs, judged before any trial starts (kubeloop.controllers.trainingjob), and the
Kubernetes quantities it compares (kubeloop.api.common.quantity_value)."""

from __future__ import annotations

from typing import Any

import pytest

from kubeloop.api.common import quantity_value
from kubeloop.api.trainingjob import TrainingJobSpec
from kubeloop.controllers.trainingjob import memory_needed, memory_refusal


@pytest.mark.parametrize(
    ("quantity", "value"),
    [
        ("512Mi", 512 * 2**20),
        ("1Gi", 2**30),
        ("1.5G", 1.5e9),
        ("100m", 0.1),
        ("1e3", 1000.0),
        ("1E3", 1000.0),
        ("3E", 3e18),
        (".5Ki", 512.0),
        (7, 7.0),
    ],
)
def test_quantity_value(quantity: Any, value: float) -> None:
    assert quantity_value(quantity) == pytest.approx(value)


def test_a_string_outside_the_quantity_grammar_is_refused() -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        quantity_value("banana")


def spec(memory: str | None) -> TrainingJobSpec:
    resources = {"limits": {"memory": memory}} if memory else {"requests": {"cpu": "1"}}
    return TrainingJobSpec.model_validate(
        {"datasetRef": {"name": "big"}, "model": {"estimator": "LogisticRegression"}, "resources": resources}
    )


def dataset(rows: int, columns: int, version: str = "v" * 64) -> dict[str, Any]:
    return {"status": {"version": version, "rows": rows, "columns": columns}}


def test_the_need_grows_with_the_cells_of_the_snapshot() -> None:
    # the figures of bench/train_memory_bench.py: 793 MiB measured at 800,000 rows x 20 columns
    assert memory_needed(800_000, 20) < 793 * 2**20
    assert memory_needed(800_000, 20) > memory_needed(100_000, 20) > memory_needed(100, 20)


def test_a_limit_below_the_need_is_refused_saying_what_to_raise() -> None:
    said = memory_refusal(spec("512Mi"), dataset(10_000_000, 20), "v" * 64)
    assert said is not None
    assert "10,000,000 rows x 20 columns" in said and "memory limit 512Mi" in said, said
    assert "raise resources.limits.memory" in said, said


@pytest.mark.parametrize(
    ("memory", "data", "version"),
    [
        ("8Gi", dataset(10_000_000, 20), "v" * 64),  # it fits
        ("512Mi", dataset(150, 5), "v" * 64),  # iris fits anything the runtime starts in
        ("512Mi", dataset(10_000_000, 20), "w" * 64),  # an older version: its columns are not known
        ("512Mi", {"status": {"version": "v" * 64}}, "v" * 64),  # no statistics yet
    ],
)
def test_no_refusal_without_certainty(memory: str, data: dict[str, Any], version: str) -> None:
    assert memory_refusal(spec(memory), data, version) is None


def test_the_default_limit_applies_when_the_spec_sets_none() -> None:
    # resources without limits: the pods get the spec's resources as written, so no memory limit at all
    assert memory_refusal(spec(None), dataset(10**9, 20), "v" * 64) is None
    # no resources at all: the trainer's default limit (2Gi)
    bare = TrainingJobSpec.model_validate({"datasetRef": {"name": "big"}, "model": {"estimator": "Ridge"}})
    assert memory_refusal(bare, dataset(100_000_000, 20), "v" * 64) is not None


def test_a_sample_needs_less_than_the_whole_snapshot_but_its_arrow_table_still_counts() -> None:
    whole = memory_needed(10_000_000, 20)
    sampled = memory_needed(10_000_000, 20, 100_000)
    assert memory_needed(100_000, 20) < sampled < whole
    assert memory_needed(10_000_000, 20, 20_000_000) == whole  # a sample larger than the data: every row
    bounded = TrainingJobSpec.model_validate(
        {
            "datasetRef": {"name": "big"},
            "model": {"estimator": "LogisticRegression"},
            "resources": {"limits": {"memory": "2Gi"}},
            "sampleRows": 100_000,
        }
    )
    assert memory_refusal(spec("2Gi"), dataset(10_000_000, 20), "v" * 64) is not None
    assert memory_refusal(bounded, dataset(10_000_000, 20), "v" * 64) is None
