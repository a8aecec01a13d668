"""The operator's child objects run the runtime exactly as built: the runtime's own entry point, argument
parsers and config readers consume what the builders write, so the two sides cannot drift apart again.

Only this test imports both sides; the operator itself never imports kubeloop.runtime (import-linter).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubeloop.api.dataset import DatasetSpec
from kubeloop.api.modeldeployment import ModelDeploymentSpec
from kubeloop.api.trainingjob import TrainingJobSpec
from kubeloop.builders.batch import output_uri, run_key, score_job
from kubeloop.builders.dataset import ingest_job
from kubeloop.builders.serving import MODEL_DIR, PORT, deployment
from kubeloop.builders.settings import Settings
from kubeloop.builders.training import training_job
from kubeloop.contract import COMPLETION_INDEX_ANNOTATION, COMPLETION_INDEX_ENV
from kubeloop.controllers.batch import outcome as batch_outcome
from kubeloop.controllers.trainingjob import _metrics, _model
from kubeloop.runtime import ingest as runtime_ingest
from kubeloop.runtime.__main__ import COMMANDS
from kubeloop.runtime.__main__ import main as runtime_main
from kubeloop.runtime.jobio import DataError
from kubeloop.runtime.serve.cli import parse_args as serve_args

RUNTIME = ["python", "-m", "kubeloop.runtime"]


def pod_of(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def mount_path(pod: dict[str, Any], container: dict[str, Any], volume: str) -> str:
    assert volume in {v["name"] for v in pod["volumes"]}, f"no volume {volume}"
    return next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume)  # type: ignore[no-any-return]


def run_container(
    container: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, args: list[str] | None = None
) -> tuple[int, dict[str, Any]]:
    """Run the container's command line in-process with its env; the result is its termination log."""
    assert container["command"] == RUNTIME
    assert container["args"][0] in COMMANDS
    for env in container.get("env", []):
        monkeypatch.setenv(env["name"], env["value"])
    log = tmp_path / f"termination-log-{container['name']}"
    monkeypatch.setenv("KUBELOOP_TERMINATION_LOG", str(log))
    code = runtime_main(args or container["args"])
    return code, json.loads(log.read_text())


def test_dataset_training_and_serving_children_run_the_runtime(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    settings = Settings(store_uri=f"file://{store}", trainer_image="t:1", server_image="s:1")

    # Dataset -> ingest Job: the runtime reads the config as built and reports what the controller reads.
    dataset_spec = DatasetSpec.model_validate(
        {"source": {"builtin": "iris"}, "validation": {"minRows": 100, "duplicates": "keep"}}
    )
    job = ingest_job(
        name="iris", namespace="ml", spec=dataset_spec, generation=1, refresh=0, settings=settings
    )
    code, ingested = run_container(pod_of(job)["containers"][0], monkeypatch, tmp_path)
    assert code == 0, ingested
    assert ingested["ok"] is True and ingested["rows"] == 150 and ingested["target"] == "target"
    assert len(ingested["version"]) == 16 and ingested["sha256"].startswith(ingested["version"])
    assert ingested["artifactURI"].startswith(f"file://{store}/datasets/ml/iris/")

    # TrainingJob -> one trial Job on the version the controller pinned (what resolve_dataset returns).
    pinned = {"name": "iris", "version": ingested["version"], "artifactURI": ingested["artifactURI"]}
    training_spec = TrainingJobSpec.model_validate(
        {
            "datasetRef": {"name": "iris"},
            "model": {"estimator": "LogisticRegression", "params": {"max_iter": 300}},
            "split": {"testFraction": 0.3, "seed": 7},
            "gate": {"minimums": {"accuracy": 0.8, "f1_macro": 0.8}},
        }
    )
    job = training_job(
        name="iris-lr",
        namespace="ml",
        spec=training_spec,
        generation=1,
        trial=2,
        params={"C": 0.5},
        dataset=pinned,
        settings=settings,
    )
    code, trained = run_container(pod_of(job)["containers"][0], monkeypatch, tmp_path)
    assert code == 0, trained
    assert trained["ok"] is True and trained["task"] == "classification"
    assert trained["trial"] == {"index": 2, "params": {"max_iter": 300, "C": 0.5}}
    assert trained["dataset"]["version"] == ingested["version"]
    assert trained["gatePassed"] is True and trained["gateReasons"] == []
    model = _model(trained, pinned["version"])  # the controller's reading of the result
    assert model["uri"] == f"file://{store}/models/{model['sha256']}"
    assert _metrics(trained)["accuracy"] == trained["metrics"]["accuracy"]

    # ModelDeployment -> fetch (init) and serve: fetch takes the model directory the trainer reported.
    serving_spec = ModelDeploymentSpec.model_validate(
        {"model": {"uri": model["uri"], "sha256": model["sha256"]}}
    )
    dep = deployment(
        name="iris",
        namespace="ml",
        spec=serving_spec,
        uri=model["uri"],
        sha256=model["sha256"],
        settings=settings,
    )
    pod = pod_of(dep)
    (fetch,), (serve,) = pod["initContainers"], pod["containers"]
    assert mount_path(pod, fetch, "model") == MODEL_DIR == mount_path(pod, serve, "model")
    dest = tmp_path / "model"
    args = [str(dest) if a == MODEL_DIR else a for a in fetch["args"]]  # the pod's emptyDir, here a tmp dir
    code, fetched = run_container(fetch, monkeypatch, tmp_path, args)
    assert code == 0, fetched
    assert (dest / "model.onnx").is_file() and (dest / "model-card.json").is_file()
    assert serve["command"] == RUNTIME and serve["args"][0] == "serve"
    parsed = serve_args(serve["args"][1:])
    assert Path(parsed.model_dir) == Path(MODEL_DIR)
    assert parsed.expected_sha256 == model["sha256"] == fetched["sha256"]
    assert parsed.port == PORT == serve["ports"][0]["containerPort"]
    assert parsed.model_name == "iris"

    # ModelDeployment spec.batch -> the scoring Indexed Job, on the served digest; its pods' results read
    # by the controller as it reads them from the cluster.
    batch_spec = ModelDeploymentSpec.model_validate(
        {"model": {"uri": model["uri"], "sha256": model["sha256"]}, "batch": {"datasetRef": {"name": "iris"}}}
    )
    assert batch_spec.batch is not None
    key = run_key(pinned["version"], model["sha256"], batch_spec.batch)
    scoring = score_job(
        name="iris",
        namespace="ml",
        batch=batch_spec.batch,
        dataset=pinned,
        model=model,
        key=key,
        settings=settings,
    )
    monkeypatch.setenv(COMPLETION_INDEX_ENV, "0")  # the Job controller sets it in an Indexed Job's pods
    code, scored = run_container(pod_of(scoring)["containers"][0], monkeypatch, tmp_path)
    assert code == 0, scored
    assert scored["complete"] is True and scored["totalRows"] == 150 == ingested["rows"]
    assert scored["outputURI"] == output_uri(settings, "ml", "iris", pinned["version"], model["sha256"])
    pod = {
        "metadata": {"name": "p", "annotations": {COMPLETION_INDEX_ANNOTATION: "0"}},
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [{"state": {"terminated": {"message": json.dumps(scored)}}}],
        },
    }
    complete = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert batch_outcome(complete, [pod], 1).rows == 150


def test_a_changed_model_digest_is_refused_by_fetch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A deployment pinned to another digest than the store holds never installs the model."""
    store = tmp_path / "store"
    settings = Settings(store_uri=f"file://{store}")
    spec = DatasetSpec.model_validate({"source": {"builtin": "iris"}})
    job = ingest_job(name="d", namespace="ml", spec=spec, generation=1, refresh=0, settings=settings)
    assert run_container(pod_of(job)["containers"][0], monkeypatch, tmp_path)[0] == 0
    ingested = json.loads((tmp_path / "termination-log-ingest").read_text())
    training = TrainingJobSpec.model_validate(
        {
            "datasetRef": {"name": "d"},
            "model": {"estimator": "GaussianNB"},
            "gate": {"minimums": {"accuracy": 1.01}},
        }
    )
    pinned = {"name": "d", "version": ingested["version"], "artifactURI": ingested["artifactURI"]}
    job = training_job(
        name="t",
        namespace="ml",
        spec=training,
        generation=1,
        trial=0,
        params={},
        dataset=pinned,
        settings=settings,
    )
    code, trained = run_container(pod_of(job)["containers"][0], monkeypatch, tmp_path)
    assert code == 0, trained
    # The gate the user wrote reached the runtime: the model is kept but marked, with the reason.
    assert trained["gatePassed"] is False and "accuracy" in trained["gateReasons"][0]
    wrong = "f" * 64
    spec_md = ModelDeploymentSpec.model_validate({"model": {"uri": trained["model"]["uri"], "sha256": wrong}})
    dep = deployment(
        name="x", namespace="ml", spec=spec_md, uri=trained["model"]["uri"], sha256=wrong, settings=settings
    )
    fetch = pod_of(dep)["initContainers"][0]
    dest = tmp_path / "model"
    code, result = run_container(
        fetch, monkeypatch, tmp_path, [str(dest) if a == MODEL_DIR else a for a in fetch["args"]]
    )
    assert code == 2 and result == {**result, "ok": False, "reason": "ChecksumMismatch"}
    assert not (dest / "model.onnx").exists()


@pytest.mark.parametrize(
    ("source", "volume"),
    [
        ({"pvc": {"claimName": "data", "path": "in/x.csv"}}, "pvc-data"),
        ({"configMapRef": {"name": "small", "key": "d.csv"}}, "source"),
    ],
)
def test_ingest_reads_its_source_where_the_job_mounts_it(
    monkeypatch: pytest.MonkeyPatch, source: dict[str, Any], volume: str
) -> None:
    monkeypatch.delenv("KUBELOOP_PVC_ROOT", raising=False)
    monkeypatch.delenv("KUBELOOP_CONFIGMAP_DIR", raising=False)
    job = ingest_job(
        name="d",
        namespace="ml",
        spec=DatasetSpec.model_validate({"source": source}),
        generation=1,
        refresh=0,
        settings=Settings(store_uri="s3://b/p"),
    )
    pod = pod_of(job)
    container = pod["containers"][0]
    config = json.loads(next(e["value"] for e in container["env"] if e["name"] == "KUBELOOP_CONFIG"))
    # Outside the pod the mount is absent, so the runtime fails naming the path it read: the mount's path.
    with pytest.raises((DataError, OSError)) as failure:
        runtime_ingest.read_source(config)
    assert mount_path(pod, container, volume) in str(failure.value)


def test_privacy_hash_key_file_is_inside_the_mounted_secret() -> None:
    spec = DatasetSpec.model_validate(
        {
            "source": {"builtin": "iris"},
            "privacy": {
                "drop": ["petal_width_cm"],
                "hash": ["sepal_length_cm"],
                "hashKeySecretRef": {"name": "pepper", "key": "k"},
            },
        }
    )
    job = ingest_job(name="d", namespace="ml", spec=spec, generation=1, refresh=0, settings=Settings())
    pod = pod_of(job)
    container = pod["containers"][0]
    config = json.loads(next(e["value"] for e in container["env"] if e["name"] == "KUBELOOP_CONFIG"))
    assert config["privacy"]["hashKeyPath"] == f"{mount_path(pod, container, 'hash-key')}/k"
    assert config["privacy"]["drop"] == ["petal_width_cm"]
