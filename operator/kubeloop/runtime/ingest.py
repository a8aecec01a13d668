"""Ingest a Dataset: read, check the schema and rules, apply privacy, hash, compute statistics, write once.

The source streams through in batches (CSV blocks, Parquet row groups; readers.py), so memory is bounded
by the batch size, not the data: each batch is typed, validated and made private, then hashed, counted
into the statistics and written to a Parquet part (snapshot.py). Order matters: columns to drop are
removed and columns to hash are replaced before anything is written, so raw personal data never reaches
the store. Parts go under a staging prefix and become a snapshot only when every check has passed (the
manifest is written last); a failed ingest removes what it staged.

The types of columns the schema does not declare are inferred from the first batch (up to 4 MiB of CSV,
131,072 rows of Parquet): a later cell that does not fit is a schema violation that says so, and
declaring the column's type in the schema is the fix.

Config (``KUBELOOP_CONFIG``): the Dataset spec's fields (``source``, ``format``, ``schema``, ``validation``,
``privacy``) plus ``namespace``, ``name``, ``storeURI``. Rows in messages count from 1, header excluded.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import io
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from kubeloop import stats
from kubeloop.contract import DATASET_MARKER, STATISTICS_FILE
from kubeloop.runtime import fetch, jobio
from kubeloop.runtime.jobio import DataError
from kubeloop.runtime.readers import BatchSize, Table
from kubeloop.runtime.snapshot import PART_ROWS, ContentHash, PartWriter, publish, staging_prefix
from kubeloop.runtime.store import Store, join, open_store

BUILTINS = ("iris", "wine", "breast_cancer", "digits", "diabetes")
NUMERIC_TYPES = ("float", "int")
TYPES = ("float", "int", "category", "string", "bool")
ARROW_TYPES = {
    "float": pa.float64(),
    "int": pa.int64(),
    "bool": pa.bool_(),
    "category": pa.string(),
    "string": pa.string(),
}
TRUE = {"true", "1", "yes", "y", "t"}
FALSE = {"false", "0", "no", "n", "f"}
MAX_ERRORS = 5  # enough to see a pattern; the result must fit the 4 KiB termination log
# An int target with at most this many values is a class label: its baseline is a frequency per class.
MAX_LABELS = 20


# ------------------------------------------------------------------------------------------------ read


def read_source(config: dict[str, Any]) -> tuple[Table | list[Table], str]:
    """The raw table (read in batches later), or the tables of a many-file source (a pvc directory or
    glob, an s3 prefix ending in ``/``), and where it came from (for messages)."""
    source = config.get("source") or {}
    kinds = [k for k in ("builtin", "url", "s3", "pvc", "configMapRef") if source.get(k)]
    if len(kinds) != 1:
        raise DataError("InvalidSource", "source must set exactly one of builtin, url, s3, pvc, configMapRef")
    kind = kinds[0]
    if kind == "builtin":
        what = f"builtin {source['builtin']}"
        return Table(what, "frame", frame=_builtin(source["builtin"])), what
    fmt = config.get("format")
    if kind == "url":
        url = source["url"]
        shown = fetch.public_url(url)  # messages and logs never show the query string (credentials)
        if not re.match(r"^https?://", url):
            raise DataError("InvalidSource", f"source.url must be http(s), got {shown!r}")
        headers = fetch.headers_from(Path(config["urlHeadersPath"])) if config.get("urlHeadersPath") else {}
        return _parse(fetch.read_url(url, headers=headers), fmt or _format_of(shown), shown), shown
    if kind == "s3":
        uri = source["s3"]["uri"]
        parent, _, key = uri.rpartition("/")
        store = open_store(parent)
        if source["s3"].get("endpoint"):
            from kubeloop.runtime.store import S3Store  # only here: a per-source endpoint

            parsed = parent.removeprefix("s3://").split("/", 1)
            store = S3Store(parent, parsed[0], parsed[1] if len(parsed) > 1 else "", source["s3"]["endpoint"])
        if not key:
            return _objects(store, parent, fmt), uri
        return _parse(fetch.read_s3(store, key, uri), fmt or _format_of(uri), uri), uri
    if kind == "pvc":
        pvc = source["pvc"]
        root = Path(os.environ.get("KUBELOOP_PVC_ROOT") or f"/mnt/pvc/{pvc['claimName']}")
        return _read_path(root / pvc["path"].lstrip("/"), fmt), f"pvc {pvc['claimName']}/{pvc['path']}"
    ref = source["configMapRef"]
    mount = Path(
        config.get("configMapPath") or os.environ.get("KUBELOOP_CONFIGMAP_DIR") or "/etc/kubeloop/configmap"
    )
    return _read_path(mount / ref["key"], fmt), f"ConfigMap {ref['name']} key {ref['key']}"


def _builtin(name: str) -> pd.DataFrame:
    if name not in BUILTINS:
        raise DataError("InvalidSource", f"source.builtin {name!r} is not one of {', '.join(BUILTINS)}")
    from sklearn import datasets  # bundled with scikit-learn: no download

    bunch = getattr(datasets, f"load_{name}")(as_frame=True)
    frame: pd.DataFrame = bunch.frame
    # "sepal length (cm)" -> "sepal_length_cm": names that are valid everywhere (ONNX, Prometheus labels).
    return frame.rename(columns=lambda c: re.sub(r"[^0-9a-zA-Z]+", "_", str(c)).strip("_").lower())


def _format_of(name: str) -> str:
    lowered = name.lower().split("?")[0]
    if lowered.endswith((".parquet", ".pq")):
        return "parquet"
    if lowered.endswith((".csv", ".csv.gz", ".txt")):
        return "csv"
    raise DataError("UnknownFormat", f"cannot tell the format of {name!r}: set format to csv or parquet")


def _objects(store: Store, prefix: str, fmt: str | None) -> list[Table]:
    """Every data object under an s3 prefix, in key order; each is read when its turn comes."""
    keys = _data_names(store.list(), fmt)
    if not keys:
        raise DataError("SourceNotFound", f"no {fmt or 'csv or parquet'} object under {prefix}/")

    def reader(key: str) -> Any:
        return lambda: io.BytesIO(fetch.read_s3(store, key, f"{prefix}/{key}"))

    return [Table(f"{prefix}/{k}", fmt or _format_of(k), open=reader(k)) for k in keys]


def _data_names(names: list[str], fmt: str | None) -> list[str]:
    """The data files among ``names`` (relative paths), sorted: hidden ones and markers such as Spark's
    ``_SUCCESS`` left out, and, without a format, those whose name tells none."""
    out = []
    for name in sorted(names):
        if any(part.startswith((".", "_")) for part in name.split("/")):
            continue
        if fmt is None and not name.lower().endswith((".parquet", ".pq", ".csv", ".csv.gz", ".txt")):
            continue
        out.append(name)
    return out


def _read_path(path: Path, fmt: str | None) -> Table | list[Table]:
    if path.is_dir() or any(c in path.name for c in "*?["):
        # A directory (every data file under it) or a glob in the last segment: many files, one table.
        if path.is_dir():
            found = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
            base = path
        else:
            found = [p.name for p in path.parent.glob(path.name) if p.is_file()]
            base = path.parent
        names = _data_names(found, fmt)
        if not names:
            raise DataError("SourceNotFound", f"{path} holds no {fmt or 'csv or parquet'} file")
        return [_read_file(base / n, fmt) for n in names]
    return _read_file(path, fmt)


def _read_file(path: Path, fmt: str | None) -> Table:
    if not path.is_file():
        raise DataError(
            "SourceNotFound", f"{path} does not exist (is the volume mounted and the path right?)"
        )
    return Table(str(path), fmt or _format_of(path.name), open=lambda: open(path, "rb"))


def _parse(data: bytes, fmt: str, what: str) -> Table:
    if fmt not in ("csv", "parquet"):
        raise DataError("UnknownFormat", f"format must be csv or parquet, got {fmt!r}")
    return Table(what, fmt, open=lambda: io.BytesIO(data))


# ------------------------------------------------------------------------------------- schema + rules


def infer_type(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_integer_dtype(series):
        return "int"
    if pd.api.types.is_float_dtype(series):
        return "float"
    present = series.dropna()
    numbers = pd.to_numeric(present, errors="coerce")
    if len(present) and numbers.notna().all():
        return (
            "int"
            if (numbers == numbers.round()).all() and not present.astype(str).str.contains(r"[.eE]").any()
            else "float"
        )
    return "category"


def infer_kind(column: pa.Array) -> str:
    """infer_type on a batch's column, by pyarrow where it can tell (the pandas rules otherwise)."""
    kind = column.type
    if kind == pa.bool_():
        return "bool"
    if kind == pa.int64():
        return "int"
    if kind == pa.float64():
        return "float"
    if column.null_count == len(column):
        return "category"
    with contextlib.suppress(pa.ArrowInvalid):
        pc.cast(column, pa.int64())
        return "int"
    with contextlib.suppress(pa.ArrowInvalid):
        if not _any(pc.is_nan(pc.cast(column, pa.float64()))):
            return "float"
    return infer_type(column.to_pandas())


def columns_of(
    names: list[str], schema: dict[str, Any], first: pa.RecordBatch | None
) -> list[dict[str, Any]]:
    """Every column of the data with its type: the schema's, or inferred from the first batch."""
    declared = {c["name"]: c for c in schema.get("columns") or []}
    target = schema.get("target")
    if target and target not in names:
        raise DataError(
            "MissingTarget", f"the target column {target!r} is missing; the data has columns {names}"
        )
    missing = [n for n in declared if n not in names]
    if missing:
        raise DataError(
            "MissingColumn",
            f"column(s) {missing} in the schema are missing from the data; the data has columns {names}",
        )
    out = []
    for name in names:
        col = declared.get(name)
        if col is None:
            inferred = infer_kind(first.column(name)) if first is not None else "category"
            col = {"name": name, "type": inferred, "inferred": True}
        elif col.get("type", "string") not in TYPES:
            raise DataError(
                "SchemaViolation",
                f"column {name!r}: type {col.get('type')!r} is not one of float, int, category, string, bool",
            )
        out.append(col)
    return out


def type_batch(
    raw: pa.RecordBatch, columns: list[dict[str, Any]], private: set[str], offset: int
) -> pa.RecordBatch:
    """The batch typed by ``columns``; raises DataError listing the first offending cells (rows counted
    from the start of the data: ``offset`` rows came before this batch)."""
    errors: list[str] = []
    arrays = [_typed(raw.column(c["name"]), c, c["name"] in private, offset, errors) for c in columns]
    if errors:
        more = f" (and more; first {MAX_ERRORS} shown)" if len(errors) > MAX_ERRORS else ""
        raise DataError("SchemaViolation", "; ".join(errors[:MAX_ERRORS]) + more)
    return pa.RecordBatch.from_arrays(arrays, names=[c["name"] for c in columns])


def _typed(raw: pa.Array, col: dict[str, Any], private: bool, offset: int, errors: list[str]) -> pa.Array:
    # The fast path types clean columns in pyarrow; a column it cannot type, or with a bad cell, goes the
    # pandas way, which finds and names every bad cell exactly as before.
    fast = _typed_fast(raw, col)
    if fast is not None:
        return fast
    before = len(errors)
    out = _typed_column(raw.to_pandas(), col, private, errors, offset)
    if len(errors) > before and col.get("inferred"):
        errors[before] += (
            f" (the column's type {col['type']} was inferred from the first rows: "
            "declare it in schema.columns)"
        )
    if len(errors) > before:
        return raw
    kind = col.get("type", "string")
    values = out.astype(object).where(out.notna(), None) if kind in ("category", "string") else out
    return pa.array(values, type=ARROW_TYPES[kind], from_pandas=True)


def _any(mask: pa.Array) -> bool:
    return bool(pc.any(mask).as_py())


def _typed_fast(raw: pa.Array, col: dict[str, Any]) -> pa.Array | None:
    """The typed column when every cell is valid and pyarrow can tell; None sends it the slow way."""
    kind = col.get("type", "string")
    if not col.get("nullable", True) and raw.null_count:
        return None
    try:
        out: pa.Array
        if kind in NUMERIC_TYPES:
            if raw.type not in (pa.string(), pa.int64(), pa.float64()):
                return None
            if kind == "int":
                # "3.0" fails the cast from text, and a fractional float the cast from float64: the slow
                # way accepts the one as 3 and names the other.
                out = raw if raw.type == pa.int64() else pc.cast(raw, pa.int64())
            else:
                out = raw if raw.type == pa.float64() else pc.cast(raw, pa.float64())
                if raw.type == pa.string() and _any(pc.is_nan(out)):
                    return None  # "NaN"-like text that is not a null token: the slow way names it
            bounded = [b for b in ("minimum", "maximum") if col.get(b) is not None]
            numbers = out.cast(pa.float64()) if bounded else out
            for bound in bounded:
                test = pc.less if bound == "minimum" else pc.greater
                if _any(test(numbers, float(col[bound]))):
                    return None
        elif kind == "bool":
            if raw.type == pa.bool_():
                out = raw
            elif raw.type == pa.string():
                text = pc.utf8_lower(pc.utf8_trim_whitespace(raw))
                if _any(
                    pc.invert(pc.is_in(pc.fill_null(text, "true"), value_set=pa.array(sorted(TRUE | FALSE))))
                ):
                    return None
                out = pc.if_else(
                    pc.is_null(raw),
                    pa.scalar(None, pa.bool_()),
                    pc.is_in(text, value_set=pa.array(sorted(TRUE))),
                )
            else:
                return None
        elif kind in ("category", "string"):
            if raw.type == pa.string():
                out = raw
            elif raw.type == pa.int64():
                out = raw.cast(pa.string())
            else:
                return None
        else:
            return None
        allowed = col.get("values")
        if allowed is not None:
            if out.type != pa.string():
                return None
            allowed_set = pa.array(sorted({str(v) for v in allowed}))
            inside = pc.or_(pc.is_null(out), pc.is_in(out, value_set=allowed_set))
            if _any(pc.invert(inside)):
                return None
        return out
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _typed_column(
    raw: pd.Series, col: dict[str, Any], private: bool, errors: list[str], offset: int = 0
) -> pd.Series:
    name, kind = col["name"], col.get("type", "string")
    null = raw.isna()
    values = raw.reset_index(drop=True)

    def bad(positions: np.ndarray, what: str) -> None:
        for pos in positions[: MAX_ERRORS + 1]:
            # A private column's value must not reach logs or status: name the cell, not its content.
            shown = "the value" if private else repr(str(values.iloc[pos]))
            errors.append(f"row {offset + pos + 1}, column {name!r}: {shown} {what}")

    if not col.get("nullable", True) and null.any():
        for pos in np.flatnonzero(null.to_numpy())[: MAX_ERRORS + 1]:
            errors.append(f"row {offset + pos + 1}, column {name!r}: is empty but the column is not nullable")

    out: pd.Series
    if kind in NUMERIC_TYPES:
        numbers = (
            values.astype("float64")
            if pd.api.types.is_numeric_dtype(values)
            else pd.to_numeric(values.astype(object), errors="coerce")
        )
        numbers = numbers.astype("float64")
        bad(np.flatnonzero((numbers.isna() & ~null.to_numpy()).to_numpy()), f"is not a {kind}")
        if kind == "int":
            fractional = numbers.notna() & (numbers != numbers.round())
            bad(np.flatnonzero(fractional.to_numpy()), "is not an int")
            out = numbers.round().astype("Int64")
        else:
            out = numbers
        for bound, test, word in (("minimum", np.less, "below"), ("maximum", np.greater, "above")):
            if col.get(bound) is not None:
                hits = numbers.notna() & test(numbers, float(col[bound]))
                bad(np.flatnonzero(hits.to_numpy()), f"is {word} the {bound} {col[bound]}")
    elif kind == "bool":
        if pd.api.types.is_bool_dtype(values):
            out = values.astype("boolean")
        else:
            text = values.astype(str).str.strip().str.lower()
            known = text.isin(TRUE | FALSE)
            bad(
                np.flatnonzero((~known & ~null.to_numpy()).to_numpy()),
                "is not a bool (use true/false, yes/no or 1/0)",
            )
            out = text.map(lambda v: v in TRUE).astype("boolean").where(~null.to_numpy(), pd.NA)
    elif kind in ("category", "string"):
        text = values.map(_as_text)
        out = text.astype("string").where(~null.to_numpy(), pd.NA)
    else:
        errors.append(f"column {name!r}: type {kind!r} is not one of float, int, category, string, bool")
        return values
    allowed = col.get("values")
    if allowed is not None:
        allowed_set = {str(v) for v in allowed}
        outside = (~null.to_numpy()) & ~out.map(lambda v: _as_text(v) in allowed_set).fillna(True).to_numpy(
            bool
        )
        bad(np.flatnonzero(outside), f"is not one of the allowed values {sorted(allowed_set)}")
    return out


def _as_text(value: object) -> str:
    # 3.0 read from parquet and "3" read from CSV must hash and compare the same.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class Rules:
    """validation (minRows, maxNullFraction, duplicates) over the whole stream, batch by batch.

    Null counts cost a number a column. The duplicates policies drop and fail keep a 64-bit hash of every
    distinct row (8 bytes a row: 80 MB at 10 million rows; a collision, which would take a row for a
    duplicate, has odds of about 3 in a million there); keep, the default, keeps nothing.
    """

    def __init__(self, validation: dict[str, Any], names: list[str]) -> None:
        self.min_rows = int(validation.get("minRows", 1))
        self.max_null = float(validation.get("maxNullFraction", 1.0))
        self.policy = validation.get("duplicates", "keep")
        if self.policy not in ("keep", "drop", "fail"):
            raise DataError(
                "InvalidValidation", f"validation.duplicates must be keep, drop or fail, got {self.policy!r}"
            )
        self.names = names
        self.rows = 0
        self.nulls = dict.fromkeys(names, 0)
        self.null_rows: dict[str, list[int]] = {n: [] for n in names}
        self.duplicates = 0
        self.duplicate_rows: list[int] = []
        self.seen: list[np.ndarray] = []

    def observe(self, typed: pa.RecordBatch) -> pa.RecordBatch:
        """Count the batch; the batch without its duplicate rows when the policy drops them."""
        offset = self.rows
        self.rows += typed.num_rows
        for name, column in zip(typed.schema.names, typed.columns, strict=True):
            if column.null_count:
                self.nulls[name] += column.null_count
                if len(self.null_rows[name]) < MAX_ERRORS:
                    empty = np.flatnonzero(np.asarray(column.is_null()))
                    self.null_rows[name] += [int(offset + p + 1) for p in empty[:MAX_ERRORS]]
        if self.policy == "keep" or not typed.num_rows:
            return typed
        hashes = pd.util.hash_pandas_object(typed.to_pandas(), index=False).to_numpy()
        repeated = pd.Series(hashes).duplicated().to_numpy()
        for run in self.seen:
            at = np.minimum(np.searchsorted(run, hashes), run.size - 1)
            repeated = repeated | (run[at] == hashes)
        # Sorted runs of the hashes seen, merged when one is no larger than twice the next (as a binary
        # counter): a lookup is a binary search in each of about log2(batches) runs, and each hash is
        # merged about log2(batches) times, where one sorted array re-made per batch costs rows x batches.
        run = np.unique(hashes)
        while self.seen and self.seen[-1].size <= 2 * run.size:
            run = np.unique(np.concatenate([self.seen.pop(), run]))
        self.seen.append(run)
        positions = np.flatnonzero(repeated)
        self.duplicates += positions.size
        self.duplicate_rows += [
            int(offset + p + 1) for p in positions[: MAX_ERRORS - len(self.duplicate_rows)]
        ]
        return typed.filter(pa.array(~repeated)) if self.policy == "drop" and positions.size else typed

    def finish(self) -> None:
        if self.rows < self.min_rows:
            raise DataError(
                "TooFewRows", f"the data has {self.rows} rows; validation.minRows is {self.min_rows}"
            )
        for name in self.names:
            fraction = self.nulls[name] / self.rows if self.rows else 0.0
            if fraction > self.max_null:
                more = ", ..." if self.nulls[name] > MAX_ERRORS else ""
                raise DataError(
                    "TooManyNulls",
                    f"column {name!r} is {fraction:.1%} empty (rows "
                    f"{', '.join(map(str, self.null_rows[name][:MAX_ERRORS]))}{more}); "
                    f"validation.maxNullFraction is {self.max_null:.1%}",
                )
        if self.policy == "fail" and self.duplicates:
            raise DataError(
                "DuplicateRows",
                f"{self.duplicates} duplicate row(s), e.g. rows "
                f"{', '.join(map(str, self.duplicate_rows))}; validation.duplicates is fail",
            )


# --------------------------------------------------------------------------------------------- privacy


def hash_key(config: dict[str, Any]) -> bytes:
    """The HMAC key from the mounted Secret file (or an env var); never part of the config itself."""
    path = (config.get("privacy") or {}).get("hashKeyPath") or os.environ.get("KUBELOOP_HASH_KEY_FILE")
    if path:
        try:
            key = Path(path).read_bytes().strip()
        except OSError:
            raise DataError(
                "MissingHashKey",
                f"privacy.hash needs a key, and the key file {path} cannot be "
                "read: check privacy.hashKeySecretRef",
            ) from None
    else:
        key = os.environ.get("KUBELOOP_HASH_KEY", "").encode()
    if not key:
        raise DataError(
            "MissingHashKey",
            "privacy.hash lists columns but no hash key was provided: set "
            "privacy.hashKeySecretRef to a Secret key holding it",
        )
    return key


def hash_columns(batch: pa.RecordBatch, hashed: list[str], key: bytes) -> pa.RecordBatch:
    """The batch with each of ``hashed`` replaced by the keyed hash (HMAC-SHA256, hex) of its text."""
    if not hashed:
        return batch
    arrays = []
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if name in hashed:
            column = pa.array(
                [
                    None if v is None else hmac.new(key, _as_text(v).encode(), hashlib.sha256).hexdigest()
                    for v in column.to_pylist()
                ],
                type=pa.string(),
            )
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


# ------------------------------------------------------------------------------------------ statistics


class Baseline:
    """The baseline document (kubeloop.stats, docs/contracts.md) built batch by batch."""

    def __init__(self, schema: pa.Schema, target: str | None) -> None:
        self.target = target
        self.rows = 0
        self.numeric = {f.name: stats.NumericSketch() for f in schema if f.type in (pa.int64(), pa.float64())}
        self.categorical = {f.name: stats.CategoryCounts() for f in schema if f.name not in self.numeric}
        if target in self.numeric and schema.field(target).type == pa.int64():
            self.categorical[target] = stats.CategoryCounts()  # a class label, if it has few values
        self.names = schema.names

    def add(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        for name, sketch in self.numeric.items():
            # pyarrow gives nulls of a float or int column as NaN here: what the sketch counts as nulls.
            sketch.add(batch.column(name).to_numpy(zero_copy_only=False).astype(np.float64, copy=False))
        for name, counts in self.categorical.items():
            column = batch.column(name)
            if name in self.numeric and counts.distinct() > MAX_LABELS:
                continue  # not a class label: numeric bins only
            tally = pc.value_counts(column.drop_null())
            values, numbers = tally.field("values"), tally.field("counts").to_numpy()
            cut = counts.batch_cut(numbers)
            if cut:
                kept = numbers > cut
                values, numbers = values.filter(pa.array(kept)), numbers[kept] - cut
            texts = values.to_pylist() if values.type == pa.string() else map(_as_text, values.to_pylist())
            counts.add(texts, numbers.tolist(), column.null_count)

    def _summary(self, name: str) -> dict[str, Any]:
        labels = self.categorical.get(name) if name == self.target and name in self.numeric else None
        if labels is not None and labels.distinct() <= MAX_LABELS:
            return labels.summary()
        if name in self.numeric:
            return self.numeric[name].summary()
        return self.categorical[name].summary()

    def document(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": 1,
            "rows": self.rows,
            "features": {c: self._summary(c) for c in self.names if c != self.target},
        }
        if self.target:
            out["target"] = self._summary(self.target)
            out["targetName"] = self.target
        return out


def status_summary(statistics_doc: dict[str, Any]) -> dict[str, Any]:
    """The per-column summary for Dataset status: small (no bins)."""

    def small(s: dict[str, Any]) -> dict[str, Any]:
        if s["kind"] == "numeric":
            return {
                k: (round(v, 6) if isinstance(v, float) else v)
                for k, v in s.items()
                if k in ("kind", "nulls", "min", "max", "mean", "std")
            }
        return {"kind": "categorical", "nulls": s["nulls"], "categories": len(s["categories"])}

    columns = {n: small(s) for n, s in statistics_doc["features"].items()}
    if "target" in statistics_doc:
        columns[statistics_doc["targetName"]] = small(statistics_doc["target"])
    return columns


# --------------------------------------------------------------------------------------------- ingest


def ingest(
    config: dict[str, Any], size: BatchSize | None = None, part_rows: int = PART_ROWS
) -> dict[str, Any]:
    for field in ("namespace", "name", "storeURI"):
        if not config.get(field):
            raise DataError("InvalidConfig", f"config needs {field!r}")
    table, origin = read_source(config)
    schema = config.get("schema") or {}
    privacy = config.get("privacy") or {}
    target = schema.get("target")
    if not target and config["source"].get("builtin"):
        target = "target"  # scikit-learn's bundled frames name it so
    tables = table if isinstance(table, list) else [table]
    size = size or BatchSize()
    names, batches = tables[0].read(size)
    drop = list(privacy.get("drop") or [])
    hashed = list(privacy.get("hash") or [])
    unknown = [c for c in drop + hashed if c not in names]
    if unknown:
        raise DataError("InvalidPrivacy", f"privacy names column(s) {unknown} that the data does not have")
    if target in drop:
        raise DataError("InvalidPrivacy", f"privacy.drop removes the target column {target!r}")
    # Dropped columns go first: they are neither validated nor echoed in any message.
    kept = [n for n in names if n not in drop]
    schema = {
        **schema,
        "target": target,
        "columns": [c for c in schema.get("columns") or [] if c["name"] not in drop],
    }
    rules = Rules(config.get("validation") or {}, kept)
    store = open_store(config["storeURI"])
    base = join("datasets", config["namespace"], config["name"])
    staging = staging_prefix(base)
    state = _Stream(store, staging, target, part_rows)
    try:
        columns: list[dict[str, Any]] | None = None
        key: bytes | None = None
        for index, source in enumerate(tables):
            if index:  # every file of a many-file source has the first one's columns, in its order
                names_here, batches = source.read(size)
                if names_here != names:
                    raise DataError(
                        "SchemaMismatch",
                        f"{source.what} has columns {names_here} but {tables[0].what} has {names}: "
                        "every file of a source must have the same columns in the same order",
                    )
            file_rows = 0  # rows in messages count from 1 in each file; the file is named when there are many
            for raw in batches:
                raw = raw.select(kept)
                if columns is None:
                    columns = columns_of(kept, schema, raw)
                try:
                    typed = type_batch(raw, columns, set(hashed), file_rows)
                except DataError as error:
                    if len(tables) == 1:
                        raise
                    raise DataError(error.reason, f"{source.what}: {error}") from None
                file_rows += raw.num_rows
                typed = rules.observe(typed)
                if hashed and key is None:
                    key = hash_key(
                        config
                    )  # after the first batch passed: a bad cell is the first thing to fix
                state.add(hash_columns(typed, hashed, key or b""))
        if columns is None:  # no rows at all: the header (or the Parquet schema) gives the columns
            columns = columns_of(kept, schema, None)
        rules.finish()
        if hashed and key is None:
            key = hash_key(config)
        return state.publish(columns, origin)
    except BaseException:
        state.abort()
        raise


class _Stream:
    """What becomes of the checked batches: parts under the staging prefix, the hash, the statistics."""

    def __init__(self, store: Store, staging: str, target: str | None, part_rows: int) -> None:
        self.store, self.staging, self.target, self.part_rows = store, staging, target, part_rows
        self.writer: PartWriter | None = None
        self.hash: ContentHash | None = None
        self.baseline: Baseline | None = None

    def _begin(self, schema: pa.Schema) -> None:
        self.writer = PartWriter(self.store, self.staging, schema, self.part_rows)
        self.hash = ContentHash(schema)
        self.baseline = Baseline(schema, self.target)

    def add(self, batch: pa.RecordBatch) -> None:
        if self.writer is None:
            self._begin(batch.schema)
        assert self.writer is not None and self.hash is not None and self.baseline is not None
        self.writer.write(batch)
        self.hash.update(batch)
        self.baseline.add(batch)

    def publish(self, columns: list[dict[str, Any]], origin: str) -> dict[str, Any]:
        if self.writer is None:
            self._begin(pa.schema([(c["name"], ARROW_TYPES[c["type"]]) for c in columns]))
        assert self.writer is not None and self.hash is not None and self.baseline is not None
        parts = self.writer.close()
        version = self.hash.hexdigest()
        prefix = join(self.staging.rsplit("/", 1)[0], version)
        doc = self.baseline.document()
        created = not self.store.exists(join(prefix, DATASET_MARKER))
        if created:
            publish(self.store, self.staging, prefix, parts, self.hash.schema, doc, version)
        else:  # same content, same address: an unchanged source writes nothing
            self.store.remove(self.staging)
        rows = doc["rows"]
        print(
            f"ingested {origin}: {rows} rows, {len(columns)} columns in {len(parts)} part(s), version "
            f"{version[:16]}{' (new)' if created else ' (unchanged, nothing written)'}"
        )
        return {
            "version": version[:16],
            "sha256": version,
            "rows": rows,
            "columns": len(columns),
            "target": self.target,
            "artifactURI": self.store.uri(join(prefix, DATASET_MARKER)),
            "statisticsURI": self.store.uri(join(prefix, STATISTICS_FILE)),
            # Where the whole of what "statistics" summarises is, should the summary be cut to fit 4 KiB.
            "detailsURI": self.store.uri(join(prefix, STATISTICS_FILE)),
            "parts": len(parts),
            "created": created,
            "statistics": status_summary(doc),
        }

    def abort(self) -> None:
        """Nothing of a failed ingest stays in the store."""
        if self.writer is not None:
            self.writer.abort()
        with contextlib.suppress(Exception):
            self.store.remove(self.staging)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="kubeloop.runtime ingest", description="Ingest a Dataset; config in $KUBELOOP_CONFIG"
    ).parse_args(argv)
    # The batch size is the memory knob: the default suits a 512 MiB pod.
    size = BatchSize(bytes=int(os.environ.get("KUBELOOP_INGEST_BATCH_BYTES") or BatchSize.bytes))
    return jobio.run("ingest", lambda: ingest(jobio.load_config(), size))


if __name__ == "__main__":
    raise SystemExit(main())
