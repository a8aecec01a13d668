"""The one reconcile path every kind shares, run inside kopf's handlers.

Each kind registers ``reconcile(ctx) -> status model`` and the dependencies its spec names. An object is
reconciled when it changes (a watch event, including kopf's initial listing after a restart), when one of
its children changes, when an object it depends on changes (a Dataset gets a version: the TrainingJobs
waiting for it run), or when it asked for time (``ctx.requeue_after``, a ``Waiting`` with a delay, the
backoff after an error). Nothing else runs: an idle object costs no CPU and no API request. A long safety
resync, from memory, re-runs every object (``KUBELOOP_RESYNC_SECONDS``, default 10 minutes).

The reconcile reads the cluster from kopf's indexes (``ctx.cache``) and writes through ``ctx.kube``. The
framework turns ``Waiting``/``Invalid`` and any other error into the kind's summary condition, writes the
status only when it changed, posts an Event per condition transition through kopf, and keeps the metrics.
Whatever goes wrong with one object — an exception, a status the API server refuses — becomes a condition
and an Event on that object and never stops the reconcile of any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import kopf
from pydantic import BaseModel, ValidationError

from kubeloop.api import API_VERSION, GROUP, VERSION, Kind
from kubeloop.api.conditions import ConditionType, Reason
from kubeloop.builders.settings import Settings
from kubeloop.contract import MANAGED
from kubeloop.controllers import metrics
from kubeloop.controllers.cache import Cache, Needs, register_indexes
from kubeloop.controllers.conditions import Conditions
from kubeloop.controllers.errors import Invalid, Waiting
from kubeloop.controllers.kube import Kube, KubeError, NotFound, Obj

Key = tuple[str, str, str]  # kind, namespace, name
Logger = logging.Logger | logging.LoggerAdapter[Any]
# After an error: retry after 5 s, doubling up to 5 minutes.
BACKOFF_FIRST, BACKOFF_MAX = 5.0, 300.0


@dataclass
class Context:
    """What a reconcile sees: the object, the cache, the API, the settings; and what it decides."""

    body: Obj
    kind: Kind
    cache: Cache
    kube: Kube
    settings: Settings
    logger: Logger
    conditions: Conditions = field(init=False)
    # Seconds until the object needs reconciling again although nothing changed (None: only on events).
    requeue: float | None = field(default=None, init=False)
    # What the object's reconciles keep between runs in this process (a canary's counters): lost on a
    # restart, forgotten when the object is deleted.
    memory: dict[str, Any] = field(default_factory=dict)
    # Condition types whose transitions post no Event (a Monitor without alert).
    quiet: set[str] = field(default_factory=set)

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

    def requeue_after(self, seconds: float) -> None:
        """Reconcile again in ``seconds`` (the earliest of several requests wins)."""
        self.requeue = seconds if self.requeue is None else min(self.requeue, seconds)

    def adopt(self, child: Obj) -> Obj:
        """Own the child (garbage-collected with this object)."""
        kopf.adopt(child, owner=self.body)  # type: ignore[arg-type]  # any mapping with metadata will do
        return child

    def updated(self, fields: Obj) -> BaseModel:
        """The kind's status model: the stored status with ``fields`` replaced (None removes one)."""
        return status_model(self.kind, self.status, fields)

    def event(self, type_: str, reason: str, message: str) -> None:
        post_event(self.body, type_, reason, message, self.logger)


Reconcile = Callable[[Context], BaseModel]


@dataclass(frozen=True)
class Controller:
    kind: Kind
    reconcile: Reconcile
    needs: Needs


CONTROLLERS: dict[str, Controller] = {}


def status_model(kind: Kind, old: Obj, fields: Obj) -> BaseModel:
    merged = {**old, **fields}
    return kind.status.model_validate({k: v for k, v in merged.items() if v is not None})


def status_patch(old: Obj, new: Obj) -> Obj:
    """A merge patch from the stored status to the new one: changed keys, and null for removed ones."""
    patch: Obj = {k: v for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch


def post_event(body: Obj, type_: str, reason: str, message: str, logger: Logger) -> None:
    """An Event on the object through kopf's poster (it batches and retries); the log has it too."""
    logger.info("%s %s: %s", type_, reason, message)
    metrics.observe_event(body, reason)
    # Outside kopf's handlers (unit use) there is no poster: the log line above is all there is.
    with contextlib.suppress(LookupError):
        kopf.event(body, type=type_, reason=reason, message=message[:1024])  # type: ignore[arg-type]


class Scheduler:
    """Time-driven reconciles: at most one pending timer per object, armed only while needed.

    A timer runs in the context (contextvars) of the handler that armed it, so kopf's Event poster works
    in the reconcile it fires.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fire: Callable[[Key], None]) -> None:
        self.loop = loop
        self.fire = fire
        self.timers: dict[Key, asyncio.TimerHandle] = {}
        self.contexts: dict[Key, contextvars.Context] = {}

    def arm(self, key: Key, delay: float | None) -> None:
        """From any thread: reconcile ``key`` after ``delay`` seconds (None: cancel its timer)."""
        self.loop.call_soon_threadsafe(self._arm, key, delay, contextvars.copy_context())

    def forget(self, key: Key) -> None:
        self.loop.call_soon_threadsafe(self._forget, key)

    def _arm(self, key: Key, delay: float | None, context: contextvars.Context) -> None:
        self.contexts[key] = context
        pending = self.timers.pop(key, None)
        if pending is not None:
            pending.cancel()
        if delay is not None:
            self.timers[key] = self.loop.call_later(max(delay, 0.0), self._due, key)

    def _forget(self, key: Key) -> None:
        pending = self.timers.pop(key, None)
        if pending is not None:
            pending.cancel()
        self.contexts.pop(key, None)

    def _due(self, key: Key) -> None:
        self.timers.pop(key, None)
        context = self.contexts.get(key)
        if context is not None:
            self.loop.run_in_executor(None, context.run, self.fire, key)

    def due_all(self) -> int:
        """Fire every known object now (the safety resync); from the loop's thread."""
        for key in list(self.contexts):
            self._arm(key, 0.0, self.contexts[key])
        return len(self.contexts)


class Operator:
    """Operator-wide state, kept in kopf's memo."""

    def __init__(self, kube: Kube, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        self.kube = kube
        self.settings = settings
        self.cache: Cache | None = None  # the indexes, handed to every handler by kopf
        self.scheduler = Scheduler(loop, self._fire)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # The status we last wrote, per uid, until the watch delivers it: a reconcile triggered in between
        # (a child's event) must not decide on the older status in the index.
        self._written: dict[str, Obj] = {}
        self._failures: dict[Key, int] = {}
        self.memory: dict[str, dict[str, Any]] = {}  # Context.memory, per uid

    def lock(self, uid: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(uid, threading.Lock())

    def freshest(self, body: Obj) -> Obj:
        uid = body["metadata"]["uid"]
        written = self._written.get(uid)
        if written is None:
            return body
        if _newer(written, body):
            return written
        self._written.pop(uid, None)
        return body

    def forget(self, key: Key, uid: str | None) -> None:
        self.scheduler.forget(key)
        self._failures.pop(key, None)
        if uid:
            self._written.pop(uid, None)
            self.memory.pop(uid, None)
            with self._locks_guard:
                self._locks.pop(uid, None)

    def _fire(self, key: Key) -> None:
        kind, namespace, name = key
        body = self.cache.get(kind, namespace, name) if self.cache else None
        if body is not None:
            reconcile(self, kind, body, logging.getLogger(f"kubeloop.{kind.lower()}"))

    # -- what one reconcile does ---------------------------------------------------------------------------

    def run(self, ctx: Context) -> None:
        controller = CONTROLLERS[ctx.kind.kind]
        key: Key = (ctx.kind.kind, ctx.namespace, ctx.name)
        summary = ctx.kind.summary
        failed = False
        new: BaseModel | Obj  # the status model, or the fields to change when the reconcile stopped short
        try:
            new = controller.reconcile(ctx)
        except Waiting as wait:
            # A bounded run that waits has not failed (Unknown); a long-lived object that waits is not Ready.
            ctx.conditions.set(
                summary,
                "Unknown" if summary == ConditionType.SUCCEEDED else "False",
                wait.reason,
                wait.message,
            )
            new = wait.fields
            if wait.delay is not None:
                ctx.requeue_after(wait.delay)
        except Invalid as invalid:
            ctx.conditions.set(summary, "False", invalid.reason, invalid.message)
            if ConditionType.FAILED in ctx.kind.condition_types:
                ctx.conditions.set(ConditionType.FAILED, "True", invalid.reason, invalid.message)
            new = invalid.fields
        except Exception as error:  # a bug or an API error: this object says so, the others go on
            failed = True
            metrics.ERRORS.labels(ctx.kind.kind).inc()
            ctx.logger.exception("reconcile of %s %s/%s failed", ctx.kind.kind, ctx.namespace, ctx.name)
            ctx.conditions.set(
                summary,
                "Unknown",
                Reason.RECONCILE_ERROR,
                f"the operator could not reconcile this object and retries: {_said(error)}",
            )
            new = {}
        failed = not self.write(ctx, new) or failed
        for t in ctx.conditions.transitions:
            if t.type in ctx.quiet:
                continue
            ctx.event(t.event_type, t.reason, f"{t.type}={t.status}: {t.message}")
        metrics.observe_conditions(ctx.kind.kind, ctx.namespace, ctx.name, ctx.conditions.items)
        metrics.RECONCILES.labels(ctx.kind.kind, "error" if failed else "ok").inc()
        if failed:
            count = self._failures[key] = self._failures.get(key, 0) + 1
            ctx.requeue_after(min(BACKOFF_FIRST * 2 ** (count - 1), BACKOFF_MAX))
        else:
            self._failures.pop(key, None)
        self.scheduler.arm(key, ctx.requeue)

    def write(self, ctx: Context, new: BaseModel | Obj) -> bool:
        """Patch what changed in status; a refused status becomes a condition that says why."""
        try:
            model = new if isinstance(new, BaseModel) else ctx.updated(new)
            wanted = model.model_dump(by_alias=True, exclude_none=True, mode="json")
            wanted.update(conditions=ctx.conditions.items, observedGeneration=ctx.generation)
            checked = status_model(ctx.kind, {}, wanted)  # our own bug must not reach the API server
            wanted = checked.model_dump(by_alias=True, exclude_none=True, mode="json")
            patch = status_patch(ctx.status, wanted)
            if patch:
                self._patch(ctx, patch)
            return True
        except NotFound:
            return True  # deleted meanwhile: its DELETED event forgets it
        except (KubeError, ValidationError) as error:
            ctx.logger.warning("the status of %s/%s was refused: %s", ctx.namespace, ctx.name, error)
            ctx.conditions.set(
                ctx.kind.summary,
                "Unknown",
                Reason.STATUS_REJECTED,
                f"the status the operator computed was refused, so status shows only this condition; "
                f"the operator retries: {_said(error)}",
            )
        try:  # the conditions alone, which the schema always allows
            self._patch(ctx, {"conditions": ctx.conditions.items, "observedGeneration": ctx.generation})
        except KubeError as error:
            ctx.logger.error(
                "not even the conditions of %s/%s could be written: %s", ctx.namespace, ctx.name, error
            )
        return False

    def _patch(self, ctx: Context, patch: Obj) -> None:
        written = ctx.kube.patch_status(API_VERSION, ctx.kind.kind, ctx.namespace, ctx.name, patch)
        if written.get("metadata", {}).get("uid"):
            self._written[written["metadata"]["uid"]] = written


def _newer(a: Obj, b: Obj) -> bool:
    """Whether object ``a`` is a later version than ``b``. resourceVersions are opaque to clients, but every
    etcd-backed API server hands out increasing integers; anything else counts as not newer."""
    try:
        return int(a["metadata"]["resourceVersion"]) > int(b["metadata"]["resourceVersion"])
    except (KeyError, ValueError):
        return False


def _said(error: Exception) -> str:
    return str(error)[:800] or type(error).__name__


def reconcile(op: Operator, kind: str, body: Obj, logger: Logger) -> None:
    """Reconcile one object (never raises); serialised per object across handler threads."""
    if op.cache is None or body.get("metadata", {}).get("deletionTimestamp"):
        return
    started = time.monotonic()
    with op.lock(body["metadata"]["uid"]):
        fresh = op.freshest(body)
        controller = CONTROLLERS[kind]
        memory = op.memory.setdefault(body["metadata"]["uid"], {})
        ctx = Context(fresh, controller.kind, op.cache, op.kube, op.settings, logger, memory=memory)
        op.run(ctx)
    metrics.DURATION.labels(kind).observe(time.monotonic() - started)


def reconcile_dependents(op: Operator, kind: str, namespace: str, name: str, logger: Logger) -> None:
    """An object changed: reconcile every object whose spec names it."""
    if op.cache is None:
        return
    for dependent, dependent_name in op.cache.dependents(CONTROLLERS, kind, namespace, name):
        body = op.cache.get(dependent, namespace, dependent_name)
        if body is not None:
            reconcile(op, dependent, body, logger)


def reconcile_owners(op: Operator, child: Obj, logger: Logger) -> None:
    """A child changed or vanished: reconcile the objects labelled as its owners."""
    if op.cache is None:
        return
    namespace = child.get("metadata", {}).get("namespace", "")
    for kind, name in op.cache.owners(CONTROLLERS, child):
        body = op.cache.get(kind, namespace, name)
        if body is not None:
            reconcile(op, kind, body, logger)


def register(kind: Kind, reconcile_fn: Reconcile, needs: Needs = lambda spec: ()) -> None:
    """Register a kind's reconcile; its handler runs on every watch event of the kind."""
    CONTROLLERS[kind.kind] = Controller(kind, reconcile_fn, needs)


def handlers(children: Iterable[tuple[str, str, str, str]]) -> None:
    """Register kopf's handlers: the indexes, one event handler per kind, one per child resource."""
    register_indexes((c.kind, c.needs) for c in CONTROLLERS.values())
    for controller in CONTROLLERS.values():
        kind = controller.kind

        def on_object(
            type: str | None,
            body: kopf.Body,
            memo: kopf.Memo,
            logger: kopf.Logger,
            kind: Kind = kind,
            **kwargs: Any,
        ) -> None:
            op: Operator = memo["operator"]
            op.cache = op.cache or Cache.from_kwargs(kwargs)
            meta = body["metadata"]
            if type == "DELETED":
                metrics.observe_conditions(kind.kind, meta["namespace"], meta["name"], None)
                op.forget((kind.kind, meta["namespace"], meta["name"]), meta.get("uid"))
            else:
                reconcile(op, kind.kind, dict(body), logger)
            reconcile_dependents(op, kind.kind, meta["namespace"], meta["name"], logger)

        kopf.on.event(GROUP, VERSION, kind.plural, id=f"reconcile_{kind.singular}")(on_object)

    for group, version, plural, child in children:

        def on_child(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
            op: Operator = memo["operator"]
            op.cache = op.cache or Cache.from_kwargs(kwargs)
            reconcile_owners(op, dict(body), logger)

        kopf.on.event(group, version, plural, labels=MANAGED, id=f"child_{child.lower()}")(on_child)
