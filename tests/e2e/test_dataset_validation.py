"""Bad data from a ConfigMap leaves the Dataset not Validated, says where, and writes nothing to the store."""

from __future__ import annotations

from support.e2e import STORE_ROOT, Kubectl, apply, conditions, events, status, wait_condition

HEADER = "sepal_length,sepal_width,petal_length,species"
ROWS = [
    "5.1,3.5,1.4,setosa",
    "4.9,3.0,1.4,setosa",
    "6.2,2.9,4.3,versicolor",
    "5.9,3.0,5.1,virginica",
    "6.7,3.1,4.4,versicolor",
    "6.3,2.5,5.0,virginica",
    "5.0,3.6,1.4,setosa",
    "5.7,2.8,4.1,versicolor",
    "6.5,3.0,5.2,virginica",
    "5.4,3.9,1.7,setosa",
]
COLUMNS = [
    {"name": "sepal_length", "type": "float"},
    {"name": "sepal_width", "type": "float"},
    {"name": "petal_length", "type": "float"},
    {"name": "species", "type": "category"},
]


def csv(rows: list[str], header: str = HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


def with_cells(column: int, value: str, *rows: int) -> list[str]:
    """The rows with a column's cell replaced in some rows (counted from 1 after the header, as the
    messages count them)."""
    cells = [r.split(",") for r in ROWS]
    for row in rows:
        cells[row - 1][column] = value
    return [",".join(r) for r in cells]


# name -> (CSV, validation, reason, words the message must contain)
CASES = {
    "string-in-float": (
        csv(with_cells(1, "abc", 3)),
        {},
        "SchemaViolation",
        ["row 3", "'sepal_width'", "'abc'", "not a float"],
    ),
    "missing-target": (
        csv([",".join(r.split(",")[:3]) for r in ROWS], header="sepal_length,sepal_width,petal_length"),
        {},
        "MissingTarget",
        ["target column 'species' is missing"],
    ),
    "too-many-nulls": (
        csv(with_cells(2, "", 2, 4)),
        {"maxNullFraction": 0.1},
        "TooManyNulls",
        ["column 'petal_length'", "20.0% empty", "rows 2, 4", "maxNullFraction is 10.0%"],
    ),
}


def test_bad_data_is_not_validated_and_writes_no_snapshot(
    kubectl: Kubectl, namespace: str, operator_installed: dict[str, str]
) -> None:
    objects = []
    for name, (data, validation, _, _) in CASES.items():
        objects.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"data.csv": data}}
        )
        objects.append(
            {
                "apiVersion": "kubeloop.io/v1alpha1",
                "kind": "Dataset",
                "metadata": {"name": name},
                "spec": {
                    "source": {"configMapRef": {"name": name, "key": "data.csv"}},
                    "schema": {
                        "target": "species",
                        # The schema declares the target (the API insists); the data lacks it.
                        "columns": COLUMNS,
                    },
                    "validation": validation,
                },
            }
        )
    apply(kubectl, namespace, *objects)

    for name, (_, _, reason, words) in CASES.items():
        validated = wait_condition(kubectl, "dataset", name, namespace, "Validated", "False", timeout=240)
        assert validated["reason"] == reason, validated
        for word in words:
            assert word in validated["message"], (word, validated["message"])
        ready = conditions(kubectl, "dataset", name, namespace)["Ready"]
        assert ready["status"] == "False" and ready["reason"] == "IngestFailed", ready
        assert "version" not in status(kubectl, "dataset", name, namespace)
        assert any(e["reason"] == reason for e in events(kubectl, namespace, name)), "no Event says why"

    # Nothing of this namespace reached the store: no snapshot, no statistics, no temp file.
    written = [p for p in STORE_ROOT.glob("**/*") if namespace in p.parts]
    assert written == [], written
