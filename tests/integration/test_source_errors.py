"""Dataset sources that fail, read by the ingest command as a pod runs it: a real HTTP server on loopback
and the project's real S3 server. A wrong source is a data error at once (exit 2) naming the status or the
key, never the URL's query string or a credential; a source that may come back is tried again in the pod
(exit 1 when it stays down, with the attempts and the last error in the result)."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from kubeloop.runtime import fetch
from kubeloop.runtime.jobio import DataError, RetryLater
from kubeloop.runtime.store import open_store
from support.s3server import S3Server, s3_env, s3_server  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parents[2]
CSV = b"x,y\n1,0\n2,1\n3,0\n4,1\n"
SECRET = "sig-0123456789abcdef"  # a presigned URL's credential: must never be shown
FAST = fetch.Retry(attempts=3, first_delay=0.05, timeout=2.0)
TOKEN = "tok-fedcba9876543210"  # a bearer token from a Secret: must never be shown


class Source(http.server.BaseHTTPRequestHandler):
    """/data.csv 200, /missing.csv 404, /private.csv 403, /flaky.csv 500 until it has failed `fail` times,
    /slow.csv answers after 3 s."""

    failures: ClassVar[dict[str, int]] = {}
    fail = 2

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/flaky.csv":
            Source.failures[path] = Source.failures.get(path, 0) + 1
            if Source.failures[path] <= Source.fail:
                self.send_error(500, "Internal Server Error")
                return
        if path == "/slow.csv":
            time.sleep(3)
        if path == "/token.csv" and (
            self.headers.get("Authorization") != f"Bearer {TOKEN}" or self.headers.get("X-Team") != "ml"
        ):
            self.send_error(401)
            return
        status = {"/missing.csv": 404, "/private.csv": 403}.get(path)
        if status:
            self.send_error(status)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(CSV)))
        self.end_headers()
        self.wfile.write(CSV)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def source() -> Iterator[str]:
    Source.failures = {}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Source)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nobody listens once it is closed


def ingest_pod(
    tmp_path: Path, source: dict[str, Any], env: dict[str, str] | None = None, **extra: Any
) -> tuple[int, dict[str, Any], str]:
    """The ingest command as its own process, as the pod runs it: exit code, result, everything it said."""
    config = {
        "namespace": "ns",
        "name": "d",
        "storeURI": (tmp_path / "store").as_uri(),
        "source": source,
        **extra,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "kubeloop.runtime", "ingest"],
        env={
            **os.environ,
            **(env or {}),
            "PYTHONPATH": str(REPO / "operator"),
            "KUBELOOP_CONFIG": json.dumps(config),
            "KUBELOOP_TERMINATION_LOG": str(tmp_path / "termination-log"),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1]), proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("path", "reason", "words"),
    [
        ("missing.csv", "SourceNotFound", ["HTTP 404", "/missing.csv"]),
        ("private.csv", "SourceForbidden", ["HTTP 403", "/private.csv"]),
    ],
)
def test_a_4xx_source_is_a_data_error_at_once_without_its_query(
    tmp_path: Path, source: str, path: str, reason: str, words: list[str]
) -> None:
    started = time.monotonic()
    code, result, said = ingest_pod(tmp_path, {"url": f"http://user:pw@{source[7:]}/{path}?X-Sig={SECRET}"})
    assert code == 2 and result["reason"] == reason, said
    assert all(w in result["message"] for w in words), result["message"]
    assert SECRET not in said and "pw@" not in said, said  # nothing the pod says shows the credentials
    assert (tmp_path / "termination-log").read_text() == json.dumps(
        result, sort_keys=True, separators=(",", ":")
    )
    assert time.monotonic() - started < 30  # no retries: python start-up and one request


def secret_volume(directory: Path, keys: dict[str, str]) -> Path:
    """A directory laid out as the kubelet mounts a Secret: each key a link into ..data."""
    data = directory / "..2026_12_01_10_00_00.000000001"
    data.mkdir(parents=True)
    (directory / "..data").symlink_to(data.name)
    for key, value in keys.items():
        (data / key).write_text(value)
        (directory / key).symlink_to(f"..data/{key}")
    return directory


def test_url_headers_from_a_secret_are_sent_and_never_said(tmp_path: Path, source: str) -> None:
    mounted = secret_volume(tmp_path / "headers", {"Authorization": f"Bearer {TOKEN}\n", "X-Team": "ml"})
    code, result, said = ingest_pod(tmp_path, {"url": f"{source}/token.csv"}, urlHeadersPath=str(mounted))
    assert code == 0 and result["rows"] == 4, said
    assert TOKEN not in said, said

    # without them the server refuses: a data error at once, naming the status
    code, result, said = ingest_pod(tmp_path, {"url": f"{source}/token.csv"})
    assert code == 2 and result["reason"] == "SourceForbidden" and "HTTP 401" in result["message"], said


@pytest.mark.parametrize(
    ("keys", "words"),
    [
        ({"Bad Name": "x"}, ["'Bad Name' is not an HTTP header name"]),
        ({"X-Inject": f"{TOKEN}\r\nHost: elsewhere"}, ["X-Inject holds a line break", "not shown"]),
    ],
)
def test_a_header_secret_that_would_break_the_request_is_refused_without_its_value(
    tmp_path: Path, source: str, keys: dict[str, str], words: list[str]
) -> None:
    mounted = secret_volume(tmp_path / "headers", keys)
    code, result, said = ingest_pod(tmp_path, {"url": f"{source}/data.csv"}, urlHeadersPath=str(mounted))
    assert code == 2 and result["reason"] == "InvalidSource", said
    assert all(w in result["message"] for w in words), result["message"]
    assert TOKEN not in said, said


def test_a_500_then_200_source_is_retried_in_the_pod_and_ingested(tmp_path: Path, source: str) -> None:
    code, result, said = ingest_pod(tmp_path, {"url": f"{source}/flaky.csv"})
    assert code == 0 and result["rows"] == 4, said
    assert Source.failures["/flaky.csv"] == 3  # two 500s, then the answer
    assert "attempt 1 of 4: GET" in said and "HTTP 500" in said and "attempt 3 of" not in said


def test_a_closed_port_is_retried_then_left_to_the_job_with_attempts_and_last_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/data.csv?token={SECRET}"
    code, result, said = ingest_pod(tmp_path, {"url": url})
    assert code == 1 and result["reason"] == "SourceUnavailable", said  # exit 1: the Job runs a new pod
    assert result["attempts"] == 4 and "connection refused" in result["lastError"]
    assert "in 4 attempts" in result["message"] and SECRET not in said


def test_a_server_that_does_not_answer_in_time_is_retried_then_given_up(source: str) -> None:
    started = time.monotonic()
    with pytest.raises(RetryLater) as raised:
        fetch.read_url(f"{source}/slow.csv", fetch.Retry(attempts=2, first_delay=0.25, timeout=0.5))
    assert raised.value.facts == {"attempts": 2, "lastError": raised.value.facts["lastError"]}
    assert "timed out" in raised.value.facts["lastError"] and "/slow.csv" in str(raised.value)
    assert 1.2 < time.monotonic() - started < 3  # two waits of 0.5 s and one pause of 0.25 s
    assert fetch.read_url(f"{source}/flaky.csv", FAST) == CSV  # 500, 500, then the body
    with pytest.raises(DataError, match="HTTP 404"):
        fetch.read_url(f"{source}/missing.csv", FAST)


def test_s3_missing_key_missing_bucket_and_bad_credentials_are_data_errors(
    tmp_path: Path,
    s3_env: S3Server,  # noqa: F811
) -> None:
    s3 = s3_env
    open_store(f"s3://{s3.bucket}/raw").put_bytes("data.csv", CSV)
    code, result, said = ingest_pod(tmp_path, {"s3": {"uri": f"s3://{s3.bucket}/raw/data.csv"}}, s3.env())
    assert code == 0 and result["rows"] == 4, said

    cases = [
        (
            {"uri": f"s3://{s3.bucket}/raw/nothing.csv"},
            {},
            "SourceNotFound",
            "raw/nothing.csv does not exist (NoSuchKey)",
        ),
        ({"uri": "s3://no-such-bucket-here/data.csv"}, {}, "SourceNotFound", "NoSuchBucket"),
        (
            {"uri": f"s3://{s3.bucket}/raw/data.csv"},
            {"AWS_SECRET_ACCESS_KEY": "wrong" + s3.secret_key[5:]},
            "SourceForbidden",
            "is denied",
        ),
    ]
    for s3_source, env, reason, words in cases:
        started = time.monotonic()
        code, result, said = ingest_pod(tmp_path, {"s3": s3_source}, {**s3.env(), **env})
        assert code == 2 and result["reason"] == reason and words in result["message"], said
        assert s3.secret_key not in said and s3.secret_key[5:] not in said
        assert time.monotonic() - started < 30, said  # at once, not after retries


def test_a_missing_file_on_the_claim_is_a_data_error_naming_it(tmp_path: Path) -> None:
    claim = tmp_path / "claim"
    (claim / "raw").mkdir(parents=True)
    source = {"pvc": {"claimName": "data", "path": "raw/absent.csv"}}
    code, result, said = ingest_pod(tmp_path, source, {"KUBELOOP_PVC_ROOT": str(claim)})
    assert code == 2 and result["reason"] == "SourceNotFound", said
    assert f"{claim}/raw/absent.csv does not exist" in result["message"], result
