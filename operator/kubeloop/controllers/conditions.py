"""Conditions per the Kubernetes API conventions: a list keyed by type, transitions timestamped."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["True", "False", "Unknown"]


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Transition:
    """A condition that changed status or reason: worth an Event."""

    type: str
    status: Status
    reason: str
    message: str

    @property
    def event_type(self) -> str:
        bad = self.status == "False" and self.type in ("Ready", "Succeeded", "GatePassed", "Validated")
        bad = bad or (self.status == "True" and self.type in ("Failed", "Degraded", "Drifted", "SLOViolated"))
        return "Warning" if bad else "Normal"


class Conditions:
    """The conditions of one object, updated in place; remembers the transitions for Events."""

    def __init__(self, existing: list[dict[str, Any]] | None, generation: int) -> None:
        self.items = [dict(c) for c in existing or []]
        self.generation = generation
        self.transitions: list[Transition] = []

    def get(self, type_: str) -> dict[str, Any] | None:
        return next((c for c in self.items if c["type"] == type_), None)

    def is_true(self, type_: str) -> bool:
        found = self.get(type_)
        return found is not None and found["status"] == "True"

    def set(self, type_: str, status: Status, reason: str, message: str) -> None:
        current = self.get(type_)
        if current is None or current["status"] != status or current.get("reason") != reason:
            self.transitions.append(Transition(type_, status, reason, message))
        keep_time = current is not None and current["status"] == status
        updated = {
            "type": type_,
            "status": status,
            "observedGeneration": self.generation,
            "lastTransitionTime": current["lastTransitionTime"] if keep_time and current else now(),
            "reason": reason,
            "message": message,
        }
        if current is None:
            self.items.append(updated)
        else:
            self.items[self.items.index(current)] = updated
