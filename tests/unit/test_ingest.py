"""Ingest as a pod runs it: config in KUBELOOP_CONFIG, result on stdout, snapshot in a file:// store."""

from __future__ import annotations

import functools
import hashlib
import hmac
import http.server
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from kubeloop.runtime import ingest, snapshot, train
from kubeloop.runtime.readers import BatchSize
from kubeloop.runtime.store import open_store

REPO = Path(__file__).resolve().parents[2]

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
    assert first["artifactURI"] == f"file://{snapshot}/manifest.json"
    manifest = json.loads((snapshot / "manifest.json").read_text())
    assert manifest["sha256"] == first["sha256"] and manifest["rows"] == 150
    for part in manifest["parts"]:  # every part is what the manifest says it is
        assert hashlib.sha256((snapshot / part["path"]).read_bytes()).hexdigest() == part["sha256"]
    assert first["version"] == first["sha256"][:16]
    mtime = (snapshot / "manifest.json").stat().st_mtime_ns
    code, second = run_ingest(monkeypatch, capsys, store, source={"builtin": "iris"})
    assert code == 0 and second["sha256"] == first["sha256"] and not second["created"]
    assert (snapshot / "manifest.json").stat().st_mtime_ns == mtime
    assert sorted(p.name for p in (store / "datasets/team/flowers").iterdir()) == [first["sha256"]]
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
    frame = pd.read_parquet(snapshot / "part-00000.parquet")
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


# ------------------------------------------------------------------------------------ streamed ingest


def wide_csv(rows: int, bad: dict[int, str] | None = None) -> str:
    """rows of a float, an int, a category, a bool and an undeclared column, some cells empty; ``bad``
    replaces the float cell of a row (counted from 1)."""
    lines = ["x,n,city,flag,extra"]
    for i in range(1, rows + 1):
        x = (bad or {}).get(i, "" if i % 17 == 0 else f"{(i * 7919) % 1000 / 10}")
        lines.append(f"{x},{i % 13},{['oslo', 'lima', 'rome'][i % 3]},{'yes' if i % 2 else 'no'},{i * 0.5}")
    return "\n".join(lines) + "\n"


WIDE_SCHEMA = {
    "target": "n",
    "columns": [
        {"name": "x", "type": "float"},
        {"name": "n", "type": "int"},
        {"name": "city", "type": "category"},
        {"name": "flag", "type": "bool"},
    ],
}


def ingest_in_batches(
    store: Path, source: dict[str, Any], batch_bytes: int, rows: int, parts: int
) -> dict[str, Any]:
    config = {
        "namespace": "team",
        "name": "wide",
        "storeURI": f"file://{store}",
        "source": source,
        "schema": WIDE_SCHEMA,
    }
    return ingest.ingest(config, BatchSize(bytes=batch_bytes, rows=rows), part_rows=parts)


def test_version_does_not_depend_on_batches_parts_or_format(tmp_path: Path, configmap: Path) -> None:
    text = wide_csv(3000)
    source = cm_source(configmap, text)
    whole = ingest_in_batches(tmp_path / "a", source, 16 << 20, 1 << 17, 1 << 20)
    small = ingest_in_batches(tmp_path / "b", source, 2048, 100, 700)
    assert whole["parts"] == 1 and small["parts"] == 5  # 3000 rows in parts of 700
    assert small["sha256"] == whole["sha256"] and small["rows"] == whole["rows"] == 3000

    # The same table from a Parquet file of many row groups, read 100 rows at a time.
    frame = pd.read_csv(io.StringIO(text), dtype={"n": "int64"})
    frame["flag"] = frame["flag"] == "yes"
    frame.to_parquet(configmap / "wide.parquet", row_group_size=250)
    parquet = ingest_in_batches(
        tmp_path / "c", {"configMapRef": {"name": "w", "key": "wide.parquet"}}, 2048, 100, 700
    )
    assert parquet["sha256"] == whole["sha256"]

    # Every row is in the parts, in order, and the statistics agree whatever the batches.
    store_a, store_b = (open_store(f"file://{tmp_path / d}") for d in "ab")
    prefix = f"datasets/team/wide/{whole['sha256']}"
    assert snapshot.read_table(store_b, prefix).equals(snapshot.read_table(store_a, prefix))
    assert snapshot.read_table(store_b, prefix).column("x").null_count == 3000 // 17
    stats_a, stats_b = (json.loads(s.get_bytes(f"{prefix}/statistics.json")) for s in (store_a, store_b))
    for name in ("x", "extra"):
        a, b = stats_a["features"][name], stats_b["features"][name]
        assert a["edges"] == b["edges"] and a["counts"] == b["counts"] and a["nulls"] == b["nulls"]
        assert a["mean"] == pytest.approx(b["mean"], rel=1e-12)
    assert stats_a["target"] == stats_b["target"] and stats_a["target"]["kind"] == "categorical"
    assert stats_b["features"]["city"]["counts"] == [1000, 1000, 1000]


def test_bad_cell_in_a_later_batch_is_named_by_its_row_and_nothing_is_written(
    tmp_path: Path, configmap: Path
) -> None:
    source = cm_source(configmap, wide_csv(3000, bad={2500: "abc"}))
    with pytest.raises(ingest.DataError, match=r"^row 2500, column 'x': 'abc' is not a float$"):
        ingest_in_batches(tmp_path / "store", source, 2048, 100, 700)
    assert not [p for p in (tmp_path / "store").rglob("*")]  # parts staged before row 2500 are gone


def test_an_inferred_type_a_later_batch_breaks_says_to_declare_it(tmp_path: Path, configmap: Path) -> None:
    text = wide_csv(3000).replace(",1249.5\n", ",n/a\n")  # the undeclared "extra" of row 2499
    with pytest.raises(
        ingest.DataError, match=r"row 2499, column 'extra': 'n/a' is not a float .*declare it"
    ):
        ingest_in_batches(tmp_path / "store", cm_source(configmap, text), 2048, 100, 700)


def test_a_check_that_fails_at_the_end_removes_the_staged_parts(tmp_path: Path, configmap: Path) -> None:
    text = wide_csv(3000)
    text += text.splitlines()[1] + "\n"  # row 3001 repeats row 1
    config = {
        "namespace": "team",
        "name": "wide",
        "storeURI": f"file://{tmp_path / 'store'}",
        "source": cm_source(configmap, text),
        "schema": WIDE_SCHEMA,
        "validation": {"duplicates": "fail"},
    }
    with pytest.raises(ingest.DataError, match=r"^1 duplicate row\(s\), e.g. rows 3001;"):
        ingest.ingest(config, BatchSize(bytes=2048, rows=100), part_rows=700)
    assert not [p for p in (tmp_path / "store").rglob("*")]
    config["validation"] = {"duplicates": "drop"}
    assert ingest.ingest(config, BatchSize(bytes=2048, rows=100), part_rows=700)["rows"] == 3000


KILLED_INGEST = """
import sys
from kubeloop.runtime import ingest
from kubeloop.runtime.readers import BatchSize
source = {"pvc": {"claimName": "c", "path": "big.csv"}}
config = {"namespace": "team", "name": "big", "storeURI": sys.argv[1], "source": source}
ingest.ingest(config, BatchSize(bytes=4096), part_rows=500)
"""


def test_an_ingest_killed_mid_way_leaves_no_snapshot_that_looks_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pvc").mkdir()
    (tmp_path / "pvc" / "big.csv").write_text(wide_csv(200_000))
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator"), "KUBELOOP_PVC_ROOT": str(tmp_path / "pvc")}
    writer = subprocess.Popen([sys.executable, "-c", KILLED_INGEST, f"file://{store}"], env=env)
    try:
        deadline = time.monotonic() + 60
        while not list(store.glob("datasets/team/big/.staging-*/part-00002.parquet")):
            assert writer.poll() is None and time.monotonic() < deadline, "no part was ever staged"
            time.sleep(0.02)
    finally:
        writer.kill()
        writer.wait()
    assert not list(store.rglob("manifest.json"))
    config = {
        "namespace": "team",
        "name": "t",
        "storeURI": f"file://{store}",
        "dataset": {"name": "big", "version": "0"},
    }
    with pytest.raises(ingest.DataError, match="no complete snapshot"):
        train.load_dataset(config)


def test_a_directory_or_a_glob_of_files_is_one_table(
    tmp_path: Path, configmap: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pvc path that is a directory (every data file under it, in name order; markers and hidden files
    left out) or a glob gives the version the same rows in one file give; the files are read in turn."""
    text = wide_csv(3000)
    header, *rows = text.splitlines()
    single = ingest_in_batches(tmp_path / "a", cm_source(configmap, text), 2048, 100, 700)
    shards = tmp_path / "pvc" / "shards"
    shards.mkdir(parents=True)
    for i, start in enumerate((0, 1000, 2500)):
        end = {0: 1000, 1000: 2500, 2500: 3000}[start]
        (shards / f"part-{i}.csv").write_text("\n".join([header, *rows[start:end]]) + "\n")
    (shards / "_SUCCESS").write_text("")
    (shards / ".part-9.csv.crc").write_text("junk")
    monkeypatch.setenv("KUBELOOP_PVC_ROOT", str(tmp_path / "pvc"))
    for path in ("shards", "shards/part-*.csv"):
        many = ingest_in_batches(tmp_path / "b", {"pvc": {"claimName": "c", "path": path}}, 2048, 100, 700)
        assert many["sha256"] == single["sha256"] and many["rows"] == 3000

    (shards / "part-1.csv").write_text(header + "\n" + rows[1000].replace(",", ",x", 1) + "\n")
    with pytest.raises(ingest.DataError, match=r"/part-1.csv: row 1, column 'n': 'x0' is not a int$"):
        ingest_in_batches(tmp_path / "c", {"pvc": {"claimName": "c", "path": "shards"}}, 2048, 100, 700)
    (shards / "part-1.csv").write_text("x,n,city\n1,2,oslo\n")
    with pytest.raises(ingest.DataError, match=r"part-1.csv has columns \['x', 'n', 'city'\] but .*part-0"):
        ingest_in_batches(tmp_path / "c", {"pvc": {"claimName": "c", "path": "shards"}}, 2048, 100, 700)
    with pytest.raises(ingest.DataError, match="holds no csv or parquet file"):
        ingest_in_batches(tmp_path / "c", {"pvc": {"claimName": "c", "path": "shards/*.tsv"}}, 2048, 100, 700)


def test_a_parquet_files_pandas_index_is_not_a_column(tmp_path: Path, configmap: Path) -> None:
    frame = pd.read_csv(io.StringIO(GOOD_CSV)).set_axis([10, 20, 30])  # an index pandas stores as a column
    frame.to_parquet(configmap / "flowers.parquet")
    config = {
        "namespace": "team",
        "name": "flowers",
        "storeURI": f"file://{tmp_path}/store",
        "schema": SCHEMA,
    }
    from_parquet = ingest.ingest(
        {**config, "source": {"configMapRef": {"name": "f", "key": "flowers.parquet"}}}
    )
    from_csv = ingest.ingest({**config, "source": cm_source(configmap, GOOD_CSV)})
    assert from_parquet["columns"] == 4 and from_parquet["sha256"] == from_csv["sha256"]
