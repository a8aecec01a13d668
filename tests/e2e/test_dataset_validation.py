"""Bad data from a ConfigMap leaves the Dataset not Validated, says where, and writes nothing to the store."""

from __future__ import annotations

from support.e2e import Kubectl, apply, conditions, events, status, store_listing, wait_condition

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


# The same data without a fault: ingested beside the bad cases, its snapshot is what the store must hold
# of this namespace, and all it may hold. It shows that the store is read where the operator writes.
CONTROL = "valid-control"


def test_bad_data_is_not_validated_and_writes_no_snapshot(
    kubectl: Kubectl, namespace: str, operator_installed: dict[str, str]
) -> None:
    objects = []
    for name, (data, validation, _, _) in {**CASES, CONTROL: (csv(ROWS), {}, "", [])}.items():
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

    wait_condition(
        kubectl, "dataset", CONTROL, namespace, "Ready", timeout=240, unless=("Validated", "False")
    )
    control = status(kubectl, "dataset", CONTROL, namespace)

    # Nothing of the bad cases reached the store: no snapshot, no statistics, no temp file. The store is
    # read from a pod, through its own interface, with the URI the installed operator writes to; the
    # control's snapshot must be there (in the contract's layout), so the check cannot pass for want of
    # a store to look at.
    store = store_listing(kubectl, namespace, operator_installed["trainer"], namespace)
    snapshot = f"datasets/{namespace}/{CONTROL}/{control['sha256']}"
    assert control["artifactURI"] == f"{store['storeURI'].rstrip('/')}/{snapshot}/manifest.json", (
        control["artifactURI"],
        store["storeURI"],
    )
    expected = [f"{snapshot}/manifest.json", f"{snapshot}/part-00000.parquet", f"{snapshot}/statistics.json"]
    assert store["keys"] == expected, store
    if store["paths"] is not None:  # a volume store: every file and directory, temp files too
        parts = snapshot.split("/")
        directories = {"/".join(parts[:n]) for n in range(2, len(parts) + 1)}  # datasets/<namespace>/...
        assert set(store["paths"]) == {*expected, *directories}, store
