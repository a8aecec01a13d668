"""Ingest a Dataset: read, check the schema and rules, apply privacy, hash, compute statistics, write once.

Order matters: columns to drop are removed and columns to hash are replaced before anything is written,
so raw personal data never reaches the store. Nothing is written unless every check passes.

Config (``KUBELOOP_CONFIG``): the Dataset spec's fields (``source``, ``format``, ``schema``, ``validation``,
``privacy``) plus ``namespace``, ``name``, ``storeURI``. Rows in messages count from 1, header excluded.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kubeloop import stats
from kubeloop.contract import DATASET_MARKER, SNAPSHOT_FILE
from kubeloop.runtime import fetch, jobio
from kubeloop.runtime.jobio import DataError
from kubeloop.runtime.store import join, open_store

BUILTINS = ("iris", "wine", "breast_cancer", "digits", "diabetes")
NUMERIC_TYPES = ("float", "int")
TRUE = {"true", "1", "yes", "y", "t"}
FALSE = {"false", "0", "no", "n", "f"}
NULL_TOKENS = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"]
MAX_ERRORS = 5  # enough to see a pattern; the result must fit the 4 KiB termination log


# ------------------------------------------------------------------------------------------------ read


def read_source(config: dict[str, Any]) -> tuple[pd.DataFrame, str]:
    """The raw table and where it came from (for messages). CSV cells stay strings until typed here."""
    source = config.get("source") or {}
    kinds = [k for k in ("builtin", "url", "s3", "pvc", "configMapRef") if source.get(k)]
    if len(kinds) != 1:
        raise DataError("InvalidSource", "source must set exactly one of builtin, url, s3, pvc, configMapRef")
    kind = kinds[0]
    if kind == "builtin":
        return _builtin(source["builtin"]), f"builtin {source['builtin']}"
    fmt = config.get("format")
    if kind == "url":
        url = source["url"]
        shown = fetch.public_url(url)  # messages and logs never show the query string (credentials)
        if not re.match(r"^https?://", url):
            raise DataError("InvalidSource", f"source.url must be http(s), got {shown!r}")
        return _parse(fetch.read_url(url), fmt or _format_of(shown), shown), shown
    if kind == "s3":
        uri = source["s3"]["uri"]
        parent, _, key = uri.rpartition("/")
        store = open_store(parent)
        if source["s3"].get("endpoint"):
            from kubeloop.runtime.store import S3Store  # only here: a per-source endpoint

            parsed = parent.removeprefix("s3://").split("/", 1)
            store = S3Store(parent, parsed[0], parsed[1] if len(parsed) > 1 else "", source["s3"]["endpoint"])
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


def _read_path(path: Path, fmt: str | None) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(
            "SourceNotFound", f"{path} does not exist (is the volume mounted and the path right?)"
        )
    return _parse(path.read_bytes(), fmt or _format_of(path.name), str(path))


def _parse(data: bytes, fmt: str, what: str) -> pd.DataFrame:
    try:
        if fmt == "parquet":
            return pq.read_table(io.BytesIO(data)).to_pandas()
        if fmt == "csv":
            # All cells as text: types are decided by the schema, so a bad cell can be reported, not coerced.
            return pd.read_csv(
                io.BytesIO(data),
                dtype=str,
                keep_default_na=False,
                na_values=NULL_TOKENS,
                compression="infer" if what.endswith(".gz") else None,
            )
    except (ValueError, pa.ArrowInvalid, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError("UnreadableData", f"cannot read {what} as {fmt}: {exc}") from None
    raise DataError("UnknownFormat", f"format must be csv or parquet, got {fmt!r}")


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


def apply_schema(df: pd.DataFrame, schema: dict[str, Any], private: set[str]) -> pd.DataFrame:
    """Typed columns in a fixed order; raises DataError listing the first offending cells."""
    declared = {c["name"]: c for c in schema.get("columns") or []}
    missing = [n for n in declared if n not in df.columns]
    target = schema.get("target")
    if target and target not in df.columns:
        raise DataError(
            "MissingTarget",
            f"the target column {target!r} is missing; the data has columns {list(df.columns)}",
        )
    if missing:
        raise DataError(
            "MissingColumn",
            f"column(s) {missing} in the schema are missing from the data; "
            f"the data has columns {list(df.columns)}",
        )
    errors: list[str] = []
    typed: dict[str, pd.Series] = {}
    for name in df.columns:
        col = declared.get(name) or {"name": name, "type": infer_type(df[name])}
        typed[name] = _typed_column(df[name], col, name in private, errors)
    if errors:
        more = f" (and more; first {MAX_ERRORS} shown)" if len(errors) > MAX_ERRORS else ""
        raise DataError("SchemaViolation", "; ".join(errors[:MAX_ERRORS]) + more)
    return pd.DataFrame(typed)


def _typed_column(raw: pd.Series, col: dict[str, Any], private: bool, errors: list[str]) -> pd.Series:
    name, kind = col["name"], col.get("type", "string")
    null = raw.isna()
    values = raw.reset_index(drop=True)

    def bad(positions: np.ndarray, what: str) -> None:
        for pos in positions[: MAX_ERRORS + 1]:
            # A private column's value must not reach logs or status: name the cell, not its content.
            shown = "the value" if private else repr(str(values.iloc[pos]))
            errors.append(f"row {pos + 1}, column {name!r}: {shown} {what}")

    if not col.get("nullable", True) and null.any():
        for pos in np.flatnonzero(null.to_numpy())[: MAX_ERRORS + 1]:
            errors.append(f"row {pos + 1}, column {name!r}: is empty but the column is not nullable")

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


def check_rules(df: pd.DataFrame, validation: dict[str, Any]) -> pd.DataFrame:
    min_rows = int(validation.get("minRows", 1))
    if len(df) < min_rows:
        raise DataError("TooFewRows", f"the data has {len(df)} rows; validation.minRows is {min_rows}")
    max_null = float(validation.get("maxNullFraction", 1.0))
    for name in df.columns:
        empty = df[name].isna().to_numpy()
        fraction = float(empty.mean()) if len(df) else 0.0
        if fraction > max_null:
            rows = np.flatnonzero(empty)[:MAX_ERRORS] + 1
            more = ", ..." if int(empty.sum()) > MAX_ERRORS else ""
            raise DataError(
                "TooManyNulls",
                f"column {name!r} is {fraction:.1%} empty (rows {', '.join(map(str, rows))}{more}); "
                f"validation.maxNullFraction is {max_null:.1%}",
            )
    policy = validation.get("duplicates", "keep")
    duplicated = df.duplicated(keep="first").to_numpy()
    if policy == "fail" and duplicated.any():
        rows = np.flatnonzero(duplicated)[:MAX_ERRORS] + 1
        raise DataError(
            "DuplicateRows",
            f"{int(duplicated.sum())} duplicate row(s), e.g. rows "
            f"{', '.join(map(str, rows))}; validation.duplicates is fail",
        )
    if policy == "drop":
        df = df[~duplicated].reset_index(drop=True)
    elif policy not in ("keep", "fail"):
        raise DataError(
            "InvalidValidation", f"validation.duplicates must be keep, drop or fail, got {policy!r}"
        )
    return df


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


def apply_privacy(
    df: pd.DataFrame, privacy: dict[str, Any], target: str | None, key: bytes | None
) -> pd.DataFrame:
    drop = list(privacy.get("drop") or [])
    hashed = list(privacy.get("hash") or [])
    unknown = [c for c in drop + hashed if c not in df.columns]
    if unknown:
        raise DataError("InvalidPrivacy", f"privacy names column(s) {unknown} that the data does not have")
    if target and target in drop:
        raise DataError("InvalidPrivacy", f"privacy.drop removes the target column {target!r}")
    df = df.drop(columns=drop)
    for name in hashed:
        assert key is not None
        df[name] = (
            df[name]
            .map(
                lambda v, k=key: (
                    pd.NA if pd.isna(v) else hmac.new(k, _as_text(v).encode(), hashlib.sha256).hexdigest()
                )
            )
            .astype("string")
        )
    return df


# ------------------------------------------------------------------------------- canonical form + stats


def canonical_parquet(df: pd.DataFrame) -> bytes:
    """Deterministic parquet bytes: no pandas metadata (it embeds the pandas version), fixed options."""
    table = pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(None)
    sink = io.BytesIO()
    pq.write_table(
        table, sink, compression="zstd", use_dictionary=True, write_statistics=True, row_group_size=1 << 20
    )
    return sink.getvalue()


def column_kinds(df: pd.DataFrame) -> dict[str, str]:
    return {
        c: "numeric"
        if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
        else "categorical"
        for c in df.columns
    }


def statistics(df: pd.DataFrame, target: str | None) -> dict[str, Any]:
    def summary(name: str) -> dict[str, Any]:
        series = df[name]
        # A class label stored as an int is still a class: its baseline is a frequency per class.
        labels = name == target and pd.api.types.is_integer_dtype(series) and series.nunique() <= 20
        if column_kinds(df)[name] == "numeric" and not labels:
            return stats.numeric_summary(series.astype("float64").to_numpy())
        return stats.categorical_summary(None if pd.isna(v) else _as_text(v) for v in series)

    out: dict[str, Any] = {
        "version": 1,
        "rows": len(df),
        "features": {c: summary(c) for c in df.columns if c != target},
    }
    if target:
        out["target"] = summary(target)
        out["targetName"] = target
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


def ingest(config: dict[str, Any]) -> dict[str, Any]:
    for key in ("namespace", "name", "storeURI"):
        if not config.get(key):
            raise DataError("InvalidConfig", f"config needs {key!r}")
    raw, origin = read_source(config)
    schema = config.get("schema") or {}
    privacy = config.get("privacy") or {}
    target = schema.get("target")
    if not target and config["source"].get("builtin"):
        target = "target"  # scikit-learn's bundled frames name it so
    drop = list(privacy.get("drop") or [])
    unknown = [c for c in drop + list(privacy.get("hash") or []) if c not in raw.columns]
    if unknown:
        raise DataError("InvalidPrivacy", f"privacy names column(s) {unknown} that the data does not have")
    if target in drop:
        raise DataError("InvalidPrivacy", f"privacy.drop removes the target column {target!r}")
    # Dropped columns go first: they are neither validated nor echoed in any message.
    raw = raw.drop(columns=drop)
    schema = {**schema, "columns": [c for c in schema.get("columns") or [] if c["name"] not in drop]}
    typed = apply_schema(raw, schema, set(privacy.get("hash") or []))
    typed = check_rules(typed, config.get("validation") or {})
    hmac_key = hash_key(config) if privacy.get("hash") else None
    clean = apply_privacy(typed, {**privacy, "drop": []}, target, hmac_key)

    data = canonical_parquet(clean)
    version = hashlib.sha256(data).hexdigest()
    prefix = join("datasets", config["namespace"], config["name"], version)
    store = open_store(config["storeURI"])
    doc = statistics(clean, target)
    created = not store.exists(join(prefix, DATASET_MARKER))
    if created:  # same content, same address: an unchanged source writes nothing
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, SNAPSHOT_FILE).write_bytes(data)
            Path(tmp, DATASET_MARKER).write_text(json.dumps(doc, indent=1, sort_keys=True))
            store.put_dir(prefix, tmp, marker=DATASET_MARKER)
    print(
        f"ingested {origin}: {len(clean)} rows, {len(clean.columns)} columns, version {version[:16]}"
        f"{' (new)' if created else ' (unchanged, nothing written)'}"
    )
    return {
        "version": version[:16],
        "sha256": version,
        "rows": len(clean),
        "columns": len(clean.columns),
        "target": target,
        "artifactURI": store.uri(join(prefix, SNAPSHOT_FILE)),
        "statisticsURI": store.uri(join(prefix, DATASET_MARKER)),
        "created": created,
        "statistics": status_summary(doc),
    }


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="kubeloop.runtime ingest", description="Ingest a Dataset; config in $KUBELOOP_CONFIG"
    ).parse_args(argv)
    return jobio.run("ingest", lambda: ingest(jobio.load_config()))


if __name__ == "__main__":
    raise SystemExit(main())
