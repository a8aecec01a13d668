"""The Kubeloop operator: kopf run -m kubeloop.controllers.main --all-namespaces [--liveness=http://0.0.0.0:8080/healthz]

Configuration comes from KUBELOOP_* environment variables (see kubeloop.builders.settings.Settings) plus
KUBELOOP_METRICS_PORT (default 9090; 0 turns the metrics server off).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import kopf

from kubeloop.api import API_VERSION, KINDS
from kubeloop.builders.settings import Settings
from kubeloop.controllers import dataset, modeldeployment, monitor, trainingjob
from kubeloop.controllers import metrics as operator_metrics
from kubeloop.controllers.framework import CONTROLLERS, RUNTIME, reconcile_owner, run
from kubeloop.controllers.kube import Kube, list_all, load_client

__all__ = ["dataset", "modeldeployment", "monitor", "trainingjob"]  # importing them registers the handlers

MANAGED = {"app.kubernetes.io/managed-by": "kubeloop"}


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    RUNTIME.settings = Settings.from_env(os.environ)
    RUNTIME.kube = Kube(load_client())
    # No kopf bookkeeping on our objects: reconcile is level-based and needs no per-handler progress.
    settings.persistence.finalizer = "kubeloop.io/finalizer"  # never added: there is no deletion handler
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kubeloop.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="kubeloop.io")
    settings.posting.level = 100  # post only the Events we choose (condition transitions), not log lines
    settings.watching.server_timeout = 300
    operator_metrics.serve(int(os.environ.get("KUBELOOP_METRICS_PORT", "9090")))
    memo.resync = asyncio.create_task(resync(logger))
    logger.info("kubeloop operator configured: %s", RUNTIME.settings)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("resync")
    if task is not None:
        task.cancel()


async def resync(logger: Any) -> None:
    """Reconcile every object periodically: picks up refresh intervals, objects that appeared and were
    waited for, and anything an event was missed for."""
    while True:
        await asyncio.sleep(RUNTIME.settings.resync_seconds)
        kube = RUNTIME.kube
        if kube is None:
            continue
        for kind in KINDS:
            try:
                items = await asyncio.to_thread(list_all, kube, API_VERSION, kind.kind)
                for body in items:
                    await asyncio.to_thread(run, kind.kind, body, logger)
            except Exception:
                logger.exception("resync of %s failed; retrying at the next one", kind.plural)


@kopf.on.probe(id="reconcilers")
def reconcilers(**_: Any) -> int:
    return len(CONTROLLERS)


def _on_child(type: str | None, body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    reconcile_owner(dict(body), logger)


kopf.on.event("batch", "v1", "jobs", labels=MANAGED, id="child-jobs")(_on_child)
kopf.on.event("apps", "v1", "deployments", labels=MANAGED, id="child-deployments")(_on_child)
kopf.on.event("v1", "services", labels=MANAGED, id="child-services")(_on_child)
