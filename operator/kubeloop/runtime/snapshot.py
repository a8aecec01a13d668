"""A Dataset version in the store: Parquet parts, statistics and a manifest, named by a content hash.

Layout (docs/contracts.md): ``datasets/<namespace>/<name>/<sha256>/part-00000.parquet`` ...,
``statistics.json``, and ``manifest.json`` written last: the manifest is the marker, so a snapshot whose
writer died part-way has no manifest and no reader takes it for complete. Parts are written while the data
streams in, under a staging prefix (the content hash is known only at the end), then moved into place.

The content hash is over a canonical stream of the typed table (ContentHash), not over the Parquet bytes:
it does not change with the batch size, the parts, the compression or the pyarrow version, and a CSV and
a Parquet source of the same table get the same version.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import uuid
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kubeloop.contract import DATASET_MARKER, SNAPSHOT_FILE, STATISTICS_FILE
from kubeloop.runtime.store import Store, StoreError, join

# A part holds this many rows at most (about 20-60 MB of Parquet at 20 columns): enough parts to split
# a large snapshot across readers, few enough that listing them costs nothing.
PART_ROWS = 1 << 20
MANIFEST_FORMAT = 1
HASH_FORMAT = b"kubeloop-table-v1\n"
# The byte form of each fixed-width type in the canonical stream (little-endian, whatever the machine).
_FIXED = {pa.int64(): "<i8", pa.float64(): "<f8", pa.bool_(): "u1"}


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


class ContentHash:
    """sha256 of a table as a canonical stream: the schema, then per column its validity, values and (for
    strings) lengths, each hashed on its own so that the digest depends on the rows and never on where
    the batches were cut. Nulls count as a validity 0 and a zero value (an empty string)."""

    def __init__(self, schema: pa.Schema) -> None:
        for field in schema:
            if field.type not in _FIXED and field.type != pa.string():
                raise ValueError(f"column {field.name!r}: no canonical form for type {field.type}")
        self.schema = schema
        self.streams = [[hashlib.sha256() for _ in range(3)] for _ in schema]

    def update(self, batch: pa.RecordBatch) -> None:
        for column, (validity, values, lengths) in zip(batch.columns, self.streams, strict=True):
            validity.update(np.asarray(column.is_valid(), dtype=np.uint8).tobytes())
            if column.type == pa.string():
                data, offsets = _string_buffers(column)
                values.update(data)
                lengths.update(np.diff(offsets).astype("<i8").tobytes())
            else:
                filled = pc.fill_null(column, False if column.type == pa.bool_() else 0)
                array = filled.to_numpy(zero_copy_only=False)
                values.update(np.ascontiguousarray(array.astype(_FIXED[column.type])).tobytes())

    def hexdigest(self) -> str:
        total = hashlib.sha256(HASH_FORMAT)
        total.update(json.dumps([[f.name, str(f.type)] for f in self.schema]).encode())
        for streams in self.streams:
            for stream in streams:
                total.update(stream.digest())
        return total.hexdigest()


def _string_buffers(column: pa.Array) -> tuple[memoryview, np.ndarray]:
    """The bytes of a string column's values, one after the other, and their offsets (nulls as empty
    strings); read in place, without a copy, unless a null holds bytes (Arrow allows it)."""
    if len(column) == 0:
        return memoryview(b""), np.zeros(1, dtype=np.int64)
    _, offset_buffer, data = column.buffers()
    offsets = np.frombuffer(offset_buffer, dtype="<i4")[column.offset : column.offset + len(column) + 1]
    if column.null_count and np.diff(offsets)[np.asarray(column.is_null())].any():
        return _string_buffers(pa.concat_arrays([pc.fill_null(column, "")]))
    start, end = int(offsets[0]), int(offsets[-1])
    return (memoryview(data)[start:end] if data is not None else memoryview(b"")), offsets


class Hashing(io.RawIOBase):
    """Passes writes on to ``target``, counting and hashing them; closing it leaves ``target`` open (the
    store's writer commits the object when its own block ends)."""

    def __init__(self, target: BinaryIO) -> None:
        super().__init__()
        self.target = target
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.size

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.sha.update(view)
        self.target.write(view)
        self.size += len(view)
        return len(view)


class PartWriter:
    """Writes batches into Parquet parts of at most ``part_rows`` rows under ``prefix``; one part is open
    at a time, streamed into the store (memory: one batch and one upload buffer).

    Encoding and compressing Parquet costs about as much as parsing the CSV, and pyarrow does it without
    the GIL: a batch is written on a thread of its own while the next one is read and checked (one batch
    in flight, so memory grows by one batch)."""

    def __init__(self, store: Store, prefix: str, schema: pa.Schema, part_rows: int = PART_ROWS) -> None:
        self.store, self.prefix, self.schema, self.part_rows = store, prefix, schema, part_rows
        self.parts: list[dict[str, Any]] = []
        self._open: tuple[contextlib.ExitStack, Hashing, pq.ParquetWriter] | None = None
        self._rows = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-writer")
        self._pending: Future[None] | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        self._wait()
        self._pending = self._pool.submit(self._write, batch)

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()  # a failed write raises here

    def _write(self, batch: pa.RecordBatch) -> None:
        start = 0
        while start < batch.num_rows:
            if self._open is None:
                self._start()
            assert self._open is not None
            take = min(batch.num_rows - start, self.part_rows - self._rows)
            self._open[2].write_batch(batch.slice(start, take))
            self._rows += take
            start += take
            if self._rows >= self.part_rows:
                self._finish()

    def _start(self) -> None:
        stack = contextlib.ExitStack()
        sink = Hashing(
            stack.enter_context(self.store.open_write(join(self.prefix, part_name(len(self.parts)))))
        )
        writer = pq.ParquetWriter(
            pa.PythonFile(sink, mode="w"), self.schema, compression="zstd", write_statistics=True
        )
        self._open, self._rows = (stack, sink, writer), 0

    def _finish(self) -> None:
        assert self._open is not None
        stack, sink, writer = self._open
        writer.close()
        stack.close()  # the part becomes visible (under the staging prefix)
        self.parts.append(
            {
                "path": part_name(len(self.parts)),
                "rows": self._rows,
                "bytes": sink.size,
                "sha256": sink.sha.hexdigest(),
            }
        )
        self._open = None

    def close(self) -> list[dict[str, Any]]:
        self._wait()
        self._pool.shutdown()
        if self._open is not None:
            self._finish()
        return self.parts

    def abort(self) -> None:
        """Drop the part being written (what was finished is removed with the staging prefix)."""
        with contextlib.suppress(Exception):
            self._wait()
        self._pool.shutdown()
        if self._open is not None:
            stack, _, writer = self._open
            self._open = None
            with contextlib.suppress(Exception):
                writer.close()
            with contextlib.suppress(Exception):
                stack.__exit__(RuntimeError, RuntimeError("ingest aborted"), None)


def staging_prefix(dataset_prefix: str) -> str:
    """A fresh prefix for one ingest's parts, beside the versions; never taken for a version (no manifest)."""
    return join(dataset_prefix, f".staging-{uuid.uuid4().hex[:12]}")


def publish(
    store: Store,
    staging: str,
    prefix: str,
    parts: list[dict[str, Any]],
    schema: pa.Schema,
    statistics: dict[str, Any],
    sha256: str,
) -> dict[str, Any]:
    """Move the staged parts under ``prefix``, then write statistics.json and the manifest, last."""
    for part in parts:
        store.move(join(staging, part["path"]), join(prefix, part["path"]))
    store.remove(staging)
    store.put_bytes(join(prefix, STATISTICS_FILE), json.dumps(statistics, indent=1, sort_keys=True).encode())
    manifest = {
        "format": MANIFEST_FORMAT,
        "sha256": sha256,
        "rows": sum(p["rows"] for p in parts),
        "columns": [{"name": f.name, "type": str(f.type)} for f in schema],
        "parts": parts,
    }
    store.put_bytes(join(prefix, DATASET_MARKER), json.dumps(manifest, indent=1, sort_keys=True).encode())
    return manifest


def read_table(store: Store, prefix: str) -> pa.Table:
    """The whole snapshot under ``prefix`` as one table, every part checked against its sha256.

    A snapshot written before parts existed (one ``data.parquet`` beside ``statistics.json``) is read too.
    """
    try:
        manifest = json.loads(store.get_bytes(join(prefix, DATASET_MARKER)))
    except StoreError:
        return pq.read_table(io.BytesIO(store.get_bytes(join(prefix, SNAPSHOT_FILE))))
    tables = []
    for part in manifest["parts"]:
        data = store.get_bytes(join(prefix, part["path"]))
        if hashlib.sha256(data).hexdigest() != part["sha256"]:
            raise StoreError(f"checksum mismatch for {store.uri(join(prefix, part['path']))}")
        tables.append(pq.read_table(io.BytesIO(data)))
    return _concat(tables, manifest)


def _concat(tables: Iterable[pa.Table], manifest: dict[str, Any]) -> pa.Table:
    parts = list(tables)
    if parts:
        return pa.concat_tables(parts)
    # No rows: the manifest still knows the columns.
    names = [c["name"] for c in manifest["columns"]]
    return pa.table(
        {
            n: pa.array([], type=pa.type_for_alias(c["type"]))
            for n, c in zip(names, manifest["columns"], strict=True)
        }
    )
