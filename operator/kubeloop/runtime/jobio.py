"""The runtime contract of a Job pod (docs/contracts.md): config in, one result out, exit code by fault.

Config is one JSON document in ``KUBELOOP_CONFIG``; the result is one JSON object on the last line of stdout
and in the termination log (at most 4 KiB). Exit 2 means a data or code error that a retry cannot fix.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from kubeloop.contract import EXIT_DATA_ERROR, EXIT_INFRA, EXIT_OK, TERMINATION_LOG, TERMINATION_LOG_LIMIT


class DataError(Exception):
    """Bad data, bad config or a broken model: retrying cannot fix it (exit 2).

    ``reason`` is one CamelCase word the controller can put in a condition; the message is for a person.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class RetryLater(Exception):
    """A fault that may pass (a server down, a timeout) after the pod's own retries gave up (exit 1: the Job
    runs the pod again). ``facts`` (attempts, last error) go into the result so the controller can say
    how the retries are going while the Job still runs."""

    def __init__(self, reason: str, message: str, **facts: Any) -> None:
        super().__init__(message)
        self.reason = reason
        self.facts = facts


def load_config(env: str = "KUBELOOP_CONFIG") -> dict[str, Any]:
    raw = os.environ.get(env)
    if not raw:
        raise DataError(
            "MissingConfig", f"the environment variable {env} is empty: it must hold the JSON config"
        )
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError("InvalidConfig", f"{env} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise DataError("InvalidConfig", f"{env} must be a JSON object")
    return config


def fit_result(result: dict[str, Any], limit: int = TERMINATION_LOG_LIMIT) -> str:
    """Serialise the result so it fits the termination log: bulky keys go first, then the message shrinks."""
    text = json.dumps(result, sort_keys=True, separators=(",", ":"), default=str)
    if len(text.encode()) <= limit:
        return text
    trimmed = json.loads(text)
    # Least needed first: the controller can read the full documents from the store.
    for path in (
        ("statistics",),
        ("report",),
        ("parity",),
        ("model", "inputSignature"),
        ("params",),
        ("model", "params"),
        ("columns",),
        ("metrics",),
    ):
        holder = trimmed
        for part in path[:-1]:
            holder = holder.get(part) if isinstance(holder.get(part), dict) else {}
        if path[-1] in holder:
            holder.pop(path[-1])
            trimmed["truncated"] = True
            text = json.dumps(trimmed, sort_keys=True, separators=(",", ":"), default=str)
            if len(text.encode()) <= limit:
                return text
    if isinstance(trimmed.get("message"), str):
        trimmed["message"] = trimmed["message"][:1000] + "..."
    return json.dumps(trimmed, sort_keys=True, separators=(",", ":"), default=str)[:limit]


def emit_result(result: dict[str, Any]) -> None:
    text = fit_result(result)
    path = os.environ.get("KUBELOOP_TERMINATION_LOG", TERMINATION_LOG)
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError:
        pass  # outside a pod (tests, a laptop) there is no termination log; stdout still has the result
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def run(command: str, body: Callable[[], dict[str, Any]]) -> int:
    """Run ``body``, emit its result, and map failures to the contract's exit codes."""
    try:
        result = body()
    except DataError as exc:
        print(f"kubeloop {command}: {exc}", file=sys.stderr)
        emit_result({"ok": False, "reason": exc.reason, "message": str(exc)})
        return EXIT_DATA_ERROR
    except RetryLater as exc:
        print(f"kubeloop {command}: {exc}", file=sys.stderr)
        emit_result({"ok": False, "reason": exc.reason, "message": str(exc), **exc.facts})
        return EXIT_INFRA
    except Exception as exc:  # anything unforeseen (network, disk) is retried by the Job as infrastructure
        traceback.print_exc()
        emit_result({"ok": False, "reason": "InternalError", "message": f"{type(exc).__name__}: {exc}"})
        return EXIT_INFRA
    emit_result({"ok": True, **result})
    return EXIT_OK
