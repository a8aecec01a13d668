"""Loading a model directory: digest, card and self-test checks; ORT options from the CPU limit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kubeloop.runtime.serve.examples import build_model_dir
from kubeloop.runtime.serve.model import Model, ModelLoadError, cpu_limit, session_options


@pytest.fixture(scope="module")
def lr_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("lr")
    build_model_dir(d, "logistic_regression")
    return d


def test_loads_checks_digest_and_self_tests(lr_dir: Path) -> None:
    card = json.loads((lr_dir / "model-card.json").read_text())
    model = Model(lr_dir, expected_sha256=card["sha256"].upper())
    assert model.sha256 == card["sha256"] and model.version == card["sha256"][:16]
    assert model.input_name == "X" and model.n_features == 20
    pred = model.predict(np.zeros((3, 20), np.float32))
    assert pred.labels is not None and pred.labels.shape == (3,)


def test_wrong_expected_digest_is_refused(lr_dir: Path) -> None:
    with pytest.raises(ModelLoadError) as e:
        Model(lr_dir, expected_sha256="0" * 64)
    assert e.value.reason == "DigestMismatch"
    assert "the expected digest is 0000" in e.value.message


def copy_dir(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def edit_card(d: Path, **changes: object) -> None:
    card = json.loads((d / "model-card.json").read_text())
    card.update(changes)
    (d / "model-card.json").write_text(json.dumps(card))


@pytest.mark.parametrize(
    ("changes", "reason", "message"),
    [
        ({"sha256": "ab" * 32}, "DigestMismatch", "but model-card.json is abab"),
        ({"features": ["a", "b"]}, "InvalidModelCard", "lists 2 features, the model's input 'X' takes 20"),
        ({"classes": ["a", "b"]}, "InvalidModelCard", "lists 2 classes, the model predicts 3"),
        ({"task": "ranking"}, "InvalidModelCard", "task must be classification or regression"),
    ],
)
def test_card_that_does_not_describe_the_model_is_refused(
    lr_dir: Path, tmp_path: Path, changes: dict[str, object], reason: str, message: str
) -> None:
    d = copy_dir(lr_dir, tmp_path / "m")
    edit_card(d, **changes)
    with pytest.raises(ModelLoadError) as e:
        Model(d)
    assert e.value.reason == reason
    assert message in e.value.message


def test_corrupt_model_and_missing_files(lr_dir: Path, tmp_path: Path) -> None:
    d = copy_dir(lr_dir, tmp_path / "m")
    (d / "model.onnx").write_bytes(b"not onnx")
    edit_card(d, sha256=None)
    with pytest.raises(ModelLoadError, match=r"ONNX Runtime cannot load model\.onnx") as e:
        Model(d)
    assert e.value.reason == "InvalidModel"
    with pytest.raises(ModelLoadError, match="does not exist"):
        Model(tmp_path / "nowhere")


def test_session_options_follow_the_cpu_limit() -> None:
    assert 0 < cpu_limit() <= len(__import__("os").sched_getaffinity(0))
    assert session_options(1).intra_op_num_threads == 1
    assert session_options(2).intra_op_num_threads == 1  # the event loop keeps a core
    assert session_options(4).intra_op_num_threads == 3
    assert session_options(64).intra_op_num_threads == 8
    assert session_options(2, threads=2).intra_op_num_threads == 2


def test_trainer_style_card(lr_dir: Path, tmp_path: Path) -> None:
    """The trainer's card: "version" is the card format's, the name is the TrainingJob's."""
    d = copy_dir(lr_dir, tmp_path / "m")
    edit_card(d, version=1, name=None, trainingJob="iris-lr", kind="ModelCard")
    model = Model(d)
    assert model.name == "iris-lr" and model.version == model.sha256[:16]
    assert Model(d, name="served-as").name == "served-as"


def test_a_zipmap_export_still_serves(lr_dir: Path, tmp_path: Path) -> None:
    """skl2onnx's default ZipMap output (a list of dicts) is slower but must give the same answer."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    from kubeloop.runtime.serve.examples import training_data

    d = copy_dir(lr_dir, tmp_path / "m")
    x = training_data("logistic_regression")[0]
    y = Model(lr_dir).predict(x).labels
    estimator = LogisticRegression(max_iter=1000).fit(x, y)
    (d / "model.onnx").write_bytes(to_onnx(estimator, x[:1]).SerializeToString())
    edit_card(d, sha256=None)
    pred = Model(d).predict(x[:5])
    assert pred.probabilities is not None and pred.labels is not None
    np.testing.assert_allclose(pred.probabilities, estimator.predict_proba(x[:5]), atol=1e-5)
    assert pred.labels.tolist() == estimator.predict(x[:5]).tolist()
