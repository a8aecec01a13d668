"""The model card of one TrainingJob, as text: what it trained on, how it scored, what it produced.

Pure: the TrainingJob as the API server returns it in, lines out. Everything comes from its status (the
operator copies the model card there); an HTML report stored beside the model is a later change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kubeloop.cli.lineage import Obj, condition, name_of, number


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in (header, *rows)]


def _params(params: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted((params or {}).items())) or "defaults"


def report_lines(job: Obj) -> list[str]:
    spec, status = job.get("spec") or {}, job.get("status") or {}
    namespace = (job.get("metadata") or {}).get("namespace", "")
    lines = [f"TrainingJob {namespace}/{name_of(job)}"]
    states = [c for c in (condition(job, t) for t in ("Succeeded", "Failed", "GatePassed")) if c]
    lines.append(f"  status:     {'  '.join(states) or 'not started'}")
    for c in status.get("conditions") or ():
        if c.get("message") and c.get("type") in ("Succeeded", "Failed", "GatePassed"):
            lines.append(f"    {c['type']}: {c['message']}")
    estimator = (spec.get("model") or {}).get("estimator", "?")
    lines.append(f"  estimator:  {estimator}")
    dataset = status.get("dataset") or {}
    ref = spec.get("datasetRef") or {}
    if dataset:
        lines.append(f"  dataset:    {dataset.get('name')} version {dataset.get('version')}")
        lines.append(f"              {dataset.get('artifactURI')}")
    else:
        lines.append(f"  dataset:    {ref.get('name', '?')} (not resolved yet)")
    if status.get("startTime"):
        finished = f", finished {status['completionTime']}" if status.get("completionTime") else ""
        lines.append(f"  started:    {status['startTime']}{finished}")

    metrics = status.get("metrics") or {}
    gate = spec.get("gate") or {}
    if metrics:
        lines += ["", "Metrics (test set)"]
        rows = []
        for metric, value in sorted(metrics.items()):
            bound = []
            if metric in (gate.get("minimums") or {}):
                bound.append(f">= {number(gate['minimums'][metric])}")
            if metric in (gate.get("maximums") or {}):
                bound.append(f"<= {number(gate['maximums'][metric])}")
            rows.append([metric, number(value), " ".join(bound)])
        lines += [f"  {line}" for line in _table(["METRIC", "VALUE", "GATE"], rows)]
    baseline = status.get("servingBaseline")
    if baseline:
        lines.append(f"  compared with the serving model: {baseline.get('message')}")

    model = status.get("model")
    if model:
        lines += ["", "Model"]
        lines.append(f"  sha256:     {model.get('sha256')}")
        lines.append(f"  uri:        {model.get('uri')}")
        if model.get("task"):
            lines.append(f"  task:       {model['task']}")
        lines.append(f"  params:     {_params(model.get('params'))}")
        inputs = model.get("inputSignature") or []
        if inputs:
            signature = ", ".join(f"{i.get('name')} ({i.get('type')})" for i in inputs)
            lines.append(f"  inputs:     {signature}")
        versions = model.get("libraryVersions") or {}
        if versions:
            libraries = ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
            lines.append(f"  libraries:  {libraries}")

    trials = status.get("trials") or []
    if len(trials) > 1 or spec.get("search"):
        best = status.get("bestTrial")
        names = sorted({m for t in trials for m in (t.get("metrics") or {})})
        rows = [
            [
                f"{t.get('index')}{' *' if t.get('index') == best else ''}",
                str(t.get("state")),
                _params(t.get("params")),
                *(number((t.get("metrics") or {}).get(m, "")) for m in names),
            ]
            for t in trials
        ]
        lines += ["", f"Trials ({len(trials)}; * the best)"]
        lines += [
            f"  {line}" for line in _table(["TRIAL", "STATE", "PARAMS", *(n.upper() for n in names)], rows)
        ]
    return lines
