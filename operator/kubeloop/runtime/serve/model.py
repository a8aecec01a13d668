"""Load a model directory, prove it is the model that was asked for, and run it.

A model directory holds ``model.onnx``, ``model-card.json`` and optionally ``baseline.json``
(docs/contracts.md). Loading fails with :class:`ModelLoadError` (a message for a person) when the digest
does not match, the card does not describe the graph, or the self-test prediction is not sane: a server
with such a model must never become ready.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from kubeloop.contract import BASELINE_FILE, MODEL_FILE, MODEL_MARKER

# A validated request matrix: float32, shape (rows, features).
Rows = npt.NDArray[np.float32]
# Strings of the categorical features, shape (rows, categorical features): ONNX Runtime takes object arrays.
Strings = npt.NDArray[np.object_]


class Mixed:
    """A validated request of a model with categorical features (one graph input per feature).

    ``numbers``: float32, (rows, numeric features); ``strings``: (rows, categorical features); each in the
    card's feature order (``Model.numeric`` and ``Model.categorical``).
    """

    __slots__ = ("numbers", "strings")

    def __init__(self, numbers: Rows, strings: Strings) -> None:
        self.numbers, self.strings = numbers, strings

    def __len__(self) -> int:
        return len(self.strings)


# What a decoded request hands to the model: one matrix, or numbers and strings by column.
Inputs = Rows | Mixed


def concat(xs: list[Inputs]) -> Inputs:
    """The rows of several requests as one call's input (all of one model, so all of one kind)."""
    if len(xs) == 1:
        return xs[0]
    if isinstance(xs[0], Mixed):
        mixed = [x for x in xs if isinstance(x, Mixed)]
        return Mixed(np.concatenate([x.numbers for x in mixed]), np.concatenate([x.strings for x in mixed]))
    return np.concatenate(xs)  # type: ignore[arg-type]  # all Rows: the model has one kind of input


class ModelLoadError(Exception):
    """The model cannot be served; ``reason`` is one CamelCase word for a status condition."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Prediction(NamedTuple):
    """One ORT call's answer: class indices + probabilities (classification) or values (regression).

    A NamedTuple rather than a dataclass: one is made per request when a micro-batch is split.
    """

    labels: npt.NDArray[np.intp] | None  # indices into ModelCard.classes, shape (n,)
    probabilities: npt.NDArray[np.float32] | None  # shape (n, classes)
    values: npt.NDArray[np.float32] | None  # shape (n,)

    def rows(self, start: int, stop: int) -> Prediction:
        labels, probabilities, values = self
        return Prediction(
            None if labels is None else labels[start:stop],
            None if probabilities is None else probabilities[start:stop],
            None if values is None else values[start:stop],
        )


@dataclass(frozen=True)
class ModelCard:
    name: str
    task: str  # "classification" | "regression"
    features: list[str]
    classes: list[object] = field(default_factory=list)  # JSON values, as the trainer wrote them
    sha256: str | None = None
    # Trees route NaN somewhere, but nothing in training guarantees that is meaningful: refuse by default.
    allow_nan: bool = False
    # The categories each categorical feature was trained on (inputSignature.features), and what the model
    # does with another one: "ignore" (the graph encodes it as none) or "error" (the server answers 400).
    categories: dict[str, list[str]] = field(default_factory=dict)
    unknown: str = "ignore"

    @classmethod
    def parse(cls, doc: object) -> ModelCard:
        if not isinstance(doc, dict):
            raise ModelLoadError("InvalidModelCard", f"{MODEL_MARKER} must be a JSON object")
        task = doc.get("task")
        if task not in ("classification", "regression"):
            raise ModelLoadError(
                "InvalidModelCard", f"{MODEL_MARKER}: task must be classification or regression, not {task!r}"
            )
        features = doc.get("features")
        if not isinstance(features, list) or not features or not all(isinstance(f, str) for f in features):
            raise ModelLoadError(
                "InvalidModelCard", f"{MODEL_MARKER}: features must be a non-empty list of names"
            )
        classes = doc.get("classes") or []
        if task == "classification" and (not isinstance(classes, list) or len(classes) < 2):
            raise ModelLoadError(
                "InvalidModelCard", f"{MODEL_MARKER}: a classifier needs at least two classes"
            )
        signature = doc.get("inputSignature")
        described = signature.get("features") if isinstance(signature, dict) else None
        categories = {
            str(f["name"]): [str(c) for c in f["categories"]]
            for f in (described if isinstance(described, list) else [])
            if isinstance(f, dict) and isinstance(f.get("categories"), list)
        }
        policy = doc.get("categorical")
        unknown = policy.get("unknown", "ignore") if isinstance(policy, dict) else "ignore"
        if unknown not in ("ignore", "error"):
            raise ModelLoadError(
                "InvalidModelCard",
                f"{MODEL_MARKER}: categorical.unknown must be ignore or error, not {unknown!r}",
            )
        return cls(
            # The trainer's card names the TrainingJob; the server's --model-name usually overrides both.
            name=str(doc.get("name") or doc.get("trainingJob") or "model"),
            task=task,
            features=features,
            classes=classes,
            sha256=doc.get("sha256"),
            allow_nan=bool(doc.get("allow_nan", False)),
            categories=categories,
            unknown=unknown,
        )


def cpu_limit() -> float:
    """CPUs this process may use: the cgroup quota (a pod's CPU limit) or, without one, the affinity mask."""
    cpus = float(len(os.sched_getaffinity(0)))
    try:  # cgroup v2: "max 100000" or "200000 100000"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            return min(cpus, int(quota) / int(period))
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota_us > 0:
            return min(cpus, quota_us / period_us)
    except (OSError, ValueError):
        pass
    return cpus


def session_options(cpus: float, threads: int | None = None) -> ort.SessionOptions:
    """ORT options for a pod with ``cpus`` CPUs.

    The event loop needs one core of its own. Micro-batches are small, so below three CPUs one ORT thread
    (run on the calling thread, no pool hand-off) is fastest; above, the spare cores go to intra-op work.
    Spinning is off: an ORT worker spinning for work steals the core the event loop needs.
    """
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or (1 if cpus < 3 else min(8, math.floor(cpus) - 1))
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Model:
    """An ONNX model ready to answer ``predict(X)``: one 2-D float input (``mixed`` False), or one input
    per feature, float or string, each of shape [rows, 1] (``mixed``: the trainer's categorical models)."""

    def __init__(
        self,
        model_dir: Path,
        expected_sha256: str | None = None,
        threads: int | None = None,
        name: str | None = None,
    ) -> None:
        path = model_dir / MODEL_FILE
        if not path.is_file():
            raise ModelLoadError("ModelNotFound", f"{path} does not exist")
        try:
            self.card = ModelCard.parse(json.loads((model_dir / MODEL_MARKER).read_text()))
        except (OSError, ValueError) as e:
            raise ModelLoadError("InvalidModelCard", f"cannot read {model_dir / MODEL_MARKER}: {e}") from e
        self.sha256 = sha256_file(path)
        for what, want in (("the expected digest", expected_sha256), (MODEL_MARKER, self.card.sha256)):
            if want and want.lower() != self.sha256:
                raise ModelLoadError(
                    "DigestMismatch", f"{MODEL_FILE} has sha256 {self.sha256}, but {what} is {want.lower()}"
                )
        self.name = name or self.card.name
        # The card's "version" is its format's; the model's version is its digest (as in status).
        self.version = self.sha256[:16]
        self.baseline = _read_baseline(model_dir / BASELINE_FILE)
        self.cpus = cpu_limit()
        try:
            self.session = ort.InferenceSession(
                str(path), session_options(self.cpus, threads), providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # ORT raises its own exception types for a corrupt or unsupported graph
            raise ModelLoadError("InvalidModel", f"ONNX Runtime cannot load {MODEL_FILE}: {e}") from e
        # InferenceSession.run re-checks the feed's names in Python on every call (3 of its 10 us for a
        # 1-row forest); the codec has checked the input already, so call the C++ session when it is there.
        self._run = getattr(self.session, "_sess", self.session).run
        self._bind_signature()
        self.self_test()

    @property
    def n_features(self) -> int:
        return len(self.card.features)

    @property
    def classification(self) -> bool:
        return self.card.task == "classification"

    def _bind_signature(self) -> None:
        inputs = self.session.get_inputs()
        self.mixed = len(inputs) != 1 or inputs[0].type != "tensor(float)"
        # Mixed models: the features fed from the float matrix and from the strings, in card order.
        self.numeric: list[str] = []
        self.categorical: list[str] = []
        if self.mixed:
            self._bind_columns(inputs)
        elif len(inputs[0].shape) != 2:
            got = [(i.name, i.type, i.shape) for i in inputs]
            raise ModelLoadError(
                "UnsupportedSignature",
                f"the server needs one 2-D float input or one [rows, 1] float or string input per "
                f"feature; the model has {got}",
            )
        self.input_name: str = inputs[0].name
        # A graph exported with a fixed batch size takes exactly that many rows per call (no batching).
        rows = inputs[0].shape[0]
        self.fixed_rows: int | None = rows if isinstance(rows, int) and rows > 0 else None
        width = inputs[0].shape[1]
        if not self.mixed and isinstance(width, int) and width != self.n_features:
            raise ModelLoadError(
                "InvalidModelCard",
                f"{MODEL_MARKER} lists {self.n_features} features, the model's "
                f"input '{self.input_name}' takes {width}",
            )
        outputs = self.session.get_outputs()
        if self.classification:
            # skl2onnx: [label, probabilities]; probabilities are a tensor, or a list of dicts with ZipMap.
            probs = [o for o in outputs if o.type == "tensor(float)" or o.type.startswith("seq(map")]
            if not probs:
                raise ModelLoadError("UnsupportedSignature", "a classifier needs a probability output")
            self._output = probs[-1].name
            self._zipmap = probs[-1].type.startswith("seq(map")
        else:
            self._output = outputs[0].name
            self._zipmap = False

    def _bind_columns(self, inputs: list[Any]) -> None:
        """One input per feature of the card, named like it, float or string, one column each."""
        got = [(i.name, i.type, i.shape) for i in inputs]
        by_name = {i.name: i for i in inputs}
        if sorted(by_name) != sorted(self.card.features) or len(inputs) != self.n_features:
            raise ModelLoadError(
                "InvalidModelCard",
                f"{MODEL_MARKER} lists features {self.card.features}, the model's inputs are {got}",
            )
        for feature in self.card.features:
            node = by_name[feature]
            if len(node.shape) != 2 or node.shape[1] not in (1, None) or isinstance(node.shape[1], str):
                raise ModelLoadError(
                    "UnsupportedSignature",
                    f"input '{feature}' must have shape [rows, 1]; the model has {got}",
                )
            if node.type == "tensor(float)":
                self.numeric.append(feature)
            elif node.type == "tensor(string)":
                self.categorical.append(feature)
            else:
                raise ModelLoadError(
                    "UnsupportedSignature",
                    f"input '{feature}' is {node.type}; the server feeds float and string inputs",
                )

    def predict(self, x: Inputs) -> Prediction:
        """``x`` is float32 of shape (rows, features), or ``Mixed`` for a mixed model; already validated."""
        if isinstance(x, Mixed):
            feed: dict[str, object] = {
                f: np.ascontiguousarray(x.numbers[:, j : j + 1]) for j, f in enumerate(self.numeric)
            }
            feed.update(
                (f, np.ascontiguousarray(x.strings[:, j : j + 1])) for j, f in enumerate(self.categorical)
            )
            out = self._run([self._output], feed, None)[0]
        else:
            out = self._run([self._output], {self.input_name: x}, None)[0]
        if not self.classification:
            return Prediction(None, None, np.asarray(out, dtype=np.float32).reshape(len(x)))
        if self._zipmap:  # slow path kept only so that an exported ZipMap model still serves
            keys = list(out[0].keys())
            out = np.array([[row[k] for k in keys] for row in out], dtype=np.float32)
        # Same rule as scikit-learn's predict(): the class with the highest probability, first on ties.
        return Prediction(out.argmax(axis=1), out, None)

    def self_test(self) -> None:
        """One prediction on a typical row (the baseline's means, else zeros) must give a sane answer."""
        described = self.baseline.get("features", {})
        n = self.fixed_rows or 2  # two rows: batching works
        row = [
            float((described.get(f) or {}).get("mean") or 0.0)
            for f in (self.numeric if self.mixed else self.card.features)
        ]
        numbers = np.array([row] * n, dtype=np.float32).reshape(n, len(row))
        x: Inputs = numbers
        if self.mixed:  # a category the model knows, else the baseline's most frequent one, else "missing"
            typical = [
                ((self.card.categories.get(f) or (described.get(f) or {}).get("categories") or [""])[0])
                for f in self.categorical
            ]
            x = Mixed(numbers, np.array([typical] * n, dtype=object).reshape(n, len(typical)))
        try:
            pred = self.predict(x)
        except Exception as e:
            raise ModelLoadError("SelfTestFailed", f"the self-test prediction failed: {e}") from e
        if self.classification:
            assert pred.probabilities is not None
            n_classes = pred.probabilities.shape[1]
            if n_classes != len(self.card.classes):
                raise ModelLoadError(
                    "InvalidModelCard",
                    f"{MODEL_MARKER} lists {len(self.card.classes)} classes, the model predicts {n_classes}",
                )
            ok = bool(
                np.isfinite(pred.probabilities).all()
                and np.allclose(pred.probabilities.sum(axis=1), 1.0, atol=1e-3)
            )
        else:
            assert pred.values is not None
            ok = bool(np.isfinite(pred.values).all())
        if not ok:
            raise ModelLoadError(
                "SelfTestFailed", "the self-test prediction is not finite (or probabilities do not sum to 1)"
            )


def _read_baseline(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
    except ValueError as e:
        raise ModelLoadError("InvalidBaseline", f"{path} is not valid JSON: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("features", {}), dict):
        raise ModelLoadError("InvalidBaseline", f"{path} must be an object with a 'features' object")
    return doc
