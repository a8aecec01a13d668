"""The inference server as a real process on 127.0.0.1: protocols, errors, auth, readiness, shutdown.

No Kubernetes needed (so no marker): the server is started with ``python -m kubeloop.runtime serve``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from kubeloop.runtime.serve.examples import build_model_dir, training_data
from support.serve import Server, rss_kib

ROW = [float(i) / 3 for i in range(20)]


@pytest.fixture(scope="module")
def forest_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("rf")
    build_model_dir(d, "random_forest", name="rf")
    return d


@pytest.fixture(scope="module")
def server(forest_dir: Path) -> Iterator[Server]:
    s = Server("--model-dir", str(forest_dir))
    s.wait_for("ready")
    yield s
    assert s.stop() == 0


def infer_body(data: Any, shape: Any = None, name: str = "X", datatype: str = "FP32") -> dict[str, Any]:
    return {"inputs": [{"name": name, "shape": shape or [1, 20], "datatype": datatype, "data": data}]}


def raw(port: int, request: bytes, read_until_close: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            if not read_until_close:
                break
        return b"".join(chunks)


def test_health_metadata_and_readiness(server: Server) -> None:
    assert requests.get(f"{server.url}/v2/health/live").json() == {"live": True}
    ready = requests.get(f"{server.url}/v2/health/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    meta = requests.get(f"{server.url}/v2/models/rf").json()
    assert meta["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 20]}]
    assert meta["sha256"] == ready.json()["sha256"]
    version = meta["versions"][0]
    assert requests.get(f"{server.url}/v2/models/rf/versions/{version}/ready").status_code == 200
    assert requests.get(f"{server.url}/v2/models/rf/ready").status_code == 200
    assert requests.get(f"{server.url}/v1/models/rf").json() == {"name": "rf", "ready": True}
    assert requests.get(f"{server.url}/v2").json()["name"] == "kubeloop"


def test_predictions_match_the_model_in_process(server: Server, forest_dir: Path) -> None:
    from sklearn.ensemble import RandomForestClassifier

    x = training_data("random_forest")[0][:8]
    estimator = build_model_dir(forest_dir.parent / "again", "random_forest")  # same seed, same forest
    assert isinstance(estimator, RandomForestClassifier)
    version = requests.get(f"{server.url}/v2/models/rf").json()["versions"][0]
    for path in ("/v2/models/rf/infer", f"/v2/models/rf/versions/{version}/infer"):
        r = requests.post(server.url + path, json={"id": "7", **infer_body(x.tolist(), [8, 20])})
        assert r.status_code == 200, r.text
        out = {o["name"]: o for o in r.json()["outputs"]}
        assert r.json()["id"] == "7"
        assert out["label"]["data"] == [["low", "mid", "high"][i] for i in estimator.predict(x)]
        np.testing.assert_allclose(
            np.reshape(out["probabilities"]["data"], (8, 3)), estimator.predict_proba(x), atol=1e-5
        )
    v1 = requests.post(f"{server.url}/v1/models/rf:predict", json={"instances": x.tolist()})
    assert v1.status_code == 200
    assert v1.json()["predictions"] == [["low", "mid", "high"][i] for i in estimator.predict(x)]


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        (
            "/v2/models/rf/infer",
            infer_body(ROW, name="input"),
            400,
            "unknown input 'input': the model's input is 'X'",
        ),
        (
            "/v2/models/rf/infer",
            infer_body(ROW, shape=[1, 21]),
            400,
            "has shape [1, 21]; the model takes [-1, 20]",
        ),
        (
            "/v2/models/rf/infer",
            infer_body(ROW, datatype="BYTES"),
            400,
            "datatype 'BYTES'; the model takes FP32",
        ),
        ("/v2/models/rf/infer", infer_body(ROW[:10]), 400, "has 10 values, but shape [1, 20] needs 20"),
        ("/v2/models/rf/infer", infer_body([float("nan"), *ROW[1:]]), 400, "row 0 feature 'f0' is NaN"),
        ("/v2/models/rf/infer", infer_body([*ROW[:-1], float("-inf")]), 400, "feature 'f19' is infinity"),
        ("/v2/models/rf/infer", b'{"inputs": [{"name": "X",', 400, "malformed JSON"),
        ("/v2/models/rf/infer", b"", 400, "malformed JSON"),
        ("/v1/models/rf:predict", {"instances": [ROW[:3]]}, 400, "'instances' must be rows of 20 numbers"),
        (
            "/v2/models/other/infer",
            infer_body(ROW),
            404,
            "model 'other' is not served here; this server serves 'rf'",
        ),
        ("/v2/models/rf/versions/9/infer", infer_body(ROW), 404, "model 'rf' has no version '9'"),
        ("/v2/nowhere", infer_body(ROW), 404, "no such endpoint: /v2/nowhere"),
    ],
)
def test_client_mistakes_get_a_4xx_that_says_what_was_wrong(
    server: Server, path: str, body: Any, status: int, message: str
) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()  # json.dumps writes NaN literals
    r = requests.post(server.url + path, data=data, headers={"Content-Type": "application/json"})
    assert r.status_code == status
    assert message in r.json()["error"]


def test_wrong_method_is_405(server: Server) -> None:
    r = requests.get(f"{server.url}/v2/models/rf/infer")
    assert r.status_code == 405 and "takes POST, not GET" in r.json()["error"]


def test_oversized_body_is_413(server: Server) -> None:
    big = infer_body([0.5] * 20 * 60000, shape=[60000, 20])
    r = requests.post(f"{server.url}/v2/models/rf/infer", data=json.dumps(big))
    assert r.status_code == 413 and "the limit is 1048576" in r.json()["error"]
    chunked = raw(
        server.port,
        b"POST /v2/models/rf/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"100000\r\n"
        + b" " * 0x100000
        + b"\r\n"
        + b"10\r\n"
        + b" " * 16
        + b"\r\n0\r\n\r\n",
    )
    assert chunked.startswith(b"HTTP/1.1 413 ") and b"larger than the limit" in chunked


def test_malformed_http_is_400_and_the_server_lives_on(server: Server) -> None:
    answer = raw(server.port, b"GARBAGE\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ") and b"malformed HTTP request" in answer
    assert requests.get(f"{server.url}/v2/health/live").status_code == 200


def test_pipelined_requests_are_batched_and_answered_in_order(server: Server) -> None:
    rows = training_data("random_forest")[0][:10]
    requests_ = []
    for i, row in enumerate(rows):
        body = json.dumps({"id": str(i), **infer_body(row.tolist())}).encode()
        requests_.append(
            b"POST /v2/models/rf/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
    requests_.insert(5, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    before = batch_count(server)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(
            b"".join(requests_) + b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    bodies = [part.split(b"\r\n\r\n", 1)[1] for part in data.split(b"HTTP/1.1 200 OK")[1:]]
    ids = [json.loads(b).get("id", "live") for b in bodies]
    assert ids == ["0", "1", "2", "3", "4", "live", "5", "6", "7", "8", "9", "live"]
    assert batch_count(server) - before < 10  # fewer ORT calls than requests: they were batched


def batch_count(server: Server) -> float:
    text = requests.get(f"{server.url}/metrics").text
    return next(
        float(line.split()[-1]) for line in text.splitlines() if line.startswith("kubeloop_batch_size_count")
    )


def test_concurrent_clients_get_their_own_answers(server: Server) -> None:
    x = training_data("random_forest")[0][:64]
    expected = {}
    for i, row in enumerate(x):
        r = requests.post(f"{server.url}/v2/models/rf/infer", json=infer_body(row.tolist()))
        expected[i] = r.json()["outputs"][1]["data"]
    errors: list[str] = []

    def client(offset: int) -> None:
        with requests.Session() as s:
            for i in range(offset, offset + 16):
                r = s.post(
                    f"{server.url}/v2/models/rf/infer", json={"id": str(i), **infer_body(x[i].tolist())}
                )
                if r.json()["outputs"][1]["data"] != expected[i] or r.json()["id"] != str(i):
                    errors.append(f"request {i} got another request's answer")

    threads = [threading.Thread(target=client, args=(o,)) for o in range(0, 64, 16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_metrics_count_requests_classes_and_features(server: Server) -> None:
    requests.post(f"{server.url}/v2/models/rf/infer", json=infer_body(ROW))
    text = requests.get(f"{server.url}/metrics").text
    assert 'kubeloop_requests_total{model="rf",protocol="v2",code="200"}' in text
    assert 'kubeloop_requests_total{model="rf",protocol="v2",code="400"}' in text
    assert 'kubeloop_request_duration_seconds_bucket{model="rf",protocol="v2",le="0.0001"}' in text
    assert 'kubeloop_predictions_total{model="rf",class="high"}' in text
    assert 'kubeloop_feature_value_bucket{model="rf",feature="f19",le="+Inf"}' in text
    assert 'kubeloop_model_ready{model="rf"} 1' in text


def test_tritonclient_works_unchanged(server: Server) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("rf")
    assert client.get_model_metadata("rf")["inputs"][0]["name"] == "X"
    x = training_data("random_forest")[0][:3]
    for binary in (False, True):  # JSON data, and the binary tensor extension
        inp = httpclient.InferInput("X", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        result = client.infer(
            "rf",
            [inp],
            outputs=[
                httpclient.InferRequestedOutput("probabilities", binary_data=False),
                httpclient.InferRequestedOutput("label", binary_data=False),
            ],
        )
        probs = result.as_numpy("probabilities")
        assert probs is not None and probs.shape == (3, 3)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        labels = result.as_numpy("label")
        assert labels is not None and len(labels) == 3
    # All defaults: binary input data, binary outputs asked for and answered (BYTES come back as bytes).
    inp = httpclient.InferInput("X", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("rf", [inp])
    probs = result.as_numpy("probabilities")
    assert probs is not None and probs.shape == (3, 3)
    labels = result.as_numpy("label")
    assert labels is not None
    assert [v.decode() for v in labels] == [["low", "mid", "high"][i] for i in probs.argmax(axis=1)]
    with pytest.raises(Exception, match="unknown input 'wrong'"):
        bad = httpclient.InferInput("wrong", [1, 20], "FP32")
        bad.set_data_from_numpy(x[:1], binary_data=False)
        client.infer("rf", [bad])
    client.close()


def test_bearer_token_auth(forest_dir: Path, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret\nother\n")
    s = Server("--model-dir", str(forest_dir), "--auth-token-file", str(tokens))
    try:
        s.wait_for("ready")
        url = f"{s.url}/v2/models/rf/infer"
        missing = requests.post(url, json=infer_body(ROW))
        assert missing.status_code == 401 and "bearer token is required" in missing.json()["error"]
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = requests.post(url, json=infer_body(ROW), headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        for token in ("s3cret", "other"):
            ok = requests.post(url, json=infer_body(ROW), headers={"Authorization": f"Bearer {token}"})
            assert ok.status_code == 200
        # Probes and scrapes carry no token.
        assert requests.get(f"{s.url}/v2/health/ready").status_code == 200
        assert requests.get(f"{s.url}/metrics").status_code == 200
    finally:
        assert s.stop() == 0


def test_wrong_digest_never_becomes_ready_and_says_why(forest_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    s = Server("--model-dir", str(forest_dir), "--expected-sha256", "0" * 64, "--termination-log", str(log))
    assert s.proc.wait(timeout=60) == 2
    result = json.loads(log.read_text())
    assert result["ok"] is False and result["reason"] == "DigestMismatch"
    assert "the expected digest is " + "0" * 64 in result["message"]
    assert not any(e.get("event") == "ready" for e in s.events())
    assert json.loads(s.lines[-1]) == result  # the contract: the result is also stdout's last line


def test_sigterm_finishes_the_request_in_flight_then_exits(forest_dir: Path) -> None:
    s = Server("--model-dir", str(forest_dir))
    s.wait_for("ready")
    body = json.dumps(infer_body(ROW)).encode()
    head = b"POST /v2/models/rf/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    idle = socket.create_connection(("127.0.0.1", s.port), timeout=10)  # keep-alive, nothing in flight
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as busy:
        busy.sendall(head + body[:30])  # a request half sent when SIGTERM arrives
        time.sleep(0.2)
        s.proc.send_signal(signal.SIGTERM)
        s.wait_for("draining")
        assert idle.recv(10) == b""  # idle connections are closed at once
        with pytest.raises(OSError):  # no longer accepting
            socket.create_connection(("127.0.0.1", s.port), timeout=2).close()
        busy.sendall(body[30:])
        answer = b""
        while chunk := busy.recv(65536):
            answer += chunk
    idle.close()
    assert answer.startswith(b"HTTP/1.1 200 OK") and b"connection: close" in answer
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["outputs"][0]["shape"] == [1]
    assert s.proc.wait(timeout=30) == 0
    assert s.wait_for("stopped")["unfinished_connections"] == 0


def infer_pipelined(port: int, requests_: int, depth: int = 50) -> None:
    """``requests_`` V2 requests over one keep-alive connection, ``depth`` in flight at a time."""
    body = json.dumps(infer_body(ROW)).encode()
    request = b"POST /v2/models/rf/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        for _ in range(requests_ // depth):
            s.sendall(request * depth)
            answers = b""
            while answers.count(b"HTTP/1.1 ") < depth:
                chunk = s.recv(1 << 20)
                assert chunk, "the server closed the connection"
                answers += chunk
            assert answers.count(b"HTTP/1.1 200 OK") == depth, answers[:300]


def test_rss_of_a_serving_process_is_small_and_flat_under_load(server: Server) -> None:
    """One model loaded and serving fits well under a small pod's memory limit, and traffic does not grow
    it (a leak of a few hundred bytes per request would get a busy pod OOM-killed within hours)."""
    infer_pipelined(server.port, 1000)  # warm: metrics buffers, the allocator's arenas
    before = rss_kib(server.proc.pid)
    infer_pipelined(server.port, 10_000)
    after = rss_kib(server.proc.pid)
    assert after < 150 * 1024, f"RSS {after / 1024:.0f} MiB"
    assert after - before < 2 * 1024, f"RSS grew {(after - before) / 1024:.1f} MiB over 10,000 requests"


def test_expect_100_continue(server: Server) -> None:
    body = json.dumps(infer_body(ROW)).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(
            b"POST /v2/models/rf/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body)
        assert s.recv(65536).startswith(b"HTTP/1.1 200 OK")


def test_not_ready_until_loaded(forest_dir: Path, tmp_path: Path) -> None:
    """While the model loads, liveness answers and readiness says 503 (the card is a FIFO: loading waits)."""
    model_dir = tmp_path / "slow"
    model_dir.mkdir()
    (model_dir / "model.onnx").write_bytes((forest_dir / "model.onnx").read_bytes())
    os.mkfifo(model_dir / "model-card.json")
    s = Server("--model-dir", str(model_dir))
    try:
        assert requests.get(f"{s.url}/v2/health/live").status_code == 200
        ready = requests.get(f"{s.url}/v2/health/ready")
        assert ready.status_code == 503 and ready.json() == {"ready": False, "state": "loading"}
        infer = requests.post(f"{s.url}/v2/models/rf/infer", json=infer_body(ROW))
        assert infer.status_code == 503 and "not loaded yet" in infer.json()["error"]
        with open(model_dir / "model-card.json", "w") as fifo:
            fifo.write((forest_dir / "model-card.json").read_text())
        s.wait_for("ready")
        assert requests.get(f"{s.url}/v2/health/ready").status_code == 200
        assert requests.post(f"{s.url}/v2/models/rf/infer", json=infer_body(ROW)).status_code == 200
    finally:
        assert s.stop() == 0


def test_drain_delay_keeps_serving_while_not_ready(forest_dir: Path) -> None:
    """With --drain-delay, SIGTERM first turns readiness off (the Service stops routing) but keeps serving."""
    s = Server("--model-dir", str(forest_dir), "--drain-delay", "1.5")
    s.wait_for("ready")
    s.proc.send_signal(signal.SIGTERM)
    s.wait_for("draining")
    ready = requests.get(f"{s.url}/v2/health/ready")
    assert ready.status_code == 503 and ready.json() == {"ready": False, "state": "draining"}
    r = requests.post(f"{s.url}/v2/models/rf/infer", json=infer_body(ROW))
    assert r.status_code == 200 and r.headers["connection"] == "close"
    assert s.proc.wait(timeout=30) == 0


def test_drain_keeps_listening_while_connections_still_arrive(forest_dir: Path) -> None:
    """A node whose proxy rules lag keeps sending new connections after the drain delay: none is refused.

    The listener closes only once no connection arrived for --drain-quiet seconds.
    """
    s = Server("--model-dir", str(forest_dir), "--drain-delay", "0.5", "--drain-quiet", "1.0")
    s.wait_for("ready")
    s.proc.send_signal(signal.SIGTERM)
    s.wait_for("draining")
    lagging_until = time.monotonic() + 3.0  # traffic for 6x the drain delay
    answered = 0
    while time.monotonic() < lagging_until:
        r = requests.post(f"{s.url}/v2/models/rf/infer", json=infer_body(ROW))  # refused => raises
        assert r.status_code == 200 and r.headers["connection"] == "close"
        answered += 1
        time.sleep(0.2)
    closed = s.wait_for("listener_closed", timeout=10)
    assert closed["after_seconds"] >= 3.0 and closed["accepted_while_draining"] >= answered
    with pytest.raises(requests.ConnectionError):  # once quiet, it stops accepting
        requests.get(f"{s.url}/v2/health/live", timeout=2)
    assert s.proc.wait(timeout=30) == 0
