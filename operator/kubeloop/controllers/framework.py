"""The one reconcile path every kind shares.

Each kind supplies ``reconcile(ctx) -> status fields``. It runs on every watch event of the object (create,
update, resume after a restart), on events of its children, and on a periodic resync of all objects: the
level-based loop. It is idempotent, so running it twice, concurrently with a restart, or after a crash
changes nothing. The framework writes status (only when it changed), posts an Event per condition
transition and keeps the metrics.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kopf

from kubeloop.api import API_VERSION, Kind
from kubeloop.builders.settings import Settings
from kubeloop.controllers import metrics
from kubeloop.controllers.conditions import Conditions
from kubeloop.controllers.kube import Kube, KubeError, Obj


@dataclass
class Context:
    """What a reconcile sees: the object, the API, the operator settings; and the conditions it sets."""

    body: Obj
    kube: Kube
    settings: Settings
    logger: logging.Logger | logging.LoggerAdapter[Any]
    conditions: Conditions = field(init=False)

    def __post_init__(self) -> None:
        self.conditions = Conditions(self.status.get("conditions"), self.generation)

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.body["metadata"]["namespace"])

    @property
    def generation(self) -> int:
        return int(self.body["metadata"].get("generation", 1))

    @property
    def spec(self) -> Obj:
        return dict(self.body.get("spec") or {})

    @property
    def status(self) -> Obj:
        return dict(self.body.get("status") or {})

    def adopt(self, child: Obj) -> Obj:
        """Own the child (garbage-collected with this object) and label it as ours."""
        kopf.adopt(child, owner=self.body)  # type: ignore[arg-type]
        return child

    def event(self, type_: str, reason: str, message: str) -> None:
        post_event(self.body, type_, reason, message, self.logger)


Reconcile = Callable[[Context], Obj]


@dataclass(frozen=True)
class Controller:
    kind: Kind
    reconcile: Reconcile


CONTROLLERS: dict[str, Controller] = {}
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


@dataclass
class Runtime:
    """Set once at operator startup."""

    kube: Kube | None = None
    settings: Settings = field(default_factory=Settings)


RUNTIME = Runtime()


def post_event(body: Obj, type_: str, reason: str, message: str, logger: Any) -> None:
    """An Event on the object, posted through the API directly: kopf's poster only works inside its
    handlers, and the periodic resync (where, e.g., a pod's failure to load a model is noticed) runs
    outside them. Without a client (unit use) the log still has it."""
    logger.info("%s %s: %s", type_, reason, message)
    kube = RUNTIME.kube
    if kube is None:
        return
    try:
        kube.create_event(body, type_, reason, message)
    except KubeError as error:  # an Event is worth a warning in the log, never a failed reconcile
        logger.warning("could not post the Event %s: %s", reason, error)


def _lock_for(uid: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(uid, threading.Lock())


def run(kind: str, body: Obj, logger: Any) -> None:
    """Reconcile one object and write what changed in its status."""
    controller = CONTROLLERS[kind]
    kube = RUNTIME.kube
    if kube is None or body.get("metadata", {}).get("deletionTimestamp"):
        return
    started = time.monotonic()
    with _lock_for(body["metadata"]["uid"]):
        # Re-read under the lock: another path may have just written status.
        fresh = kube.get(API_VERSION, kind, body["metadata"]["namespace"], body["metadata"]["name"])
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            return
        ctx = Context(body=fresh, kube=kube, settings=RUNTIME.settings, logger=logger)
        try:
            fields = controller.reconcile(ctx)
        except Exception as error:
            metrics.ERRORS.labels(kind).inc()
            metrics.RECONCILES.labels(kind, "error").inc()
            logger.exception(
                "reconcile of %s %s/%s failed; retried at the next resync", kind, ctx.namespace, ctx.name
            )
            ctx.conditions.set(
                "Ready" if kind != "TrainingJob" else "Succeeded",
                "Unknown",
                "ReconcileError",
                f"the operator could not reconcile this object and will retry: {error}",
            )
            fields = {}
        new = {**fields, "conditions": ctx.conditions.items, "observedGeneration": ctx.generation}
        old = ctx.status
        changed = {k: v for k, v in new.items() if old.get(k) != v and not (v is None and k not in old)}
        if changed:
            kube.patch_status(API_VERSION, kind, ctx.namespace, ctx.name, changed)
        for t in ctx.conditions.transitions:
            post_event(fresh, t.event_type, t.reason, f"{t.type}={t.status}: {t.message}", logger)
        metrics.observe_conditions(kind, ctx.namespace, ctx.name, ctx.conditions.items)
    metrics.RECONCILES.labels(kind, "ok").inc()
    metrics.DURATION.labels(kind).observe(time.monotonic() - started)


def register(kind: Kind, reconcile: Reconcile) -> None:
    """Run ``reconcile`` on every watch event of the kind (create, update, resume, status changes)."""
    CONTROLLERS[kind.kind] = Controller(kind, reconcile)

    def on_event(type: str | None, body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        if type == "DELETED":
            meta = body["metadata"]
            metrics.observe_conditions(kind.kind, meta["namespace"], meta["name"], None)
            return
        run(kind.kind, dict(body), logger)

    on_event.__name__ = f"reconcile_{kind.singular}"
    kopf.on.event("kubeloop.io", "v1alpha1", kind.plural)(on_event)


def reconcile_owner(child: Obj, logger: Any) -> None:
    """A child changed or vanished: reconcile the object that owns it."""
    for owner in child.get("metadata", {}).get("ownerReferences", []):
        if owner.get("apiVersion") == API_VERSION and owner.get("kind") in CONTROLLERS:
            run(
                owner["kind"],
                {
                    "metadata": {
                        "uid": owner["uid"],
                        "name": owner["name"],
                        "namespace": child["metadata"]["namespace"],
                    }
                },
                logger,
            )
