"""Training as a pod runs it: a dataset ingested into a file:// store, then train and fetch."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from kubeloop.runtime import fetch, ingest, train


def run(
    module: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    config: dict[str, Any],
    argv: list[str] | None = None,
) -> tuple[int, dict[str, Any]]:
    monkeypatch.setenv("KUBELOOP_CONFIG", json.dumps(config))
    monkeypatch.setenv("KUBELOOP_TERMINATION_LOG", "/nonexistent/termination-log")
    code = module.main(argv or [])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


def ingested(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: Path, builtin: str
) -> dict[str, Any]:
    code, result = run(
        ingest,
        monkeypatch,
        capsys,
        {"namespace": "ns", "name": builtin, "storeURI": f"file://{store}", "source": {"builtin": builtin}},
    )
    assert code == 0, result
    return result


def job(store: Path, dataset: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "namespace": "ns",
        "name": "tj",
        "storeURI": f"file://{store}",
        "dataset": {"name": "iris", "version": dataset["version"]},
        **extra,
    }


def test_iris_classifier_is_exported_verified_and_written_with_lineage(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: Path, tmp_path: Path
) -> None:
    ds = ingested(monkeypatch, capsys, store, "iris")
    config = job(
        store,
        ds,
        model={"estimator": "LogisticRegression", "params": {"max_iter": 500}},
        split={"testFraction": 0.3, "seed": 1},
        gate={"minimums": {"accuracy": 0.8}},
    )
    code, result = run(train, monkeypatch, capsys, config)
    assert code == 0, result
    assert result["task"] == "classification" and result["gatePassed"] is True
    assert (
        set(result["metrics"]) == {"accuracy", "f1_macro", "roc_auc"} and result["metrics"]["accuracy"] > 0.8
    )
    model_dir = store / "models" / result["model"]["sha256"]
    onnx_bytes = (model_dir / "model.onnx").read_bytes()
    assert hashlib.sha256(onnx_bytes).hexdigest() == result["model"]["sha256"]
    card = json.loads((model_dir / "model-card.json").read_text())
    assert card["dataset"]["sha256"] == ds["sha256"] and card["params"] == {"max_iter": 500}
    assert card["features"] == ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]
    assert card["classes"] == [0, 1, 2] and card["split"]["testRows"] == 45
    assert {"scikit-learn", "skl2onnx", "onnxruntime"} <= set(card["libraryVersions"])
    assert card["parity"]["maxProbabilityDiff"] <= 1e-4 and card["parity"]["labelMismatches"] == 0
    assert json.loads((model_dir / "baseline.json").read_text())["rows"] == 150
    assert (model_dir / "report" / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert (model_dir / "report" / "feature_importance.png").exists()
    # The page a person opens, where status (model.reportURI) and the card point.
    assert result["model"]["reportURI"] == card["reportURI"] == f"file://{model_dir}/report.html"
    assert "Confusion matrix" in (model_dir / "report.html").read_text()
    # The exported model is usable as the card describes it.
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    labels, proba = session.run(None, {"input": np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)})
    assert labels[0] == 0 and proba.shape == (1, 3)
    # Same config, same data: the same model bytes (content-addressed, reproducible).
    assert run(train, monkeypatch, capsys, config)[1]["model"]["sha256"] == result["model"]["sha256"]

    dest = tmp_path / "serving"
    code, _fetched = run(
        fetch,
        monkeypatch,
        capsys,
        {},
        ["--uri", result["model"]["uri"], "--sha256", result["model"]["sha256"], "--dest", str(dest)],
    )
    assert code == 0 and (dest / "model.onnx").read_bytes() == onnx_bytes
    assert sorted(p.name for p in dest.iterdir()) == ["baseline.json", "model-card.json", "model.onnx"]


def test_regression_on_diabetes_is_inferred_and_reports_residuals(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    ds = ingested(monkeypatch, capsys, store, "diabetes")
    config = job(
        store,
        ds,
        model={"estimator": "RandomForestRegressor", "params": {"n_estimators": 20}},
        gate={"maximums": {"rmse": 1.0}},
    )
    config["dataset"]["name"] = "diabetes"
    code, result = run(train, monkeypatch, capsys, config)
    assert code == 0 and result["task"] == "regression"
    assert set(result["metrics"]) == {"rmse", "mae", "r2"}
    # A model that misses the gate is still written, marked, so a person can inspect it.
    assert (
        result["gatePassed"] is False
        and "rmse" in result["gateReasons"][0]
        and "above" in result["gateReasons"][0]
    )
    model_dir = store / "models" / result["model"]["sha256"]
    card = json.loads((model_dir / "model-card.json").read_text())
    assert card["gate"]["passed"] is False
    assert (model_dir / "report" / "residuals.png").exists()


def test_trial_mode_uses_the_trial_params(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    ds = ingested(monkeypatch, capsys, store, "iris")
    config = job(
        store,
        ds,
        model={"estimator": "DecisionTreeClassifier", "params": {"max_depth": 5}},
        trial={"index": 3, "params": {"max_depth": 1}},
    )
    code, result = run(train, monkeypatch, capsys, config)
    assert code == 0 and result["trial"] == {"index": 3, "params": {"max_depth": 1}}
    assert (
        result["metrics"]["accuracy"] < 0.7
    )  # a stump cannot separate three classes: the trial's params won


@pytest.mark.parametrize(
    ("model", "reason", "message"),
    [
        ({"estimator": "os.system"}, "EstimatorNotAllowed", "is not on the allow-list; use one of"),
        (
            {"estimator": "sklearn.svm.SVC", "params": {"kernal": "rbf"}},
            "EstimatorNotAllowed",
            "no parameter 'kernal'",
        ),
        ({"estimator": "LinearRegression"}, "TaskMismatch", "LinearRegression does a regression task"),
    ],
)
def test_bad_model_spec_exits_2_before_training(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    store: Path,
    model: dict[str, Any],
    reason: str,
    message: str,
) -> None:
    ds = ingested(monkeypatch, capsys, store, "iris")
    code, result = run(train, monkeypatch, capsys, job(store, ds, model=model))
    assert code == 2 and result["reason"] == reason and message in result["message"]
    assert not (store / "models").exists()


def test_unknown_dataset_version_lists_what_exists(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    ds = ingested(monkeypatch, capsys, store, "iris")
    code, result = run(
        train, monkeypatch, capsys, job(store, {"version": "ffff"}, model={"estimator": "GaussianNB"})
    )
    assert code == 2 and result["reason"] == "DatasetNotFound" and ds["version"] in result["message"]


def test_parity_failure_exits_2_and_writes_no_model(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    # A tolerance no float32 model can meet makes the check fail: the run must refuse to write the model.
    ds = ingested(monkeypatch, capsys, store, "iris")
    config = job(
        store,
        ds,
        model={"estimator": "LogisticRegression", "params": {"max_iter": 500}},
        parity={"probabilityTolerance": 0.0},
    )
    code, result = run(train, monkeypatch, capsys, config)
    assert code == 2 and result["reason"] == "ParityFailed"
    assert "ONNX and scikit-learn" in result["message"] and "held-out row" in result["message"]
    assert not (store / "models").exists()


def test_fetch_refuses_a_wrong_checksum_and_an_incomplete_model(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: Path, tmp_path: Path
) -> None:
    model_dir = store / "models" / "abc"
    model_dir.mkdir(parents=True)
    (model_dir / "model.onnx").write_bytes(b"onnx")
    (model_dir / "baseline.json").write_text("{}")
    dest = tmp_path / "dest"
    argv = [
        "--uri",
        f"file://{model_dir}",
        "--sha256",
        hashlib.sha256(b"onnx").hexdigest(),
        "--dest",
        str(dest),
    ]
    code, result = run(fetch, monkeypatch, capsys, {}, argv)
    assert code == 2 and result["reason"] == "ModelNotFound" and "not a complete model" in result["message"]
    (model_dir / "model-card.json").write_text("{}")
    argv[3] = "0" * 64
    code, result = run(fetch, monkeypatch, capsys, {}, argv)
    assert code == 2 and result["reason"] == "ChecksumMismatch" and "expected sha256 000" in result["message"]
    assert not (dest / "model.onnx").exists()


def test_result_fits_the_termination_log() -> None:
    from kubeloop.runtime.jobio import fit_result

    big = {
        "ok": True,
        "statistics": {f"c{i}": {"kind": "numeric", "min": 1.0} for i in range(200)},
        "model": {
            "sha256": "a" * 64,
            "inputSignature": [{"name": f"f{i}", "type": "float"} for i in range(64)],
        },
    }
    text = fit_result(big)
    assert len(text.encode()) <= 4096 and json.loads(text)["model"]["sha256"] == "a" * 64


def test_a_categorical_feature_trains_through_the_pods_entry_point(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: Path, tmp_path: Path
) -> None:
    cm = tmp_path / "cm"
    cm.mkdir()
    pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0] * 5, "color": ["a", "b"] * 10, "y": [0, 1] * 10}).to_csv(
        cm / "d.csv", index=False
    )
    monkeypatch.setenv("KUBELOOP_CONFIGMAP_DIR", str(cm))
    code, ds = run(
        ingest,
        monkeypatch,
        capsys,
        {
            "namespace": "ns",
            "name": "iris",
            "storeURI": f"file://{store}",
            "source": {"configMapRef": {"name": "c", "key": "d.csv"}},
            "schema": {"target": "y"},
        },
    )
    assert code == 0, ds
    code, result = run(train, monkeypatch, capsys, job(store, ds, model={"estimator": "GaussianNB"}))
    # GaussianNB takes the dense one-hot columns too (tests/unit/test_categorical_features.py: the rest).
    assert code == 0, result
    assert result["model"]["inputSignature"] == [
        {"name": "x", "type": "float"},
        {"name": "color", "type": "string"},
    ]


def test_sample_rows_trains_on_a_seeded_stratified_sample_recorded_in_the_card(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    ds = ingested(monkeypatch, capsys, store, "digits")  # 1,797 rows, 10 classes
    config = job(
        store,
        {**ds, "name": "digits"},
        model={"estimator": "LogisticRegression", "params": {"max_iter": 300}},
        split={"testFraction": 0.25, "seed": 7},
        sampleRows=600,
    )
    config["dataset"]["name"] = "digits"
    code, result = run(train, monkeypatch, capsys, config)
    assert code == 0, result
    sample = {"rows": 600, "of": 1797, "seed": 7, "stratified": True}
    assert result["model"]["sample"] == sample, result["model"]
    card = json.loads((store / "models" / result["model"]["sha256"] / "model-card.json").read_text())
    assert card["sample"] == sample and card["split"]["trainRows"] + card["split"]["testRows"] == 600
    # the same seed draws the same sample: the same model bytes
    assert run(train, monkeypatch, capsys, config)[1]["model"]["sha256"] == result["model"]["sha256"]
    # more rows wanted than the snapshot has: every row, nothing recorded
    code, every = run(train, monkeypatch, capsys, {**config, "sampleRows": 5000})
    assert code == 0 and "sample" not in every["model"], every["model"]


def test_a_sample_keeps_each_class_share_and_falls_back_when_it_cannot() -> None:
    labels = np.array([0] * 900 + [1] * 90 + [2] * 10)
    chosen, stratified = train.sample_indices(1000, 100, labels, seed=3)
    assert stratified and len(chosen) == 100 and list(chosen) == sorted(chosen)
    assert np.bincount(labels[chosen]).tolist() == [90, 9, 1]
    again, _ = train.sample_indices(1000, 100, labels, seed=3)
    assert (again == chosen).all()
    # a class of one row cannot keep its share of a sample: a plain random sample, said as such
    lonely = np.array([0] * 999 + [1])
    chosen, stratified = train.sample_indices(1000, 100, lonely, seed=3)
    assert not stratified and len(set(chosen.tolist())) == 100
    # a float target is not classes
    assert train.sample_indices(1000, 50, np.linspace(0, 1, 1000), seed=3)[1] is False
