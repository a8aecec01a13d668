"""A model with categorical features behind the real HTTP server: the runtime trains it from a CSV with
string columns, the server process serves the model directory, and clients send raw values — V2 tensors
of BYTES beside FP32 ones, V1 objects — alone and concurrently (micro-batches), and get what the
scikit-learn pipeline predicts. No Kubernetes needed (the server runs on 127.0.0.1), so no marker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests

from support.categorical import Trained, train_categorical
from support.serve import Server

STRINGS = ("city", "size")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return train_categorical(tmp_path_factory.mktemp("cities"), "error", "RandomForestClassifier")


@pytest.fixture(scope="module")
def server(trained: Trained) -> Iterator[Server]:
    s = Server(
        "--model-dir", str(trained.model_dir), "--expected-sha256", trained.sha256, "--model-name", "cities"
    )
    s.wait_for("ready")
    yield s
    assert s.stop() == 0


def tensors(rows: pd.DataFrame, names: list[str]) -> list[dict[str, Any]]:
    """One tensor per input the server's metadata names, typed as it says."""
    return [
        {
            "name": n,
            "datatype": "BYTES" if n in STRINGS else "FP32",
            "shape": [len(rows), 1],
            "data": rows[n].tolist(),
        }
        for n in names
    ]


def infer(server: Server, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{server.url}/v2/models/cities/infer", json=body, timeout=10)


def test_metadata_names_each_raw_input_and_its_datatype(server: Server) -> None:
    meta = requests.get(f"{server.url}/v2/models/cities", timeout=10).json()
    assert meta["inputs"] == [
        {"name": "a", "datatype": "FP32", "shape": [-1, 1]},
        {"name": "city", "datatype": "BYTES", "shape": [-1, 1]},
        {"name": "b", "datatype": "FP32", "shape": [-1, 1]},
        {"name": "size", "datatype": "BYTES", "shape": [-1, 1]},
    ]


def test_raw_strings_and_numbers_get_the_pipelines_predictions(server: Server, trained: Trained) -> None:
    names = [i["name"] for i in requests.get(f"{server.url}/v2/models/cities", timeout=10).json()["inputs"]]
    rows = trained.x_test
    answer = infer(server, {"id": "r1", "inputs": list(reversed(tensors(rows, names)))})  # any order
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert answer.json()["id"] == "r1"
    assert outputs["label"]["data"] == trained.pipeline.predict(rows).tolist()
    probabilities = np.array(outputs["probabilities"]["data"]).reshape(outputs["probabilities"]["shape"])
    np.testing.assert_allclose(probabilities, trained.pipeline.predict_proba(rows), atol=1e-5)

    instances = rows.head(5).to_dict(orient="records")
    v1 = requests.post(f"{server.url}/v1/models/cities:predict", json={"instances": instances}, timeout=10)
    assert v1.status_code == 200, v1.text
    assert v1.json()["predictions"] == trained.pipeline.predict(rows.head(5)).tolist()


def test_concurrent_requests_share_batches_and_each_gets_its_own_rows(
    server: Server, trained: Trained
) -> None:
    names = ["a", "city", "b", "size"]
    rows = trained.x_test
    chunks = [rows.iloc[i : i + 1 + i % 3] for i in range(0, 60)]

    def one(chunk: pd.DataFrame) -> tuple[int, list[Any]]:
        r = infer(server, {"inputs": tensors(chunk, names)})
        return r.status_code, r.json()["outputs"][0]["data"]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, chunks))
    for (status, labels), chunk in zip(answers, chunks, strict=True):
        assert status == 200 and labels == trained.pipeline.predict(chunk).tolist()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"city": {"datatype": "FP32", "data": [1.0, 2.0]}},
            "input 'city' is categorical: its datatype is BYTES",
        ),
        ({"a": {"datatype": "BYTES", "data": ["1", "2"]}}, "input 'a' is numeric: its datatype is FP32"),
        ({"size": {"shape": [1, 1], "data": ["S"]}}, "input 'size' has 1 rows, input 'a' 2"),
        (
            {"city": {"data": ["Paris", "Tokyo"]}},
            "input 'city' row 1 is 'Tokyo', a category the model did not see",
        ),
    ],
)
def test_a_wrong_datatype_shape_or_category_is_a_400_naming_the_input(
    server: Server, trained: Trained, change: dict[str, Any], message: str
) -> None:
    body = tensors(trained.x_test.head(2), ["a", "city", "b", "size"])
    body = [{**t, **change.get(t["name"], {})} for t in body]
    answer = infer(server, {"inputs": body})
    assert answer.status_code == 400 and message in answer.json()["error"], answer.text
    # The server keeps serving: a good request right after it is answered.
    good = infer(server, {"inputs": tensors(trained.x_test.head(2), ["a", "city", "b", "size"])})
    assert good.status_code == 200


def test_bytes_in_the_binary_extension_are_answered(server: Server, trained: Trained) -> None:
    rows = trained.x_test.head(4)
    inputs, blobs = [], []
    for name in ("a", "city", "b", "size"):
        if name in STRINGS:
            blob = b"".join(len(v.encode()).to_bytes(4, "little") + v.encode() for v in rows[name])
        else:
            blob = rows[name].to_numpy(dtype="<f4").tobytes()
        blobs.append(blob)
        datatype = "BYTES" if name in STRINGS else "FP32"
        inputs.append(
            {"name": name, "datatype": datatype, "shape": [4], "parameters": {"binary_data_size": len(blob)}}
        )
    header = json.dumps({"inputs": inputs}).encode()
    answer = requests.post(
        f"{server.url}/v2/models/cities/infer",
        data=header + b"".join(blobs),
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == trained.pipeline.predict(rows).tolist()


def test_metrics_count_each_category_of_the_string_inputs(server: Server, trained: Trained) -> None:
    rows = trained.x_test.head(3).copy()
    rows["city"] = "Brest"
    assert infer(server, {"inputs": tensors(rows, ["a", "city", "b", "size"])}).status_code == 200
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    lines = [line for line in text.splitlines() if line.startswith("kubeloop_feature_category_total")]
    assert any('feature="city",category="Brest"' in line for line in lines), lines
    assert any('feature="city",category="__other__"' in line for line in lines)
    assert any('feature="size"' in line for line in lines)
    assert any(
        line.startswith('kubeloop_feature_value_bucket{model="cities",feature="a"')
        for line in text.splitlines()
    )
