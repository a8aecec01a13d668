"""The training Jobs of a TrainingJob: one per trial (a single trial without search)."""

from __future__ import annotations

from typing import Any

from kubeloop.api.trainingjob import TrainingJobSpec
from kubeloop.builders.common import (
    RUNTIME_COMMAND,
    Manifest,
    Mounts,
    config_env,
    job,
    resources,
    store_env_from,
)
from kubeloop.builders.settings import Settings
from kubeloop.contract import LABEL_TRIAL, child_labels, child_name

TRAIN_CONTAINER = "train"
DEFAULT_RESOURCES: Manifest = {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}}


def trial_job_name(training_job: str, generation: int, trial: int) -> str:
    """Deterministic, so a restarted operator finds the Jobs it made instead of making more."""
    return child_name(training_job, str(generation), "trial", str(trial))


def trial_params(spec: TrainingJobSpec, trial: dict[str, Any]) -> dict[str, Any]:
    """The estimator's parameters for one trial: the spec's params, overridden by the trial's."""
    return {**(spec.model.params or {}), **trial}


def gate_config(gate: dict[str, Any] | None, serving_metrics: dict[str, float] | None) -> Manifest:
    """The runtime's gate config: minimums, maximums and servingMetrics (the runtime compares each of those
    as a minimum, or as a maximum for lower-is-better metrics). noWorseThan is the operator's to resolve."""
    config = {k: v for k, v in (gate or {}).items() if k in ("minimums", "maximums")}
    if serving_metrics:
        config["servingMetrics"] = dict(serving_metrics)
    return config


def training_job(
    *,
    name: str,
    namespace: str,
    spec: TrainingJobSpec,
    generation: int,
    trial: int,
    params: dict[str, Any],
    dataset: dict[str, str],
    settings: Settings,
    serving_metrics: dict[str, float] | None = None,
) -> Manifest:
    """The Job of one trial (python -m kubeloop.runtime train).

    ``params`` are the trial's searched parameters (empty without search); ``dataset`` is the resolved
    Dataset version: name, version and artifactURI. ``serving_metrics`` are the bounds of the "no worse
    than the serving model" check (gate.noWorseThan), resolved by the controller with the tolerance applied
    (see ``gate_config``); None or empty skips the comparison.
    """
    mounts = Mounts()
    mounts.store(settings.store_uri)
    wire = spec.wire()
    # The runtime's train config (kubeloop.runtime.train): the spec's fields at the top level; a pod runs
    # one trial, so the search itself stays the operator's business and only the trial's params go in.
    config: Manifest = {
        "namespace": namespace,
        "name": name,
        "storeURI": settings.store_uri,
        "dataset": dataset,
        "model": {**wire["model"], "params": trial_params(spec, params)},
        "trial": {"index": trial, "params": params},
    }
    for key in ("features", "split", "categorical", "sampleRows"):
        if key in wire:
            config[key] = wire[key]
    gate = gate_config(wire.get("gate"), serving_metrics)
    if gate:
        config["gate"] = gate
    container: Manifest = {
        "name": TRAIN_CONTAINER,
        "image": spec.image or settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "env": [config_env(config), {"name": "MPLCONFIGDIR", "value": "/tmp"}],
        "envFrom": store_env_from(settings),
        "resources": resources(spec.resources, DEFAULT_RESOURCES),
    }
    if spec.image is None:
        # A custom image brings its own entrypoint; the contract is the environment and the result file.
        container.update({"command": RUNTIME_COMMAND, "args": ["train"]})
    job_labels = {**child_labels("TrainingJob", name, "train"), LABEL_TRIAL: str(trial)}
    return job(
        name=trial_job_name(name, generation, trial),
        namespace=namespace,
        labels=job_labels,
        container=container,
        mounts=mounts,
        backoff_limit=spec.backoff_limit,
        active_deadline_seconds=spec.active_deadline_seconds,
    )
