"""A real S3-compatible server on 127.0.0.1 for the store's tests: versitygw with its POSIX backend.

The binary is built once from the Go module proxy by cluster/build-s3.sh and cached under
~/.cache/kubeloop/s3/. Import the fixture into a test module: ``from support.s3server import s3_server``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "cluster" / "build-s3.sh"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    root: Path  # where the server keeps the objects (bucket directories)

    def env(self) -> dict[str, str]:
        """The variables a Secret would give a pod."""
        return {
            "KUBELOOP_S3_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }


def server_binary() -> Path:
    start = time.monotonic()
    out = subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, capture_output=True, text=True)
    took = time.monotonic() - start
    if took > 5:
        print(f"\nbuilt the S3 server (versitygw) in {took:.0f}s")
    return Path(out.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_running: dict[str, S3Server] = {}


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    # Each test module that imports this fixture gets its own session-scoped copy of it; one server for
    # the whole run is enough, so the first copy starts it and every copy yields that one.
    if "server" in _running:
        yield _running["server"]
        return
    with _start(tmp_path_factory) as server:
        _running["server"] = server
        try:
            yield server
        finally:
            _running.pop("server", None)


@contextlib.contextmanager
def _start(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    binary = server_binary()
    root = tmp_path_factory.mktemp("s3root")
    sidecar = tmp_path_factory.mktemp("s3meta")  # metadata beside, not in xattrs: works on any filesystem
    bucket = "kubeloop-test"
    (root / bucket).mkdir()  # the POSIX backend serves each top-level directory as a bucket
    port = _free_port()
    server = S3Server(
        f"http://127.0.0.1:{port}", "kubeloop-" + secrets.token_hex(4), secrets.token_hex(16), bucket, root
    )
    log = open(tmp_path_factory.mktemp("s3log") / "versitygw.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            str(binary),
            "--port",
            f"127.0.0.1:{port}",
            "--quiet",
            "posix",
            "--sidecar",
            str(sidecar),
            str(root),
        ],
        env={
            **os.environ,
            "ROOT_ACCESS_KEY_ID": server.access_key,
            "ROOT_SECRET_ACCESS_KEY": server.secret_key,
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"versitygw exited with {proc.returncode}; see {log.name}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"versitygw did not listen on {port} within 30s; see {log.name}"
                    ) from None
                time.sleep(0.1)
        yield server
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """Point the store's S3 backend at the test server through the environment, as a pod gets it."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server
