"""Housekeeping of runtime Jobs: history limits like a CronJob's, the retries a running Job's failed pods
report, and when a Dataset runs its ingest again (kubeloop.controllers.jobs, .dataset)."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from kubeloop.api.dataset import DatasetSpec
from kubeloop.builders.settings import Settings, SettingsError
from kubeloop.controllers.dataset import next_run
from kubeloop.controllers.jobs import beyond_history, memory_killed, outcome, retries


def job(name: str, state: str, at: str) -> dict[str, Any]:
    """A Job as the API server reports it: Complete or Failed at ``at`` (a minute of the day), or running."""
    time = f"2026-12-01T10:{at}:00Z"
    status: dict[str, Any] = {}
    if state == "Succeeded":
        status = {"completionTime": time, "conditions": [{"type": "Complete", "status": "True"}]}
    elif state == "Failed":
        status = {"conditions": [{"type": "Failed", "status": "True", "lastTransitionTime": time}]}
    return {"metadata": {"name": name, "namespace": "ns", "creationTimestamp": time}, "status": status}


JOBS = [
    job("d-ingest-1-0", "Succeeded", "01"),
    job("d-ingest-1-1", "Failed", "02"),
    job("d-ingest-1-2", "Succeeded", "03"),
    job("d-ingest-1-3", "Succeeded", "04"),
    job("d-ingest-1-4", "Failed", "05"),
    job("d-ingest-1-5", "Succeeded", "06"),
    job("d-ingest-1-6", "Running", "07"),
]


@pytest.mark.parametrize(
    ("keep", "successful", "failed", "pruned"),
    [
        (set(), 3, 1, ["d-ingest-1-0", "d-ingest-1-1"]),
        (set(), 1, 0, ["d-ingest-1-0", "d-ingest-1-1", "d-ingest-1-2", "d-ingest-1-3", "d-ingest-1-4"]),
        (set(), 10, 10, []),
        # A Job whose outcome is not recorded yet stays, and counts against the limit.
        ({"d-ingest-1-4"}, 3, 0, ["d-ingest-1-0", "d-ingest-1-1"]),
        ({"d-ingest-1-0"}, 1, 1, ["d-ingest-1-1", "d-ingest-1-2", "d-ingest-1-3"]),
    ],
)
def test_finished_jobs_beyond_the_history_limits_go_newest_stay(
    keep: set[str], successful: int, failed: int, pruned: list[str]
) -> None:
    assert beyond_history(JOBS, keep, successful, failed) == pruned


def test_a_running_job_is_never_pruned() -> None:
    assert beyond_history([job("r", "Running", "01")], set(), 0, 0) == []


def pod(
    phase: str, created: str, result: dict[str, Any] | None = None, reason: str = "", code: int = 1
) -> dict[str, Any]:
    state = {"terminated": {"exitCode": code, "message": json.dumps(result)}} if result else {"running": {}}
    return {
        "metadata": {"creationTimestamp": f"2026-12-01T10:{created}:00Z"},
        "status": {"phase": phase, "reason": reason, "containerStatuses": [{"state": state}]},
    }


def test_retries_sum_the_attempts_of_failed_pods_and_keep_the_newest_error() -> None:
    pods = [
        pod(
            "Failed", "03", {"ok": False, "attempts": 4, "lastError": "GET http://h/d.csv answered HTTP 503"}
        ),
        pod("Failed", "01", {"ok": False, "attempts": 4, "lastError": "connection refused"}),
        pod("Running", "05"),
    ]
    tried = retries(pods)
    assert tried is not None and (tried.pods, tried.attempts) == (2, 8)
    assert tried.last_error == "GET http://h/d.csv answered HTTP 503"


def test_a_pod_that_said_nothing_counts_as_one_attempt() -> None:
    tried = retries([pod("Failed", "01", reason="Evicted")])
    assert tried is not None and (tried.pods, tried.attempts, tried.last_error) == (1, 1, "Evicted")
    assert retries([pod("Running", "01")]) is None and retries([]) is None


def test_a_data_error_is_no_retry_although_the_job_has_not_failed_yet() -> None:
    # Exit 2: the Job's podFailurePolicy fails it; between the pod and the Job, nothing is "retrying".
    assert retries([pod("Failed", "01", {"ok": False, "reason": "SourceNotFound"}, code=2)]) is None


NOW = datetime.datetime(2026, 12, 1, 10, 0, 0, tzinfo=datetime.UTC)
MINUTE_AGO = "2026-12-01T09:59:00Z"


@pytest.mark.parametrize(
    ("spec", "run", "generation", "expected"),
    [
        # Failed, no refreshInterval: it stays failed until the spec changes, with no timer (no hot loop).
        ({}, {"generation": 2, "refresh": 0, "state": "Failed", "completionTime": MINUTE_AGO}, 2, (0, None)),
        # A spec change (new generation) runs again, from refresh 0.
        ({}, {"generation": 1, "refresh": 3, "state": "Failed", "completionTime": MINUTE_AGO}, 2, (0, None)),
        # Failed with a refresh due in 4 minutes: waits for it.
        (
            {"refreshInterval": "5m"},
            {"generation": 1, "refresh": 0, "state": "Failed", "completionTime": MINUTE_AGO},
            1,
            (0, 240.0),
        ),
        # The refresh is due: the next run.
        (
            {"refreshInterval": "30s"},
            {"generation": 1, "refresh": 2, "state": "Failed", "completionTime": MINUTE_AGO},
            1,
            (3, None),
        ),
        # Still running: no refresh counted from it.
        ({"refreshInterval": "30s"}, {"generation": 1, "refresh": 2, "state": "Running"}, 1, (2, None)),
    ],
)
def test_a_failed_ingest_runs_again_at_the_next_refresh_or_spec_change(
    spec: dict[str, Any], run: dict[str, Any], generation: int, expected: tuple[int, float | None]
) -> None:
    full = DatasetSpec.model_validate({"source": {"builtin": "iris"}, **spec})
    assert next_run(full, run, generation, NOW) == expected


def test_history_limits_come_from_the_environment() -> None:
    assert (Settings().successful_jobs_history_limit, Settings().failed_jobs_history_limit) == (3, 1)
    settings = Settings.from_env(
        {"KUBELOOP_SUCCESSFUL_JOBS_HISTORY_LIMIT": "5", "KUBELOOP_FAILED_JOBS_HISTORY_LIMIT": "0"}
    )
    assert (settings.successful_jobs_history_limit, settings.failed_jobs_history_limit) == (5, 0)
    with pytest.raises(SettingsError, match="KUBELOOP_FAILED_JOBS_HISTORY_LIMIT='-1'"):
        Settings.from_env({"KUBELOOP_FAILED_JOBS_HISTORY_LIMIT": "-1"})


def terminated_pod(
    name: str, at: str, reason: str, memory: str | None = "256Mi", last: bool = False
) -> dict[str, Any]:
    """A pod of a Job whose container terminated with ``reason`` (in lastState when ``last``)."""
    resources = {"limits": {"memory": memory}} if memory else {}
    state = {"terminated": {"reason": reason, "exitCode": 137 if reason == "OOMKilled" else 1}}
    return {
        "metadata": {"name": name, "creationTimestamp": f"2026-12-01T10:{at}:00Z"},
        "spec": {"containers": [{"name": "train", "resources": resources}]},
        "status": {
            "containerStatuses": [
                {
                    "name": "train",
                    "state": {"waiting": {}} if last else state,
                    "lastState": state if last else {},
                }
            ]
        },
    }


@pytest.mark.parametrize(
    ("pods", "limit"),
    [
        ([terminated_pod("a", "01", "OOMKilled")], "256Mi"),
        ([terminated_pod("a", "01", "OOMKilled", last=True)], "256Mi"),  # restarted in place
        ([terminated_pod("a", "01", "OOMKilled", memory=None)], "no limit"),
        ([terminated_pod("a", "01", "Error")], None),
        # only the newest pod counts: an earlier kill followed by another failure is not the answer
        ([terminated_pod("a", "01", "OOMKilled"), terminated_pod("b", "02", "Error")], None),
        ([terminated_pod("a", "01", "Error"), terminated_pod("b", "02", "OOMKilled", memory="1Gi")], "1Gi"),
        ([], None),
    ],
)
def test_memory_killed_names_the_limit_of_the_newest_pod(
    pods: list[dict[str, Any]], limit: str | None
) -> None:
    assert memory_killed(pods) == limit


FAILED_JOB = {
    "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}
}


def test_a_pod_killed_for_memory_fails_with_out_of_memory_and_what_to_raise() -> None:
    # killed by the kernel: the pod's message is its log tail (FallbackToLogsOnError), not a result
    found = outcome(FAILED_JOB, "loading the snapshot\n", "256Mi")
    assert found.state == "Failed" and found.reason == "OutOfMemory", found
    assert "more memory than its limit (256Mi, OOMKilled)" in found.message, found
    assert "resources.limits.memory" in found.message, found
    # a result the runtime wrote says more than the kill and stays the answer
    said = outcome(
        FAILED_JOB, json.dumps({"ok": False, "reason": "DataError", "message": "bad row 7"}), "256Mi"
    )
    assert said.reason == "DataError" and said.message == "bad row 7", said
    assert outcome(FAILED_JOB, None, None).reason == "BackoffLimitExceeded"
