"""Rows from a CSV or JSON file to an Open Inference Protocol V2 request, and its answer to one line per row.

Pure: text in, request out; answer in, lines out. The model's metadata (GET /v2/models/<name>) gives the
feature order, the input's name and the class labels, so a file may name its columns in any order.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any


class RowsError(ValueError):
    """A rows file the model cannot take, with the row and column at fault."""


class AnswerError(ValueError):
    """An answer that is not a V2 inference response of this project's server."""


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise RowsError(f"{where}: {value!r} is not a number")
    try:
        number = float(value)
    except ValueError:
        raise RowsError(f"{where}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise RowsError(f"{where}: {value!r} is not a finite number")
    return number


def _value(value: Any, where: str, string: bool) -> float | str:
    """A number, or for a categorical feature (a BYTES input) its text as it stands."""
    if not string:
        return _number(value, where)
    if not isinstance(value, str):
        raise RowsError(f"{where}: {value!r} is not a string (the feature is categorical)")
    return value


def _header(cells: Sequence[str]) -> bool:
    """A first CSV row is a header when any cell is not a number."""
    for cell in cells:
        try:
            float(cell)
        except ValueError:
            return True
    return False


Row = list[float | str]


def _by_name(record: Mapping[str, Any], features: Sequence[str], where: str, strings: Collection[str]) -> Row:
    missing = [f for f in features if f not in record]
    if missing:
        raise RowsError(f"{where} lacks the features {missing} (the model takes {list(features)})")
    return [_value(record[f], f"{where}, column {f!r}", f in strings) for f in features]


def _by_position(values: Sequence[Any], features: Sequence[str], where: str, strings: Collection[str]) -> Row:
    if len(values) != len(features):
        raise RowsError(
            f"{where} has {len(values)} values; the model takes {len(features)} ({', '.join(features)})"
        )
    return [_value(v, f"{where}, column {f!r}", f in strings) for v, f in zip(values, features, strict=True)]


def parse_rows(
    text: str, fmt: str, features: Sequence[str], strings: Collection[str] = ()
) -> tuple[list[Row], list[str]]:
    """The rows of a file, in the model's feature order, and the names of the columns left out.

    CSV: a header naming the features (any order; other columns, such as the target, are left out), or
    no header and the features in the model's order. JSON: a list of objects (feature: value), a list of
    lists in the model's order, or either under "instances" (the V1 form). ``strings``: the categorical
    features, whose values stay text (a CSV with one needs its header: its cells are not all numbers)."""
    if fmt == "csv":
        return _parse_csv(text, features, strings)
    if fmt == "json":
        return _parse_json(text, features, strings)
    raise RowsError(f"unknown format {fmt!r}: use csv or json")


def _parse_csv(text: str, features: Sequence[str], strings: Collection[str]) -> tuple[list[Row], list[str]]:
    table = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    if not table:
        raise RowsError("the file holds no rows")
    if not _header(table[0]):
        return [_by_position(row, features, f"row {i}", strings) for i, row in enumerate(table, 1)], []
    names = [cell.strip() for cell in table[0]]
    rows = []
    for i, row in enumerate(table[1:], 2):
        if len(row) != len(names):
            raise RowsError(f"line {i} has {len(row)} cells; the header has {len(names)}")
        rows.append(_by_name(dict(zip(names, row, strict=True)), features, f"line {i}", strings))
    if not rows:
        raise RowsError("the file has a header but no rows")
    return rows, [n for n in names if n not in features]


def _parse_json(text: str, features: Sequence[str], strings: Collection[str]) -> tuple[list[Row], list[str]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise RowsError(f"not valid JSON: {e}") from None
    if isinstance(doc, Mapping):
        if "instances" not in doc:
            raise RowsError('a JSON object must hold the rows under "instances"')
        doc = doc["instances"]
    if not isinstance(doc, list) or not doc:
        raise RowsError("the JSON must be a non-empty list of rows (objects or lists of numbers)")
    rows: list[Row] = []
    extra: set[str] = set()
    for i, item in enumerate(doc, 1):
        if isinstance(item, Mapping):
            rows.append(_by_name(item, features, f"row {i}", strings))
            extra.update(k for k in item if k not in features)
        elif isinstance(item, list):
            rows.append(_by_position(item, features, f"row {i}", strings))
        else:
            raise RowsError(f"row {i} is {type(item).__name__}, not an object or a list")
    return rows, sorted(extra)


def infer_request(
    rows: Sequence[Sequence[float | str]], input_name: str, inputs: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """One V2 request carrying every row as a (rows x features) FP32 tensor, or, when the metadata lists
    ``inputs`` one per feature (a model with categorical features), one [rows, 1] tensor each, of its
    datatype (FP32 or BYTES), the columns in the model's feature order."""
    if len(inputs) > 1 or any(i.get("datatype") == "BYTES" for i in inputs):
        return {
            "inputs": [
                {
                    "name": i["name"],
                    "shape": [len(rows), 1],
                    "datatype": i.get("datatype", "FP32"),
                    "data": [row[j] for row in rows],
                }
                for j, i in enumerate(inputs)
            ]
        }
    return {
        "inputs": [
            {
                "name": input_name,
                "shape": [len(rows), len(rows[0]) if rows else 0],
                "datatype": "FP32",
                "data": [v for row in rows for v in row],
            }
        ]
    }


def answer_lines(answer: Mapping[str, Any], classes: Sequence[Any] = ()) -> list[str]:
    """One line per row: the label and each class's probability, or the predicted value."""
    outputs = {o.get("name"): o for o in answer.get("outputs") or () if isinstance(o, Mapping)}
    if "label" in outputs:
        labels = outputs["label"].get("data") or []
        probabilities = outputs.get("probabilities", {})
        flat = probabilities.get("data") or []
        width = (probabilities.get("shape") or [0, 0])[-1] or len(classes)
        lines = []
        for i, label in enumerate(labels):
            row = flat[i * width : (i + 1) * width] if width else []
            names = list(classes) if len(classes) == len(row) else list(range(len(row)))
            shares = "  ".join(f"{n}={p:.3f}" for n, p in zip(names, row, strict=True))
            lines.append(f"{label}\t{shares}" if shares else str(label))
        return lines
    if "predictions" in outputs:
        return [f"{v:.6g}" for v in outputs["predictions"].get("data") or []]
    raise AnswerError(f"the answer has no label or predictions output: {json.dumps(answer)[:300]}")
