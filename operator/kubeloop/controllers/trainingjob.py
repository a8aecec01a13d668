"""TrainingJob controller: resolve the Dataset, run a Job per trial, record the best model, check the gate.

The reconcile is gather (read the Dataset, the serving model and the trial Jobs from the cache), decide
(``decide``: pure, table-tested) and write (create the trial Jobs the decision asks for; the framework
writes the status).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from kubeloop.api import TRAINING_JOB
from kubeloop.api.common import quantity_value
from kubeloop.api.conditions import ConditionType, Reason
from kubeloop.api.trainingjob import DatasetRef, Gate, TrainedModel, TrainingJobSpec
from kubeloop.builders.settings import Settings, image_allowed
from kubeloop.builders.training import DEFAULT_RESOURCES, training_job, trial_job_name
from kubeloop.contract import gate as contract_gate
from kubeloop.contract import no_worse_bounds
from kubeloop.controllers.conditions import Conditions, now
from kubeloop.controllers.errors import Invalid, Waiting
from kubeloop.controllers.framework import Context, register
from kubeloop.controllers.jobs import Outcome, prune, read_outcome, reason_word, truncation_note
from kubeloop.controllers.kube import Obj
from kubeloop.search import SearchSpecError, best_trial, expand_trials

FINAL = ("Succeeded", "Failed")


def _name(obj: Obj) -> str:
    return str(obj["metadata"]["name"])


def resolve_dataset(namespace: str, ref: DatasetRef, dataset: Obj | None) -> dict[str, str]:
    """The Dataset version ``ref`` names (pinned, else the current one), or Waiting saying what is
    missing. Pure. Batch scoring resolves its datasetRef the same way."""
    if dataset is None:
        raise Waiting(
            Reason.WAITING_FOR_DATASET, f"Dataset {ref.name} does not exist in namespace {namespace} yet"
        )
    status = dataset.get("status") or {}
    versions = [status] if status.get("version") else []
    versions += status.get("history") or []
    for candidate in versions:
        if ref.version is None or str(candidate.get("version", "")).startswith(ref.version):
            return {
                "name": ref.name,
                "version": candidate["version"],
                "artifactURI": candidate["artifactURI"],
            }
    if ref.version is not None and versions:
        raise Waiting(
            Reason.DATASET_VERSION_NOT_FOUND,
            f"Dataset {ref.name} has no version {ref.version} in its history",
        )
    raise Waiting(Reason.WAITING_FOR_DATASET, f"Dataset {ref.name} has no ready version yet")


def trials_of(spec: TrainingJobSpec) -> list[dict[str, Any]]:
    if spec.search is None:
        return [{}]
    space = [p.wire() for p in spec.search.parameters]
    seed = spec.split.seed if spec.split else 42
    return expand_trials(spec.search.strategy, space, spec.search.max_trials, seed)


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
    metric's worse direction."""
    if baseline is None or spec.gate is None or spec.gate.no_worse_than is None:
        return {}
    return no_worse_bounds(baseline.get("metrics") or {}, spec.gate.no_worse_than.tolerance)


def gate_verdict(
    gate: Gate | None, metrics: dict[str, float], serving: dict[str, float] | None = None
) -> tuple[bool, str]:
    """Whether the metrics meet the gate (and the serving bounds), and a sentence saying which do not."""
    passed, misses = contract_gate(
        metrics, gate.minimums if gate else None, gate.maximums if gate else None, serving
    )
    return passed, "; ".join(misses) or "every gate threshold is met"


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


@dataclass(frozen=True)
class Observed:
    """What one reconcile gathered: the inputs of ``decide``."""

    dataset: Obj | None = None  # the Dataset named by datasetRef (read while nothing is pinned)
    serving: Obj | None = None  # the ModelDeployment of gate.noWorseThan (read while nothing is pinned)
    training_jobs: list[Obj] = field(default_factory=list)  # the namespace's, to find the serving model's
    jobs: dict[str, Obj] = field(default_factory=dict)  # this run's trial Jobs by name
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # of the finished ones


@dataclass
class Decision:
    fields: Obj  # status fields to write (None removes one)
    start: list[tuple[int, dict[str, Any]]]  # trials whose Job is to be created: (index, params)


# What a trial's pod needs at least. bench/train_memory_bench.py measured the real trainer's peak RSS on
# snapshots of 20 columns (12 numeric features, 8 string columns): 322 MiB + 31 bytes per cell (row x column),
# LogisticRegression, the leanest estimator; on iris its anonymous memory (what the kernel cannot reclaim
# from a pod at its limit, unlike the libraries' file pages) peaked at 178 MiB. The trainer loads every
# column of the snapshot (the Arrow table, then the DataFrame) before it picks the features, so cells count,
# not features. A lower bound, so that a refusal is certain: a run it lets through may still need more (a
# forest, a search), and an OOMKilled pod then says so (reason OutOfMemory).
TRAINER_BASE_BYTES = 160 * 2**20
TRAINER_BYTES_PER_CELL = 24
# With spec.sampleRows the whole snapshot is read as an Arrow table (at least 4 bytes a cell: an int32, a
# float32, a string's offset), and only the sample goes further.
ARROW_BYTES_PER_CELL = 4


def memory_needed(rows: int, columns: int, sample_rows: int | None = None) -> int:
    """The least memory, in bytes, a trial needs for a snapshot of ``rows`` x ``columns`` (of which it
    trains on ``sample_rows``). Pure."""
    if sample_rows is None or sample_rows >= rows:
        return TRAINER_BASE_BYTES + TRAINER_BYTES_PER_CELL * rows * columns
    rest = TRAINER_BYTES_PER_CELL - ARROW_BYTES_PER_CELL
    return TRAINER_BASE_BYTES + ARROW_BYTES_PER_CELL * rows * columns + rest * sample_rows * columns


def memory_refusal(spec: TrainingJobSpec, dataset: Obj | None, version: str) -> str | None:
    """Why the trial pods' memory limit cannot hold the pinned Dataset version, or None. Pure.

    Only the Dataset's current version has its column count in status; older ones are not judged."""
    status = (dataset or {}).get("status") or {}
    rows, columns = status.get("rows"), status.get("columns")
    if status.get("version") != version or not isinstance(rows, int) or not isinstance(columns, int):
        return None
    limits = (spec.resources.limits if spec.resources is not None else DEFAULT_RESOURCES["limits"]) or {}
    if "memory" not in limits:
        return None
    limit = quantity_value(limits["memory"])
    need = memory_needed(rows, columns, spec.sample_rows)
    if need <= limit:
        return None
    mib = 2**20
    return (
        f"Dataset {spec.dataset_ref.name} version {version[:16]} has {rows:,} rows x {columns} columns: "
        f"a trial needs at least {need / mib:,.0f} MiB to load and fit it (the trainer's measured floor, "
        f"bench/train_memory_bench.py), more than the trial pods' memory limit {limits['memory']}; raise "
        "resources.limits.memory, or set a smaller sampleRows"
    )


def pinned(status: Obj, generation: int) -> bool:
    """Whether this generation already pinned its dataset (and serving baseline)."""
    return status.get("observedGeneration") == generation and status.get("dataset") is not None


def finished(conditions: Conditions, generation: int) -> bool:
    done = conditions.get(ConditionType.SUCCEEDED) or {}
    return done.get("status") in ("True", "False") and done.get("observedGeneration") == generation


def decide(
    name: str,
    namespace: str,
    spec: TrainingJobSpec,
    status: Obj,
    generation: int,
    conditions: Conditions,
    settings: Settings,
    observed: Observed,
) -> Decision:
    """What the run does next, from the spec, the stored status and what was gathered. Pure but for the
    conditions it sets; raises Waiting or Invalid."""
    if finished(conditions, generation):
        return Decision({}, [])  # a finished run is final for its generation
    if spec.model.estimator not in settings.allowed_estimators:
        raise _failure(
            Reason.ESTIMATOR_NOT_ALLOWED,
            f"estimator {spec.model.estimator!r} is not in the operator's allow-list; use one of "
            f"{', '.join(settings.allowed_estimators)} (or ask the operator's admin to allow it)",
            status,
        )
    if spec.image is not None and not image_allowed(spec.image, settings.allowed_training_images):
        allowed = settings.allowed_training_images
        raise _failure(
            Reason.IMAGE_NOT_ALLOWED,
            f"custom image {spec.image!r} is not allowed: "
            + (
                f"the operator allows images from {', '.join(allowed)} only"
                if allowed
                else "the operator allows no custom training image"
            )
            + "; remove spec.image to use the built-in trainer, or ask the operator's admin to allow it "
            "(Helm value operator.allowedTrainingImages)",
            status,
        )
    try:
        trials = trials_of(spec)
    except SearchSpecError as error:
        raise _failure(Reason.INVALID_SEARCH, str(error), status) from None
    current = status.get("observedGeneration") == generation
    if pinned(status, generation):
        dataset = status["dataset"]
        baseline = status.get("servingBaseline")
    else:
        try:
            dataset = resolve_dataset(namespace, spec.dataset_ref, observed.dataset)
        except Waiting as wait:
            # This generation has pinned nothing yet: what an earlier one pinned must not pass for its own
            # once observedGeneration moves on.
            wait.fields.update(dataset=None, trials=None, servingBaseline=None)
            raise
        # Pinned with the dataset: every trial of this generation is compared with the same serving model.
        baseline = serving_baseline(spec, observed.serving, observed.training_jobs)
    serving = serving_bounds(spec, baseline)

    recorded = {t["index"]: t for t in status.get("trials") or []} if current else {}
    if not recorded and not observed.jobs:  # judged before any trial starts, never under a running one
        refusal = memory_refusal(spec, observed.dataset, dataset["version"])
        if refusal is not None:
            raise _failure(Reason.MEMORY_TOO_SMALL, refusal, status, {"dataset": dataset})
    parallelism = spec.search.parallelism if spec.search else 1
    records: list[Obj] = []
    start: list[tuple[int, dict[str, Any]]] = []
    results: dict[int, dict[str, Any]] = {}
    for index, params in enumerate(trials):
        job_name = trial_job_name(name, generation, index)
        record = recorded.get(index) or {
            "index": index,
            "job": job_name,
            "params": params,
            "state": "Pending",
        }
        result = observed.outcomes.get(job_name)
        if result is not None and result.state == "Succeeded":
            results[index] = result.result
        if record["state"] in FINAL:
            records.append(record)
            continue
        if job_name not in observed.jobs:
            if sum(r["state"] == "Running" for r in records) >= parallelism:
                records.append(record)
                continue
            start.append((index, params))
            records.append({**record, "state": "Running"})
            continue
        state = result.state if result is not None else "Running"
        record = {**record, "state": state}
        if result is not None and result.state == "Succeeded":
            record["metrics"] = _metrics(result.result)
        elif result is not None and result.state == "Failed":
            record["message"] = f"{reason_word(result.reason)}: {result.message}"[:1024]
        records.append(record)

    fields: Obj = {
        "dataset": dataset,
        "servingBaseline": baseline,
        "startTime": status.get("startTime") if current and status.get("startTime") else now(),
        "trials": records,
    }
    done = [r for r in records if r["state"] in FINAL]
    if len(done) < len(records):
        if baseline is not None:
            conditions.set(ConditionType.GATE_PASSED, "Unknown", Reason.TRAINING, baseline["message"])
        conditions.set(
            ConditionType.SUCCEEDED,
            "Unknown",
            Reason.TRAINING,
            f"{len(done)} of {len(records)} trials finished",
        )
        return Decision(fields, start)

    succeeded = [r for r in records if r["state"] == "Succeeded"]
    if not succeeded:
        raise _failure(
            Reason.TRAINING_FAILED, f"every trial failed; first: {records[0].get('message')}", status, fields
        )
    best = succeeded[0]
    if spec.search is not None:
        objective = spec.search.objective
        chosen = best_trial(succeeded, objective.metric, maximize=objective.direction == "maximize")
        if chosen is None:
            raise _failure(
                Reason.OBJECTIVE_MISSING,
                f"no trial reported the objective metric {objective.metric}",
                status,
                fields,
            )
        best = succeeded[chosen]
    best_result = results.get(best["index"])
    if best_result is None:
        # Its pod is gone and its result with it; the Job said it succeeded, the result is lost.
        raise _failure(
            Reason.INVALID_RESULT,
            f"trial {best['index']} succeeded but its result can no longer be read",
            status,
            fields,
        )
    try:
        model = _model(best_result, dataset["version"])
    except ValidationError as error:
        raise _failure(
            Reason.INVALID_RESULT,
            f"trial {best['index']} reported an unusable model: {error}",
            status,
            fields,
        ) from None
    metrics = _metrics(best_result)
    passed, verdict = gate_verdict(spec.gate, metrics, serving)
    if isinstance(best_result.get("gatePassed"), bool):
        # The runtime judged the gate on the metrics it computed (runtime result keys gatePassed and
        # gateReasons); the operator's own check above only covers results that lack them.
        passed = best_result["gatePassed"]
        reasons = [str(r) for r in best_result.get("gateReasons") or []]
        verdict = "; ".join(reasons) or ("every gate threshold is met" if passed else "the gate was missed")
    summary = ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
    conditions.set(
        ConditionType.SUCCEEDED,
        "True",
        Reason.TRAINED,
        f"model {model['sha256'][:12]} trained: {summary}{truncation_note(best_result)}",
    )
    conditions.set(ConditionType.FAILED, "False", Reason.TRAINED, "the run succeeded")
    if baseline is not None:
        verdict = f"{verdict}; {baseline['message']}"
    conditions.set(
        ConditionType.GATE_PASSED,
        "True" if passed else "False",
        Reason.GATE_MET if passed else Reason.GATE_MISSED,
        verdict,
    )
    fields.update(metrics=metrics, model=model, bestTrial=best["index"], completionTime=now())
    return Decision(fields, [])


def _failure(reason: Reason, message: str, status: Obj, fields: Obj | None = None) -> Invalid:
    """The run failed for good: Succeeded=False, Failed=True (set by the framework), completionTime."""
    return Invalid(
        reason, message, fields={**(fields or {}), "completionTime": status.get("completionTime") or now()}
    )


def gather(ctx: Context, spec: TrainingJobSpec) -> Observed:
    """Read what ``decide`` needs from the cache (the API only for a finished Job's missing pod)."""
    status = ctx.status
    dataset = serving = None
    training_jobs: list[Obj] = []
    if not pinned(status, ctx.generation):
        dataset = ctx.cache.get("Dataset", ctx.namespace, spec.dataset_ref.name)
        if spec.gate is not None and spec.gate.no_worse_than is not None:
            name = spec.gate.no_worse_than.model_deployment_ref.name
            serving = ctx.cache.get("ModelDeployment", ctx.namespace, name)
            training_jobs = ctx.cache.in_namespace("TrainingJob", ctx.namespace)
    try:
        wanted = {trial_job_name(ctx.name, ctx.generation, i) for i in range(len(trials_of(spec)))}
    except SearchSpecError:
        wanted = set()  # decide says why
    jobs = {
        _name(j): j
        for j in ctx.cache.children("Job", "TrainingJob", ctx.namespace, ctx.name)
        if _name(j) in wanted
    }
    outcomes = {name: read_outcome(ctx.cache, ctx.kube, job) for name, job in jobs.items()}
    finished_jobs = {name: o for name, o in outcomes.items() if o.state != "Running"}
    return Observed(dataset, serving, training_jobs, jobs, finished_jobs)


def reconcile(ctx: Context) -> BaseModel:
    try:
        spec = TrainingJobSpec.model_validate(ctx.spec)
    except ValidationError as error:
        raise _failure(Reason.INVALID_SPEC, f"the spec does not match the API: {error}", ctx.status) from None
    if finished(ctx.conditions, ctx.generation):
        # Every trial's outcome is in status now: the finished Jobs beyond the history limits can go.
        prune(
            ctx.kube,
            ctx.cache.children("Job", "TrainingJob", ctx.namespace, ctx.name),
            keep=set(),
            successful=ctx.settings.successful_jobs_history_limit,
            failed=ctx.settings.failed_jobs_history_limit,
        )
        return ctx.updated({})
    observed = gather(ctx, spec)
    decision = decide(
        ctx.name, ctx.namespace, spec, ctx.status, ctx.generation, ctx.conditions, ctx.settings, observed
    )
    for index, params in decision.start:
        manifest = training_job(
            name=ctx.name,
            namespace=ctx.namespace,
            spec=spec,
            generation=ctx.generation,
            trial=index,
            params=params,
            dataset=decision.fields["dataset"],
            settings=ctx.settings,
            serving_metrics=serving_bounds(spec, decision.fields["servingBaseline"]),
        )
        ctx.kube.create(ctx.adopt(manifest))
    return ctx.updated(decision.fields)


def needs(spec: Obj) -> list[tuple[str, str]]:
    """The objects a TrainingJob's spec names: its Dataset, and the ModelDeployment of gate.noWorseThan."""
    found = [("Dataset", str((spec.get("datasetRef") or {}).get("name", "")))]
    serving = ((spec.get("gate") or {}).get("noWorseThan") or {}).get("modelDeploymentRef") or {}
    if serving.get("name"):
        found.append(("ModelDeployment", str(serving["name"])))
    return found


register(TRAINING_JOB, reconcile, needs)
