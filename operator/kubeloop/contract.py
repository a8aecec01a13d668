"""The contract between the operator and the pods it runs, in one dependency-free module.

Both sides import it (the operator's builders and controllers, the runtime inside the images), so every
constant they must agree on has one home: the termination log, the exit codes, the pods' user, the labels
and the selectors built from them, child names, and the quality gate. Standard library only: the runtime's
images carry neither pydantic nor kopf, and the operator's carries none of the runtime's libraries.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

# --- pods -------------------------------------------------------------------------------------------------
RUNTIME_COMMAND = ("python", "-m", "kubeloop.runtime")
# The non-root user and group of the images (the Dockerfile's USER).
RUNTIME_UID = 65532
# Where a runtime pod writes its one JSON result (the container's terminationMessagePath).
TERMINATION_LOG = "/dev/termination-log"
# The kubelet keeps at most 4 KiB of a termination message.
TERMINATION_LOG_LIMIT = 4096
EXIT_OK = 0
# Infrastructure trouble (the store unreachable, ...): the Job retries the pod.
EXIT_INFRA = 1
# A data or code error a retry cannot fix: the Job's podFailurePolicy fails it at once.
EXIT_DATA_ERROR = 2
# Where a PersistentVolumeClaim named in a pvc:// URI is mounted in a pod.
PVC_ROOT = "/mnt/pvc"
# The index of a pod of an Indexed Job: set by the Job controller as an env var and a pod annotation.
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"

# --- artifacts in the store -------------------------------------------------------------------------------
# A dataset version: datasets/<namespace>/<name>/<content hash>/ holds Parquet parts (part-00000.parquet,
# ...), the baseline statistics and the manifest listing the parts; complete once the manifest exists.
STATISTICS_FILE = "statistics.json"
DATASET_MARKER = "manifest.json"
# The one file of a snapshot written before parts (still read).
SNAPSHOT_FILE = "data.parquet"
# A model: models/<sha256 of model.onnx>/, complete once its marker (the model card) exists.
MODEL_FILE = "model.onnx"
BASELINE_FILE = "baseline.json"
MODEL_MARKER = "model-card.json"
# Batch scores: scores/<namespace>/<ModelDeployment>/<dataset version>-<model sha256[:16]>/ holds one
# output part per input part (the same part names, rows and order) and the manifest, written last by the
# index that finishes last; .indexes/<Job name>/ holds each index's record of the parts it wrote.
SCORES_DIR = "scores"
SCORES_MARKER = "manifest.json"


def scores_prefix(namespace: str, deployment: str, dataset_version: str, model_sha256: str) -> str:
    """The store prefix of one batch output: one address per (dataset version, model), so scoring the
    same version with the same model again rewrites the same bytes in the same place."""
    return f"{SCORES_DIR}/{namespace}/{deployment}/{dataset_version[:16]}-{model_sha256[:16]}"


# The model report a person opens (self-contained HTML), beside the model; its URI is status.model.reportURI.
REPORT_FILE = "report.html"

# --- names and labels -------------------------------------------------------------------------------------
# Job names become label values (job-name), and label values are at most 63 characters.
MAX_NAME = 63
LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
MANAGED_BY = "kubeloop"
MANAGED = {LABEL_MANAGED_BY: MANAGED_BY}
LABEL_TRIAL = "kubeloop.io/trial"
# A server pod's track: "stable" (the Deployment named like its ModelDeployment, the HPA's target) or
# "canary" (the second Deployment of a canary rollout). The Service selects both.
LABEL_TRACK = "kubeloop.io/track"
# Set by the Job controller on the pods of a Job.
LABEL_JOB_NAME = "job-name"
# Orders by hand on a ModelDeployment, each naming the canary's digest (or its first 12+ characters) so a
# stale one never acts on a later canary: written by users and `kubectl kubeloop`, read by the operator.
PROMOTE_ANNOTATION = "kubeloop.io/promote"
ABORT_ANNOTATION = "kubeloop.io/abort"


def child_name(parent: str, *suffix: str) -> str:
    """A deterministic child name of at most 63 characters: a name too long is cut and made unique again
    with a short hash of the full name."""
    full = "-".join((parent, *suffix))
    if len(full) <= MAX_NAME:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    tail = "-".join(suffix)
    head = parent[: MAX_NAME - len(tail) - len(digest) - 2].rstrip("-.")
    return f"{head}-{digest}-{tail}" if tail else f"{head}-{digest}"


def label_value(name: str) -> str:
    """An object name as a label value: names may have 253 characters, label values 63."""
    return name if len(name) <= MAX_NAME else child_name(name)


def owner_label(kind: str) -> str:
    """The label key that names the parent of a child: kubeloop.io/trainingjob, ..."""
    return f"kubeloop.io/{kind.lower()}"


def owner_selector(kind: str, name: str) -> dict[str, str]:
    """The labels that select the children of one object (the same value the builders write)."""
    return {owner_label(kind): label_value(name)}


def child_labels(kind: str, parent: str, component: str) -> dict[str, str]:
    """Labels of every child: who made it, for what, and which parent it belongs to."""
    return {
        LABEL_NAME: "kubeloop",
        **MANAGED,
        LABEL_COMPONENT: component,
        **owner_selector(kind, parent),
    }


# --- the quality gate -------------------------------------------------------------------------------------
# Metrics where a smaller value is the better model; every other metric is better when larger.
LOWER_IS_BETTER = frozenset({"rmse", "mae"})


def no_worse_bounds(serving: Mapping[str, float], tolerance: float) -> dict[str, float]:
    """The bounds "no worse than the serving model" sets: its metrics moved by the tolerance in each
    metric's worse direction (down where higher is better, up for rmse and mae)."""
    return {m: v + tolerance if m in LOWER_IS_BETTER else v - tolerance for m, v in serving.items()}


def gate(
    metrics: Mapping[str, float],
    minimums: Mapping[str, float] | None = None,
    maximums: Mapping[str, float] | None = None,
    serving: Mapping[str, float] | None = None,
) -> tuple[bool, list[str]]:
    """Whether the metrics meet the gate, and a sentence per miss. ``serving`` are no_worse_bounds: each is
    a minimum, or a maximum for a lower-is-better metric. A metric the gate needs but nobody computed (or
    computed as NaN) is a miss, never a pass."""
    checks = [(m, float(v), "minimum", "the") for m, v in (minimums or {}).items()]
    checks += [(m, float(v), "maximum", "the") for m, v in (maximums or {}).items()]
    checks += [
        (m, float(v), "maximum" if m in LOWER_IS_BETTER else "minimum", "the serving model's")
        for m, v in (serving or {}).items()
    ]
    misses: list[str] = []
    for metric, bound, side, whose in checks:
        value = metrics.get(metric)
        if value is None or math.isnan(value):
            misses.append(f"{metric} is required by the gate but was not computed (have: {sorted(metrics)})")
        elif side == "minimum" and value < bound:
            misses.append(f"{metric} {value:.4g} is below {whose} minimum {bound:g}")
        elif side == "maximum" and value > bound:
            misses.append(f"{metric} {value:.4g} is above {whose} maximum {bound:g}")
    return not misses, misses
