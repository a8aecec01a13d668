"""The artifact store against a real volume and a real S3 server (versitygw on 127.0.0.1).

No Kubernetes needed: these run wherever the S3 server binary can be built (cluster/build-s3.sh).
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from kubeloop.runtime.store import Store, StoreError, open_store
from support.s3server import S3Server, s3_env, s3_server  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parents[2]


def _stores(tmp_path: Path, s3: S3Server) -> list[Store]:
    return [open_store(f"file://{tmp_path}/vol"), open_store(f"s3://{s3.bucket}/{tmp_path.name}")]


def test_put_get_list_exists_round_trip(tmp_path: Path, s3_env: S3Server) -> None:  # noqa: F811
    src = tmp_path / "blob.bin"
    src.write_bytes(os.urandom(300_000))
    expected = hashlib.sha256(src.read_bytes()).hexdigest()
    for store in _stores(tmp_path, s3_env):
        assert store.put_file("models/abc/model.onnx", src) == expected
        assert store.put_bytes("models/abc/model-card.json", b"{}") == hashlib.sha256(b"{}").hexdigest()
        assert store.exists("models/abc/model.onnx")
        assert not store.exists("models/abc/missing")
        assert store.list("models/abc") == ["models/abc/model-card.json", "models/abc/model.onnx"]
        out = tmp_path / "out" / store.root.split(":")[0] / "model.onnx"
        assert store.get_file("models/abc/model.onnx", out, sha256=expected) == expected
        assert out.read_bytes() == src.read_bytes()
        assert store.get_bytes("models/abc/model-card.json") == b"{}"


def test_checksum_mismatch_leaves_no_file(tmp_path: Path, s3_env: S3Server) -> None:  # noqa: F811
    for store in _stores(tmp_path, s3_env):
        store.put_bytes("m/model.onnx", b"real model")
        dest = tmp_path / store.root.split(":")[0] / "model.onnx"
        with pytest.raises(StoreError, match="checksum mismatch"):
            store.get_file("m/model.onnx", dest, sha256="0" * 64)
        assert not dest.exists()
        assert list(dest.parent.iterdir()) == []  # no temp file left behind either


def test_missing_object_is_reported_by_uri(tmp_path: Path, s3_env: S3Server) -> None:  # noqa: F811
    for store in _stores(tmp_path, s3_env):
        with pytest.raises(StoreError, match=r"nothing/here does not exist"):
            store.get_bytes("nothing/here")


def test_pvc_uri_maps_to_the_mount_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBELOOP_PVC_ROOT", str(tmp_path / "mnt"))
    store = open_store("pvc://artifacts/kubeloop")
    store.put_bytes("a/b.txt", b"x")
    assert (tmp_path / "mnt" / "kubeloop" / "a" / "b.txt").read_bytes() == b"x"
    with pytest.raises(StoreError, match="leaves the store root"):
        store.put_bytes("../../escape", b"x")


def test_bad_uri_names_the_accepted_forms() -> None:
    with pytest.raises(StoreError, match=r"s3://bucket/prefix, file:///path or pvc://claim/path"):
        open_store("gs://bucket/x")


WRITER = """
import sys
from kubeloop.runtime.store import open_store
open_store(sys.argv[1]).put_file(sys.argv[2], sys.argv[3])
"""


def test_writer_killed_mid_write_leaves_nothing_that_looks_complete(tmp_path: Path) -> None:
    """A volume writer is killed while copying: the key never appears, readers ignore the temp file."""
    fifo = tmp_path / "source.fifo"
    os.mkfifo(fifo)
    root = tmp_path / "vol"
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, f"file://{root}", "models/x/model.onnx", str(fifo)], env=env
    )
    try:
        with open(fifo, "wb") as feed:
            feed.write(os.urandom(1 << 20))  # the writer has read (and written) part of the model...
            feed.flush()
            deadline = time.monotonic() + 20
            while not any(p.name.startswith(".tmp-") for p in root.rglob("*")):
                assert time.monotonic() < deadline, "the writer never started its temp file"
                time.sleep(0.05)
            os.kill(writer.pid, signal.SIGKILL)  # ...when it dies
            writer.wait()
    except BrokenPipeError:
        pass
    finally:
        if writer.poll() is None:
            os.kill(writer.pid, signal.SIGKILL)
            writer.wait()
    store = open_store(f"file://{root}")
    assert not store.exists("models/x/model.onnx")
    assert store.list() == []
    assert next(p.name for p in (root / "models" / "x").iterdir()).startswith(".tmp-")


def _raw_put(s3: S3Server, key: str, size: int, send: int) -> None:
    """A signed PUT announcing ``size`` bytes that sends only ``send`` of them before the socket closes."""
    import boto3
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest

    url = f"{s3.endpoint}/{s3.bucket}/{key}"
    body = os.urandom(size)  # signed whole, as a client does before it starts sending
    request = AWSRequest(method="PUT", url=url, data=body, headers={"Content-Length": str(size)})
    credentials = boto3.Session(
        aws_access_key_id=s3.access_key, aws_secret_access_key=s3.secret_key
    ).get_credentials()
    S3SigV4Auth(credentials, "s3", "us-east-1").add_auth(request)
    parsed = urlparse(url)
    with socket.create_connection((parsed.hostname, parsed.port)) as sock:
        head = (
            f"PUT {parsed.path} HTTP/1.1\r\nHost: {parsed.netloc}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in request.headers.items() if k.lower() != "host")
            + "\r\n"
        )
        sock.sendall(head.encode() + body[:send])
        if send == size:
            reply = sock.recv(4096)
            assert reply.startswith(b"HTTP/1.1 200"), reply.decode(errors="replace")
        else:
            time.sleep(0.3)


def test_interrupted_s3_put_creates_no_object(tmp_path: Path, s3_env: S3Server) -> None:  # noqa: F811
    """A PUT whose connection drops part-way (the writer died) never becomes a visible object."""
    size = 4 << 20
    _raw_put(s3_env, f"{tmp_path.name}/models/ok/model.onnx", size, size)  # control: the same PUT, whole
    _raw_put(s3_env, f"{tmp_path.name}/models/y/model.onnx", size, size // 4)
    time.sleep(0.5)
    store = open_store(f"s3://{s3_env.bucket}/{tmp_path.name}")
    assert store.exists("models/ok/model.onnx")
    assert not store.exists("models/y/model.onnx")
    assert store.list("models") == ["models/ok/model.onnx"]


def test_directory_is_complete_only_with_its_marker(tmp_path: Path, s3_env: S3Server) -> None:  # noqa: F811
    """put_dir writes the marker last; a reader that checks the marker never takes a partial upload."""
    local = tmp_path / "model"
    (local / "report").mkdir(parents=True)
    (local / "model.onnx").write_bytes(b"onnx")
    (local / "report" / "plot.png").write_bytes(b"png")
    (local / "model-card.json").write_text("{}")
    for store in _stores(tmp_path, s3_env):
        written: list[str] = []
        original = store.put_file

        def recording(key: str, path: os.PathLike[str] | str, original=original, written=written) -> str:
            written.append(key)
            return original(key, path)

        store.put_file = recording  # type: ignore[method-assign]
        sums = store.put_dir("models/z", local, marker="model-card.json")
        assert written[-1] == "models/z/model-card.json"
        assert set(sums) == {"model.onnx", "report/plot.png", "model-card.json"}
        with pytest.raises(StoreError, match=r"has no missing\.json"):
            store.put_dir("models/w", local, marker="missing.json")


def test_streamed_write_goes_up_in_parts_and_appears_only_when_whole(
    tmp_path: Path,
    s3_env: S3Server,  # noqa: F811
) -> None:
    """open_write streams an object larger than one S3 part (three parts here); a block that fails leaves
    no object and no unfinished multipart upload; move and remove act on the objects."""
    chunk = os.urandom(1 << 20)
    size = 40 << 20  # 16 MiB parts: two full ones and a short last one
    for store in _stores(tmp_path, s3_env):
        with store.open_write("staging/part-00000.parquet") as out:
            for _ in range(size // len(chunk)):
                out.write(chunk)
            assert not store.exists("staging/part-00000.parquet")  # not before the block ends
        assert store.get_bytes("staging/part-00000.parquet") == chunk * (size // len(chunk))

        with pytest.raises(RuntimeError, match="writer died"), store.open_write("staging/broken") as out:
            out.write(chunk * 20)  # a part is already up when it fails
            raise RuntimeError("writer died")
        assert not store.exists("staging/broken")

        store.move("staging/part-00000.parquet", "v1/part-00000.parquet")
        store.remove("staging")
        assert store.list() == ["v1/part-00000.parquet"]
        store.remove("v1")
        assert store.list() == []
    s3 = open_store(f"s3://{s3_env.bucket}/x")
    uploads = s3.client.list_multipart_uploads(Bucket=s3_env.bucket)  # type: ignore[attr-defined]
    assert not uploads.get("Uploads"), uploads
    assert not (tmp_path / "vol" / "staging").exists() and not (tmp_path / "vol" / "v1").exists()
