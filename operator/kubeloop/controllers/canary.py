"""Canary rollouts of a ModelDeployment: the step machine (pure) and the analysis window (scraped).

A canary runs the new model in a second Deployment (``<name>-canary``) beside the unchanged stable one,
behind the one Service; a step's weight is the replica ratio. Each step: the canary pods become ready
(Starting), then an analysis window of ``pause`` runs (Analysing) over which the operator scrapes every
server pod's ``/metrics`` and compares canary with stable (``kubeloop.analysis``). At the end of the pause a
failed check rolls back, all checks passing advance, anything inconclusive holds until the progress deadline,
where ``onDeadline`` decides. After the last step the stable Deployment takes the canary's model (a
rolling update, surge 1, nothing unavailable) while the canary pods keep serving (Promoting); once it is
ready the canary Deployment goes. A rollback deletes the canary Deployment: the stable pods never changed.
The servers drain on SIGTERM, so neither loses a request.

Manual control, by annotation on the ModelDeployment (the spec is never written by the operator):
``kubeloop.io/promote=<canary sha256 or its first 12+ characters>`` promotes now,
``kubeloop.io/abort=<...>`` rolls back now. Naming the digest keeps a stale annotation from acting on a
later canary.
"""

from __future__ import annotations

import datetime
import json
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from kubeloop import analysis
from kubeloop.api.common import duration_seconds as seconds
from kubeloop.api.modeldeployment import Analysis, Rollout
from kubeloop.builders.serving import MODEL_DIGEST_ANNOTATION, PORT, STABLE
from kubeloop.contract import ABORT_ANNOTATION, LABEL_TRACK, PROMOTE_ANNOTATION
from kubeloop.controllers import metricsource

Obj = dict[str, Any]
# How often a step is looked at while it runs: the scrape interval of the analysis window.
SCRAPE_SECONDS = 10.0
SCRAPE_TIMEOUT = 3.0
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

Action = Literal["wait", "advance", "rollback", "promote"]


def parse_time(value: str) -> datetime.datetime:
    return datetime.datetime.strptime(value, TIME_FORMAT).replace(tzinfo=datetime.UTC)


def format_time(value: datetime.datetime) -> str:
    return value.strftime(TIME_FORMAT)


def manual(annotations: Mapping[str, str], sha256: str) -> Literal["promote", "abort"] | None:
    """The hand-given order for this canary, if an annotation names its digest (abort wins)."""

    def names(key: str) -> bool:
        value = annotations.get(key, "").strip().lower()
        return len(value) >= 12 and sha256.startswith(value)

    if names(ABORT_ANNOTATION):
        return "abort"
    if names(PROMOTE_ANNOTATION):
        return "promote"
    return None


@dataclass(frozen=True)
class StepDecision:
    action: Action
    reason: str  # the check that failed, AnalysisPassed, DeadlineExceeded, Aborted, ...
    message: str


def decide_step(
    rollout: Rollout,
    step: int,
    phase: str,
    now: datetime.datetime,
    step_start: datetime.datetime,
    window_start: datetime.datetime | None,
    checks: Sequence[analysis.Check],
    order: Literal["promote", "abort"] | None,
) -> StepDecision:
    """What a canary step does now. Pure.

    ``checks`` are the analysis over the window so far (empty without analysis). The verdict counts only
    once the window has lasted ``pause``; until the deadline (``progressDeadline`` after the pause, or after
    the step's start while the canary pods are not ready) an inconclusive check holds the step.
    """
    steps = rollout.steps or []
    deadline = seconds(rollout.progress_deadline)
    if order == "abort":
        return StepDecision("rollback", "Aborted", "aborted by hand (annotation kubeloop.io/abort)")
    if order == "promote":
        return StepDecision("promote", "PromotedByHand", "promoted by hand (annotation kubeloop.io/promote)")
    if phase == "Starting" or window_start is None:
        if (now - step_start).total_seconds() > deadline:
            return _deadline(
                rollout, f"the canary pods were not ready within progressDeadline {rollout.progress_deadline}"
            )
        return StepDecision("wait", "Starting", "waiting for every canary pod to be ready")
    elapsed = (now - window_start).total_seconds()
    pause = seconds(steps[step].pause)
    if elapsed < pause:
        return StepDecision("wait", "Analysing", f"analysis window {elapsed:.0f}s of {steps[step].pause}")
    failed = [c for c in checks if c.verdict == "fail"]
    if failed:
        return StepDecision("rollback", failed[0].name, "; ".join(f"{c.name}: {c.message}" for c in failed))
    unsure = [c for c in checks if c.verdict == "inconclusive"]
    if unsure:
        if elapsed - pause > deadline:
            said = "; ".join(f"{c.name}: {c.message}" for c in unsure)
            return _deadline(rollout, f"still inconclusive after progressDeadline: {said}")
        return StepDecision(
            "wait", "Inconclusive", "holding: " + "; ".join(f"{c.name}: {c.message}" for c in unsure)
        )
    passed = "; ".join(f"{c.name}: {c.message}" for c in checks) or "no analysis configured"
    last = step + 1 >= len(steps) or steps[step + 1].weight >= 100
    return StepDecision("promote" if last else "advance", "AnalysisPassed", passed)


def _deadline(rollout: Rollout, message: str) -> StepDecision:
    if rollout.on_deadline == "Promote":
        return StepDecision("promote", "DeadlineExceeded", f"{message}; onDeadline is Promote")
    return StepDecision("rollback", "DeadlineExceeded", message)


def rejected_now(rejected: Sequence[Obj], sha256: str, generation: int) -> Obj | None:
    """The rejection of this digest under this generation of the spec, if any."""
    return next(
        (r for r in rejected if r.get("sha256") == sha256 and r.get("generation") == generation), None
    )


# -- the analysis window: scraped counters, kept in the operator's memory ---------------------------------


def server_pods(pods: Sequence[Obj], track: str, sha256: str) -> list[Obj]:
    """Running pods of one track serving one digest, with an IP to scrape."""
    found = []
    for pod in pods:
        meta, status = pod.get("metadata", {}), pod.get("status", {})
        if meta.get("deletionTimestamp") or not status.get("podIP") or status.get("phase") != "Running":
            continue
        if (meta.get("labels") or {}).get(LABEL_TRACK, STABLE) != track:
            continue
        if (meta.get("annotations") or {}).get(MODEL_DIGEST_ANNOTATION) != sha256:
            continue
        found.append(pod)
    return found


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT) as response:
        body: bytes = response.read()
        return body


def scrape(pods: Sequence[Obj]) -> dict[str, analysis.Sample | None]:
    """Each pod's metrics by pod uid (None when it did not answer: it is left out of this round)."""

    def one(pod: Obj) -> analysis.Sample | None:
        try:
            return analysis.parse_metrics(_get(f"http://{pod['status']['podIP']}:{PORT}/metrics").decode())
        except (OSError, ValueError):
            return None

    if not pods:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(pods))) as pool:
        samples = list(pool.map(one, pods))
    return {pod["metadata"]["uid"]: sample for pod, sample in zip(pods, samples, strict=True)}


def fetch_baseline(pods: Sequence[Obj]) -> Obj | None:
    """The training baseline a canary pod serves (the operator never reads the artifact store)."""
    for pod in pods:
        try:
            doc = json.loads(_get(f"http://{pod['status']['podIP']}:{PORT}/kubeloop/v1/baseline"))
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict):
            return doc
    return None


def _started_after(pod: Obj, moment: datetime.datetime) -> bool:
    started = pod.get("status", {}).get("startTime")
    return bool(started) and parse_time(str(started)) >= moment


@dataclass
class WindowState:
    """The window of one canary step, in memory: both tracks' counters from the same moment."""

    key: tuple[str, int, str]  # canary digest, step, window start
    canary: analysis.Window
    stable: analysis.Window
    baseline: Obj | None = None


def observe_window(
    memory: dict[str, Any],
    key: tuple[str, int, str],
    window_start: datetime.datetime,
    canary_pods: Sequence[Obj],
    stable_pods: Sequence[Obj],
) -> WindowState:
    """Scrape both tracks into the step's window (a new window when the key changed)."""
    state = memory.get("window")
    if not isinstance(state, WindowState) or state.key != key:
        state = memory["window"] = WindowState(key, analysis.Window(), analysis.Window())
    for pods, window in ((canary_pods, state.canary), (stable_pods, state.stable)):
        by_uid = {p["metadata"]["uid"]: p for p in pods}
        for uid, sample in scrape(pods).items():
            if sample is not None:
                window.observe(uid, sample, fresh=_started_after(by_uid[uid], window_start))
    if state.baseline is None and canary_pods:
        state.baseline = fetch_baseline(canary_pods)
    return state


def query_window(
    memory: dict[str, Any],
    key: tuple[str, int, str],
    source: str,
    namespace: str,
    window_start: datetime.datetime,
    now: datetime.datetime,
    canary_pods: Sequence[Obj],
    stable_pods: Sequence[Obj],
) -> WindowState:
    """The step's window read from Prometheus at ``source``: the whole window again at each look, so
    nothing but the baseline is kept (``metricsource.SourceError`` when Prometheus fails)."""
    known = memory.get("window")
    baseline = known.baseline if isinstance(known, WindowState) and known.key == key else None
    rounds = metricsource.prometheus_scrapes(
        source, namespace, [*canary_pods, *stable_pods], window_start, now, SCRAPE_SECONDS
    )
    tracks = []
    for pods in (canary_pods, stable_pods):
        uids = {p["metadata"]["uid"] for p in pods}
        mine = [metricsource.Scrape(r.time, {u: v for u, v in r.pods.items() if u in uids}) for r in rounds]
        tracks.append(metricsource.window(mine, window_start)[0])
    if baseline is None and canary_pods:
        baseline = fetch_baseline(canary_pods)
    state = memory["window"] = WindowState(key, tracks[0], tracks[1], baseline)
    return state


def unavailable_checks(spec: Analysis | None, why: str) -> list[analysis.Check]:
    """Every configured check inconclusive, because the metrics could not be read: it holds the step."""
    if spec is None:
        return []
    limits: list[tuple[analysis.CheckName, float | None]] = [
        ("errorRate", spec.max_error_rate),
        ("latencyP99", spec.max_p99_latency_ms),
        ("predictionDistance", spec.max_prediction_distance),
        ("inputDrift", spec.max_drift),
    ]
    return [
        analysis.Check(name, "inconclusive", None, limit, 0.0, why[:1024])
        for name, limit in limits
        if limit is not None
    ]


def run_checks(spec: Analysis | None, state: WindowState) -> list[analysis.Check]:
    """The configured checks over the window so far. Pure."""
    if spec is None:
        return []
    canary, stable = state.canary.totals(), state.stable.totals()
    checks = []
    if spec.max_error_rate is not None:
        checks.append(analysis.error_rate_check(canary, stable, spec.max_error_rate, spec.min_requests))
    if spec.max_p99_latency_ms is not None:
        checks.append(analysis.latency_check(canary, spec.max_p99_latency_ms, spec.min_requests, stable))
    if spec.max_prediction_distance is not None:
        checks.append(
            analysis.prediction_distance_check(
                canary, stable, spec.max_prediction_distance, spec.min_requests
            )
        )
    if spec.max_drift is not None:
        if state.baseline is None or not state.baseline.get("features"):
            checks.append(
                analysis.Check(
                    "inputDrift",
                    "inconclusive",
                    None,
                    spec.max_drift,
                    0.0,
                    "the canary model has no training baseline to compare its inputs with",
                )
            )
        else:
            checks.append(analysis.input_drift_check(canary, state.baseline, spec.max_drift, None))
    return checks


def observed_weight(state: WindowState) -> float | None:
    """The canary's share of the window's requests, in percent (None before any request)."""
    canary, stable = state.canary.totals().requests(), state.stable.totals().requests()
    total = canary + stable
    return None if total <= 0 else round(100.0 * canary / total, 1)


def check_status(check: analysis.Check) -> Obj:
    return {
        "name": check.name,
        "verdict": check.verdict,
        "value": check.value,
        "threshold": check.threshold,
        "samples": check.samples,
        "message": check.message[:1024],
    }
