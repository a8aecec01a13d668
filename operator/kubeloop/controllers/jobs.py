"""Reading a runtime Job's outcome: Job conditions plus the pod's JSON termination message."""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from kubeloop.api.conditions import Reason
from kubeloop.contract import EXIT_DATA_ERROR, LABEL_JOB_NAME
from kubeloop.controllers.cache import Cache
from kubeloop.controllers.kube import Kube, Obj

State = Literal["Running", "Succeeded", "Failed"]


@dataclass(frozen=True)
class Outcome:
    state: State
    # The runtime's result (termination message); {} while running or when the pod left none.
    result: dict[str, Any]
    message: str
    reason: str


def job_state(job: Obj) -> tuple[State, str, str]:
    """State of a Job from its conditions, with the Job controller's reason and message on failure."""
    for condition in job.get("status", {}).get("conditions", []):
        if condition.get("status") != "True":
            continue
        if condition["type"] == "Complete":
            return "Succeeded", "", ""
        if condition["type"] == "Failed":
            return "Failed", condition.get("reason", "JobFailed"), condition.get("message", "")
    return "Running", "", ""


def parse_result(message: str | None) -> dict[str, Any]:
    """The runtime writes one JSON object; anything else (a log tail after a crash) is kept as text."""
    if not message:
        return {}
    try:
        parsed = json.loads(message.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return {"ok": False, "reason": "NoResult", "message": message.strip()[-1000:]}
    return parsed if isinstance(parsed, dict) else {}


def truncation_note(result: dict[str, Any]) -> str:
    """What a result had to leave out to fit the 4 KiB termination message, as a clause for a condition
    message ("" when nothing was cut): each shortened key with how much of it was kept, and where the
    whole document is (the runtime's ``detailsURI``). Pure."""
    cut = result.get("truncated")
    if not isinstance(cut, dict) or not cut:
        return ""
    parts = []
    for key, kept in sorted(cut.items()):
        if isinstance(kept, dict) and isinstance(kept.get("kept"), int) and isinstance(kept.get("of"), int):
            parts.append(f"{key} {kept['kept']} of {kept['of']}")
        else:
            parts.append(str(key))
    where = f"; all of it is in {result['detailsURI']}" if isinstance(result.get("detailsURI"), str) else ""
    return f" (the pod's result was cut to fit its 4 KiB termination message: {', '.join(parts)} kept{where})"


def newest_first(pods: list[Obj]) -> list[Obj]:
    """A Job's pods, the newest (the last attempt) first. Pure."""
    return sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""), reverse=True)


def termination_message(pods: list[Obj]) -> str | None:
    """The termination message of the newest terminated pod (the runtime's JSON result). Pure."""
    for pod in newest_first(pods):
        for container in pod.get("status", {}).get("containerStatuses", []):
            terminated = container.get("state", {}).get("terminated")
            if terminated and terminated.get("message"):
                return str(terminated["message"])
    return None


def memory_killed(pods: list[Obj]) -> str | None:
    """The memory limit of the newest pod's container the kernel killed for going over it (reason
    OOMKilled), "no limit" when it had none; None when no container was. Pure."""
    for pod in newest_first(pods):
        containers = {c.get("name"): c for c in (pod.get("spec") or {}).get("containers") or []}
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated") or {}
            last = (status.get("lastState") or {}).get("terminated") or {}
            if "OOMKilled" in (terminated.get("reason"), last.get("reason")):
                limits = (containers.get(status.get("name")) or {}).get("resources", {}).get("limits") or {}
                return str(limits.get("memory") or "no limit")
        return None
    return None


def outcome(job: Obj, message: str | None, memory_limit_hit: str | None = None) -> Outcome:
    """The outcome of a Job from its conditions and its pod's termination message (and the memory limit
    its newest pod was killed at, if it was). Pure."""
    state, reason, message_ = job_state(job)
    if state == "Running":
        return Outcome(state, {}, "", "")
    result = parse_result(message)
    if state == "Failed" and memory_limit_hit is not None and result.get("reason") in (None, "NoResult"):
        # Killed by the kernel, the pod wrote no result: its log tail (FallbackToLogsOnError) says nothing.
        return Outcome(
            state,
            {},
            f"the pod was killed for using more memory than its limit ({memory_limit_hit}, OOMKilled); "
            "raise resources.limits.memory",
            Reason.OUT_OF_MEMORY,
        )
    if state == "Failed":
        reason = str(result.get("reason") or reason or "JobFailed")
        message_ = str(result.get("message") or message_ or "the Job failed without a message")
    elif result.get("ok") is False or not result:
        # Exit 0 without a result breaks the runtime contract: report it rather than invent facts.
        state, reason = "Failed", str(result.get("reason", "NoResult"))
        message_ = str(
            result.get("message", "the pod exited 0 but wrote no JSON result to /dev/termination-log")
        )
    return Outcome(state, result, message_, reason)


def read_outcome(cache: Cache, kube: Kube, job: Obj) -> Outcome:
    """outcome() with the pod read from the cache; from the API only when the cache has no result for a
    finished Job (the pod's watch event can come after the Job's, or the pod is long gone)."""
    if job_state(job)[0] == "Running":
        return Outcome("Running", {}, "", "")
    namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
    pods = cache.job_pods(namespace, name)
    message = termination_message(pods)
    if message is None:
        pods = kube.list("v1", "Pod", namespace, {LABEL_JOB_NAME: name})
        message = termination_message(pods)
    return outcome(job, message, memory_killed(pods))


@dataclass(frozen=True)
class Retries:
    """The failed pods of a Job that still runs: the runtime tried, gave up for now (exit 1), the Job runs
    another pod."""

    pods: int
    attempts: int  # every attempt of those pods (a pod that reports none counts as one)
    last_error: str


def retries(pods: list[Obj]) -> Retries | None:
    """What the failed pods of a running Job say of their attempts; None when no pod failed yet. Pure.

    A pod has no API credentials, so its termination message is the only word it gets out: each pod
    retries briefly by itself, and the count grows pod by pod."""
    failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed" and not _data_error(p)]
    if not failed:
        return None
    attempts, last = 0, ""
    for pod in sorted(failed, key=lambda p: p["metadata"].get("creationTimestamp", "")):
        result = parse_result(termination_message([pod]))
        count = result.get("attempts")
        attempts += count if isinstance(count, int) and count > 0 else 1
        last = str(
            result.get("lastError") or result.get("message") or (pod.get("status") or {}).get("reason") or ""
        )
    return Retries(len(failed), attempts, last[:500] or "the pod failed without a message")


def _data_error(pod: Obj) -> bool:
    """Whether the pod exited with the runtime's data error: the Job fails on it, nothing is retried."""
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated") or {}
        if terminated.get("exitCode") == EXIT_DATA_ERROR:
            return True
    return False


def finished_at(job: Obj) -> str:
    """When a finished Job finished (RFC 3339, sortable): completionTime, else its Failed condition's time."""
    status = job.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return str(status.get("completionTime") or condition.get("lastTransitionTime") or "")
    return str(job["metadata"].get("creationTimestamp", ""))


def beyond_history(jobs: list[Obj], keep: set[str], successful: int, failed: int) -> list[str]:
    """The finished Jobs to delete so that only the newest ``successful`` succeeded and ``failed`` failed
    ones stay, like a CronJob's history limits. Running Jobs and those named in ``keep`` (whose outcome is
    not recorded yet) always stay, and count against the limit. Pure."""
    prune: list[str] = []
    for state, limit in (("Succeeded", successful), ("Failed", failed)):
        done = [j for j in jobs if job_state(j)[0] == state]
        done.sort(key=lambda j: (finished_at(j), j["metadata"]["name"]), reverse=True)
        kept = 0
        for job in done:
            name = job["metadata"]["name"]
            if name in keep or kept < limit:
                kept += 1
            else:
                prune.append(name)
    return sorted(prune)


def prune(kube: Kube, jobs: list[Obj], keep: set[str], successful: int, failed: int) -> list[str]:
    """Delete the Jobs beyond the history limits (their pods go with them); the names deleted."""
    names = beyond_history(jobs, keep, successful, failed)
    namespace = {j["metadata"]["name"]: j["metadata"]["namespace"] for j in jobs}
    for name in names:
        kube.delete("batch/v1", "Job", namespace[name], name)
    return names


def parse_time(value: str) -> datetime.datetime:
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


def reason_word(text: str) -> str:
    """A condition reason must be one CamelCase word."""
    word = re.sub(r"[^A-Za-z0-9]", "", text)
    return word if word[:1].isalpha() else f"Job{word}"
