"""Batch scoring: one index of an Indexed Job scores its share of a snapshot's parts with the served model.

``python -m kubeloop.runtime score``; config in ``KUBELOOP_CONFIG`` (namespace, name, job, storeURI,
dataset {name, version, artifactURI}, model {uri, sha256}, output prefix, shards), the index in
``JOB_COMPLETION_INDEX`` (set by the Job controller).

Every index reads the input manifest and computes the same assignment of parts to indexes (``assign``).
For each of its parts it writes one output part of the same name under the output prefix: the same rows
in the same order, with the row's number in the snapshot (``row``), the ``prediction`` and, for a
classifier, one ``probability_<class>`` column per class. Each write is atomic (temp + rename, or one
S3 upload) and its bytes depend only on the input part and the model, so a retried index rewrites the very
same parts. Then the index records the parts it wrote (``.indexes/<job>/index-NNNNN.json``) and looks
whether every index of its Job has: the one that finds them all writes the output manifest, last. Output
without a manifest is never complete; rows are checked to equal the input's.

The model is the server's own code (kubeloop.runtime.serve.model: the digest checked, the card read, the
self-test run), fetched like the inference pod's init step does; no HTTP.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kubeloop.contract import COMPLETION_INDEX_ENV, DATASET_MARKER, SCORES_MARKER
from kubeloop.runtime import jobio
from kubeloop.runtime.fetch import fetch
from kubeloop.runtime.jobio import DataError
from kubeloop.runtime.serve.model import Model, ModelLoadError, cpu_limit
from kubeloop.runtime.snapshot import Hashing
from kubeloop.runtime.store import Store, StoreError, join, open_store

OUTPUT_FORMAT = 1
INDEXES_DIR = ".indexes"
# Rows per ONNX Runtime call and per output row group: large enough that a call's overhead vanishes,
# small enough that a batch of 20 float features stays a few MiB.
BATCH_ROWS = 65_536


def assign(rows: list[int], shards: int) -> list[list[int]]:
    """The parts (indices into ``rows``, the rows of each part) each shard scores: the largest part first
    to the least loaded shard (the lowest-numbered on ties), so the shards' rows differ by at most one
    part. Deterministic: every index computes the same assignment from the manifest. Pure."""
    if shards < 1:
        raise ValueError("shards must be at least 1")
    load = [0] * shards
    owned: list[list[int]] = [[] for _ in range(shards)]
    for part in sorted(range(len(rows)), key=lambda p: (-rows[p], p)):
        shard = min(range(shards), key=lambda s: (load[s], s))
        owned[shard].append(part)
        load[shard] += rows[part]
    return [sorted(parts) for parts in owned]


def offsets(rows: list[int]) -> list[int]:
    """The number in the snapshot of each part's first row (from 0). Pure."""
    return [sum(rows[:i]) for i in range(len(rows))]


def class_array(classes: list[object]) -> pa.Array:
    """The card's classes as an Arrow array (their JSON type; text when the types are mixed). Pure."""
    try:
        return pa.array(classes)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([str(c) for c in classes])


def output_schema(model: Model) -> pa.Schema:
    """row, prediction, and a probability per class for a classifier."""
    fields = [pa.field("row", pa.int64(), nullable=False)]
    if model.classification:
        fields.append(pa.field("prediction", class_array(model.card.classes).type, nullable=False))
        fields += [pa.field(f"probability_{c}", pa.float32(), nullable=False) for c in model.card.classes]
    else:
        fields.append(pa.field("prediction", pa.float32(), nullable=False))
    return pa.schema(fields)


def feature_matrix(batch: pa.RecordBatch, model: Model, first_row: int, part: str) -> np.ndarray:
    """The batch's feature columns (in the card's order) as the float32 matrix the model takes; a column
    the model cannot take is a DataError naming it and the row (counted from 1 in the snapshot)."""
    columns = []
    for feature in model.card.features:
        column = batch.column(feature)
        if not (
            pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or column.type == pa.bool_()
        ):
            raise DataError(
                "UnsupportedFeature",
                f"{part}: feature {feature!r} is {column.type}; the model takes numbers (and booleans)",
            )
        values = pc.cast(column, pa.float32()).to_numpy(zero_copy_only=False)
        if not model.card.allow_nan:
            bad = np.flatnonzero(np.isnan(values))
            if bad.size:
                raise DataError(
                    "MissingValue",
                    f"{part}: feature {feature!r} is null or NaN in row {first_row + int(bad[0]) + 1} of the "
                    f"snapshot ({bad.size} such rows in this batch); the model was not trained to take it",
                )
        columns.append(values)
    return np.ascontiguousarray(np.stack(columns, axis=1), dtype=np.float32)


def predict(model: Model, x: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """(class indices or None, probabilities or values) for every row; a graph with a fixed batch size
    is fed exactly that many rows a call (the last call padded, the padding dropped)."""
    size = model.fixed_rows
    if size is None:
        chunks = [x]
    else:
        pad = (-len(x)) % size
        padded = np.vstack([x, np.zeros((pad, x.shape[1]), dtype=np.float32)]) if pad else x
        chunks = [padded[i : i + size] for i in range(0, len(padded), size)]
    answers = [model.predict(chunk) for chunk in chunks]
    if model.classification:
        probabilities = np.vstack([a.probabilities for a in answers if a.probabilities is not None])[: len(x)]
        return probabilities.argmax(axis=1), probabilities
    return None, np.concatenate([a.values for a in answers if a.values is not None])[: len(x)]


def scored_batch(model: Model, schema: pa.Schema, x: np.ndarray, first_row: int) -> pa.RecordBatch:
    labels, out = predict(model, x)
    row = pa.array(np.arange(first_row, first_row + len(x), dtype=np.int64))
    if labels is None:
        return pa.record_batch([row, pa.array(out.astype(np.float32))], schema=schema)
    prediction = class_array(model.card.classes).take(pa.array(labels))
    probabilities = [pa.array(np.ascontiguousarray(out[:, i], dtype=np.float32)) for i in range(out.shape[1])]
    return pa.record_batch([row, prediction, *probabilities], schema=schema)


def read_part(store: Store, part: dict[str, Any]) -> bytes:
    """An input part, checked against the manifest's sha256."""
    data = store.get_bytes(part["path"])
    if hashlib.sha256(data).hexdigest() != part["sha256"]:
        raise DataError("ChecksumMismatch", f"{store.uri(part['path'])} does not match its manifest")
    return data


def score_part(
    source_store: Store, part: dict[str, Any], store: Store, out_prefix: str, model: Model, first_row: int
) -> dict[str, Any]:
    """Score one input part (``source_store`` is the snapshot's directory) into the output part of the
    same name under ``out_prefix``; its record for the manifest."""
    what = source_store.uri(part["path"])
    source = pq.ParquetFile(pa.BufferReader(read_part(source_store, part)))
    missing = [f for f in model.card.features if f not in source.schema_arrow.names]
    if missing:
        raise DataError(
            "MissingFeature",
            f"the snapshot has no column(s) {missing} that the model takes; "
            f"it has {source.schema_arrow.names}",
        )
    schema = output_schema(model)
    rows = 0
    with contextlib.ExitStack() as stack:
        sink = Hashing(stack.enter_context(store.open_write(join(out_prefix, part["path"]))))
        writer = pq.ParquetWriter(pa.PythonFile(sink, mode="w"), schema, compression="zstd")
        try:
            for batch in source.iter_batches(batch_size=BATCH_ROWS, columns=model.card.features):
                x = feature_matrix(batch, model, first_row + rows, what)
                writer.write_batch(
                    scored_batch(model, schema, x, first_row + rows), row_group_size=BATCH_ROWS
                )
                rows += batch.num_rows
        finally:
            writer.close()
    if rows != part["rows"]:
        raise DataError("RowsMismatch", f"{what} has {rows} rows, its manifest says {part['rows']}")
    return {
        "path": part["path"],
        "rows": rows,
        "bytes": sink.size,
        "sha256": sink.sha.hexdigest(),
        "input": {"path": part["path"], "sha256": part["sha256"]},
    }


def index_record_key(output: str, job: str, index: int) -> str:
    return join(output, INDEXES_DIR, job, f"index-{index:05d}.json")


def output_manifest(
    records: list[dict[str, Any]], inputs: dict[str, Any], model: dict[str, str], schema: pa.Schema
) -> dict[str, Any]:
    """The output manifest from every index's record: the parts in the input's order. Its bytes depend
    on the input and the model only (no times, no Job names), so a re-run writes the same file. Pure."""
    parts = sorted((p for r in records for p in r["parts"]), key=lambda p: str(p["path"]))
    return {
        "format": OUTPUT_FORMAT,
        "rows": sum(int(p["rows"]) for p in parts),
        "model": {"uri": model["uri"], "sha256": model["sha256"]},
        "input": inputs,
        "columns": [{"name": f.name, "type": str(f.type)} for f in schema],
        "parts": parts,
    }


@dataclass(frozen=True)
class Run:
    """One Job's output: where it goes, and which index of how many this pod is."""

    store: Store
    output: str
    job: str
    shards: int
    index: int


def finish(
    job: Run, manifest_in: dict[str, Any], model: dict[str, str], schema: pa.Schema
) -> dict[str, Any] | None:
    """Write the output manifest when every index of the Job has recorded its parts; None otherwise (an
    index still runs: it writes the manifest when it finishes). Indexes record before they look, so the
    last to finish always sees every record."""
    records = []
    for index in range(job.shards):
        try:
            records.append(json.loads(job.store.get_bytes(index_record_key(job.output, job.job, index))))
        except StoreError:
            return None
    inputs = {"sha256": manifest_in["sha256"], "rows": manifest_in["rows"]}
    manifest = output_manifest(records, inputs, model, schema)
    if manifest["rows"] != manifest_in["rows"] or len(manifest["parts"]) != len(manifest_in["parts"]):
        raise DataError(
            "RowsMismatch",
            f"the shards wrote {manifest['rows']} rows in {len(manifest['parts'])} part(s); the input has "
            f"{manifest_in['rows']} in {len(manifest_in['parts'])}",
        )
    text = json.dumps(manifest, indent=1, sort_keys=True).encode()
    job.store.put_bytes(join(job.output, SCORES_MARKER), text)
    return manifest


def load_model(uri: str, sha256: str, directory: Path, threads: int | None) -> Model:
    fetch(uri, sha256, str(directory))
    try:
        return Model(directory, expected_sha256=sha256, threads=threads)
    except ModelLoadError as error:
        raise DataError(error.reason, error.message) from None


def batch_threads() -> int:
    """ONNX Runtime threads: every CPU of the pod (no event loop to leave one to, unlike the server)."""
    return max(1, math.floor(cpu_limit()))


def score(config: dict[str, Any], index: int, threads: int | None = None) -> dict[str, Any]:
    for field in ("storeURI", "job", "output", "dataset", "model", "shards"):
        if not config.get(field):
            raise DataError("InvalidConfig", f"config needs {field!r}")
    shards = int(config["shards"])
    if not 0 <= index < shards:
        raise DataError("InvalidConfig", f"index {index} is not one of the {shards} shard(s)")
    started = time.monotonic()
    artifact = str(config["dataset"].get("artifactURI", ""))
    directory, _, marker = artifact.rpartition("/")
    if marker != DATASET_MARKER:
        raise DataError(
            "UnsupportedSnapshot",
            f"dataset.artifactURI {artifact!r} is not a snapshot manifest ({DATASET_MARKER}); a snapshot "
            "written before parts existed cannot be scored: ingest the Dataset again",
        )
    in_store = open_store(directory)
    try:
        manifest_in = json.loads(in_store.get_bytes(DATASET_MARKER))
    except StoreError as error:
        raise DataError("DatasetNotFound", f"the snapshot is missing or incomplete: {error}") from None
    store = open_store(config["storeURI"])
    job = Run(store, config["output"], config["job"], shards, index)
    parts = manifest_in["parts"]
    rows = [int(p["rows"]) for p in parts]
    mine = assign(rows, shards)[index]
    first = offsets(rows)
    model_ref = {"uri": config["model"]["uri"], "sha256": config["model"]["sha256"].lower()}
    with tempfile.TemporaryDirectory(prefix="model-") as tmp:
        model = load_model(model_ref["uri"], model_ref["sha256"], Path(tmp), threads or batch_threads())
        schema = output_schema(model)
        written = [score_part(in_store, parts[p], store, job.output, model, first[p]) for p in mine]
    scored = sum(p["rows"] for p in written)
    record = {"index": index, "shards": shards, "parts": written}
    store.put_bytes(index_record_key(job.output, job.job, index), json.dumps(record, sort_keys=True).encode())
    manifest = finish(job, manifest_in, model_ref, schema)
    seconds = time.monotonic() - started
    print(
        f"index {index} of {shards}: scored {scored} rows in {len(written)} part(s) in {seconds:.1f} s"
        + (f"; every shard is done: wrote {store.uri(join(job.output, SCORES_MARKER))}" if manifest else "")
    )
    result: dict[str, Any] = {
        "index": index,
        "shards": shards,
        "parts": len(written),
        "rows": scored,
        "seconds": round(seconds, 3),
        "modelSha256": model_ref["sha256"],
        "datasetVersion": str(config["dataset"].get("version", ""))[:16],
        "outputURI": store.uri(join(job.output, SCORES_MARKER)),
        "complete": manifest is not None,
    }
    if manifest is not None:
        result["totalRows"] = manifest["rows"]
    return result


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="kubeloop.runtime score",
        description="Score one shard of a Dataset version; config in $KUBELOOP_CONFIG, "
        f"the index in ${COMPLETION_INDEX_ENV}",
    ).parse_args(argv)

    def body() -> dict[str, Any]:
        raw = os.environ.get(COMPLETION_INDEX_ENV, "0")
        if not raw.isdigit():
            raise DataError("InvalidConfig", f"{COMPLETION_INDEX_ENV}={raw!r} is not an index")
        return score(jobio.load_config(), int(raw))

    return jobio.run("score", body)


if __name__ == "__main__":
    raise SystemExit(main())
