"""Batch scoring in the runtime: a real snapshot (the ingest's own part writer and publish), a real ONNX
model in a real file store, scored by the shard code as the Indexed Job's pods run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kubeloop.contract import DATASET_MARKER, MODEL_MARKER, SCORES_MARKER, scores_prefix
from kubeloop.runtime import score as scoring
from kubeloop.runtime.jobio import DataError
from kubeloop.runtime.serve.examples import build_model_dir, training_data
from kubeloop.runtime.serve.model import Model
from kubeloop.runtime.snapshot import ContentHash, PartWriter, publish, staging_prefix
from kubeloop.runtime.store import Store, join, open_store

ROWS, PART_ROWS = 2000, 700  # three parts: 700, 700, 600


def write_snapshot(store: Store, table: pa.Table, part_rows: int) -> str:
    """A Dataset version as ingest writes it; returns the manifest's URI (the Dataset's artifactURI)."""
    base = join("datasets", "ns", "data")
    staging = staging_prefix(base)
    writer = PartWriter(store, staging, table.schema, part_rows)
    content = ContentHash(table.schema)
    for batch in table.to_batches(max_chunksize=256):
        writer.write(batch)
        content.update(batch)
    parts = writer.close()
    version = content.hexdigest()
    publish(store, staging, join(base, version), parts, table.schema, {"rows": table.num_rows}, version)
    return store.uri(join(base, version, DATASET_MARKER))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("store")
    store = open_store(f"file://{root}")
    x, y = training_data("logistic_regression", rows=ROWS)
    columns = {f"f{i}": pa.array(x[:, i].astype(np.float64)) for i in range(x.shape[1])}
    table = pa.table({**columns, "target": pa.array(y.astype(np.int64))})
    artifact = write_snapshot(store, table, PART_ROWS)
    local = tmp_path_factory.mktemp("model")
    build_model_dir(local, "logistic_regression")
    sha = json.loads((local / MODEL_MARKER).read_text())["sha256"]
    store.put_dir(f"models/{sha}", local, MODEL_MARKER)
    version = artifact.rsplit("/", 2)[-2]
    return {
        "store": store,
        "root": root,
        "x": x,
        "model": Model(local),
        "artifact": artifact,
        "sha": sha,
        "version": version,
    }


def config(world: dict[str, Any], shards: int, job: str, deployment: str = "iris") -> dict[str, Any]:
    return {
        "namespace": "ns",
        "name": deployment,
        "job": job,
        "storeURI": world["store"].uri(),
        "dataset": {"name": "data", "version": world["version"][:16], "artifactURI": world["artifact"]},
        "model": {"uri": world["store"].uri(f"models/{world['sha']}"), "sha256": world["sha"]},
        "output": scores_prefix("ns", deployment, world["version"], world["sha"]),
        "shards": shards,
    }


def read_output(store: Store, output: str) -> tuple[dict[str, Any], pa.Table]:
    manifest = json.loads(store.get_bytes(join(output, SCORES_MARKER)))
    tables = [
        pq.read_table(store.uri(join(output, p["path"])).removeprefix("file://")) for p in manifest["parts"]
    ]
    return manifest, pa.concat_tables(tables)


def expect_in_process(world: dict[str, Any], table: pa.Table) -> None:
    """Row for row what the server's model code predicts for the same rows in this process."""
    model: Model = world["model"]
    wanted = model.predict(world["x"])
    assert wanted.probabilities is not None and wanted.labels is not None
    assert table.num_rows == ROWS
    assert table.column("row").to_pylist() == list(range(ROWS))
    classes = model.card.classes
    assert table.column("prediction").to_pylist() == [classes[i] for i in wanted.labels]
    for i, name in enumerate(classes):
        got = table.column(f"probability_{name}").to_numpy()
        np.testing.assert_array_equal(got, wanted.probabilities[:, i])


def test_parts_are_dealt_largest_first_to_the_least_loaded_shard() -> None:
    assert scoring.assign([700, 700, 600], 1) == [[0, 1, 2]]
    assert scoring.assign([700, 700, 600], 2) == [[0, 2], [1]]
    assert scoring.assign([10, 50, 50, 10], 2) == [[0, 1], [2, 3]]
    assert scoring.assign([5], 3) == [[0], [], []]  # more shards than parts: the rest score nothing
    assert scoring.assign([], 2) == [[], []]
    # every part exactly once, whatever the shard count
    rows = [int(r) for r in np.random.default_rng(0).integers(1, 1000, 37)]
    for shards in (1, 2, 3, 8, 40):
        dealt = scoring.assign(rows, shards)
        assert sorted(p for parts in dealt for p in parts) == list(range(len(rows)))
        loads = [sum(rows[p] for p in parts) for parts in dealt]
        assert max(loads) - min(loads) <= max(rows)
    assert scoring.offsets([700, 700, 600]) == [0, 700, 1400]


def test_one_shard_scores_every_row_as_the_model_does_in_process(world: dict[str, Any]) -> None:
    cfg = config(world, 1, "iris-score-1")
    result = scoring.score(cfg, 0, threads=1)
    assert result["complete"] is True and result["rows"] == ROWS and result["totalRows"] == ROWS
    assert result["outputURI"] == world["store"].uri(join(cfg["output"], SCORES_MARKER))
    manifest, table = read_output(world["store"], cfg["output"])
    assert manifest["rows"] == ROWS
    assert manifest["model"]["sha256"] == world["sha"]
    assert [p["path"] for p in manifest["parts"]] == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert [p["rows"] for p in manifest["parts"]] == [700, 700, 600]
    expect_in_process(world, table)


def test_two_shards_give_the_same_output_and_only_the_last_writes_the_manifest(
    world: dict[str, Any],
) -> None:
    one = config(world, 1, "one-score", deployment="one")
    scoring.score(one, 0, threads=1)
    two = config(world, 2, "two-score", deployment="two")
    store: Store = world["store"]
    first = scoring.score(two, 1, threads=1)
    assert first["complete"] is False and first["rows"] == 700  # index 1 has part 1
    assert not store.exists(join(two["output"], SCORES_MARKER)), "one shard of two must not look complete"
    last = scoring.score(two, 0, threads=1)
    assert last["complete"] is True and last["rows"] == 1300 and last["totalRows"] == ROWS
    manifest_one, _ = read_output(store, one["output"])
    manifest_two, table = read_output(store, two["output"])
    assert manifest_two == manifest_one  # the same parts, byte for byte (their sha256s), the same rows
    expect_in_process(world, table)


def test_a_shard_killed_mid_way_and_retried_gives_the_same_output(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = config(world, 1, "ref-score", deployment="ref")
    scoring.score(reference, 0, threads=1)
    cfg = config(world, 2, "retried-score", deployment="retried")
    store: Store = world["store"]
    scoring.score(cfg, 1, threads=1)
    real = scoring.scored_batch
    calls = {"n": 0}

    def dies_on_the_second_part(*args: Any) -> pa.RecordBatch:
        calls["n"] += 1
        if calls["n"] > 3:  # index 0 has parts 0 and 2, 3 batches of 256 rows each: die early in part 2
            raise MemoryError("the pod was killed")
        return real(*args)

    monkeypatch.setattr(scoring, "BATCH_ROWS", 256)  # several batches a part, so the kill is mid-part
    monkeypatch.setattr(scoring, "scored_batch", dies_on_the_second_part)
    with pytest.raises(MemoryError):
        scoring.score(cfg, 0, threads=1)
    assert not store.exists(join(cfg["output"], SCORES_MARKER))
    assert not store.exists(join(cfg["output"], "part-00002.parquet")), "a half-written part must not show"
    monkeypatch.setattr(scoring, "scored_batch", real)
    monkeypatch.setattr(scoring, "BATCH_ROWS", 65_536)
    retried = scoring.score(cfg, 0, threads=1)  # the Job runs the index again
    assert retried["complete"] is True
    again = scoring.score(cfg, 0, threads=1)  # and once more: idempotent
    assert again["complete"] is True
    assert read_output(store, cfg["output"])[0] == read_output(store, reference["output"])[0]
    expect_in_process(world, read_output(store, cfg["output"])[1])


def test_a_feature_the_snapshot_lacks_or_a_null_is_a_data_error(
    world: dict[str, Any], tmp_path: Path
) -> None:
    store = open_store(f"file://{tmp_path}")
    x = world["x"][:50]
    columns = {f"f{i}": pa.array(x[:, i].astype(np.float64)) for i in range(1, x.shape[1])}
    artifact = write_snapshot(store, pa.table(columns), 20)
    local = tmp_path / "m"
    build_model_dir(local, "logistic_regression")
    sha = json.loads((local / MODEL_MARKER).read_text())["sha256"]
    store.put_dir(f"models/{sha}", local, MODEL_MARKER)
    cfg = {
        **config(world, 1, "bad-score", deployment="bad"),
        "storeURI": store.uri(),
        "dataset": {"name": "d", "version": "0" * 16, "artifactURI": artifact},
        "model": {"uri": store.uri(f"models/{sha}"), "sha256": sha},
    }
    with pytest.raises(DataError, match=r"no column\(s\) \['f0'\]") as error:
        scoring.score(cfg, 0, threads=1)
    assert error.value.reason == "MissingFeature"

    values = x[:, 0].astype(np.float64).tolist()
    values[33] = None
    with_null = pa.table({"f0": pa.array(values, type=pa.float64()), **columns})
    cfg["dataset"]["artifactURI"] = write_snapshot(store, with_null, 20)
    with pytest.raises(DataError, match="'f0' is null or NaN in row 34 of the snapshot") as error:
        scoring.score(cfg, 0, threads=1)
    assert error.value.reason == "MissingValue"
    with pytest.raises(DataError, match="index 1 is not one of the 1 shard"):
        scoring.score(cfg, 1, threads=1)


def test_the_trainer_image_can_score_without_the_servers_http_libraries() -> None:
    """The scoring pods run the trainer image: ONNX Runtime and pyarrow, no orjson, httptools or uvloop."""
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('orjson', 'httptools', 'uvloop'):\n"
        "            raise ImportError(f'{name} is not in the trainer image')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import kubeloop.runtime.score\n"
    )
    subprocess.run([sys.executable, "-c", blocker], check=True, env={**os.environ})
