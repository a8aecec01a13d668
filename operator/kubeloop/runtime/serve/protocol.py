"""Open Inference Protocol (V2) and V1 ``:predict`` bodies: strict decoding, fast encoding.

Decoding turns a request body into a float32 matrix of shape (rows, features) — or, for a model with
categorical features, ``Mixed`` numbers and strings from one tensor per feature (FP32 or BYTES, as the
model's signature says) — or raises :class:`ClientError` saying what was wrong. Encoding is done by
:class:`Codec`, which renders the parts of every answer that never change once, when the model is loaded.
"""

from __future__ import annotations

import json
import math

import numpy as np
import numpy.typing as npt
import orjson

from .model import Inputs, Mixed, Model, Prediction, Rows, Strings

# JSON carries every number as a double; integer types are accepted because a client with an int array
# (e.g. tritonclient with np.int64) sends them. BOOL and BYTES are not numbers for this model.
NUMERIC_DATATYPES = frozenset(
    {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
# Outputs a V2 request asked for, each with "send as binary"; None: all of them, as JSON (the fast path).
Wanted = tuple[tuple[str, bool], ...] | None
# Dtypes that the binary tensor extension may carry, by V2 datatype.
BINARY_DTYPES = {
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
}


# Known categories named in an "unknown category" answer, at most.
SHOWN_CATEGORIES = 10


class ClientError(Exception):
    """A request the client got wrong: answered ``status`` with ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _loads(body: bytes) -> object:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        # orjson refuses NaN/Infinity literals (which Python's json.dumps writes): parse them, so the
        # client hears "NaN is not allowed in feature x" rather than "malformed JSON".
        try:
            return json.loads(body)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise ClientError(400, f"malformed JSON: {e}") from None


class Codec:
    """Decodes requests for one model and encodes its answers."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.n_features = model.n_features
        self.input_name = model.input_name
        self.fixed_rows = model.fixed_rows
        self.expected_shape = f"[{self.fixed_rows or -1}, {self.n_features}]"
        self.allow_nan = model.card.allow_nan
        classes = model.card.classes
        self.label_datatype = "INT64" if all(isinstance(c, int) for c in classes) else "BYTES"
        self._class_json = [orjson.dumps(c) for c in classes]
        # BYTES in the binary extension: each element is a 4-byte little-endian length, then the bytes.
        self._class_binary = [len(s).to_bytes(4, "little") + s for s in (str(c).encode() for c in classes)]
        self.output_names = ("label", "probabilities") if model.classification else ("predictions",)
        self._feature_index = {f: i for i, f in enumerate(model.card.features)}
        # Mixed models: each feature's input is a column of the numbers (False) or of the strings (True).
        self._columns = {f: (False, j) for j, f in enumerate(model.numeric)}
        self._columns.update({f: (True, j) for j, f in enumerate(model.categorical)})
        # With unknown: error, the categories the model knows: an unknown one is the client's error (400),
        # not the graph's (ONNX Runtime would fail the whole micro-batch).
        self._known = (
            {f: frozenset(model.card.categories[f]) for f in model.categorical if f in model.card.categories}
            if model.card.unknown == "error"
            else {}
        )
        inputs = (
            [
                {
                    "name": f,
                    "datatype": "BYTES" if self._columns[f][0] else "FP32",
                    "shape": [self.fixed_rows or -1, 1],
                }
                for f in model.card.features
            ]
            if model.mixed
            else [
                {
                    "name": self.input_name,
                    "datatype": "FP32",
                    "shape": [self.fixed_rows or -1, self.n_features],
                }
            ]
        )
        head = {"model_name": model.name, "model_version": model.version}
        self._v2_head = orjson.dumps(head)[:-1]  # '{"model_name":...,"model_version":...' reused every time
        self.metadata = orjson.dumps(
            {
                "name": model.name,
                "versions": [model.version],
                "platform": "onnxruntime",
                "sha256": model.sha256,
                "task": model.card.task,
                "features": model.card.features,
                "classes": classes,
                "inputs": inputs,
                "outputs": (
                    [
                        {"name": "label", "datatype": self.label_datatype, "shape": [-1]},
                        {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(classes)]},
                    ]
                    if model.classification
                    else [{"name": "predictions", "datatype": "FP32", "shape": [-1]}]
                ),
            }
        )

    # ------------------------------------------------------------------------------------------ decode

    def decode_v2(self, body: bytes, json_length: int | None = None) -> tuple[Inputs, object, Wanted]:
        """Returns (rows, request id, outputs asked for). ``json_length``: the binary tensor extension."""
        binary = b""
        if json_length is not None:
            if json_length > len(body):
                raise ClientError(
                    400, f"Inference-Header-Content-Length {json_length} is larger than the body"
                )
            body, binary = body[:json_length], body[json_length:]
        doc = _loads(body)
        if type(doc) is not dict:
            raise ClientError(400, "the request body must be a JSON object with 'inputs'")
        inputs = doc.get("inputs")
        if type(inputs) is not list or not inputs:
            raise ClientError(400, "'inputs' must be a non-empty list of tensors")
        x = self._columns_v2(inputs, binary) if self.model.mixed else self._matrix_v2(inputs, binary)
        outputs, params = doc.get("outputs"), doc.get("parameters")
        all_binary = type(params) is dict and params.get("binary_data_output") is True
        wanted = None if outputs is None and not all_binary else self._wanted(outputs, all_binary)
        return x, doc.get("id"), wanted

    def _matrix_v2(self, inputs: list[object], binary: bytes) -> Rows:
        """The one tensor of a model with one matrix input."""
        if len(inputs) != 1:
            raise ClientError(
                400, f"the model takes exactly one input, '{self.input_name}'; got {len(inputs)}"
            )
        tensor = inputs[0]
        if type(tensor) is not dict:
            raise ClientError(400, "each input must be an object with name, shape, datatype and data")
        name = tensor.get("name")
        if name != self.input_name:
            raise ClientError(400, f"unknown input {name!r}: the model's input is '{self.input_name}'")
        datatype = tensor.get("datatype")
        if datatype not in NUMERIC_DATATYPES:
            raise ClientError(
                400,
                f"input '{name}' has datatype {datatype!r}; the model takes FP32 "
                f"(any numeric datatype is converted)",
            )
        shape = tensor.get("shape")
        if (
            type(shape) is not list
            or len(shape) != 2
            or shape[1] != self.n_features
            or type(shape[0]) is not int
            or shape[0] < 1
            or (self.fixed_rows is not None and shape[0] != self.fixed_rows)
        ):
            raise ClientError(
                400,
                f"input '{name}' has shape {shape}; the model takes {self.expected_shape} (rows x features)",
            )
        params = tensor.get("parameters")
        if type(params) is dict and "binary_data_size" in params:
            array = self._binary_tensor(name, datatype, params["binary_data_size"], binary)
        else:
            array = self._array(name, tensor.get("data"))
        rows = shape[0] * self.n_features
        if array.size != rows:
            raise ClientError(400, f"input '{name}' has {array.size} values, but shape {shape} needs {rows}")
        x = array.astype(np.float32, copy=False).reshape(shape[0], self.n_features)
        self._check_finite(x, array, name)
        return x

    def _columns_v2(self, inputs: list[object], binary: bytes) -> Mixed:
        """One tensor per feature, in any order: FP32 (or any numeric datatype) for a numeric feature, BYTES
        for a categorical one, each of shape [rows] or [rows, 1]. Binary parts follow the JSON header in
        the order of the tensors that declare them."""
        columns = self._columns
        rows: int | None = None
        first = ""
        numbers: list[tuple[int, npt.NDArray[np.generic]]] = []
        strings: list[tuple[int, list[str]]] = []
        seen: set[str] = set()
        offset = 0
        for tensor in inputs:
            if type(tensor) is not dict:
                raise ClientError(400, "each input must be an object with name, shape, datatype and data")
            name = tensor.get("name")
            if name not in columns:
                raise ClientError(
                    400,
                    f"unknown input {name!r}: the model's inputs are {', '.join(self.model.card.features)}",
                )
            if name in seen:
                raise ClientError(400, f"input '{name}' is given twice")
            seen.add(name)
            is_string, j = columns[name]
            datatype = tensor.get("datatype")
            if is_string and datatype != "BYTES":
                raise ClientError(
                    400, f"input '{name}' is categorical: its datatype is BYTES (strings), not {datatype!r}"
                )
            if not is_string and datatype not in NUMERIC_DATATYPES:
                raise ClientError(
                    400,
                    f"input '{name}' is numeric: its datatype is FP32 (any numeric datatype is converted), "
                    f"not {datatype!r}",
                )
            shape = tensor.get("shape")
            if (
                type(shape) is not list
                or len(shape) not in (1, 2)
                or (len(shape) == 2 and shape[1] != 1)
                or type(shape[0]) is not int
                or shape[0] < 1
                or (self.fixed_rows is not None and shape[0] != self.fixed_rows)
            ):
                raise ClientError(
                    400,
                    f"input '{name}' has shape {shape}; the model takes "
                    f"[{self.fixed_rows or -1}, 1] (one column)",
                )
            if rows is None:
                rows, first = shape[0], name
            elif shape[0] != rows:
                raise ClientError(
                    400,
                    f"input '{name}' has {shape[0]} rows, input '{first}' {rows}: "
                    "every input needs the same rows",
                )
            params = tensor.get("parameters")
            size = params.get("binary_data_size") if type(params) is dict else None
            if size is not None:
                if type(size) is not int or size < 0 or offset + size > len(binary):
                    raise ClientError(
                        400,
                        f"input '{name}' declares binary_data_size {size}, the body carries "
                        f"{len(binary) - offset} more bytes after the JSON header",
                    )
                blob, offset = binary[offset : offset + size], offset + size
                if is_string:
                    strings.append((j, _bytes_elements(name, blob, rows)))
                else:
                    numbers.append((j, self._binary_tensor(name, str(datatype), size, blob)))
            elif is_string:
                strings.append((j, _strings(name, tensor.get("data"), rows)))
            else:
                numbers.append((j, self._array(name, tensor.get("data"))))
        missing = [f for f in self.model.card.features if f not in seen]
        if missing:
            raise ClientError(
                400, f"the request lacks inputs {missing}: the model takes one input per feature"
            )
        if offset != len(binary):
            raise ClientError(
                400,
                f"the body carries {len(binary) - offset} bytes after the JSON header that no input declares",
            )
        assert rows is not None
        return self._mixed(rows, numbers, strings)

    def _mixed(
        self,
        rows: int,
        numbers: list[tuple[int, npt.NDArray[np.generic]]],
        strings: list[tuple[int, list[str]]],
    ) -> Mixed:
        """Columns (by their index among the model's numeric or categorical features) as one ``Mixed``."""
        model = self.model
        given = np.empty((rows, len(model.numeric)))  # as sent: an error names 1e39, not its float32 inf
        for j, array in numbers:
            name = model.numeric[j]
            if array.size != rows:
                raise ClientError(400, f"input '{name}' has {array.size} values for {rows} rows")
            given[:, j] = array.reshape(rows)
        with np.errstate(over="ignore"):  # beyond FP32 becomes infinity, which _check_finite names
            x = given.astype(np.float32)
        if numbers:
            self._check_finite(x, given, "", model.numeric)
        text: Strings = np.empty((rows, len(model.categorical)), dtype=object)
        for j, values in strings:
            name = model.categorical[j]
            known = self._known.get(name)
            if known is not None:
                for i, value in enumerate(values):
                    if value not in known:
                        shown = ", ".join(repr(c) for c in sorted(known)[:SHOWN_CATEGORIES])
                        more = ", ..." if len(known) > SHOWN_CATEGORIES else ""
                        raise ClientError(
                            400,
                            f"input '{name}' row {i} is {value!r}, a category the model did not see in "
                            f"training; it refuses unknown categories (its TrainingJob's "
                            f"spec.categorical.unknown is error). Known: {shown}{more}",
                        )
            text[:, j] = values
        return Mixed(x, text)

    def _wanted(self, outputs: object, binary: bool) -> tuple[tuple[str, bool], ...]:
        """The outputs a request names (all when it names none), each with whether to send it binary."""
        if outputs is None:
            return tuple((name, binary) for name in self.output_names)
        if type(outputs) is not list or not all(type(o) is dict for o in outputs):
            raise ClientError(400, "'outputs' must be a list of objects with a name")
        wanted = []
        for o in outputs:
            if o.get("name") not in self.output_names:
                raise ClientError(
                    400, f"unknown output {o.get('name')!r}; the model has {', '.join(self.output_names)}"
                )
            params = o.get("parameters")
            wanted.append(
                (o["name"], bool(params.get("binary_data", binary)) if type(params) is dict else binary)
            )
        return tuple(wanted)

    def decode_v1(self, body: bytes) -> Inputs:
        doc = _loads(body)
        instances = doc.get("instances") if type(doc) is dict else None
        if type(instances) is not list or not instances:
            raise ClientError(400, "the request body must be a JSON object with a non-empty 'instances' list")
        if type(instances[0]) is dict:
            instances = [self._row_from_object(i, inst) for i, inst in enumerate(instances)]
        if self.model.mixed:
            return self._columns_v1(instances)
        array = self._array("instances", instances)
        if (
            array.ndim != 2
            or array.shape[1] != self.n_features
            or (self.fixed_rows is not None and array.shape[0] != self.fixed_rows)
        ):
            raise ClientError(
                400,
                f"'instances' must be {f'exactly {self.fixed_rows} ' if self.fixed_rows else ''}"
                f"rows of {self.n_features} numbers "
                f"({', '.join(self.model.card.features)}); got shape {list(array.shape)}",
            )
        x = array.astype(np.float32, copy=False)
        self._check_finite(x, array, "instances")
        return x

    def _columns_v1(self, instances: list[object]) -> Mixed:
        """Rows of values in feature order (numbers and strings), as objects or lists, to columns."""
        features = self.model.card.features
        n = len(features)
        if self.fixed_rows is not None and len(instances) != self.fixed_rows:
            raise ClientError(
                400, f"'instances' must be exactly {self.fixed_rows} rows; got {len(instances)}"
            )
        for i, row in enumerate(instances):
            if type(row) is not list or len(row) != n:
                raise ClientError(
                    400, f"instance {i} must be {n} values ({', '.join(features)}), or an object of them"
                )
        numbers, strings = [], []
        for k, feature in enumerate(features):
            is_string, j = self._columns[feature]
            column = [row[k] for row in instances]  # type: ignore[index]  # lists, checked above
            if is_string:
                strings.append((j, _strings(feature, column, len(instances))))
            else:
                numbers.append((j, self._array(feature, column)))
        return self._mixed(len(instances), numbers, strings)

    def _row_from_object(self, i: int, instance: object) -> list[object]:
        if type(instance) is not dict:
            raise ClientError(400, f"instance {i} is not an object like the first one")
        unknown = set(instance) - set(self._feature_index)
        if unknown:
            raise ClientError(400, f"instance {i} has unknown features {sorted(unknown)}")
        missing = [f for f in self._feature_index if f not in instance]
        if missing:
            raise ClientError(400, f"instance {i} lacks features {missing}")
        return [instance[f] for f in self._feature_index]

    @staticmethod
    def _array(name: str, data: object) -> npt.NDArray[np.generic]:
        if type(data) is not list:
            raise ClientError(400, f"input '{name}' needs 'data', a list of numbers")
        try:
            array = np.array(data)
        except (ValueError, TypeError):  # ragged nesting
            raise ClientError(400, f"input '{name}' data is not a regular array of numbers") from None
        if array.dtype.kind not in "fiu":
            raise ClientError(
                400,
                f"input '{name}' data must be numbers only (found {array.dtype.name} "
                f"values such as strings, booleans or null)",
            )
        return array

    @staticmethod
    def _binary_tensor(name: str, datatype: str, size: object, binary: bytes) -> npt.NDArray[np.generic]:
        if type(size) is not int or size != len(binary):
            raise ClientError(
                400,
                f"input '{name}' declares binary_data_size {size}, the body carries "
                f"{len(binary)} bytes after the JSON header",
            )
        dtype = np.dtype(BINARY_DTYPES[datatype])
        if size % dtype.itemsize:
            raise ClientError(400, f"input '{name}': {size} bytes is not a whole number of {datatype} values")
        return np.frombuffer(binary, dtype=dtype)

    def _check_finite(
        self, x: Rows, original: npt.NDArray[np.generic], name: str, features: list[str] | None = None
    ) -> None:
        if self.allow_nan:
            return
        flat = x.ravel()
        # A NaN or infinity anywhere makes the dot product non-finite; it is ~4x cheaper than isfinite().all()
        # on a row. Huge but finite values may overflow it: then the exact check decides.
        if math.isfinite(flat.dot(flat)) or np.isfinite(flat).all():
            return
        row, col = (int(v) for v in np.argwhere(~np.isfinite(x))[0])
        value = original.reshape(x.shape)[row, col]
        what = (
            "NaN" if np.isnan(value) else ("infinity" if np.isinf(value) else f"{value} (beyond FP32 range)")
        )
        feature = (features or self.model.card.features)[col]
        where = (
            f"input '{feature}' row {row}" if features else f"input '{name}' row {row} feature '{feature}'"
        )
        raise ClientError(400, f"{where} is {what}; this model takes finite numbers only")

    # ------------------------------------------------------------------------------------------ encode

    def encode_v2(self, pred: Prediction, request_id: object) -> bytes:
        parts = [self._v2_head]
        if request_id is not None:
            parts.append(b',"id":' + orjson.dumps(request_id))
        if pred.probabilities is not None and pred.labels is not None:
            n, c = pred.probabilities.shape
            parts += [
                b',"outputs":[{"name":"label","datatype":"',
                self.label_datatype.encode(),
                b'","shape":[%d],"data":' % n,
                self._labels_json(pred.labels),
                b'},{"name":"probabilities","datatype":"FP32","shape":[%d,%d],"data":' % (n, c),
                orjson.dumps(pred.probabilities.ravel(), option=orjson.OPT_SERIALIZE_NUMPY),
                b"}]}",
            ]
        else:
            assert pred.values is not None
            parts += [
                b',"outputs":[{"name":"predictions","datatype":"FP32","shape":[%d],"data":'
                % len(pred.values),
                orjson.dumps(pred.values, option=orjson.OPT_SERIALIZE_NUMPY),
                b"}]}",
            ]
        return b"".join(parts)

    def encode_v2_outputs(
        self, pred: Prediction, request_id: object, wanted: tuple[tuple[str, bool], ...]
    ) -> tuple[bytes, int | None]:
        """The outputs a request named, some perhaps in the binary tensor extension.

        Returns (body, JSON header length when binary parts follow it, else None).
        """
        head: dict[str, object] = {"model_name": self.model.name, "model_version": self.model.version}
        if request_id is not None:
            head["id"] = request_id
        outputs, blobs = [], []
        for name, binary in wanted:
            datatype, shape, data, blob = self._output(name, pred, binary)
            out: dict[str, object] = {"name": name, "datatype": datatype, "shape": shape}
            if binary:
                out["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                out["data"] = data
            outputs.append(out)
        head["outputs"] = outputs
        header = orjson.dumps(head, option=orjson.OPT_SERIALIZE_NUMPY)
        return (header + b"".join(blobs), len(header)) if blobs else (header, None)

    def _output(self, name: str, pred: Prediction, binary: bool) -> tuple[str, list[int], object, bytes]:
        if name == "label":
            assert pred.labels is not None
            idx = pred.labels.tolist()
            if self.label_datatype == "INT64":
                values = np.asarray(self.model.card.classes, dtype="<i8")[pred.labels]
                return "INT64", [len(idx)], values, values.tobytes() if binary else b""
            blob = b"".join([self._class_binary[i] for i in idx]) if binary else b""
            return "BYTES", [len(idx)], [self.model.card.classes[i] for i in idx], blob
        array = pred.probabilities if name == "probabilities" else pred.values
        assert array is not None
        array = np.ascontiguousarray(array, dtype="<f4")
        return "FP32", list(array.shape), array.ravel(), array.tobytes() if binary else b""

    def encode_v1(self, pred: Prediction) -> bytes:
        if pred.probabilities is not None and pred.labels is not None:
            return b"".join(
                [
                    b'{"predictions":',
                    self._labels_json(pred.labels),
                    b',"probabilities":',
                    orjson.dumps(pred.probabilities, option=orjson.OPT_SERIALIZE_NUMPY),
                    b"}",
                ]
            )
        return b'{"predictions":' + orjson.dumps(pred.values, option=orjson.OPT_SERIALIZE_NUMPY) + b"}"

    def _labels_json(self, labels: npt.NDArray[np.intp]) -> bytes:
        names = self._class_json
        return b"[" + b",".join([names[i] for i in labels.tolist()]) + b"]"


def _strings(name: str, data: object, rows: int) -> list[str]:
    """A BYTES tensor's JSON data: ``rows`` strings, flat or one per row ([["a"], ["b"]])."""
    if type(data) is not list:
        raise ClientError(400, f"input '{name}' needs 'data', a list of strings")
    values = [v[0] if type(v) is list and len(v) == 1 else v for v in data]
    if len(values) != rows:
        raise ClientError(400, f"input '{name}' has {len(values)} values for {rows} rows")
    for i, v in enumerate(values):
        if type(v) is not str:
            hint = ' (send "" for a missing value)' if v is None else ""
            raise ClientError(
                400, f"input '{name}' row {i} is {json.dumps(v)}, not a string: it is categorical{hint}"
            )
    return values


def _bytes_elements(name: str, blob: bytes, rows: int) -> list[str]:
    """BYTES in the binary tensor extension: each element a 4-byte little-endian length, then UTF-8."""
    values: list[str] = []
    at = 0
    while at < len(blob):
        if at + 4 > len(blob):
            raise ClientError(400, f"input '{name}': binary BYTES data ends inside an element's length")
        size = int.from_bytes(blob[at : at + 4], "little")
        if at + 4 + size > len(blob):
            raise ClientError(400, f"input '{name}': binary BYTES element {len(values)} runs past its data")
        try:
            values.append(blob[at + 4 : at + 4 + size].decode())
        except UnicodeDecodeError:
            raise ClientError(400, f"input '{name}' row {len(values)} is not UTF-8") from None
        at += 4 + size
    if len(values) != rows:
        raise ClientError(400, f"input '{name}' has {len(values)} values for {rows} rows")
    return values
