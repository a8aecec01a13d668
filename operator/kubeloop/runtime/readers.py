"""A Dataset's source read in batches: CSV blocks, Parquet row groups, a bundled frame in slices.

Every batch comes out in a normal form the ingest types from: CSV cells as strings (types are decided by
the schema, so a bad cell can be reported rather than coerced), Parquet and frame columns as int64,
float64 (NaN as null), bool or string. Memory is a batch, whatever the size of the source.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from kubeloop.runtime.jobio import DataError

NULL_TOKENS = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"]
BOM = b"\xef\xbb\xbf"
# Errors of a source that is not what its format says (a retry reads the same bytes).
UNREADABLE = (pa.ArrowInvalid, UnicodeDecodeError, gzip.BadGzipFile, EOFError, zlib.error)


@dataclass(frozen=True)
class BatchSize:
    """CSV is cut by bytes (pyarrow's block size), Parquet and frames by rows."""

    bytes: int = 4 << 20
    rows: int = 1 << 17

    def __post_init__(self) -> None:
        if self.bytes < 1 << 10 or self.rows < 1:
            raise ValueError(f"batch size too small: {self}")


@dataclass(frozen=True)
class Table:
    """A source that can be read (again) in batches: ``open`` returns a fresh binary stream each time."""

    what: str  # for messages: a URL without credentials, a path, "builtin iris"
    fmt: str
    open: Callable[[], BinaryIO] | None = None
    frame: Any = None  # a pandas DataFrame (a builtin)

    def read(self, size: BatchSize) -> tuple[list[str], Iterator[pa.RecordBatch]]:
        """The column names and the batches; a DataError when the data is not readable as ``fmt``."""
        if self.frame is not None:
            table = pa.Table.from_pandas(self.frame, preserve_index=False)
            return list(table.column_names), (normal(b) for b in table.to_batches(max_chunksize=size.rows))
        assert self.open is not None
        if self.fmt == "csv":
            return self._csv(size)
        if self.fmt == "parquet":
            return self._parquet(size)
        raise DataError("UnknownFormat", f"format must be csv or parquet, got {self.fmt!r}")

    def unreadable(self, exc: BaseException) -> DataError:
        return DataError("UnreadableData", f"cannot read {self.what} as {self.fmt}: {exc}")

    def _parquet(self, size: BatchSize) -> tuple[list[str], Iterator[pa.RecordBatch]]:
        assert self.open is not None
        try:
            reader = pq.ParquetFile(self.open())
        except UNREADABLE as exc:
            raise self.unreadable(exc) from None
        # pandas writes a frame's index as __index_level_0__ ...: not data (pandas itself reads it back
        # as the index, which the snapshot never kept).
        names = [n for n in reader.schema_arrow.names if not re.fullmatch(r"__index_level_\d+__", n)]
        return names, self._guarded(
            normal(b) for b in reader.iter_batches(batch_size=size.rows, columns=names)
        )

    def _stream(self) -> BinaryIO:
        assert self.open is not None
        raw = self.open()
        return gzip.GzipFile(fileobj=raw) if self.what.lower().endswith(".gz") else raw  # type: ignore[return-value]

    def _csv(self, size: BatchSize) -> tuple[list[str], Iterator[pa.RecordBatch]]:
        try:
            stream = self._stream()
            head = _first_line(stream)
            line = head.split(b"\n", 1)[0].decode("utf-8").rstrip("\r")
            names = next(csv.reader([line]), []) if line.strip() else []
        except UNREADABLE as exc:
            raise self.unreadable(exc) from None
        if not names:
            raise DataError("UnreadableData", f"cannot read {self.what} as csv: it has no header line")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise DataError(
                "UnreadableData", f"cannot read {self.what} as csv: column name(s) {repeated} appear twice"
            )
        options = pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()), null_values=NULL_TOKENS, strings_can_be_null=True
        )
        try:
            reader = pacsv.open_csv(
                _Replay(head, stream),
                read_options=pacsv.ReadOptions(block_size=size.bytes),
                convert_options=options,
            )
        except UNREADABLE as exc:
            raise self._csv_error(exc, options) from None
        return names, self._guarded((normal(b) for b in reader), options)

    def _guarded(
        self, batches: Iterator[pa.RecordBatch], options: pacsv.ConvertOptions | None = None
    ) -> Iterator[pa.RecordBatch]:
        try:
            yield from batches
        except UNREADABLE as exc:
            raise (self._csv_error(exc, options) if options else self.unreadable(exc)) from None

    def _csv_error(self, exc: BaseException, options: pacsv.ConvertOptions) -> DataError:
        """A CSV error with the row it is on. pyarrow numbers rows only when it parses on one thread, so
        the source is read again that way to find it (the message shows no cell: it may be private)."""
        found: list[Any] = []

        def stop(row: Any) -> str:
            found.append(row)
            return "error"

        try:
            stream = self._stream()
            parse = pacsv.ParseOptions(invalid_row_handler=stop)
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(use_threads=False),
                parse_options=parse,
                convert_options=options,
            )
            for _ in reader:
                pass
        except UNREADABLE:
            pass
        if found and found[0].number is not None:
            row = found[0]
            # pyarrow counts the header as row 1; messages count data rows from 1.
            return DataError(
                "UnreadableData",
                f"cannot read {self.what} as csv: row {row.number - 1} has {row.actual_columns} fields, "
                f"the header has {row.expected_columns}",
            )
        return self.unreadable(exc)


def normal(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Columns as int64, float64 (NaN as null: pandas, and so the schema's rules, count it empty), bool
    or string; anything else (dates, decimals, dictionaries) as its text."""
    columns = []
    for column in batch.columns:
        kind = column.type
        if pa.types.is_dictionary(kind):
            column = column.cast(kind.value_type)
            kind = column.type
        if pa.types.is_integer(kind):
            column = column.cast(pa.int64())
        elif pa.types.is_floating(kind):
            column = column.cast(pa.float64())
            column = pc.if_else(pc.is_nan(column), pa.scalar(None, pa.float64()), column)
        elif pa.types.is_boolean(kind) or kind == pa.string():
            pass
        elif pa.types.is_null(kind):
            column = column.cast(pa.string())
        else:
            column = column.cast(pa.string())
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _first_line(stream: BinaryIO) -> bytes:
    """Bytes up to and including the first newline (a header with a quoted newline is not supported)."""
    head = b""
    while b"\n" not in head:
        chunk = stream.read(1 << 16)
        if not chunk:
            break
        head += chunk
    return head.removeprefix(BOM)


class _Replay(io.RawIOBase):
    """``head`` (already read, to learn the column names) and then the rest of ``stream``."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        super().__init__()
        self.head = memoryview(head)
        self.stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        out = memoryview(buffer).cast("B")
        if self.head.nbytes:
            n = min(out.nbytes, self.head.nbytes)
            out[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        data = self.stream.read(out.nbytes)
        out[: len(data)] = data
        return len(data)
