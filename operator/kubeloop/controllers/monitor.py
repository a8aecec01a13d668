"""Monitor controller: checks that the watched ModelDeployment exists (the checks themselves come later)."""

from __future__ import annotations

from pydantic import ValidationError

from kubeloop.api import API_VERSION, MONITOR
from kubeloop.api.monitor import MonitorSpec
from kubeloop.controllers.framework import Context, register
from kubeloop.controllers.kube import Obj


def reconcile(ctx: Context) -> Obj:
    try:
        spec = MonitorSpec.model_validate(ctx.spec)
    except ValidationError as error:
        ctx.conditions.set("Ready", "False", "InvalidSpec", f"the spec does not match the API: {error}")
        return {}
    name = spec.deployment_ref.name
    if ctx.kube.get(API_VERSION, "ModelDeployment", ctx.namespace, name) is None:
        ctx.conditions.set(
            "Ready",
            "False",
            "WaitingForModelDeployment",
            f"ModelDeployment {name} does not exist in namespace {ctx.namespace} yet",
        )
        return {}
    ctx.conditions.set("Ready", "True", "Watching", f"watching ModelDeployment {name}")
    for condition in ("Drifted", "SLOViolated"):
        if ctx.conditions.get(condition) is None:
            ctx.conditions.set(condition, "Unknown", "NotChecked", "no check has run yet")
    return {}


register(MONITOR, reconcile)
