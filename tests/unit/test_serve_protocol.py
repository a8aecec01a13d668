"""Request decoding and answer encoding against a real ONNX model (scikit-learn -> skl2onnx -> ORT)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from kubeloop.runtime.serve.examples import build_model_dir, training_data
from kubeloop.runtime.serve.model import Model
from kubeloop.runtime.serve.protocol import ClientError, Codec


@pytest.fixture(scope="module")
def forest(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Codec]:
    d = tmp_path_factory.mktemp("rf")
    estimator = build_model_dir(d, "random_forest")
    return estimator, Codec(Model(d))


def v2(data: Any, name: str = "X", shape: Any = None, datatype: Any = "FP32", **extra: Any) -> bytes:
    rows = np.asarray(data).reshape(-1, 20).shape[0] if shape is None else None
    tensor = {
        "name": name,
        "shape": shape if shape is not None else [rows, 20],
        "datatype": datatype,
        "data": data,
    }
    return orjson.dumps({"inputs": [tensor], **extra})


ROW = [float(i) / 3 for i in range(20)]


def test_v2_answers_labels_and_probabilities_like_scikit_learn(forest: tuple[Any, Codec]) -> None:
    estimator, codec = forest
    x = training_data("random_forest")[0][:5]
    rows, request_id, wanted = codec.decode_v2(v2(x.tolist(), shape=[5, 20], id="r1"))
    assert request_id == "r1" and wanted is None  # no outputs named: all of them, as JSON
    answer = json.loads(codec.encode_v2(codec.model.predict(rows), request_id))
    assert answer["model_name"] == "random-forest" and answer["id"] == "r1"
    label, probs = answer["outputs"]
    classes = ["low", "mid", "high"]
    assert label == {
        "name": "label",
        "datatype": "BYTES",
        "shape": [5],
        "data": [classes[i] for i in estimator.predict(x)],
    }
    assert probs["shape"] == [5, 3]
    np.testing.assert_allclose(np.reshape(probs["data"], (5, 3)), estimator.predict_proba(x), atol=1e-5)


def test_v1_accepts_rows_and_named_objects(forest: tuple[Any, Codec]) -> None:
    _, codec = forest
    by_row = codec.decode_v1(orjson.dumps({"instances": [ROW, ROW]}))
    by_name = codec.decode_v1(orjson.dumps({"instances": [{f"f{i}": v for i, v in enumerate(ROW)}]}))
    np.testing.assert_array_equal(by_row[0], by_name[0])
    answer = json.loads(codec.encode_v1(codec.model.predict(by_row)))
    assert len(answer["predictions"]) == 2 and len(answer["probabilities"][0]) == 3


def test_binary_tensor_extension(forest: tuple[Any, Codec]) -> None:
    _, codec = forest
    raw = np.asarray([ROW], dtype=np.float32).tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "X",
                    "shape": [1, 20],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    )
    rows, _, _ = codec.decode_v2(header + raw, len(header))
    np.testing.assert_allclose(rows[0], ROW, rtol=1e-6)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"inputs": [', "malformed JSON"),
        (b"[1, 2]", "must be a JSON object with 'inputs'"),
        (b'{"inputs": []}', "'inputs' must be a non-empty list"),
        (v2(ROW, name="features"), "unknown input 'features': the model's input is 'X'"),
        (v2(ROW, datatype="BYTES"), "datatype 'BYTES'; the model takes FP32"),
        (v2(ROW, datatype="BOOL"), "datatype 'BOOL'"),
        (v2(ROW, shape=[20]), "has shape [20]; the model takes [-1, 20]"),
        (v2(ROW, shape=[1, 19]), "has shape [1, 19]; the model takes [-1, 20]"),
        (v2(ROW, shape=[0, 20]), "has shape [0, 20]"),
        (v2(ROW[:19], shape=[1, 20]), "has 19 values, but shape [1, 20] needs 20"),
        (v2(ROW, shape=[2, 20]), "has 20 values, but shape [2, 20] needs 40"),
        (v2(["a"] * 20), "data must be numbers only"),
        (v2([True] * 20), "data must be numbers only"),
        (v2([None] * 20), "data must be numbers only"),
        (v2([[1.0], [1.0, 2.0]], shape=[1, 20]), "not a regular array"),
        (v2("1,2,3", shape=[1, 20]), "needs 'data', a list of numbers"),
        (
            json.dumps(
                {
                    "inputs": [
                        {"name": "X", "shape": [1, 20], "datatype": "FP32", "data": [float("nan"), *ROW[1:]]}
                    ]
                }
            ).encode(),
            "row 0 feature 'f0' is NaN",
        ),
        (
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "X",
                            "shape": [1, 20],
                            "datatype": "FP64",
                            "data": [*ROW[:5], float("inf"), *ROW[6:]],
                        }
                    ]
                }
            ).encode(),
            "feature 'f5' is infinity",
        ),
        (v2([*ROW[:3], 1e300, *ROW[4:]], datatype="FP64"), "feature 'f3' is 1e+300 (beyond FP32 range)"),
    ],
)
@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
def test_v2_rejects_with_a_message_saying_what_is_wrong(
    forest: tuple[Any, Codec], body: bytes, message: str
) -> None:
    with pytest.raises(ClientError) as e:
        forest[1].decode_v2(body)
    assert e.value.status == 400
    assert message in e.value.message


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"inputs": [ROW]}, "non-empty 'instances' list"),
        ({"instances": []}, "non-empty 'instances' list"),
        ({"instances": [ROW[:19]]}, "'instances' must be rows of 20 numbers"),
        ({"instances": [{"f0": 1.0}]}, "instance 0 lacks features"),
        (
            {"instances": [{**{f"f{i}": 0.0 for i in range(20)}, "age": 3}]},
            "instance 0 has unknown features ['age']",
        ),
        ({"instances": [{f"f{i}": 0.0 for i in range(20)}, ROW]}, "instance 1 is not an object"),
    ],
)
def test_v1_rejects_with_a_message(forest: tuple[Any, Codec], doc: Any, message: str) -> None:
    with pytest.raises(ClientError) as e:
        forest[1].decode_v1(orjson.dumps(doc))
    assert e.value.status == 400
    assert message in e.value.message


def test_binary_size_must_match(forest: tuple[Any, Codec]) -> None:
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "X", "shape": [1, 20], "datatype": "FP32", "parameters": {"binary_data_size": 80}}
            ]
        }
    )
    with pytest.raises(ClientError, match="declares binary_data_size 80, the body carries 4 bytes"):
        forest[1].decode_v2(header + b"\0\0\0\0", len(header))
    with pytest.raises(ClientError, match="Inference-Header-Content-Length 999 is larger than the body"):
        forest[1].decode_v2(header, 999)


def test_regression_answers_values(tmp_path: Path) -> None:
    estimator = build_model_dir(tmp_path, "linear_regression")
    codec = Codec(Model(tmp_path))
    x = training_data("linear_regression")[0][:3]
    rows, _, _ = codec.decode_v2(v2(x.tolist(), shape=[3, 20]))
    out = json.loads(codec.encode_v2(codec.model.predict(rows), None))["outputs"]
    assert [o["name"] for o in out] == ["predictions"]
    np.testing.assert_allclose(out[0]["data"], estimator.predict(x), rtol=1e-4, atol=1e-3)


def test_integer_classes_are_int64_labels(tmp_path: Path) -> None:
    build_model_dir(tmp_path, "logistic_regression", classes=[0, 1, 2])
    codec = Codec(Model(tmp_path))
    out = json.loads(codec.encode_v2(codec.model.predict(np.zeros((1, 20), np.float32)), None))["outputs"]
    assert out[0]["datatype"] == "INT64" and out[0]["data"][0] in (0, 1, 2)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 5000 + b"]" * 5000,  # deeper than any JSON parser's recursion limit
        b'{"inputs": [{"name": "X", "shape": ["1", 20], "datatype": "FP32", "data": []}]}',
        b'{"inputs": [{"name": "X", "shape": [true, 20], "datatype": "FP32", "data": []}]}',
        b'{"inputs": [{"name": "X", "shape": [1.5, 20], "datatype": "FP32", "data": []}]}',
        b'{"inputs": [{"name": "X", "shape": [4611686018427387904, 20], "datatype": "FP32", "data": [1]}]}',
        b'{"inputs": [{"name": "X", "shape": [1, 20], "datatype": "FP32", "data": [{}]}]}',
        b'{"inputs": [{"name": "X", "shape": [1, 20], "datatype": "FP32", "data": [99999999999999999999]}]}',
        b'{"inputs": [{"name": "X", "shape": [1, 20], "datatype": "FP32", "data": [[[[1]]]]}]}',
        b'{"inputs": ["X"]}',
        b'{"inputs": {"name": "X"}}',
        b"\xff\xfe",
        b"null",
    ],
)
def test_odd_bodies_are_client_errors(forest: tuple[Any, Codec], body: bytes) -> None:
    with pytest.raises(ClientError) as e:
        forest[1].decode_v2(body)
    assert e.value.status == 400
    with pytest.raises(ClientError):
        forest[1].decode_v1(body)


def test_a_graph_with_a_fixed_batch_size(tmp_path: Path) -> None:
    """Exported with batch size 1: metadata says so, other row counts are a 400, never an ORT error."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    estimator = build_model_dir(tmp_path, "logistic_regression")
    onx = to_onnx(estimator, initial_types=[("X", FloatTensorType([1, 20]))], options={"zipmap": False})
    (tmp_path / "model.onnx").write_bytes(onx.SerializeToString())
    card = json.loads((tmp_path / "model-card.json").read_text())
    (tmp_path / "model-card.json").write_text(json.dumps({**card, "sha256": None}))
    codec = Codec(Model(tmp_path))
    assert json.loads(codec.metadata)["inputs"][0]["shape"] == [1, 20]
    x, _, _ = codec.decode_v2(v2(ROW))
    assert codec.model.predict(x).labels is not None
    with pytest.raises(ClientError, match=r"shape \[2, 20\]; the model takes \[1, 20\]"):
        codec.decode_v2(v2(ROW * 2, shape=[2, 20]))
    with pytest.raises(ClientError, match="must be exactly 1 rows of 20 numbers"):
        codec.decode_v1(orjson.dumps({"instances": [ROW, ROW]}))


def split_binary(body: bytes, json_length: int) -> tuple[dict[str, Any], dict[str, bytes]]:
    header = json.loads(body[:json_length])
    blobs, offset = {}, json_length
    for out in header["outputs"]:
        size = out.get("parameters", {}).get("binary_data_size")
        if size is not None:
            blobs[out["name"]] = body[offset : offset + size]
            offset += size
    assert offset == len(body)
    return header, blobs


def test_outputs_named_and_binary(forest: tuple[Any, Codec]) -> None:
    estimator, codec = forest
    x = training_data("random_forest")[0][:4]
    body = orjson.dumps(
        {
            "id": "b",
            "inputs": [{"name": "X", "shape": [4, 20], "datatype": "FP32", "data": x.tolist()}],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    )
    rows, request_id, wanted = codec.decode_v2(body)
    assert wanted == (("probabilities", True),)
    answer, json_length = codec.encode_v2_outputs(codec.model.predict(rows), request_id, wanted)
    assert json_length is not None
    header, blobs = split_binary(answer, json_length)
    assert header["id"] == "b" and [o["name"] for o in header["outputs"]] == ["probabilities"]
    probs = np.frombuffer(blobs["probabilities"], dtype="<f4").reshape(4, 3)
    np.testing.assert_allclose(probs, estimator.predict_proba(x), atol=1e-5)

    everything = orjson.dumps(
        {
            "inputs": [{"name": "X", "shape": [4, 20], "datatype": "FP32", "data": x.tolist()}],
            "parameters": {"binary_data_output": True},
        }
    )
    rows, _, wanted = codec.decode_v2(everything)
    assert wanted == (("label", True), ("probabilities", True))
    answer, json_length = codec.encode_v2_outputs(codec.model.predict(rows), None, wanted)
    assert json_length is not None
    _, blobs = split_binary(answer, json_length)
    labels, raw = [], blobs["label"]
    while raw:  # BYTES: 4-byte little-endian length, then the bytes
        n = int.from_bytes(raw[:4], "little")
        labels.append(raw[4 : 4 + n].decode())
        raw = raw[4 + n :]
    assert labels == [["low", "mid", "high"][i] for i in estimator.predict(x)]

    json_only = orjson.dumps(
        {
            "inputs": [{"name": "X", "shape": [4, 20], "datatype": "FP32", "data": x.tolist()}],
            "outputs": [{"name": "label"}],
        }
    )
    rows, _, wanted = codec.decode_v2(json_only)
    assert wanted == (("label", False),)
    answer, json_length = codec.encode_v2_outputs(codec.model.predict(rows), None, wanted)
    assert json_length is None
    assert json.loads(answer)["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [4], "data": labels}
    ]


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ([{"name": "scores"}], "unknown output 'scores'; the model has label, probabilities"),
        ("label", "'outputs' must be a list of objects"),
        (["label"], "'outputs' must be a list of objects"),
    ],
)
def test_unknown_outputs_are_refused(forest: tuple[Any, Codec], outputs: Any, message: str) -> None:
    body = orjson.dumps(
        {"inputs": [{"name": "X", "shape": [1, 20], "datatype": "FP32", "data": ROW}], "outputs": outputs}
    )
    with pytest.raises(ClientError) as e:
        forest[1].decode_v2(body)
    assert e.value.status == 400 and message in e.value.message


def test_int64_labels_in_binary(tmp_path: Path) -> None:
    build_model_dir(tmp_path, "logistic_regression", classes=[0, 1, 2])
    codec = Codec(Model(tmp_path))
    pred = codec.model.predict(np.zeros((2, 20), np.float32))
    answer, json_length = codec.encode_v2_outputs(pred, None, (("label", True),))
    assert json_length is not None
    _, blobs = split_binary(answer, json_length)
    assert pred.labels is not None
    assert np.frombuffer(blobs["label"], dtype="<i8").tolist() == pred.labels.tolist()
