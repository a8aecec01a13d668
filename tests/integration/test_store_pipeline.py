"""Ingest from S3, train into an S3 store, fetch back: the runtime end to end on a real S3 server.

Runs each command as its own process (``python -m kubeloop.runtime.<cmd>``), as a pod would, with the S3
endpoint and credentials only in the environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from kubeloop.runtime.store import open_store
from support.s3server import S3Server, s3_env, s3_server  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parents[2]
CSV = "x1,x2,y\n" + "".join(f"{i % 7 * 0.5},{(i * 3) % 11},{int(i % 7 > 3)}\n" for i in range(120))


def pod(
    s3: S3Server, command: str, config: dict[str, Any] | None = None, *args: str
) -> tuple[int, dict[str, Any], str]:
    env = {
        **os.environ,
        **s3.env(),
        "PYTHONPATH": str(REPO / "operator"),
        "KUBELOOP_TERMINATION_LOG": "/nonexistent/termination-log",
    }
    if config is not None:
        env["KUBELOOP_CONFIG"] = json.dumps(config)
    proc = subprocess.run(
        [sys.executable, "-m", f"kubeloop.runtime.{command}", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1]), proc.stdout + proc.stderr


def test_ingest_train_fetch_over_s3(s3_env: S3Server, tmp_path: Path) -> None:  # noqa: F811
    s3 = s3_env
    store_uri = f"s3://{s3.bucket}/{tmp_path.name}"
    open_store(f"s3://{s3.bucket}/raw").put_bytes("points.csv", CSV.encode())

    ingest_config = {
        "namespace": "ns",
        "name": "points",
        "storeURI": store_uri,
        "source": {"s3": {"uri": f"s3://{s3.bucket}/raw/points.csv"}},
        "schema": {"target": "y"},
    }
    code, ds, _ = pod(s3, "ingest", ingest_config)
    assert code == 0 and ds["rows"] == 120 and ds["artifactURI"].startswith(store_uri)

    train_config = {
        "namespace": "ns",
        "name": "tj",
        "storeURI": store_uri,
        "dataset": {"name": "points", "version": ds["version"]},
        "model": {"estimator": "GradientBoostingClassifier", "params": {"n_estimators": 20}},
    }
    code, trained, log = pod(s3, "train", train_config)
    assert code == 0, log
    for secret in (s3.secret_key,):
        assert secret not in log  # credentials never reach the logs or the result

    store = open_store(store_uri)
    sha = trained["model"]["sha256"]
    assert store.list(f"models/{sha}")[-1] == f"models/{sha}/report/feature_importance.png"
    assert hashlib.sha256(store.get_bytes(f"models/{sha}/model.onnx")).hexdigest() == sha

    dest = tmp_path / "model"
    code, _fetched, _ = pod(
        s3, "fetch", None, "--uri", trained["model"]["uri"], "--sha256", sha, "--dest", str(dest)
    )
    assert code == 0 and hashlib.sha256((dest / "model.onnx").read_bytes()).hexdigest() == sha
    card = json.loads((dest / "model-card.json").read_text())
    assert card["dataset"]["sha256"] == ds["sha256"] and card["sha256"] == sha

    code, refused, _ = pod(
        s3,
        "fetch",
        None,
        "--uri",
        trained["model"]["uri"],
        "--sha256",
        "1" * 64,
        "--dest",
        str(tmp_path / "other"),
    )
    assert code == 2 and refused["reason"] == "ChecksumMismatch"
    assert not (tmp_path / "other" / "model.onnx").exists()


def test_an_s3_prefix_is_one_table_and_the_snapshot_lands_in_s3_whole(
    s3_env: S3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Objects under an s3 prefix (a uri ending in /) are read in key order as one table: the version
    equals that of the same rows in one object. The snapshot is streamed into S3 (parts, staging moved in,
    manifest last) and nothing of the staging is left behind."""
    from kubeloop.runtime import ingest, snapshot
    from kubeloop.runtime.readers import BatchSize

    raw = open_store(f"s3://{s3_env.bucket}/{tmp_path.name}-raw")
    header, *rows = CSV.splitlines()
    raw.put_bytes("one/points.csv", CSV.encode())
    raw.put_bytes("many/b.csv", "\n".join([header, *rows[50:]]).encode() + b"\n")
    raw.put_bytes("many/a.csv", "\n".join([header, *rows[:50]]).encode() + b"\n")
    raw.put_bytes("many/_SUCCESS", b"")
    store_uri = f"s3://{s3_env.bucket}/{tmp_path.name}"
    results = [
        ingest.ingest(
            {
                "namespace": "ns",
                "name": name,
                "storeURI": store_uri,
                "source": {"s3": {"uri": f"s3://{s3_env.bucket}/{tmp_path.name}-raw/{path}"}},
                "schema": {"target": "y"},
            },
            BatchSize(bytes=1024, rows=10),
            part_rows=40,
        )
        for name, path in (("one", "one/points.csv"), ("many", "many/"))
    ]
    assert results[0]["sha256"] == results[1]["sha256"] and results[1]["rows"] == 120
    store = open_store(store_uri)
    prefix = f"datasets/ns/many/{results[1]['sha256']}"
    assert store.list("datasets/ns/many") == [
        f"{prefix}/{name}"
        for name in ("manifest.json", *(f"part-0000{i}.parquet" for i in range(3)), "statistics.json")
    ]
    assert snapshot.read_table(store, prefix).num_rows == 120
