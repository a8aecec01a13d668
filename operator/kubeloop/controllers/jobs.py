"""Reading a runtime Job's outcome: Job conditions plus the pod's JSON termination message."""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from kubeloop.contract import LABEL_JOB_NAME
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


def termination_message(pods: list[Obj]) -> str | None:
    """The termination message of the newest terminated pod (the runtime's JSON result). Pure."""
    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""), reverse=True):
        for container in pod.get("status", {}).get("containerStatuses", []):
            terminated = container.get("state", {}).get("terminated")
            if terminated and terminated.get("message"):
                return str(terminated["message"])
    return None


def outcome(job: Obj, message: str | None) -> Outcome:
    """The outcome of a Job from its conditions and its pod's termination message. Pure."""
    state, reason, message_ = job_state(job)
    if state == "Running":
        return Outcome(state, {}, "", "")
    result = parse_result(message)
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
    message = termination_message(cache.job_pods(namespace, name))
    if message is None:
        message = termination_message(kube.list("v1", "Pod", namespace, {LABEL_JOB_NAME: name}))
    return outcome(job, message)


def parse_time(value: str) -> datetime.datetime:
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


def reason_word(text: str) -> str:
    """A condition reason must be one CamelCase word."""
    word = re.sub(r"[^A-Za-z0-9]", "", text)
    return word if word[:1].isalpha() else f"Job{word}"
