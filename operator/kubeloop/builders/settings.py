"""Operator configuration: images, the artifact store and the estimator allow-list.

Read once from the operator's environment (set by the Helm chart); builders take it as an argument, so
they stay pure and the tests can pass any configuration.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kubeloop.api.modeldeployment import NetworkPeer

PullPolicy = Literal["Always", "IfNotPresent", "Never"]

# The default allow-list: the scikit-learn estimators kubeloop.runtime.estimators maps to classes.
DEFAULT_ESTIMATORS = (
    "LogisticRegression",
    "RidgeClassifier",
    "SGDClassifier",
    "DecisionTreeClassifier",
    "RandomForestClassifier",
    "ExtraTreesClassifier",
    "GradientBoostingClassifier",
    "HistGradientBoostingClassifier",
    "KNeighborsClassifier",
    "GaussianNB",
    "SVC",
    "MLPClassifier",
    "LinearRegression",
    "Ridge",
    "Lasso",
    "ElasticNet",
    "DecisionTreeRegressor",
    "RandomForestRegressor",
    "ExtraTreesRegressor",
    "GradientBoostingRegressor",
    "HistGradientBoostingRegressor",
    "KNeighborsRegressor",
    "SVR",
    "MLPRegressor",
)


class SettingsError(ValueError):
    """The operator's configuration is unusable; the message names the variable to fix."""


def history_limit(env: Mapping[str, str], variable: str, default: int) -> int:
    """A Job history limit: a whole number, 0 or more (0 keeps no finished Job)."""
    text = env.get(variable, "").strip()
    if not text:
        return default
    if not text.isdigit():
        raise SettingsError(f"{variable}={text!r}: use a whole number of Jobs to keep, 0 or more")
    return int(text)


@dataclass(frozen=True)
class Settings:
    trainer_image: str = "ghcr.io/kubeloop/trainer:0.1.0"
    server_image: str = "ghcr.io/kubeloop/server:0.1.0"
    image_pull_policy: PullPolicy = "IfNotPresent"
    store_uri: str = "file:///var/lib/kubeloop/store"
    # A Secret in the object's namespace whose keys become env vars of the pods (AWS_ACCESS_KEY_ID, ...).
    store_secret: str | None = None
    allowed_estimators: tuple[str, ...] = DEFAULT_ESTIMATORS
    # Where a TrainingJob's spec.image may come from (see image_allowed); empty: custom images are off. Such
    # an image runs with the store's credentials and mount like the trainer, so it is trusted code.
    allowed_training_images: tuple[str, ...] = ()
    # The safety resync: how often every object is reconciled again from memory although no event came (the
    # reconcile is event-driven; this only nets a missed trigger), in seconds.
    resync_seconds: float = 600.0
    # NetworkPolicy peers always let onto the inference pods' port: the operator's own pod (canary analysis
    # and Monitors scrape /metrics and the baseline) and the metrics scraper (Prometheus). None: no such
    # peer (an operator run outside the cluster has no pod a policy could name).
    operator_peer: Mapping[str, Any] | None = None
    metrics_scraper_peer: Mapping[str, Any] | None = None
    # How many finished Jobs (ingest, training, batch scoring) each object keeps, newest first, like a
    # CronJob's successfulJobsHistoryLimit and failedJobsHistoryLimit: the rest are deleted with their pods.
    successful_jobs_history_limit: int = 3
    failed_jobs_history_limit: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Settings from KUBELOOP_* variables; unset ones keep their defaults."""
        default = cls()
        policy = env.get("KUBELOOP_IMAGE_PULL_POLICY", default.image_pull_policy)
        if policy not in ("Always", "IfNotPresent", "Never"):
            raise SettingsError(f"KUBELOOP_IMAGE_PULL_POLICY={policy!r}: use Always, IfNotPresent or Never")
        store_uri = env.get("KUBELOOP_STORE_URI", default.store_uri)
        if not store_uri.startswith(("s3://", "file:///", "pvc://")):
            raise SettingsError(
                f"KUBELOOP_STORE_URI={store_uri!r}: use s3://bucket/prefix, file:///path or pvc://claim/path"
            )
        estimators = env.get("KUBELOOP_ALLOWED_ESTIMATORS", "")
        listed = env.get("KUBELOOP_ALLOWED_TRAINING_IMAGES", "").split(",")
        images = tuple(i.strip() for i in listed if i.strip())
        for prefix in images:
            if any(c.isspace() for c in prefix) or prefix.startswith(("/", ":", "@")):
                raise SettingsError(
                    f"KUBELOOP_ALLOWED_TRAINING_IMAGES: {prefix!r} is not an image repository or prefix "
                    "(registry.example.com/team/ or registry.example.com/team/trainer)"
                )
        try:
            resync = float(env.get("KUBELOOP_RESYNC_SECONDS", default.resync_seconds))
        except ValueError:
            raise SettingsError("KUBELOOP_RESYNC_SECONDS must be a number of seconds") from None
        return cls(
            trainer_image=env.get("KUBELOOP_TRAINER_IMAGE", default.trainer_image),
            server_image=env.get("KUBELOOP_SERVER_IMAGE", default.server_image),
            image_pull_policy=policy,  # type: ignore[arg-type]  # checked above
            store_uri=store_uri,
            store_secret=env.get("KUBELOOP_STORE_SECRET") or None,
            allowed_estimators=tuple(e.strip() for e in estimators.split(",") if e.strip())
            or DEFAULT_ESTIMATORS,
            allowed_training_images=images,
            resync_seconds=max(resync, 1.0),
            operator_peer=network_peer(env, "KUBELOOP_OPERATOR_PEER"),
            metrics_scraper_peer=network_peer(env, "KUBELOOP_METRICS_SCRAPER_PEER"),
            successful_jobs_history_limit=history_limit(env, "KUBELOOP_SUCCESSFUL_JOBS_HISTORY_LIMIT", 3),
            failed_jobs_history_limit=history_limit(env, "KUBELOOP_FAILED_JOBS_HISTORY_LIMIT", 1),
        )


def image_allowed(image: str, allowed: Sequence[str]) -> bool:
    """Whether ``image`` is from one of the ``allowed`` places. Pure.

    An entry ending in ``/`` is a prefix of repositories (``registry.example.com/team/`` allows everything
    under it); any other entry is one repository, which the image must name exactly before its tag or digest
    (``registry.example.com/team/trainer`` allows ``...trainer:2`` and ``...trainer@sha256:...`` but not
    ``...trainer-evil``). Nothing is allowed when the list is empty.
    """
    for entry in allowed:
        if entry.endswith("/"):
            if image.startswith(entry) and len(image) > len(entry):
                return True
        elif image == entry or image.startswith((f"{entry}:", f"{entry}@")):
            return True
    return False


def network_peer(env: Mapping[str, str], variable: str) -> dict[str, Any] | None:
    """A NetworkPolicy peer (JSON, the shape of ModelDeployment spec.network.allowFrom items) from the
    environment, as the API server stores it; None when the variable is unset or empty."""
    text = env.get(variable, "").strip()
    if not text:
        return None
    try:
        peer = NetworkPeer.model_validate(json.loads(text))
    except ValueError as error:  # not JSON, or a pydantic ValidationError
        raise SettingsError(
            f"{variable}: not a NetworkPolicy peer ({{namespaceSelector, podSelector}} as JSON): {error}"
        ) from None
    # the CRD's CEL rule, which pydantic does not run: {} would be no peer at all
    if peer.namespace_selector is None and peer.pod_selector is None:
        raise SettingsError(
            f"{variable}: not a NetworkPolicy peer: set namespaceSelector, podSelector or both"
        )
    return peer.wire()
