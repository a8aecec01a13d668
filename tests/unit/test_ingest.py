"""Ingest as a pod runs it: config in KUBELOOP_CONFIG, result on stdout, snapshot in a file:// store."""

from __future__ import annotations

import functools
import hashlib
import hmac
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from kubeloop.runtime import ingest

GOOD_CSV = "sepal_length,color,email,label\n5.1,red,a@x.io,0\n4.9,blue,b@x.io,1\n6.2,red,c@x.io,1\n"
SCHEMA = {
    "target": "label",
    "columns": [
        {"name": "sepal_length", "type": "float", "nullable": False, "minimum": 0, "maximum": 10},
        {"name": "color", "type": "category", "values": ["red", "blue"]},
        {"name": "label", "type": "int"},
    ],
}


def run_ingest(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: Path, **config: Any
) -> tuple[int, dict[str, Any]]:
    full = {"namespace": "team", "name": "flowers", "storeURI": f"file://{store}", **config}
    monkeypatch.setenv("KUBELOOP_CONFIG", json.dumps(full))
    monkeypatch.setenv("KUBELOOP_TERMINATION_LOG", str(store.parent / "termination-log"))
    code = ingest.main([])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert (store.parent / "termination-log").read_text() == last
    return code, json.loads(last)


@pytest.fixture
def configmap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    mount = tmp_path / "cm"
    mount.mkdir()
    monkeypatch.setenv("KUBELOOP_CONFIGMAP_DIR", str(mount))
    return mount


def cm_source(mount: Path, text: str, key: str = "data.csv") -> dict[str, Any]:
    (mount / key).write_text(text)
    return {"configMapRef": {"name": "flowers", "key": key}}


def test_builtin_iris_is_versioned_and_unchanged_input_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    code, first = run_ingest(monkeypatch, capsys, store, source={"builtin": "iris"})
    assert code == 0 and first["ok"] and first["created"] and first["rows"] == 150
    snapshot = store / "datasets/team/flowers" / first["sha256"]
    assert hashlib.sha256((snapshot / "data.parquet").read_bytes()).hexdigest() == first["sha256"]
    assert first["version"] == first["sha256"][:16]
    mtime = (snapshot / "data.parquet").stat().st_mtime_ns
    code, second = run_ingest(monkeypatch, capsys, store, source={"builtin": "iris"})
    assert code == 0 and second["sha256"] == first["sha256"] and not second["created"]
    assert (snapshot / "data.parquet").stat().st_mtime_ns == mtime
    doc = json.loads((snapshot / "statistics.json").read_text())
    assert doc["rows"] == 150 and doc["targetName"] == "target"
    assert doc["target"]["kind"] == "categorical" and doc["target"]["counts"] == [50, 50, 50]
    petal = doc["features"]["petal_length_cm"]
    assert petal["kind"] == "numeric" and len(petal["counts"]) == len(petal["edges"]) + 1


def test_csv_and_parquet_of_the_same_table_get_the_same_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], configmap: Path
) -> None:
    pvc_root = tmp_path / "pvc"
    pvc_root.mkdir()
    monkeypatch.setenv("KUBELOOP_PVC_ROOT", str(pvc_root))
    frame = pd.read_csv(pd.io.common.StringIO(GOOD_CSV))
    frame.to_parquet(pvc_root / "flowers.parquet")
    store = tmp_path / "store"
    _, from_csv = run_ingest(monkeypatch, capsys, store, source=cm_source(configmap, GOOD_CSV), schema=SCHEMA)
    _, from_parquet = run_ingest(
        monkeypatch,
        capsys,
        store,
        schema=SCHEMA,
        source={"pvc": {"claimName": "data", "path": "flowers.parquet"}},
    )
    assert from_csv["ok"] and from_parquet["ok"]
    assert from_csv["sha256"] == from_parquet["sha256"]


@pytest.mark.parametrize(
    ("csv", "config", "reason", "message"),
    [
        (
            GOOD_CSV.replace("4.9", "abc"),
            {},
            "SchemaViolation",
            "row 2, column 'sepal_length': 'abc' is not a float",
        ),
        (GOOD_CSV.replace("6.2", ""), {}, "SchemaViolation", "row 3, column 'sepal_length': is empty"),
        (
            GOOD_CSV.replace("6.2", "11"),
            {},
            "SchemaViolation",
            "row 3, column 'sepal_length': '11' is above the maximum",
        ),
        (
            GOOD_CSV.replace("blue", "green"),
            {},
            "SchemaViolation",
            "row 2, column 'color': 'green' is not one of",
        ),
        (
            GOOD_CSV.replace(",1\n", ",1.5\n", 1),
            {},
            "SchemaViolation",
            "row 2, column 'label': '1.5' is not an int",
        ),
        (GOOD_CSV.replace("label", "species"), {}, "MissingTarget", "target column 'label' is missing"),
        (GOOD_CSV, {"validation": {"minRows": 10}}, "TooFewRows", "has 3 rows; validation.minRows is 10"),
        (
            GOOD_CSV.replace("red", "", 1).replace("blue", ""),
            {"validation": {"maxNullFraction": 0.5}},
            "TooManyNulls",
            "column 'color' is 66.7% empty",
        ),
        (GOOD_CSV + "5.1,red,a@x.io,0\n", {"validation": {"duplicates": "fail"}}, "DuplicateRows", "rows 4"),
    ],
)
def test_bad_data_exits_2_names_row_and_column_and_writes_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    configmap: Path,
    csv: str,
    config: dict[str, Any],
    reason: str,
    message: str,
) -> None:
    store = tmp_path / "store"
    code, result = run_ingest(
        monkeypatch, capsys, store, source=cm_source(configmap, csv), schema=SCHEMA, **config
    )
    assert code == 2
    assert result["ok"] is False and result["reason"] == reason
    assert message in result["message"]
    assert not store.exists() or not any(store.rglob("*.parquet"))


def test_privacy_drops_and_hashes_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], configmap: Path
) -> None:
    key_file = tmp_path / "hash-key"
    key_file.write_text("s3cret-key\n")
    store = tmp_path / "store"
    privacy = {"drop": ["color"], "hash": ["email"], "hashKeyPath": str(key_file)}
    code, result = run_ingest(
        monkeypatch, capsys, store, source=cm_source(configmap, GOOD_CSV), schema=SCHEMA, privacy=privacy
    )
    assert code == 0, result
    snapshot = store / "datasets/team/flowers" / result["sha256"]
    frame = pd.read_parquet(snapshot / "data.parquet")
    assert list(frame.columns) == ["sepal_length", "email", "label"]
    expected = hmac.new(b"s3cret-key", b"a@x.io", hashlib.sha256).hexdigest()
    assert frame["email"][0] == expected
    for path in store.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert b"a@x.io" not in content and b"red" not in content and b"s3cret" not in content
    # Another key gives other hashes: the hash is keyed, not a plain digest anyone can recompute.
    key_file.write_text("other-key")
    _, other = run_ingest(
        monkeypatch, capsys, store, source=cm_source(configmap, GOOD_CSV), schema=SCHEMA, privacy=privacy
    )
    assert other["sha256"] != result["sha256"]


def test_private_values_never_appear_in_error_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], configmap: Path
) -> None:
    schema = {**SCHEMA, "columns": [*SCHEMA["columns"], {"name": "email", "type": "string", "values": ["x"]}]}
    code, result = run_ingest(
        monkeypatch,
        capsys,
        tmp_path / "store",
        source=cm_source(configmap, GOOD_CSV),
        schema=schema,
        privacy={"hash": ["email"], "hashKeyPath": "/nonexistent"},
    )
    assert code == 2 and "row 1, column 'email': the value is not one of" in result["message"]
    assert "a@x.io" not in result["message"]


def test_missing_hash_key_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], configmap: Path
) -> None:
    monkeypatch.delenv("KUBELOOP_HASH_KEY", raising=False)
    monkeypatch.delenv("KUBELOOP_HASH_KEY_FILE", raising=False)
    code, result = run_ingest(
        monkeypatch,
        capsys,
        tmp_path / "store",
        source=cm_source(configmap, GOOD_CSV),
        schema=SCHEMA,
        privacy={"hash": ["email"]},
    )
    assert code == 2 and result["reason"] == "MissingHashKey" and "hashKeySecretRef" in result["message"]


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()
    thread.join()


def test_url_source_csv_with_duplicates_dropped(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    http_dir: tuple[str, Path],
) -> None:
    base, root = http_dir
    (root / "flowers.csv").write_text(GOOD_CSV + "5.1,red,a@x.io,0\n")
    code, result = run_ingest(
        monkeypatch,
        capsys,
        tmp_path / "store",
        source={"url": f"{base}/flowers.csv"},
        schema=SCHEMA,
        validation={"duplicates": "drop"},
    )
    assert code == 0 and result["rows"] == 3
    code, result = run_ingest(monkeypatch, capsys, tmp_path / "store", source={"url": f"{base}/missing.csv"})
    # A 404 will not pass by itself: a data error at once, naming the status (tests/integration has the rest).
    assert code == 2 and result["reason"] == "SourceNotFound" and "HTTP 404" in result["message"]
