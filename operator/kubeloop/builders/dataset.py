"""The ingest Job of a Dataset."""

from __future__ import annotations

from kubeloop.api.dataset import DatasetSpec
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
from kubeloop.contract import child_labels, child_name

INGEST_CONTAINER = "ingest"
HASH_KEY_DIR = "/var/run/kubeloop/hash-key"
URL_HEADERS_DIR = "/var/run/kubeloop/url-headers"
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
    env_from = store_env_from(settings)
    source = spec.source
    wire = spec.wire()
    # The runtime's ingest config (kubeloop.runtime.ingest): the spec's fields at the top level, plus
    # where the pod finds the files it needs. Secrets are mounted or passed as env, never put in here.
    config: Manifest = {
        "namespace": namespace,
        "name": name,
        "storeURI": settings.store_uri,
        "source": wire["source"],
    }
    for key in ("format", "schema", "validation"):
        if key in wire:
            config[key] = wire[key]
    if source.pvc is not None:
        mounts.pvc(source.pvc.claim_name, read_only=True)  # the runtime reads /mnt/pvc/<claim>/<path>
    if source.config_map_ref is not None:
        mounts.add(
            {"name": "source", "configMap": {"name": source.config_map_ref.name}},
            CONFIGMAP_DIR,
            read_only=True,
        )
        config["configMapPath"] = CONFIGMAP_DIR
    if source.headers_secret_ref is not None:
        mounts.secret("url-headers", source.headers_secret_ref.name, URL_HEADERS_DIR)
        config["urlHeadersPath"] = URL_HEADERS_DIR
    if source.s3 is not None and source.s3.credentials_secret_ref is not None:
        # The runtime's S3 client reads AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from its environment.
        env_from = [
            *env_from,
            {"secretRef": {"name": source.s3.credentials_secret_ref.name, "optional": False}},
        ]
    if spec.privacy is not None:
        privacy: Manifest = {"drop": spec.privacy.drop or [], "hash": spec.privacy.hash or []}
        if spec.privacy.hash_key_secret_ref is not None:
            ref = spec.privacy.hash_key_secret_ref
            mounts.secret("hash-key", ref.name, HASH_KEY_DIR)
            privacy["hashKeyPath"] = f"{HASH_KEY_DIR}/{ref.key}"
        config["privacy"] = privacy
    container = {
        "name": INGEST_CONTAINER,
        "image": settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": RUNTIME_COMMAND,
        "args": ["ingest"],
        "env": [config_env(config)],
        "envFrom": env_from,
        "resources": resources(spec.resources, DEFAULT_RESOURCES),
    }
    return job(
        name=ingest_job_name(name, generation, refresh),
        namespace=namespace,
        labels=child_labels("Dataset", name, "ingest"),
        container=container,
        mounts=mounts,
        backoff_limit=INGEST_BACKOFF_LIMIT,
        active_deadline_seconds=INGEST_DEADLINE_SECONDS,
    )
