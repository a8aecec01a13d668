"""The two ways a reconcile stops short, as kopf's own error classes carrying a condition reason.

The framework (kubeloop.controllers.framework) turns them into the kind's summary condition in one place:
``Waiting`` says what the object waits for (TrainingJob: Succeeded=Unknown; the others: Ready=False) and is
reconciled again when that changes (an event) or after ``delay``; ``Invalid`` is a spec that can never work
as written (summary False, and Failed=True for a bounded kind) and is not retried until the spec changes.
Both may carry status fields to write with the condition (``None`` removes a field).
"""

from __future__ import annotations

from typing import Any

import kopf

from kubeloop.api.conditions import Reason


class Waiting(kopf.TemporaryError):
    def __init__(
        self,
        reason: Reason,
        message: str,
        *,
        delay: float | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, delay=delay)  # delay None: only an event reconciles it again
        self.reason = reason
        self.message = message
        self.fields = fields or {}


class Invalid(kopf.PermanentError):
    def __init__(self, reason: Reason | str, message: str, *, fields: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.reason = str(reason)
        self.message = message
        self.fields = fields or {}
