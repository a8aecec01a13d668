"""Models that are bad the ways production models are bad, for the canary tests; and publish_model, which
puts a model directory into the installed operator's artifact store.

Each bad model is derived from a good model directory by ONNX graph surgery: same input and outputs (names,
types, shapes), same card but for its sha256, so it loads, passes the server's digest check and its
self-test, and becomes Ready. Only traffic shows what is wrong:

- ``erroring``: ONNX Runtime fails the call when a row's feature is above a value (the server answers 500);
  every other row is predicted exactly as before.
- ``slow``: a chain of MatMuls on a constant runs once per ONNX Runtime call, calibrated on this machine
  to a chosen number of milliseconds; predictions are bit-identical.
- ``divergent``: class probabilities permuted (or one class always), regression values scaled and shifted:
  a valid model of the same card whose answers differ from the original's on every row.

The server micro-batches concurrent requests into one ONNX Runtime call (runtime/serve/batching.py), so
the ``erroring`` model fails every request that shares a call with a bad row, and the ``slow`` model's
delay is per call, not per request.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from kubeloop.builders.common import Mounts, store_env_from
from kubeloop.builders.settings import Settings
from kubeloop.contract import BASELINE_FILE, MODEL_FILE, MODEL_MARKER
from kubeloop.runtime.fetch import FILES
from kubeloop.runtime.serve.model import Model, cpu_limit, session_options
from support.e2e import Kubectl, operator_env, pod_output, start_pod

Kind = Literal["erroring", "slow", "divergent"]
# Every name this module adds to a graph starts with it, so it never meets a name of the original graph.
PREFIX = "kubeloop_bad_"
# A ConfigMap holds at most 1 MiB; what travels in one is kept under this (gzip-compressed) size.
UPLOAD_LIMIT = 900 * 1024
UPLOAD_DIR = "/var/run/kubeloop/upload"


def derive(src: Path, dest: Path, kind: Kind, **params: Any) -> str:
    """Write a bad model directory at ``dest`` derived from the model directory ``src``; return the new
    model.onnx's sha256 (also written into the card).

    Params: ``erroring`` ``feature`` (index or name, default 0) and ``above`` (default: the baseline's mean
    plus one standard deviation of that feature); ``slow`` ``milliseconds`` and ``size`` (of the square
    matrix, default 128); ``divergent`` ``shift`` (classes rotated, default 1) or ``constant_class`` (an
    index: always that class), and for regression ``scale`` (default -1) and ``offset`` (default 0).

    The result is loaded the way the server loads it (digest, card, self-test) before it is returned, so a
    bad model that the server would refuse never reaches a test: for ``erroring`` that means the
    self-test row (the baseline's means) must be a healthy one.
    """
    card: dict[str, Any] = json.loads((src / MODEL_MARKER).read_text())
    baseline: dict[str, Any] = (
        json.loads((src / BASELINE_FILE).read_text()) if (src / BASELINE_FILE).is_file() else {}
    )
    original = (src / MODEL_FILE).read_bytes()
    model = onnx.load_from_string(original)
    if kind == "erroring":
        bad = erroring(model, *_error_rule(card, baseline, **params))
    elif kind == "slow":
        bad = slow(model, **params)
    elif kind == "divergent":
        bad = divergent(model, card["task"], **params)
    else:
        raise ValueError(f"unknown kind {kind!r}: erroring, slow or divergent")
    onnx.checker.check_model(bad, full_check=True)
    data = bad.SerializeToString()
    sha = hashlib.sha256(data).hexdigest()
    dest.mkdir(parents=True, exist_ok=True)
    (dest / MODEL_FILE).write_bytes(data)
    if baseline:
        shutil.copyfile(src / BASELINE_FILE, dest / BASELINE_FILE)
    derived = {"sha256": hashlib.sha256(original).hexdigest(), "kind": kind, "params": params}
    (dest / MODEL_MARKER).write_text(json.dumps({**card, "sha256": sha, "derivedFrom": derived}))
    Model(dest, expected_sha256=sha)  # raises ModelLoadError (with the server's reason) if it would
    return sha


def _error_rule(
    card: dict[str, Any], baseline: dict[str, Any], feature: int | str = 0, above: float | None = None
) -> tuple[int, float]:
    features: list[str] = card["features"]
    index = features.index(feature) if isinstance(feature, str) else feature
    name = features[index]
    summary = (baseline.get("features") or {}).get(name) or {}
    if above is None:
        if summary.get("mean") is None:
            raise ValueError(f"no baseline statistics for {name!r}: give `above` explicitly")
        above = float(summary["mean"]) + float(summary.get("std") or 1.0)
    # The server's self-test predicts the baseline's means (zeros without a baseline): it must be healthy.
    # Compared in float32, as the graph compares them.
    self_test_value = float(summary.get("mean") or 0.0)
    if np.float32(self_test_value) > np.float32(above):
        raise ValueError(
            f"the self-test row has {name}={self_test_value}, above {above}: the model would never be Ready"
        )
    return index, above


def erroring(model: onnx.ModelProto, feature: int, above: float) -> onnx.ModelProto:
    """ONNX Runtime fails the whole call when any row has ``X[:, feature] > above`` (in float32); other
    rows are predicted as before.

    The failure is a Gather out of bounds: the index is 1 for a bad row, and the data has one element. Its
    value (0.0 for a good row) is added to the input, so every output depends on it and nothing of the
    original graph can run before the check.
    """
    x = _input_name(model)
    guarded = f"{PREFIX}input"
    nodes = [
        helper.make_node("Gather", [x, f"{PREFIX}feature"], [f"{PREFIX}column"], axis=1),
        helper.make_node("Greater", [f"{PREFIX}column", f"{PREFIX}above"], [f"{PREFIX}is_bad"]),
        helper.make_node("Cast", [f"{PREFIX}is_bad"], [f"{PREFIX}index"], to=TensorProto.INT64),
        helper.make_node("Gather", [f"{PREFIX}zero", f"{PREFIX}index"], [f"{PREFIX}guard"], axis=0),
        helper.make_node("Add", [x, f"{PREFIX}guard"], [guarded]),
    ]
    initializers = [
        numpy_helper.from_array(np.array([feature], dtype=np.int64), f"{PREFIX}feature"),
        numpy_helper.from_array(np.array(above, dtype=np.float32), f"{PREFIX}above"),
        numpy_helper.from_array(np.zeros(1, dtype=np.float32), f"{PREFIX}zero"),
    ]
    return _before_input(model, nodes, initializers, guarded)


def slow(model: onnx.ModelProto, milliseconds: float, size: int = 128) -> onnx.ModelProto:
    """Adds ``milliseconds`` of real compute to every ONNX Runtime call (calibrated here, with the server's
    session options for this machine's CPUs); the outputs are bit-identical to the original's.

    The chain starts from a zero computed from the input (so ONNX Runtime cannot fold it into a constant
    at load), multiplies by an orthogonal matrix (values stay bounded, so the chain's result is finite and
    times zero is zero) and adds that zero to the input.
    """
    matrix = _orthogonal(size)
    count = max(1, round(milliseconds / _matmul_milliseconds(matrix)))
    x = _input_name(model)
    m, delayed = f"{PREFIX}matrix", f"{PREFIX}input"
    nodes = [
        helper.make_node("ReduceMin", [x], [f"{PREFIX}input_min"], keepdims=0),
        helper.make_node("Mul", [f"{PREFIX}input_min", f"{PREFIX}zero"], [f"{PREFIX}start"]),
        helper.make_node("Add", [m, f"{PREFIX}start"], [f"{PREFIX}chain_0"]),
    ]
    nodes += [
        helper.make_node("MatMul", [f"{PREFIX}chain_{i}", m], [f"{PREFIX}chain_{i + 1}"])
        for i in range(count)
    ]
    nodes += [
        helper.make_node("ReduceMin", [f"{PREFIX}chain_{count}"], [f"{PREFIX}chain_min"], keepdims=0),
        helper.make_node("Mul", [f"{PREFIX}chain_min", f"{PREFIX}zero"], [f"{PREFIX}delay"]),
        helper.make_node("Add", [x, f"{PREFIX}delay"], [delayed]),
    ]
    initializers = [
        numpy_helper.from_array(matrix, m),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), f"{PREFIX}zero"),
    ]
    return _before_input(model, nodes, initializers, delayed)


def divergent(
    model: onnx.ModelProto,
    task: str,
    shift: int = 1,
    constant_class: int | None = None,
    scale: float = -1.0,
    offset: float = 0.0,
) -> onnx.ModelProto:
    """Answers that differ from the original's on every row, from a model still valid for the same card.

    A classifier's probability columns are rotated by ``shift`` (row i's most likely class moves from c to
    c - shift), or, with ``constant_class``, are that class's one-hot row; the label output is rebuilt from
    the new probabilities with the classifier's own class labels, so both outputs agree. A regressor's
    values become ``value * scale + offset``.
    """
    floats = [o.name for o in model.graph.output if o.type.tensor_type.elem_type == TensorProto.FLOAT]
    others = [o.name for o in model.graph.output if o.type.tensor_type.elem_type != TensorProto.FLOAT]
    if task == "regression":
        if len(model.graph.output) != 1:
            raise ValueError(f"a regressor with one output was expected, not {len(model.graph.output)}")
        values = floats[0]
        nodes = [
            helper.make_node("Mul", [f"{PREFIX}values", f"{PREFIX}scale"], [f"{PREFIX}scaled"]),
            helper.make_node("Add", [f"{PREFIX}scaled", f"{PREFIX}offset"], [values]),
        ]
        initializers = [
            numpy_helper.from_array(np.array(scale, dtype=np.float32), f"{PREFIX}scale"),
            numpy_helper.from_array(np.array(offset, dtype=np.float32), f"{PREFIX}offset"),
        ]
        return _after_outputs(model, {values: f"{PREFIX}values"}, nodes, initializers)
    if len(floats) != 1 or len(others) != 1:
        raise ValueError(
            "a classifier with a label and one probability tensor (skl2onnx, no ZipMap) was expected, not "
            f"{[o.name for o in model.graph.output]}"
        )
    probabilities, label = floats[0], others[0]
    labels = _class_labels(model)
    n = len(labels)
    p_in, p_out = f"{PREFIX}probabilities", f"{PREFIX}diverged"
    if constant_class is None:
        order = np.array([(i + shift) % n for i in range(n)], dtype=np.int64)
        if shift % n == 0:
            raise ValueError(f"shift {shift} leaves {n} classes where they are")
        nodes = [helper.make_node("Gather", [p_in, f"{PREFIX}order"], [p_out], axis=1)]
        initializers = [numpy_helper.from_array(order, f"{PREFIX}order")]
    else:
        one_hot = np.eye(n, dtype=np.float32)[constant_class]
        nodes = [
            helper.make_node("Mul", [p_in, f"{PREFIX}zero"], [f"{PREFIX}zeros"]),
            helper.make_node("Add", [f"{PREFIX}zeros", f"{PREFIX}one_hot"], [p_out]),
        ]
        initializers = [
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), f"{PREFIX}zero"),
            numpy_helper.from_array(one_hot, f"{PREFIX}one_hot"),
        ]
    nodes += [
        helper.make_node("Identity", [p_out], [probabilities]),
        # Same rule as the server's: the class with the highest probability, the first on ties.
        helper.make_node("ArgMax", [p_out], [f"{PREFIX}argmax"], axis=1, keepdims=0),
        helper.make_node("Gather", [f"{PREFIX}labels", f"{PREFIX}argmax"], [label], axis=0),
    ]
    initializers.append(numpy_helper.from_array(labels, f"{PREFIX}labels"))
    return _after_outputs(model, {probabilities: p_in, label: f"{PREFIX}label"}, nodes, initializers)


def _input_name(model: onnx.ModelProto) -> str:
    initializers = {i.name for i in model.graph.initializer}
    inputs: list[str] = [i.name for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ValueError(f"a model with one input was expected, not {inputs}")
    return inputs[0]


def _before_input(
    model: onnx.ModelProto, nodes: list[onnx.NodeProto], initializers: list[TensorProto], replacement: str
) -> onnx.ModelProto:
    """A copy of ``model`` whose nodes read ``replacement`` (made by ``nodes`` from the input) instead of
    the input itself."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    x = _input_name(model)
    for node in out.graph.node:
        node.input[:] = [replacement if name == x else name for name in node.input]
    original = list(out.graph.node)
    del out.graph.node[:]
    out.graph.node.extend([*nodes, *original])
    out.graph.initializer.extend(initializers)
    return out


def _after_outputs(
    model: onnx.ModelProto,
    renames: dict[str, str],
    nodes: list[onnx.NodeProto],
    initializers: list[TensorProto],
) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs in ``renames`` are made by ``nodes`` (appended) from the
    original values, which are renamed inside the graph."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for node in out.graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
        node.output[:] = [renames.get(name, name) for name in node.output]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(initializers)
    return out


def _class_labels(model: onnx.ModelProto) -> np.ndarray[Any, Any]:
    """The class labels of the graph's ai.onnx.ml classifier, in the order of its probability columns."""
    found = [
        attribute
        for node in model.graph.node
        for attribute in node.attribute
        if attribute.name in ("classlabels_int64s", "classlabels_ints", "classlabels_strings")
    ]
    if len(found) != 1:
        raise ValueError(f"one ai.onnx.ml classifier with class labels was expected, found {len(found)}")
    attribute = found[0]
    if attribute.name == "classlabels_strings":
        return np.array([s.decode() for s in attribute.strings], dtype=object)
    return np.array(list(attribute.ints), dtype=np.int64)


def _orthogonal(size: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((size, size)))
    return q.astype(np.float32)


def _matmul_milliseconds(matrix: np.ndarray[Any, np.dtype[np.float32]], chain: int = 200) -> float:
    """Milliseconds of one MatMul of the chain, timed in ONNX Runtime with the options the server would
    use on this machine."""
    import onnxruntime as ort

    m = numpy_helper.from_array(matrix, "m")
    size = matrix.shape[0]
    nodes = [helper.make_node("MatMul", ["v0", "m"], ["v1"])]
    nodes += [helper.make_node("MatMul", [f"v{i}", "m"], [f"v{i + 1}"]) for i in range(1, chain)]
    graph = helper.make_graph(
        nodes,
        "calibration",
        [helper.make_tensor_value_info("v0", TensorProto.FLOAT, [size, size])],
        [helper.make_tensor_value_info(f"v{chain}", TensorProto.FLOAT, [size, size])],
        [m],
    )
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(
        probe.SerializeToString(), session_options(cpu_limit()), providers=["CPUExecutionProvider"]
    )
    feed = {"v0": matrix}
    session.run(None, feed)  # the first run allocates
    runs = []
    for _ in range(7):
        t0 = time.perf_counter()
        session.run(None, feed)
        runs.append(time.perf_counter() - t0)
    # The fastest run: the cost on an idle machine (other processes on the 2-core development machine
    # stretch the others, and would make every later measurement of the model look on time).
    return min(runs) * 1000 / chain


# --- publishing into the operator's store -------------------------------------------------------------------

# Runs in a pod that has the store as the operator's pods have it: unpacks the uploaded files and writes
# them with the store's own put_dir (the card, the marker, last), under models/<sha256> as the trainer does.
PUBLISH_SCRIPT = """
import gzip, hashlib, json, sys, tempfile
from pathlib import Path
from kubeloop.runtime.store import join, open_store
uri, upload, marker = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
with tempfile.TemporaryDirectory() as tmp:
    for packed in upload.glob("*.gz"):
        (Path(tmp) / packed.name[:-3]).write_bytes(gzip.decompress(packed.read_bytes()))
    sha = hashlib.sha256((Path(tmp) / "model.onnx").read_bytes()).hexdigest()
    store = open_store(uri)
    prefix = join("models", sha)
    store.put_dir(prefix, tmp, marker=marker)
print(json.dumps({"uri": store.uri(prefix), "sha256": sha}))
"""


def upload_files(model_dir: Path) -> dict[str, str]:
    """ConfigMap binaryData for a model directory: each file gzip-compressed, base64-encoded.

    The files are those the server pods' fetch copies; the card must name model.onnx's digest (the server
    would refuse it otherwise), and the whole must fit a ConfigMap.
    """
    missing = [name for name in FILES if not (model_dir / name).is_file()]
    if missing:
        raise ValueError(f"{model_dir} lacks {missing}: the server pods' fetch needs {list(FILES)}")
    sha = hashlib.sha256((model_dir / MODEL_FILE).read_bytes()).hexdigest()
    card_sha = json.loads((model_dir / MODEL_MARKER).read_text()).get("sha256")
    if card_sha != sha:
        raise ValueError(f"{model_dir / MODEL_MARKER} names sha256 {card_sha}, but {MODEL_FILE} has {sha}")
    packed = {name: gzip.compress((model_dir / name).read_bytes(), mtime=0) for name in FILES}
    size = sum(len(data) for data in packed.values())
    if size > UPLOAD_LIMIT:
        raise ValueError(
            f"{model_dir} is {size // 1024} KiB gzip-compressed; a model travels in a ConfigMap, which takes "
            f"at most {UPLOAD_LIMIT // 1024} KiB here: use a smaller model"
        )
    return {f"{name}.gz": base64.b64encode(data).decode() for name, data in packed.items()}


def publish_model(kubectl: Kubectl, namespace: str, model_dir: Path, image: str) -> tuple[str, str]:
    """Copy ``model_dir`` into the installed operator's artifact store at models/<sha256>/, as the trainer
    writes a model; return (uri, sha256), the values a ModelDeployment's ``model`` takes.

    The files travel in a ConfigMap to a one-shot pod in ``namespace`` (``image``: one with the runtime,
    e.g. the trainer's) that mounts the store and gets its credentials exactly as the operator's pods do:
    the operator Deployment's settings through the operator's own builders. ConfigMap and pod are deleted
    afterwards, whatever happened.
    """
    files = upload_files(model_dir)
    settings = Settings.from_env(operator_env(kubectl))
    name = f"publish-model-{uuid.uuid4().hex[:8]}"
    mounts = Mounts()
    mounts.store(settings.store_uri)
    mounts.add({"name": "upload", "configMap": {"name": name}}, UPLOAD_DIR, True)
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "binaryData": files,
    }
    # create, not apply: apply would copy the whole object into an annotation, which takes 256 KiB at most.
    kubectl("create", "-f", "-", input=json.dumps(config_map))
    try:
        start_pod(
            kubectl,
            namespace,
            name,
            image,
            ["python3", "-c", PUBLISH_SCRIPT, settings.store_uri, UPLOAD_DIR, MODEL_MARKER],
            volumes=mounts.volumes,
            volume_mounts=mounts.mounts,
            env_from=store_env_from(settings),
        )
        out = pod_output(kubectl, namespace, name, timeout=180)
    finally:
        kubectl("delete", "pod", name, "-n", namespace, "--wait=false", "--ignore-not-found", check=False)
        kubectl("delete", "configmap", name, "-n", namespace, "--ignore-not-found", check=False)
    published = json.loads(out.strip().splitlines()[-1])
    return str(published["uri"]), str(published["sha256"])
