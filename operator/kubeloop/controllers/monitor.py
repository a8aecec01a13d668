"""Monitor controller: checks that the watched ModelDeployment exists (the checks themselves come later)."""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from kubeloop.api import MONITOR
from kubeloop.api.conditions import ConditionType, Reason
from kubeloop.api.monitor import MonitorSpec
from kubeloop.controllers.errors import Invalid, Waiting
from kubeloop.controllers.framework import Context, register
from kubeloop.controllers.kube import Obj


def reconcile(ctx: Context) -> BaseModel:
    try:
        spec = MonitorSpec.model_validate(ctx.spec)
    except ValidationError as error:
        raise Invalid(Reason.INVALID_SPEC, f"the spec does not match the API: {error}") from None
    name = spec.deployment_ref.name
    if ctx.cache.get("ModelDeployment", ctx.namespace, name) is None:
        raise Waiting(
            Reason.WAITING_FOR_MODEL_DEPLOYMENT,
            f"ModelDeployment {name} does not exist in namespace {ctx.namespace} yet",
        )
    ctx.conditions.set(ConditionType.READY, "True", Reason.WATCHING, f"watching ModelDeployment {name}")
    for condition in (ConditionType.DRIFTED, ConditionType.SLO_VIOLATED):
        if ctx.conditions.get(condition) is None:
            ctx.conditions.set(condition, "Unknown", Reason.NOT_CHECKED, "no check has run yet")
    return ctx.updated({})


def needs(spec: Obj) -> list[tuple[str, str]]:
    """A Monitor depends on the ModelDeployment it watches."""
    return [("ModelDeployment", str((spec.get("deploymentRef") or {}).get("name", "")))]


register(MONITOR, reconcile, needs)
