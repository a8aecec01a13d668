"""A Dataset whose source fails, on a real node: a 404 is a failed, explained condition within a minute,
tried again only at the next refresh, with old failed Jobs pruned; a 503 shows the retries while they go on.

The source is an HTTP server of this test on the cluster's bridge address, which the pods reach."""

from __future__ import annotations

import http.server
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from support.e2e import Kubectl, apply, conditions, items, job_active, status
from support.polling import wait_for

NODE_IP = "10.244.0.1"  # cluster/localcluster.py: the bridge, where the host and the pods meet
SECRET = "sig-5ecret-0123"  # a presigned URL's credential in the query string: never to be shown


class Source(http.server.BaseHTTPRequestHandler):
    """Every path is missing (404) but /unavailable.csv, which is down (503); requests are counted."""

    requests: dict[str, int]

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        self.server.requests[path] = self.server.requests.get(path, 0) + 1  # type: ignore[attr-defined]
        self.send_error(503 if path == "/unavailable.csv" else 404)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def source() -> Iterator[tuple[str, dict[str, int]]]:
    server = http.server.ThreadingHTTPServer((NODE_IP, 0), Source)
    server.requests = {}  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{NODE_IP}:{server.server_address[1]}", server.requests  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()
    thread.join()


def dataset(name: str, url: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": name},
        "spec": {
            "source": {"url": url},
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
            **spec,
        },
    }


def test_a_404_source_fails_explained_within_a_minute_and_retries_only_at_refresh(
    kubectl: Kubectl, namespace: str, operator_installed: dict[str, str], source: tuple[str, dict[str, int]]
) -> None:
    base, requests = source
    apply(
        kubectl,
        namespace,
        dataset("gone", f"{base}/missing.csv?X-Sig={SECRET}", refreshInterval="15s"),
        dataset("down", f"{base}/unavailable.csv"),
    )
    started = time.monotonic()

    def failed() -> dict[str, Any] | None:
        ready = conditions(kubectl, "dataset", "gone", namespace).get("Ready") or {}
        return ready if ready.get("reason") == "IngestFailed" else None

    ready = wait_for(failed, 60, "Dataset gone Ready=False IngestFailed")
    took = time.monotonic() - started
    assert ready["status"] == "False" and "HTTP 404" in ready["message"], ready
    assert "/missing.csv" in ready["message"] and SECRET not in ready["message"], ready
    validated = conditions(kubectl, "dataset", "gone", namespace)["Validated"]
    assert validated["reason"] == "SourceNotFound" and validated["status"] == "False", validated
    print(f"404 source: Failed with the status in its condition {took:.1f}s after apply")

    # A 503 is retried in the pod; the condition counts the attempts of the failed pods and shows the error
    # while the Job runs the next pod.
    def retrying() -> dict[str, Any] | None:
        ready = conditions(kubectl, "dataset", "down", namespace).get("Ready") or {}
        return ready if ready.get("reason") == "Retrying" else None

    ready = wait_for(retrying, 90, "Dataset down Ready=False Retrying", interval=0.5)
    said = re.search(r"(\d+) attempt\(s\) in (\d+) pod\(s\) failed so far", ready["message"])
    assert said and int(said[1]) == 4 * int(said[2]) and "HTTP 503" in ready["message"], ready
    assert "/unavailable.csv" in ready["message"], ready

    # The pod retried nothing (a 404 will not pass); the Job did not either (exit 2). The next run comes
    # with the refresh, and only the newest failed Job stays (failedJobsHistoryLimit 1).
    def third_run_failed() -> bool:
        run = status(kubectl, "dataset", "gone", namespace).get("ingest") or {}
        return run.get("refresh", 0) >= 2 and run.get("state") == "Failed"

    wait_for(third_run_failed, 120, "the third refresh of gone to fail")
    run = status(kubectl, "dataset", "gone", namespace)["ingest"]
    assert requests["/missing.csv"] == run["refresh"] + 1, (requests, run)  # one request a run

    def finished_jobs() -> list[str]:
        return [
            j["metadata"]["name"]
            for j in items(kubectl, "jobs", namespace, "kubeloop.io/dataset=gone")
            if not job_active(j)
        ]

    wait_for(
        lambda: finished_jobs() == [run["job"]], 30, f"only the newest failed Job {run['job']} to be left"
    )

    # Three pods of four attempts each (backoffLimit 2), then the Job fails, saying why.
    def given_up() -> dict[str, Any] | None:
        ready = conditions(kubectl, "dataset", "down", namespace).get("Ready") or {}
        return ready if ready.get("reason") == "IngestFailed" else None

    ready = wait_for(given_up, 240, "Dataset down Ready=False IngestFailed")
    assert "could not be read in 4 attempts" in ready["message"] and "HTTP 503" in ready["message"], ready
    assert requests["/unavailable.csv"] == 12, requests
