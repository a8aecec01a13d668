"""The lineage of one object: Dataset version -> TrainingJob -> model digest -> ModelDeployment -> Monitor.

Pure: the objects of one namespace in (as the API server returns them), a tree out. The chain is read from
status only (what the operator observed), except for the references a user wrote in spec that status does
not repeat (a TrainingJob's datasetRef before it starts, a Monitor's deploymentRef).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Obj = Mapping[str, Any]
# A node of the graph: (kind, name) for the four kinds, ("Model", sha256) for a model digest.
Key = tuple[str, str]

DATASET, TRAINING_JOB, MODEL, MODEL_DEPLOYMENT, MONITOR = (
    "Dataset",
    "TrainingJob",
    "Model",
    "ModelDeployment",
    "Monitor",
)
ORDER = {DATASET: 0, TRAINING_JOB: 1, MODEL: 2, MODEL_DEPLOYMENT: 3, MONITOR: 4}
# How many features a Monitor line lists: the drifted ones first, then the highest scores.
TOP_FEATURES = 5
SHORT_DIGEST = 12


@dataclass(frozen=True)
class Node:
    """One line of the tree (title and summary), the lines under it, and its children."""

    title: str
    summary: str = ""
    details: tuple[str, ...] = ()
    children: tuple[Node, ...] = ()


@dataclass(frozen=True)
class Edge:
    child: Key
    # What the child is to its parent: "serving", "canary", ... for a ModelDeployment under a model.
    role: str = ""


# --- reading status ---------------------------------------------------------------------------------------


def _get(obj: Obj | None, *path: str) -> Any:
    value: Any = obj
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def name_of(obj: Obj) -> str:
    return str(_get(obj, "metadata", "name") or "")


# Conditions whose good state is False: their reason is worth showing when they are not False.
TROUBLE = frozenset({"Failed", "Degraded", "Drifted", "SLOViolated"})


def condition(obj: Obj, type_: str) -> str | None:
    """`Ready=True`, or with the reason when the condition is not in its good state (`Ready=False
    (ModelLoading)`, `Drifted=True (DriftDetected)`); None when the condition is not set."""
    for c in _get(obj, "status", "conditions") or ():
        if isinstance(c, Mapping) and c.get("type") == type_:
            status = c.get("status", "Unknown")
            good = status == ("False" if type_ in TROUBLE else "True")
            reason = c.get("reason")
            return f"{type_}={status}" if good or not reason else f"{type_}={status} ({reason})"
    return None


def conditions(obj: Obj, *types: str) -> str:
    return "  ".join(c for c in (condition(obj, t) for t in types) if c)


def number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def digest(sha256: str) -> str:
    return f"sha256:{sha256[:SHORT_DIGEST]}"


def dataset_of(job: Obj) -> str | None:
    """The Dataset a TrainingJob trains on: the one it resolved when it started, else the one it names."""
    name = _get(job, "status", "dataset", "name") or _get(job, "spec", "datasetRef", "name")
    return str(name) if name else None


def check_line(check: Obj) -> str:
    value = "no value" if check.get("value") is None else number(check["value"])
    return (
        f"{check.get('name')} {check.get('verdict')}: {value} "
        f"(threshold {number(check.get('threshold'))}, {number(check.get('samples', 0))} samples)"
    )


# --- the graph --------------------------------------------------------------------------------------------


def _served(deployment: Obj) -> list[tuple[str, str]]:
    """The digests a ModelDeployment is tied to, each with its role: what it serves, its canary, and the
    digest a rollout is bringing in."""
    out: list[tuple[str, str]] = []
    serving = _get(deployment, "status", "model", "sha256")
    canary = _get(deployment, "status", "canary", "sha256")
    wanted = _get(deployment, "status", "wantedSha256")
    if serving:
        out.append((serving, "serving"))
    if canary:
        weight = _get(deployment, "status", "canary", "weight")
        out.append((canary, f"canary {weight}%" if weight is not None else "canary"))
    if wanted and wanted not in (serving, canary):
        out.append((wanted, "rolling out"))
    return out


def graph(objects: Iterable[Obj]) -> tuple[dict[Key, Obj], dict[Key, list[Edge]]]:
    """The objects by key, and the edges parent -> children of the whole namespace."""
    index: dict[Key, Obj] = {}
    for obj in objects:
        kind = obj.get("kind")
        if kind in ORDER and kind != MODEL:
            index[(kind, name_of(obj))] = obj
    children: dict[Key, list[Edge]] = {}

    def link(parent: Key, child: Key, role: str = "") -> None:
        edges = children.setdefault(parent, [])
        if all(e.child != child for e in edges):
            edges.append(Edge(child, role))

    made_by: dict[str, str] = {}  # model digest -> the TrainingJob that produced it
    for (kind, name), obj in sorted(index.items()):
        if kind != TRAINING_JOB:
            continue
        dataset = dataset_of(obj)
        if dataset:
            link((DATASET, dataset), (kind, name))
        sha = _get(obj, "status", "model", "sha256")
        if sha:
            made_by[sha] = name
            link((kind, name), (MODEL, sha))
    for (kind, name), obj in sorted(index.items()):
        if kind == MODEL_DEPLOYMENT:
            tied = _served(obj)
            for sha, role in tied:
                link((MODEL, sha), (kind, name), role)
                # A model given by URI has no TrainingJob in status; one named by the deployment still counts.
                job = made_by.get(sha) or _model_job(obj, sha)
                if job:
                    link((TRAINING_JOB, job), (MODEL, sha))
            ref = _get(obj, "spec", "model", "trainingJobRef", "name")
            if ref and not tied:
                link((TRAINING_JOB, ref), (kind, name), "waiting for its model")
        elif kind == MONITOR:
            watched = _get(obj, "spec", "deploymentRef", "name")
            if watched:
                link((MODEL_DEPLOYMENT, watched), (kind, name))
    return index, children


def _model_job(deployment: Obj, sha: str) -> str | None:
    for field in ("model", "canary", "previousModel"):
        if _get(deployment, "status", field, "sha256") == sha:
            job = _get(deployment, "status", field, "trainingJob")
            if job:
                return str(job)
    return None


def _reach(start: Key, edges: Mapping[Key, Sequence[Key]]) -> set[Key]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _sort_key(key: Key) -> tuple[int, str]:
    return ORDER[key[0]], key[1]


# --- the tree ---------------------------------------------------------------------------------------------


def lineage(kind: str, name: str, objects: Iterable[Obj]) -> list[Node]:
    """The trees through one object: everything it came from and everything that came from it.

    Raises KeyError when the object is not among ``objects``."""
    index, children = graph(objects)
    start = (kind, name)
    if start not in index:
        raise KeyError(start)
    down = {k: [e.child for e in v] for k, v in children.items()}
    up: dict[Key, list[Key]] = {}
    for parent, edges in children.items():
        for e in edges:
            up.setdefault(e.child, []).append(parent)
    selected = _reach(start, down) | _reach(start, up)
    roots = sorted((k for k in selected if not any(p in selected for p in up.get(k, ()))), key=_sort_key)
    expanded: set[Key] = set()

    def build(key: Key, role: str) -> Node:
        title, summary, details = describe(key, index, role)
        if key in expanded:  # reached twice (a deployment serving one model and canarying another)
            return Node(title, summary, ("(shown above)",) if children.get(key) else ())
        expanded.add(key)
        kids = [e for e in children.get(key, ()) if e.child in selected]
        kids.sort(key=lambda e: _sort_key(e.child))
        return Node(title, summary, details, tuple(build(e.child, e.role) for e in kids))

    return [build(root, "") for root in roots]


def describe(key: Key, index: Mapping[Key, Obj], role: str = "") -> tuple[str, str, tuple[str, ...]]:
    """Title, summary and detail lines of one node; an object named but not found says so."""
    kind, name = key
    if kind == MODEL:
        return _model(name, index)
    obj = index.get(key)
    title = f"{kind}/{name}"
    if obj is None:
        return title, "not found", ()
    summary, details = {
        DATASET: _dataset,
        TRAINING_JOB: _training_job,
        MODEL_DEPLOYMENT: _model_deployment,
        MONITOR: _monitor,
    }[kind](obj, index)
    return title, "  ".join(s for s in (role, summary) if s), details


def _dataset(obj: Obj, _: Mapping[Key, Obj]) -> tuple[str, tuple[str, ...]]:
    status = obj.get("status") or {}
    parts = [conditions(obj, "Ready")]
    if status.get("version"):
        parts.append(f"version {status['version']}")
    if status.get("rows") is not None:
        parts.append(f"{status['rows']} rows x {status.get('columns', '?')} columns")
    details = (f"snapshot {status['artifactURI']}",) if status.get("artifactURI") else ()
    return "  ".join(p for p in parts if p), details


def _training_job(obj: Obj, index: Mapping[Key, Obj]) -> tuple[str, tuple[str, ...]]:
    status = obj.get("status") or {}
    metrics = status.get("metrics") or {}
    parts = [conditions(obj, "Succeeded", "Failed", "GatePassed")]
    parts += [f"{m}={number(v)}" for m, v in sorted(metrics.items())]
    details: list[str] = []
    used = _get(status, "dataset", "version")
    if used:
        current = _get(index.get((DATASET, dataset_of(obj) or "")), "status", "version")
        note = f" (the Dataset is now at {current})" if current and current != used else ""
        details.append(f"trained on version {used}{note}")
    for c in status.get("conditions") or ():
        if c.get("type") in ("Failed", "GatePassed") and c.get("status") == "False" and c.get("message"):
            details.append(f"{c['type']}: {c['message']}")
    return "  ".join(p for p in parts if p), tuple(details)


def _model(sha: str, index: Mapping[Key, Obj]) -> tuple[str, str, tuple[str, ...]]:
    card: Obj = {}
    for (kind, _), obj in index.items():
        if kind == TRAINING_JOB and _get(obj, "status", "model", "sha256") == sha:
            card = obj["status"]["model"]
    parts = [
        card.get("task") or "",
        f"dataset version {card['datasetVersion']}" if card.get("datasetVersion") else "",
    ]
    uri = card.get("uri") or next(
        (
            _get(o, "status", f, "uri")
            for (k, _), o in index.items()
            if k == MODEL_DEPLOYMENT
            for f in ("model", "canary")
            if _get(o, "status", f, "sha256") == sha
        ),
        None,
    )
    details = (f"sha256 {sha}", *((f"uri {uri}",) if uri else ()))
    return f"Model {digest(sha)}", "  ".join(p for p in parts if p), details


def _model_deployment(obj: Obj, _: Mapping[Key, Obj]) -> tuple[str, tuple[str, ...]]:
    status = obj.get("status") or {}
    parts = [conditions(obj, "Ready", "Progressing", "Degraded")]
    if status.get("replicas") is not None:
        parts.append(f"replicas {status.get('readyReplicas', 0)}/{status['replicas']}")
    details: list[str] = []
    if status.get("url"):
        details.append(f"url {status['url']}")
    canary = status.get("canary")
    if canary:
        steps = _get(obj, "spec", "rollout", "steps") or []
        observed = canary.get("observedWeight")
        seen = f", {number(observed)}% of requests" if observed is not None else ""
        details.append(
            f"canary {digest(canary['sha256'])} {canary.get('phase')}: step {canary.get('step', 0) + 1}"
            f"/{len(steps) or '?'}, weight {canary.get('weight')}%{seen}"
        )
        details += [f"  {check_line(c)}" for c in canary.get("checks") or ()]
        if canary.get("message"):
            details.append(f"  {canary['message']}")
    last = status.get("lastRollout")
    if last:
        details.append(
            f"last rollout {last.get('result')} {digest(last['sha256'])} ({last.get('reason')}) "
            f"at {last.get('time')}"
        )
    for rejected in status.get("rejected") or ():
        details.append(f"rejected {digest(rejected['sha256'])} ({rejected.get('reason')})")
    return "  ".join(p for p in parts if p), tuple(details)


def _monitor(obj: Obj, _: Mapping[Key, Obj]) -> tuple[str, tuple[str, ...]]:
    status = obj.get("status") or {}
    parts = [conditions(obj, "Ready", "Drifted", "SLOViolated")]
    if status.get("lastCheckTime"):
        parts.append(f"checked {status['lastCheckTime']}")
    details = [check_line(c) for c in status.get("checks") or ()]
    slo = status.get("slo")
    if slo:
        measured = [
            f"error rate {number(slo['errorRate'])}" if slo.get("errorRate") is not None else "",
            f"p99 {number(slo['p99LatencyMs'])} ms" if slo.get("p99LatencyMs") is not None else "",
            f"{number(slo.get('requests', 0))} requests",
        ]
        verdict = "violated" if slo.get("violated") else "met"
        details.append(f"slo {verdict}: {', '.join(m for m in measured if m)}")
    details += [f"feature {line}" for line in feature_lines(status.get("features") or ())]
    action = status.get("lastAction")
    if action:
        made = f" -> TrainingJob/{action['trainingJob']}" if action.get("trainingJob") else ""
        details.append(
            f"last action {action.get('type')} at {action.get('time')}: {action.get('reason')}{made}"
        )
    return "  ".join(p for p in parts if p), tuple(details)


def feature_lines(features: Sequence[Obj], top: int = TOP_FEATURES) -> list[str]:
    """The drifted features first, then the highest scores; a count of the rest."""
    ranked = sorted(features, key=lambda f: (f.get("verdict") != "fail", -(f.get("score") or 0.0)))
    lines = []
    for f in ranked[:top]:
        p_value = f" p={number(f['pValue'])}" if f.get("pValue") is not None else ""
        score = number(f["score"]) if f.get("score") is not None else "no score"
        lines.append(
            f"{f.get('feature')} {f.get('verdict')}: {f.get('method')} {score}{p_value} "
            f"({number(f.get('samples', 0))} samples)"
        )
    if len(ranked) > top:
        lines.append(f"... {len(ranked) - top} more")
    return lines


def render(nodes: Sequence[Node]) -> list[str]:
    """The trees as text, drawn like `tree`: each child under its parent, details indented under their
    node."""
    lines: list[str] = []

    def walk(node: Node, lead: str, branch: str, last: bool) -> None:
        lines.append(f"{lead}{branch}{node.title}" + (f"  {node.summary}" if node.summary else ""))
        below = lead + ("" if not branch else "    " if last else "│   ")
        rail = "│   " if node.children else "    "
        lines.extend(f"{below}{rail}{d}".rstrip() for d in node.details)
        for i, child in enumerate(node.children):
            end = i == len(node.children) - 1
            walk(child, below, "└── " if end else "├── ", end)

    for node in nodes:
        walk(node, "", "", True)
    return lines
