"""TrainingJob controller: resolve the Dataset, run a Job per trial, record the best model, check the gate."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from kubeloop.api import API_VERSION, TRAINING_JOB
from kubeloop.api.trainingjob import LOWER_IS_BETTER, Gate, TrainedModel, TrainingJobSpec
from kubeloop.builders.training import training_job, trial_job_name
from kubeloop.controllers.conditions import now
from kubeloop.controllers.framework import Context, register
from kubeloop.controllers.jobs import outcome, reason_word
from kubeloop.controllers.kube import Obj
from kubeloop.search import SearchSpecError, expand_trials


def _fail(ctx: Context, reason: str, message: str) -> Obj:
    ctx.conditions.set("Failed", "True", reason, message)
    ctx.conditions.set("Succeeded", "False", reason, message)
    return {"completionTime": ctx.status.get("completionTime") or now()}


def _wait(ctx: Context, reason: str, message: str) -> Obj:
    ctx.conditions.set("Succeeded", "Unknown", reason, message)
    return {}


def resolve_dataset(ctx: Context, spec: TrainingJobSpec) -> tuple[dict[str, str] | None, str, str]:
    """The Dataset version to train on, or (None, reason, message) saying what the run waits for."""
    ref = spec.dataset_ref
    dataset = ctx.kube.get(API_VERSION, "Dataset", ctx.namespace, ref.name)
    if dataset is None:
        return (
            None,
            "WaitingForDataset",
            f"Dataset {ref.name} does not exist in namespace {ctx.namespace} yet",
        )
    status = dataset.get("status") or {}
    versions = [status] if status.get("version") else []
    versions += status.get("history") or []
    for candidate in versions:
        if ref.version is None or str(candidate.get("version", "")).startswith(ref.version):
            return (
                {"name": ref.name, "version": candidate["version"], "artifactURI": candidate["artifactURI"]},
                "",
                "",
            )
    if ref.version is not None and versions:
        return (
            None,
            "DatasetVersionNotFound",
            f"Dataset {ref.name} has no version {ref.version} in its history",
        )
    return None, "WaitingForDataset", f"Dataset {ref.name} has no ready version yet"


def trials_of(spec: TrainingJobSpec) -> list[dict[str, Any]]:
    if spec.search is None:
        return [{}]
    space = [p.wire() for p in spec.search.parameters]
    seed = spec.split.seed if spec.split else 42
    return expand_trials(spec.search.strategy, space, spec.search.max_trials, seed)


def _name(obj: Obj) -> str:
    return str(obj["metadata"]["name"])


def compared_metrics(spec: TrainingJobSpec) -> list[str]:
    """The metrics gate.noWorseThan compares: as listed, else the search objective's, else the thresholds'."""
    gate = spec.gate
    if gate is None or gate.no_worse_than is None:
        return []
    if gate.no_worse_than.metrics:
        return list(gate.no_worse_than.metrics)
    if spec.search is not None:
        return [spec.search.objective.metric]
    named = [*(gate.minimums or {}), *(gate.maximums or {})]
    return sorted(set(named))


def serving_baseline(spec: TrainingJobSpec, deployment: Obj | None, training_jobs: list[Obj]) -> Obj | None:
    """What gate.noWorseThan compares with (the status.servingBaseline field), from the referenced
    ModelDeployment (None when it does not exist) and the TrainingJobs of the namespace. Pure."""
    gate = spec.gate
    if gate is None or gate.no_worse_than is None:
        return None
    name = gate.no_worse_than.model_deployment_ref.name
    baseline: Obj = {"modelDeployment": name}
    if deployment is None:
        return {
            **baseline,
            "message": f"no model is serving yet (ModelDeployment {name} does not exist): comparison skipped",
        }
    served = (deployment.get("status") or {}).get("model") or {}
    sha = served.get("sha256")
    if not sha:
        return {
            **baseline,
            "message": f"no model is serving yet (ModelDeployment {name} serves none): comparison skipped",
        }
    baseline["sha256"] = sha
    producers = [
        tj for tj in training_jobs if ((tj.get("status") or {}).get("model") or {}).get("sha256") == sha
    ]
    # Several runs can produce the same digest (same inputs, same model); prefer the one the deployment names.
    producers.sort(key=lambda tj: (_name(tj) != served.get("trainingJob"), _name(tj)))
    if not producers:
        return {
            **baseline,
            "message": f"model {sha[:12]} served by ModelDeployment {name} was produced by no TrainingJob in "
            "this namespace, so its metrics are unknown: comparison skipped",
        }
    producer = producers[0]
    source = _name(producer)
    known = (producer.get("status") or {}).get("metrics") or {}
    wanted = compared_metrics(spec)
    metrics = {m: float(known[m]) for m in wanted if isinstance(known.get(m), int | float)}
    missing = [m for m in wanted if m not in metrics]
    baseline["trainingJob"] = source
    where = f"model {sha[:12]} served by ModelDeployment {name} (TrainingJob {source})"
    if not metrics:
        return {**baseline, "message": f"{where} has no {', '.join(missing)} metric: comparison skipped"}
    said = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
    message = f"compared with {where}: {said}"
    if gate.no_worse_than.tolerance:
        message += f" (tolerance {gate.no_worse_than.tolerance:g})"
    if missing:
        message += f"; not compared, the serving model has no {', '.join(missing)} metric"
    return {**baseline, "metrics": metrics, "message": message[:1024]}


def serving_bounds(spec: TrainingJobSpec, baseline: Obj | None) -> dict[str, float]:
    """The runtime's gate.servingMetrics: the serving model's metrics moved by the tolerance in the
    metric's direction (down where higher is better, up for rmse and mae)."""
    if baseline is None or spec.gate is None or spec.gate.no_worse_than is None:
        return {}
    tolerance = spec.gate.no_worse_than.tolerance
    return {
        m: v + tolerance if m in LOWER_IS_BETTER else v - tolerance
        for m, v in (baseline.get("metrics") or {}).items()
    }


def gate_verdict(
    gate: Gate | None, metrics: dict[str, float], serving: dict[str, float] | None = None
) -> tuple[bool, str]:
    """Whether the metrics meet the gate (and the serving bounds), and a sentence saying which do not."""
    misses = []
    for metric, minimum in ((gate.minimums if gate else None) or {}).items():
        if metric not in metrics or metrics[metric] < minimum:
            misses.append(f"{metric}={metrics.get(metric, 'missing')} is below the minimum {minimum}")
    for metric, maximum in ((gate.maximums if gate else None) or {}).items():
        if metric not in metrics or metrics[metric] > maximum:
            misses.append(f"{metric}={metrics.get(metric, 'missing')} is above the maximum {maximum}")
    for metric, bound in (serving or {}).items():
        lower = metric in LOWER_IS_BETTER
        if metric not in metrics or (metrics[metric] > bound if lower else metrics[metric] < bound):
            side = "above" if lower else "below"
            misses.append(f"{metric}={metrics.get(metric, 'missing')} is {side} the serving model's {bound}")
    return not misses, "; ".join(misses) or "every gate threshold is met"


def resolve_serving_baseline(ctx: Context, spec: TrainingJobSpec) -> Obj | None:
    """serving_baseline, with the ModelDeployment and TrainingJobs read from the API."""
    if spec.gate is None or spec.gate.no_worse_than is None:
        return None
    name = spec.gate.no_worse_than.model_deployment_ref.name
    deployment = ctx.kube.get(API_VERSION, "ModelDeployment", ctx.namespace, name)
    served = ((deployment or {}).get("status") or {}).get("model") or {}
    training_jobs = ctx.kube.list(API_VERSION, "TrainingJob", ctx.namespace) if served.get("sha256") else []
    return serving_baseline(spec, deployment, training_jobs)


def _model(result: dict[str, Any], dataset_version: str) -> Obj:
    raw = result.get("model") or {}
    fields = {f.alias or name for name, f in TrainedModel.model_fields.items()}
    kept = {k: v for k, v in raw.items() if k in fields}
    kept.setdefault("datasetVersion", result.get("datasetVersion") or dataset_version)
    return TrainedModel.model_validate(kept).wire()


def _metrics(result: dict[str, Any]) -> dict[str, float]:
    raw = result.get("metrics") or {}
    return {
        str(k): float(v) for k, v in raw.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }


def reconcile(ctx: Context) -> Obj:
    try:
        spec = TrainingJobSpec.model_validate(ctx.spec)
    except ValidationError as error:
        return _fail(ctx, "InvalidSpec", f"the spec does not match the API: {error}")
    finished = ctx.conditions.get("Succeeded") or {}
    if finished.get("status") in ("True", "False") and finished.get("observedGeneration") == ctx.generation:
        return {}  # a finished run is final for its generation
    if spec.model.estimator not in ctx.settings.allowed_estimators:
        return _fail(
            ctx,
            "EstimatorNotAllowed",
            f"estimator {spec.model.estimator!r} is not in the operator's allow-list; use one of "
            f"{', '.join(ctx.settings.allowed_estimators)} (or ask the operator's admin to allow it)",
        )
    try:
        trials = trials_of(spec)
    except SearchSpecError as error:
        return _fail(ctx, "InvalidSearch", str(error))
    status = ctx.status
    dataset = status.get("dataset") if status.get("observedGeneration") == ctx.generation else None
    if dataset is None:
        dataset, reason, message = resolve_dataset(ctx, spec)
        if dataset is None:
            # This generation has pinned nothing yet: what an earlier one pinned must not pass for its own
            # once observedGeneration moves on (a merge patch's null removes the field).
            return {"dataset": None, "trials": None, "servingBaseline": None, **_wait(ctx, reason, message)}

    # Pinned with the dataset: every trial of this generation is compared with the same serving model.
    pinned = status.get("observedGeneration") == ctx.generation and status.get("servingBaseline")
    baseline = pinned or resolve_serving_baseline(ctx, spec)
    serving = serving_bounds(spec, baseline)

    recorded = {
        t["index"]: t
        for t in status.get("trials") or []
        if status.get("observedGeneration") == ctx.generation
    }
    jobs = {
        j["metadata"]["name"]: j
        for j in ctx.kube.list("batch/v1", "Job", ctx.namespace, {"kubeloop.io/trainingjob": ctx.name[:63]})
    }
    parallelism = spec.search.parallelism if spec.search else 1
    records: list[Obj] = []
    for index, params in enumerate(trials):
        name = trial_job_name(ctx.name, ctx.generation, index)
        record = recorded.get(index) or {"index": index, "job": name, "params": params, "state": "Pending"}
        if record["state"] in ("Succeeded", "Failed"):
            records.append(record)
            continue
        job = jobs.get(name)
        running = sum(r["state"] == "Running" for r in records)
        if job is None and running < parallelism:
            manifest = training_job(
                name=ctx.name,
                namespace=ctx.namespace,
                spec=spec,
                generation=ctx.generation,
                trial=index,
                params=params,
                dataset=dataset,
                settings=ctx.settings,
                serving_metrics=serving,
            )
            job = ctx.kube.create(ctx.adopt(manifest)) or manifest
        if job is None:
            records.append(record)
            continue
        result = outcome(ctx.kube, job)
        record = {**record, "state": result.state}
        if result.state == "Succeeded":
            record["metrics"] = _metrics(result.result)
            record["result"] = result.result
        elif result.state == "Failed":
            record["message"] = f"{reason_word(result.reason)}: {result.message}"[:1024]
        records.append(record)

    fields: Obj = {
        "dataset": dataset,
        "servingBaseline": baseline,
        "startTime": status.get("startTime") or now(),
    }
    done = [r for r in records if r["state"] in ("Succeeded", "Failed")]
    fields["trials"] = [{k: v for k, v in r.items() if k != "result"} for r in records]
    if len(done) < len(records):
        if baseline is not None:
            ctx.conditions.set("GatePassed", "Unknown", "Training", baseline["message"])
        return {**fields, **_wait(ctx, "Training", f"{len(done)} of {len(records)} trials finished")}

    succeeded = [r for r in records if r["state"] == "Succeeded"]
    if not succeeded:
        return {
            **fields,
            **_fail(ctx, "TrainingFailed", f"every trial failed; first: {records[0].get('message')}"),
        }
    best = succeeded[0]
    if spec.search is not None:
        metric, sign = (
            spec.search.objective.metric,
            (1 if spec.search.objective.direction == "maximize" else -1),
        )
        scored = [r for r in succeeded if metric in r.get("metrics", {})]
        if not scored:
            return {
                **fields,
                **_fail(ctx, "ObjectiveMissing", f"no trial reported the objective metric {metric}"),
            }
        best = max(scored, key=lambda r: sign * r["metrics"][metric])
    best_result: dict[str, Any] | None = best.get("result")
    if best_result is None:  # finished in an earlier pass: read its result again from the pod
        job = jobs.get(best["job"])
        best_result = outcome(ctx.kube, job).result if job else {}
    try:
        model = _model(best_result, dataset["version"])
    except ValidationError as error:
        return {
            **fields,
            **_fail(ctx, "InvalidResult", f"trial {best['index']} reported an unusable model: {error}"),
        }
    metrics = _metrics(best_result)
    passed, verdict = gate_verdict(spec.gate, metrics, serving)
    if isinstance(best_result.get("gatePassed"), bool):
        # The runtime judged the gate on the metrics it computed (runtime result keys gatePassed and
        # gateReasons); the operator's own check above only covers results that lack them.
        passed = best_result["gatePassed"]
        reasons = [str(r) for r in best_result.get("gateReasons") or []]
        verdict = "; ".join(reasons) or ("every gate threshold is met" if passed else "the gate was missed")
    summary = ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
    ctx.conditions.set("Succeeded", "True", "Trained", f"model {model['sha256'][:12]} trained: {summary}")
    ctx.conditions.set("Failed", "False", "Trained", "the run succeeded")
    if baseline is not None:
        verdict = f"{verdict}; {baseline['message']}"
    ctx.conditions.set(
        "GatePassed", "True" if passed else "False", "GateMet" if passed else "GateMissed", verdict
    )
    return {**fields, "metrics": metrics, "model": model, "bestTrial": best["index"], "completionTime": now()}


register(TRAINING_JOB, reconcile)
