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


# The bulky parts of a result, least needed first: each is cut entry by entry (a dict keeps its first
# entries, a list its first items) before the next is touched. The full documents are in the store
# (``detailsURI``: the snapshot's statistics, the model card), so what is cut is never lost.
BULKY = (
    ("statistics",),
    ("report",),
    ("parity",),
    ("model", "inputSignature"),
    ("params",),
    ("model", "params"),
    ("columns",),
    ("metrics",),
)


def _dump(result: dict[str, Any]) -> str:
    return json.dumps(result, sort_keys=True, separators=(",", ":"), default=str)


def fit_result(result: dict[str, Any], limit: int = TERMINATION_LOG_LIMIT) -> str:
    """Serialise the result so it fits the termination log (4 KiB); what had to be cut is said.

    Bulky values are shortened entry by entry, the fewest cut that fit, and ``truncated`` records each as
    ``{"path.to.key": {"kept": k, "of": n}}``, so the controller can say "40 of 65 columns" and point at
    ``detailsURI`` for the rest. Pure."""
    text = _dump(result)
    if len(text.encode()) <= limit:
        return text
    trimmed = json.loads(text)
    truncated: dict[str, dict[str, int]] = {}
    trimmed["truncated"] = truncated

    def fits() -> bool:
        return len(_dump(trimmed).encode()) <= limit

    for path in BULKY:
        holder = trimmed
        for part in path[:-1]:
            holder = holder.get(part) if isinstance(holder.get(part), dict) else {}
        key, value = path[-1], holder.get(path[-1])
        if not value:
            continue
        if not isinstance(value, dict | list):
            holder.pop(key)
            truncated[".".join(path)] = {"kept": 0, "of": 1}
            if fits():
                return _dump(trimmed)
            continue
        entries = list(value.items()) if isinstance(value, dict) else value
        name, kind = ".".join(path), dict if isinstance(value, dict) else list

        def keep(
            n: int,
            holder: dict[str, Any] = holder,
            key: str = key,
            entries: list[Any] = entries,
            name: str = name,
            kind: type = kind,
        ) -> bool:
            holder[key] = kind(entries[:n])
            truncated[name] = {"kept": n, "of": len(entries)}
            return fits()

        low, high = 0, len(entries)  # the most entries that fit; keep(low) is what is left in place
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if keep(middle) else (low, middle - 1)
        if keep(low):
            return _dump(trimmed)
        if low == 0:
            holder.pop(key)
            if fits():
                return _dump(trimmed)
    if isinstance(trimmed.get("message"), str):
        trimmed["message"] = trimmed["message"][:1000] + "..."
    return _dump(trimmed)[:limit]


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
