"""The ingest Job of a Dataset."""

from __future__ import annotations

from kubeloop.api.dataset import DatasetSpec
from kubeloop.builders.common import (
    RUNTIME_COMMAND,
    Manifest,
    Mounts,
    child_name,
    config_env,
    job,
    labels,
    resources,
    store_env_from,
)
from kubeloop.builders.settings import Settings

INGEST_CONTAINER = "ingest"
HASH_KEY_DIR = "/var/run/kubeloop/hash-key"
SOURCE_CREDENTIALS_DIR = "/var/run/kubeloop/source-credentials"
CONFIGMAP_DIR = "/var/run/kubeloop/source"
DEFAULT_RESOURCES: Manifest = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
INGEST_DEADLINE_SECONDS = 3600
INGEST_BACKOFF_LIMIT = 2


def ingest_job_name(dataset: str, generation: int, refresh: int) -> str:
    """One Job per (generation, refresh): the same name after a restart, a new one for a new run."""
    return child_name(dataset, "ingest", str(generation), str(refresh))


def ingest_job(
    *, name: str, namespace: str, spec: DatasetSpec, generation: int, refresh: int, settings: Settings
) -> Manifest:
    """The Job that reads, validates, anonymises and snapshots the data (runtime `ingest`)."""
    mounts = Mounts()
    mounts.store(settings.store_uri)
    files: dict[str, str] = {}
    source = spec.source
    if source.pvc is not None:
        mounts.pvc(source.pvc.claim_name, read_only=True)
    if source.config_map_ref is not None:
        mounts.add(
            {"name": "source", "configMap": {"name": source.config_map_ref.name}},
            CONFIGMAP_DIR,
            read_only=True,
        )
        files["source"] = f"{CONFIGMAP_DIR}/{source.config_map_ref.key}"
    if source.s3 is not None and source.s3.credentials_secret_ref is not None:
        mounts.secret("source-credentials", source.s3.credentials_secret_ref.name, SOURCE_CREDENTIALS_DIR)
        files["sourceCredentials"] = SOURCE_CREDENTIALS_DIR
    if spec.privacy is not None and spec.privacy.hash_key_secret_ref is not None:
        ref = spec.privacy.hash_key_secret_ref
        mounts.secret("hash-key", ref.name, HASH_KEY_DIR)
        files["hashKey"] = f"{HASH_KEY_DIR}/{ref.key}"
    config = {
        "kind": "Dataset",
        "namespace": namespace,
        "name": name,
        "storeURI": settings.store_uri,
        "generation": generation,
        "refresh": refresh,
        "spec": spec.wire(),
        "files": files,
    }
    container = {
        "name": INGEST_CONTAINER,
        "image": settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": RUNTIME_COMMAND,
        "args": ["ingest"],
        "env": [config_env(config)],
        "envFrom": store_env_from(settings),
        "resources": resources(spec.resources, DEFAULT_RESOURCES),
    }
    return job(
        name=ingest_job_name(name, generation, refresh),
        namespace=namespace,
        labels=labels("Dataset", name, "ingest"),
        container=container,
        mounts=mounts,
        backoff_limit=INGEST_BACKOFF_LIMIT,
        active_deadline_seconds=INGEST_DEADLINE_SECONDS,
    )
