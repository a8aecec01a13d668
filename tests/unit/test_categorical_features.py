"""Categorical features end to end in-process: a CSV with string columns ingested and trained by the
runtime (one ONNX graph with FP32 and STRING inputs), served by the server's own model and codec from raw
strings, with predictions equal to the scikit-learn pipeline's; unknown categories under both policies;
BYTES request validation; category counters the Monitor's chi-square reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import pandas as pd
import pytest

from kubeloop import analysis, stats
from kubeloop.runtime.serve.batching import Batcher, Item
from kubeloop.runtime.serve.metrics import Metrics
from kubeloop.runtime.serve.model import Mixed, Model
from kubeloop.runtime.serve.protocol import ClientError, Codec
from kubeloop.runtime.serve.routes import INFER_V2
from support.categorical import Trained, train_categorical

FEATURES = ["a", "city", "b", "size"]


@pytest.fixture(scope="module")
def ignoring(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return train_categorical(tmp_path_factory.mktemp("ignore"), "ignore")


@pytest.fixture(scope="module")
def refusing(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return train_categorical(tmp_path_factory.mktemp("error"), "error", "RandomForestClassifier")


def v2(rows: pd.DataFrame, **overrides: Any) -> bytes:
    """A V2 request with one tensor per feature, as a client with a table sends it."""
    tensors = []
    for name in FEATURES:
        column = rows[name].tolist()
        string = name in ("city", "size")
        tensor = {
            "name": name,
            "datatype": "BYTES" if string else "FP32",
            "shape": [len(rows), 1],
            "data": column,
        }
        tensors.append({**tensor, **overrides.get(name, {})})
    return orjson.dumps({"inputs": tensors})


def answer(codec: Codec, body: bytes) -> dict[str, Any]:
    x, request_id, _ = codec.decode_v2(body)
    return dict(orjson.loads(codec.encode_v2(codec.model.predict(x), request_id)))


def outputs(doc: dict[str, Any]) -> tuple[list[Any], np.ndarray]:
    by_name = {o["name"]: o for o in doc["outputs"]}
    probabilities = by_name["probabilities"]
    return by_name["label"]["data"], np.array(probabilities["data"]).reshape(probabilities["shape"])


# ------------------------------------------------------------------------------------------ training


def test_a_table_with_string_columns_trains_into_one_graph_of_raw_inputs(ignoring: Trained) -> None:
    model = ignoring.result["model"]
    assert model["inputSignature"] == [
        {"name": "a", "type": "float"},
        {"name": "city", "type": "string"},
        {"name": "b", "type": "float"},
        {"name": "size", "type": "string"},
    ]
    card = json.loads((ignoring.model_dir / "model-card.json").read_text())
    assert card["categorical"] == {"unknown": "ignore"}
    assert [(i["name"], i["type"]) for i in card["inputSignature"]["inputs"]] == [
        ("a", "float32"),
        ("city", "string"),
        ("b", "float32"),
        ("size", "string"),
    ]
    described = {f["name"]: f for f in card["inputSignature"]["features"]}
    assert described["city"]["categories"] == sorted(["Paris", "Lyon", "Nice", "Lille", "Brest"])
    assert described["size"]["categories"] == ["", "L", "M", "S"]  # a missing value is the empty string
    # Parity ran on the held-out rows and on them again with each string feature unseen in training.
    assert card["parity"]["rows"] == len(ignoring.x_test) + 2 * 5
    assert card["parity"]["labelMismatches"] == 0
    session = ort.InferenceSession(str(ignoring.model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in session.get_inputs()] == [
        ("a", "tensor(float)"),
        ("city", "tensor(string)"),
        ("b", "tensor(float)"),
        ("size", "tensor(string)"),
    ]


def test_an_unknown_category_policy_the_trainer_does_not_know_is_refused(tmp_path: Path) -> None:
    from kubeloop.runtime import train
    from kubeloop.runtime.jobio import DataError

    with pytest.raises(DataError, match=r"categorical\.unknown must be ignore or error"):
        train.train(
            {
                "namespace": "ns",
                "name": "t",
                "storeURI": f"file://{tmp_path}",
                "model": {"estimator": "LogisticRegression"},
                "categorical": {"unknown": "guess"},
            }
        )


# ------------------------------------------------------------------------------------------ serving


@pytest.mark.parametrize("which", ["ignoring", "refusing"])
def test_the_served_graph_predicts_what_the_scikit_learn_pipeline_predicts(
    which: str, request: pytest.FixtureRequest
) -> None:
    trained: Trained = request.getfixturevalue(which)
    model = Model(trained.model_dir, expected_sha256=trained.sha256)
    assert model.mixed and model.numeric == ["a", "b"] and model.categorical == ["city", "size"]
    codec = Codec(model)
    meta = orjson.loads(codec.metadata)
    assert meta["inputs"] == [
        {"name": "a", "datatype": "FP32", "shape": [-1, 1]},
        {"name": "city", "datatype": "BYTES", "shape": [-1, 1]},
        {"name": "b", "datatype": "FP32", "shape": [-1, 1]},
        {"name": "size", "datatype": "BYTES", "shape": [-1, 1]},
    ]
    rows = trained.x_test
    labels, probabilities = outputs(answer(codec, v2(rows)))
    assert labels == trained.pipeline.predict(rows).tolist()
    np.testing.assert_allclose(probabilities, trained.pipeline.predict_proba(rows), atol=1e-5)
    # V1, as objects of raw values: the same answer.
    instances = [dict(zip(FEATURES, r, strict=True)) for r in rows[FEATURES].itertuples(index=False)]
    doc = orjson.loads(
        codec.encode_v1(model.predict(codec.decode_v1(orjson.dumps({"instances": instances}))))
    )
    assert doc["predictions"] == labels


def test_a_regression_on_categories_serves_the_pipelines_values(tmp_path: Path) -> None:
    trained = train_categorical(tmp_path, "ignore", "GradientBoostingRegressor", target="a")
    model = Model(trained.model_dir)
    assert model.numeric == ["b"] and model.categorical == ["city", "size", "label"]
    codec = Codec(model)
    rows = trained.x_test
    tensors = [
        {
            "name": n,
            "datatype": "FP32" if n == "b" else "BYTES",
            "shape": [len(rows)],
            "data": rows[n].tolist(),
        }
        for n in ("label", "size", "b", "city")
    ]
    doc = answer(codec, orjson.dumps({"inputs": tensors}))
    assert doc["outputs"][0]["name"] == "predictions"
    np.testing.assert_allclose(
        doc["outputs"][0]["data"], trained.pipeline.predict(rows), rtol=1e-4, atol=1e-5
    )


def test_an_unseen_category_is_no_category_when_the_policy_is_ignore(ignoring: Trained) -> None:
    codec = Codec(Model(ignoring.model_dir))
    rows = ignoring.x_test.head(6).copy()
    rows["city"] = "Tokyo"
    labels, probabilities = outputs(answer(codec, v2(rows)))
    expected = ignoring.pipeline.predict_proba(rows)  # OneHotEncoder(handle_unknown="ignore"): all zeros
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    assert labels == ignoring.pipeline.predict(rows).tolist()


def test_an_unseen_category_is_a_400_naming_it_when_the_policy_is_error(refusing: Trained) -> None:
    model = Model(refusing.model_dir)
    codec = Codec(model)
    rows = refusing.x_test.head(4).copy()
    rows.loc[rows.index[2], "city"] = "Tokyo"
    with pytest.raises(ClientError) as e:
        codec.decode_v2(v2(rows))
    assert e.value.status == 400
    assert (
        "input 'city' row 2 is 'Tokyo'" in e.value.message
        and "spec.categorical.unknown is error" in e.value.message
    )
    assert "'Brest', 'Lille', 'Lyon', 'Nice', 'Paris'" in e.value.message
    with pytest.raises(ValueError, match="unknown categories"):
        refusing.pipeline.predict(rows)  # scikit-learn refuses it too
    # And so does the graph itself, should a request reach it.
    session = ort.InferenceSession(str(refusing.model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {c: rows[[c]].to_numpy(dtype=object if c in ("city", "size") else np.float32) for c in FEATURES}
    with pytest.raises(Exception, match="Unknown Category"):
        session.run(None, feed)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"city": {"datatype": "FP32"}},
            "input 'city' is categorical: its datatype is BYTES (strings), not 'FP32'",
        ),
        ({"a": {"datatype": "BYTES"}}, "input 'a' is numeric: its datatype is FP32"),
        (
            {"city": {"shape": [3, 1]}},
            "input 'city' has 3 rows, input 'a' 2: every input needs the same rows",
        ),
        ({"b": {"shape": [2, 2]}}, "input 'b' has shape [2, 2]; the model takes [-1, 1] (one column)"),
        ({"city": {"data": ["Paris", 3]}}, "input 'city' row 1 is 3, not a string: it is categorical"),
        (
            {"size": {"data": ["S", None]}},
            "input 'size' row 1 is null, not a string: it is categorical (send \"\" for",
        ),
        ({"city": {"data": ["Paris"]}}, "input 'city' has 1 values for 2 rows"),
        ({"a": {"data": [1.0, "x"]}}, "input 'a' data must be numbers only"),
        (
            {"b": {"data": [1.0, 1e39]}},
            "input 'b' row 1 is 1e+39 (beyond FP32 range); this model takes finite numbers only",
        ),
        ({"a": {"name": "colour"}}, "unknown input 'colour': the model's inputs are a, city, b, size"),
    ],
)
def test_a_bad_mixed_request_is_a_400_saying_what_is_wrong(
    ignoring: Trained, overrides: dict[str, Any], message: str
) -> None:
    codec = Codec(Model(ignoring.model_dir))
    with pytest.raises(ClientError) as e:
        codec.decode_v2(v2(ignoring.x_test.head(2), **overrides))
    assert e.value.status == 400 and message in e.value.message, e.value.message


def test_a_missing_input_and_a_repeated_one_are_named(ignoring: Trained) -> None:
    codec = Codec(Model(ignoring.model_dir))
    doc = orjson.loads(v2(ignoring.x_test.head(2)))
    with pytest.raises(ClientError, match=r"lacks inputs \['size'\]"):
        codec.decode_v2(orjson.dumps({"inputs": doc["inputs"][:3]}))
    with pytest.raises(ClientError, match="input 'a' is given twice"):
        codec.decode_v2(orjson.dumps({"inputs": [*doc["inputs"], doc["inputs"][0]]}))


def test_bytes_and_fp32_in_the_binary_extension_decode_as_their_json(ignoring: Trained) -> None:
    codec = Codec(Model(ignoring.model_dir))
    rows = ignoring.x_test.head(3)
    tensors, blobs = [], []
    for name in FEATURES:
        if name in ("city", "size"):
            blob = b"".join(len(s.encode()).to_bytes(4, "little") + s.encode() for s in rows[name])
            datatype = "BYTES"
        else:
            blob = rows[name].to_numpy(dtype="<f4").tobytes()
            datatype = "FP32"
        tensors.append(
            {"name": name, "datatype": datatype, "shape": [3], "parameters": {"binary_data_size": len(blob)}}
        )
        blobs.append(blob)
    header = orjson.dumps({"inputs": tensors})
    binary, _, _ = codec.decode_v2(header + b"".join(blobs), len(header))
    plain, _, _ = codec.decode_v2(v2(rows))
    assert isinstance(binary, Mixed) and isinstance(plain, Mixed)
    np.testing.assert_array_equal(binary.numbers, plain.numbers)
    assert binary.strings.tolist() == plain.strings.tolist()
    with pytest.raises(ClientError, match="bytes after the JSON header that no input declares"):
        codec.decode_v2(header + b"".join(blobs) + b"x", len(header))


class Written:
    inflight = 0

    def __init__(self) -> None:
        self.answers: list[tuple[int, bytes]] = []

    def write(self, status: int, body: bytes, *_: Any, **__: Any) -> None:
        self.answers.append((status, body))


def test_requests_that_share_a_micro_batch_get_their_own_rows(ignoring: Trained) -> None:
    import asyncio

    model = Model(ignoring.model_dir)
    codec = Codec(model)
    loop = asyncio.new_event_loop()
    try:
        batcher = Batcher(loop, model, codec, Metrics(model), max_rows=1000)
        conn = Written()
        parts = [ignoring.x_test.iloc[:3], ignoring.x_test.iloc[3:4], ignoring.x_test.iloc[4:9]]
        for rows in parts:
            x, _, _ = codec.decode_v2(v2(rows))
            batcher.submit(Item(conn, INFER_V2, "v2", True, 0.0, x))
        loop.call_soon(loop.stop)
        loop.run_forever()
    finally:
        loop.close()
    assert [status for status, _ in conn.answers] == [200, 200, 200]
    for (_, body), rows in zip(conn.answers, parts, strict=True):
        labels, _ = outputs(orjson.loads(body))
        assert labels == ignoring.pipeline.predict(rows).tolist()
    assert batcher.metrics.batch_sizes.counts[BATCH_OF_9] == 1  # one ONNX Runtime call for the three


BATCH_OF_9 = 4  # bucket (8, 16] of BATCH_BUCKETS


# ------------------------------------------------------------------------------------------ drift


def test_category_counters_cover_strings_and_feed_the_chi_square_check(ignoring: Trained) -> None:
    model = Model(ignoring.model_dir)
    codec = Codec(model)
    metrics = Metrics(model)
    rows = pd.concat([ignoring.x_test] * 5, ignore_index=True)  # the training mix of categories
    rows.loc[:9, "city"] = "Tokyo"  # ten unseen: the "other" bucket
    x, _, _ = codec.decode_v2(v2(rows))
    metrics.batch(x, model.predict(x))
    text = metrics.render().decode()
    tokyo = (
        f'kubeloop_feature_category_total{{model="{model.name}",feature="city",category="{stats.OTHER}"}} 10'
    )
    assert tokyo in text
    totals = analysis.Totals(analysis.parse_metrics(text).series)
    counts = totals.feature_counts(model.baseline)
    cities = model.baseline["features"]["city"]["categories"]
    assert counts["city"] == [*(float((rows["city"] == c).sum()) for c in cities), 10.0]
    # size: its missing values ("") are not counted, as the baseline counts them as nulls.
    assert sum(counts["size"]) == float((rows["size"] != "").sum())
    same = stats.judge_drift(model.baseline, counts, "chi2", min_samples=50)
    assert same.feature("city").verdict == "pass" and same.feature("city").method == "chi2"

    shifted = rows.copy()
    shifted["city"] = "Brest"  # every request from one city
    metrics = Metrics(model)
    x, _, _ = codec.decode_v2(v2(shifted))
    metrics.batch(x, model.predict(x))
    counts = analysis.Totals(analysis.parse_metrics(metrics.render().decode()).series).feature_counts(
        model.baseline
    )
    drifted = stats.judge_drift(model.baseline, counts, "chi2", min_samples=50)
    assert drifted.feature("city").verdict == "fail" and "city" in drifted.drifted
