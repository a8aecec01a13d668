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
        bad = self.status == "False" and self.type in (
            "Ready",
            "Succeeded",
            "GatePassed",
            "Validated",
            "BatchScored",
        )
        bad = bad or (self.status == "True" and self.type in ("Failed", "Degraded", "Drifted", "SLOViolated"))
        bad = bad or self.reason in ("StatusRejected", "ReconcileError", "RolledBack", "ModelRejected")
        return "Warning" if bad else "Normal"


class Conditions:
    """The conditions of one object, updated in place during one reconcile.

    Transitions (for Events) and lastTransitionTime are judged against the conditions the reconcile
    started from, so a condition set twice on the way (Ready=False ModelLoading, then StatusRejected when
    the write is refused) yields one transition, not two.
    """

    def __init__(self, existing: list[dict[str, Any]] | None, generation: int) -> None:
        self.items = [dict(c) for c in existing or []]
        self.initial = {c["type"]: dict(c) for c in self.items}
        self.generation = generation

    def get(self, type_: str) -> dict[str, Any] | None:
        return next((c for c in self.items if c["type"] == type_), None)

    def is_true(self, type_: str) -> bool:
        found = self.get(type_)
        return found is not None and found["status"] == "True"

    def set(self, type_: str, status: Status, reason: str, message: str) -> None:
        before = self.initial.get(type_)
        keep_time = before is not None and before["status"] == status
        updated = {
            "type": type_,
            "status": status,
            "observedGeneration": self.generation,
            "lastTransitionTime": before["lastTransitionTime"] if keep_time and before else now(),
            "reason": str(reason),
            "message": message,
        }
        current = self.get(type_)
        if current is None:
            self.items.append(updated)
        else:
            self.items[self.items.index(current)] = updated

    def remove(self, type_: str) -> None:
        """Drop a condition that no longer applies (its feature was removed from the spec)."""
        self.items = [c for c in self.items if c["type"] != type_]

    @property
    def transitions(self) -> list[Transition]:
        """The conditions whose status or reason differs from where the reconcile started."""
        changed = []
        for c in self.items:
            before = self.initial.get(c["type"])
            if before is None or before["status"] != c["status"] or before.get("reason") != c["reason"]:
                changed.append(Transition(c["type"], c["status"], c["reason"], c["message"]))
        return changed
