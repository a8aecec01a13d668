"""The Kubeloop operator: kopf run -m kubeloop.controllers.main --all-namespaces [--liveness=http://0.0.0.0:8080/healthz]

Configuration comes from KUBELOOP_* environment variables (see kubeloop.builders.settings.Settings) plus
KUBELOOP_METRICS_PORT (default 9090; 0 turns the metrics server off).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import kopf

from kubeloop.builders.settings import Settings
from kubeloop.controllers import dataset, modeldeployment, monitor, trainingjob
from kubeloop.controllers import metrics as operator_metrics
from kubeloop.controllers.cache import CHILDREN
from kubeloop.controllers.framework import CONTROLLERS, Operator, handlers
from kubeloop.controllers.kube import Kube, load_client

__all__ = ["dataset", "modeldeployment", "monitor", "trainingjob"]  # importing them registers the kinds

handlers(CHILDREN)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    config = Settings.from_env(os.environ)
    operator = Operator(Kube(load_client()), config, asyncio.get_running_loop())
    memo["operator"] = operator
    # No kopf bookkeeping on our objects: reconcile is level-based and needs no per-handler progress. Every
    # handler is an event handler, so kopf never writes these storages (nor the finalizer) and a GitOps tool
    # sees only status change (tests/e2e/test_install_upgrade.py); an on.create/update handler would add
    # an annotation to every object.
    settings.persistence.finalizer = "kubeloop.io/finalizer"  # never added: there is no deletion handler
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kubeloop.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="kubeloop.io")
    settings.posting.level = 100  # post only the Events we choose (condition transitions), not log lines
    settings.watching.server_timeout = 300
    operator_metrics.serve(int(os.environ.get("KUBELOOP_METRICS_PORT", "9090")))
    memo["resync"] = asyncio.create_task(safety_resync(operator, logger))
    logger.info("kubeloop operator configured: %s", config)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("resync")
    if task is not None:
        task.cancel()


async def safety_resync(operator: Operator, logger: Any) -> None:
    """Reconcile every known object now and then, from memory: a net under any missed trigger. It reads
    nothing from the API; an object whose status would not change costs no request."""
    while True:
        await asyncio.sleep(operator.settings.resync_seconds)
        count = operator.scheduler.due_all()
        logger.debug("safety resync of %d objects", count)


@kopf.on.probe(id="reconcilers")
def reconcilers(**_: Any) -> int:
    return len(CONTROLLERS)
