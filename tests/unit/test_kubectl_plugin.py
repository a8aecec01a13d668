"""The kubectl plugin's pure parts: the lineage tree, the rows files of `predict`, the report, the names."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from kubeloop.cli.kube import CliError, Cluster, parse_ref, resolve_kind
from kubeloop.cli.lineage import lineage, render
from kubeloop.cli.main import parser, service_of
from kubeloop.cli.predict import RowsError, answer_lines, infer_request, parse_rows
from kubeloop.cli.report import report_lines
from support.lineage_chain import CANARY_SHA, DATA_VERSION, SERVING_SHA, with_status

NS = "ml"
IRIS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def tree(kind: str, name: str, objects: list[dict[str, Any]] | None = None) -> str:
    return "\n".join(render(lineage(kind, name, with_status(NS) if objects is None else objects)))


# --- lineage ----------------------------------------------------------------------------------------------


def test_the_lineage_of_a_deployment_runs_from_the_dataset_version_to_the_monitor_verdicts() -> None:
    lines = tree("ModelDeployment", "iris").splitlines()
    assert lines[0].startswith(f"Dataset/iris  Ready=True  version {DATA_VERSION}  150 rows x 5 columns")
    titles = [line.lstrip("│├└─ ") for line in lines]
    order = [
        "Dataset/iris",
        "TrainingJob/iris-lr",
        f"Model sha256:{SERVING_SHA[:12]}",
        "ModelDeployment/iris  serving",
        "Monitor/iris-watch",
    ]
    at = [next(i for i, t in enumerate(titles) if t.startswith(o)) for o in order]
    assert at == sorted(at), lines  # each below the one it came from
    text = "\n".join(lines)
    assert "Drifted=True (DriftDetected)" in text
    assert "feature petal_length fail: psi 0.41 (600 samples)" in text
    assert (
        "last action Retrain at 2026-12-01T10:58:00Z" in text
        and "-> TrainingJob/iris-watch-retrain-1" in text
    )
    # The canary: under the deployment, and under its own model (that of the retrain).
    assert f"canary sha256:{CANARY_SHA[:12]} Analysing: step 1/2, weight 20%, 18.5% of requests" in text
    assert "errorRate pass: 0 (threshold 0.01, 412 samples)" in text
    assert f"Model sha256:{CANARY_SHA[:12]}" in text and "ModelDeployment/iris  canary 20%" in text


def test_the_tree_is_drawn_with_branches_and_the_details_under_their_node() -> None:
    lines = tree("TrainingJob", "iris-lr").splitlines()
    assert lines[:3] == [
        f"Dataset/iris  Ready=True  version {DATA_VERSION}  150 rows x 5 columns",
        f"│   snapshot s3://kubeloop/store/datasets/iris/{with_status(NS)[0]['status']['sha256']}",
        "└── TrainingJob/iris-lr  Succeeded=True  GatePassed=True  accuracy=0.967  f1_macro=0.965",
    ]
    assert lines[3] == f"    │   trained on version {DATA_VERSION}"
    assert lines[4].startswith(f"    └── Model sha256:{SERVING_SHA[:12]}  classification")
    # A leaf's details hang under it without a rail.
    monitor = next(i for i, line in enumerate(lines) if "Monitor/iris-watch" in line)
    assert lines[monitor].startswith("            └── Monitor/iris-watch")
    assert lines[monitor + 1].startswith("                    inputDrift fail: 0.41")


def test_a_training_job_shows_only_its_own_branch() -> None:
    text = tree("TrainingJob", "iris-lr")
    assert "iris-watch-retrain-1  Succeeded" not in text  # the sibling run is not part of this one's chain
    assert f"Model sha256:{CANARY_SHA[:12]}" not in text  # nor its model (the canary is only named)


def test_every_kind_leads_to_the_same_chain() -> None:
    from_deployment = tree("ModelDeployment", "iris")
    assert tree("Monitor", "iris-watch") == from_deployment
    assert tree("Dataset", "iris") == from_deployment  # every run of the dataset, and where each went


def test_a_dataset_that_trained_nothing_is_a_tree_of_one() -> None:
    objects = [with_status(NS)[0]]
    assert tree("Dataset", "iris", objects).splitlines()[0].startswith("Dataset/iris  Ready=True")
    assert len(tree("Dataset", "iris", objects).splitlines()) == 2


def test_a_deployment_waiting_for_its_training_job_hangs_under_it_and_a_missing_dataset_says_so() -> None:
    job = {"kind": "TrainingJob", "metadata": {"name": "lr"}, "spec": {"datasetRef": {"name": "gone"}}}
    md = {
        "kind": "ModelDeployment",
        "metadata": {"name": "iris"},
        "spec": {"model": {"trainingJobRef": {"name": "lr"}}},
    }
    lines = tree("ModelDeployment", "iris", [job, md]).splitlines()
    assert lines == [
        "Dataset/gone  not found",
        "└── TrainingJob/lr",
        "    └── ModelDeployment/iris  waiting for its model",
    ]


def test_an_older_dataset_version_is_named_as_such() -> None:
    objects = with_status(NS)
    objects[0]["status"]["version"] = "0123456789abcdef"
    assert f"trained on version {DATA_VERSION} (the Dataset is now at 0123456789abcdef)" in tree(
        "TrainingJob", "iris-lr", objects
    )


def test_a_model_given_by_uri_starts_its_own_tree() -> None:
    md = with_status(NS)[3]
    md["spec"]["model"] = {"uri": "s3://b/models/x", "sha256": SERVING_SHA}
    md["status"].pop("canary")
    md["status"].pop("wantedSha256")
    md["status"]["model"].pop("trainingJob")
    lines = tree("ModelDeployment", "iris", [md]).splitlines()
    assert lines[0] == f"Model sha256:{SERVING_SHA[:12]}"
    assert lines[2] == f"│   uri {md['status']['model']['uri']}"
    assert lines[3].startswith("└── ModelDeployment/iris  serving")


def test_an_object_not_in_the_namespace_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        lineage("Dataset", "nope", with_status(NS))


# --- names ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "kind", "name"),
    [
        ("modeldeployment/iris", "ModelDeployment", "iris"),
        ("ModelDeployment/iris", "ModelDeployment", "iris"),
        ("mdep/iris", "ModelDeployment", "iris"),
        ("modeldeployments.kubeloop.io/iris", "ModelDeployment", "iris"),
        ("dset/iris", "Dataset", "iris"),
        ("tjob/lr", "TrainingJob", "lr"),
        ("kmon/watch", "Monitor", "watch"),
    ],
)
def test_kinds_are_named_as_kubectl_names_them(ref: str, kind: str, name: str) -> None:
    found, got = parse_ref(ref)
    assert (found.kind, got) == (kind, name)


def test_bad_names_are_clear_errors() -> None:
    with pytest.raises(CliError, match="unknown kind 'pod'"):
        parse_ref("pod/x")
    with pytest.raises(CliError, match="name the object as <kind>/<name>"):
        parse_ref("iris")
    with pytest.raises(CliError, match="is a TrainingJob; this command takes a ModelDeployment"):
        parse_ref("tjob/iris", resolve_kind("mdep"))


def test_flags_before_and_after_the_command_both_count() -> None:
    args = parser().parse_args(["-n", "a", "--context", "c", "lineage", "dset/x"])
    assert (args.namespace, args.context, args.kubeconfig) == ("a", "c", None)
    args = parser().parse_args(["lineage", "dset/x", "-n", "b", "--kubeconfig", "/k"])
    assert (args.namespace, args.kubeconfig) == ("b", "/k")


def test_the_service_comes_from_the_advertised_url() -> None:
    md = with_status(NS)[3]
    assert service_of(md) == ("iris", "8080")
    md["status"].pop("url")
    with pytest.raises(CliError, match=r"has no status\.url yet"):
        service_of(md)


# --- predict ----------------------------------------------------------------------------------------------


def test_a_csv_header_may_order_columns_freely_and_carry_the_target() -> None:
    text = "petal_width,target,sepal_length,sepal_width,petal_length\n0.2,0,5.1,3.5,1.4\n2.3,2,6.7,3.0,5.2\n"
    rows, left_out = parse_rows(text, "csv", IRIS)
    assert rows == [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    assert left_out == ["target"]


def test_a_csv_without_header_is_in_the_models_order() -> None:
    rows, left_out = parse_rows("5.1,3.5,1.4,0.2\n\n6.7,3.0,5.2,2.3\n", "csv", IRIS)
    assert rows == [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]] and left_out == []


@pytest.mark.parametrize(
    "doc",
    [
        [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}],
        [[5.1, 3.5, 1.4, 0.2]],
        {"instances": [[5.1, 3.5, 1.4, 0.2]]},
    ],
)
def test_json_rows_are_objects_or_lists(doc: Any) -> None:
    assert parse_rows(json.dumps(doc), "json", IRIS)[0] == [[5.1, 3.5, 1.4, 0.2]]


@pytest.mark.parametrize(
    ("text", "fmt", "message"),
    [
        ("", "csv", "the file holds no rows"),
        (
            "sepal_length,sepal_width\n1,2\n",
            "csv",
            r"line 2 lacks the features \['petal_length', 'petal_width'\]",
        ),
        ("5.1,3.5,1.4\n", "csv", "row 1 has 3 values; the model takes 4"),
        ("a,b,c,d\n1,2\n", "csv", "line 2 has 2 cells; the header has 4"),
        (",".join(IRIS) + "\n5.1,x,1.4,0.2\n", "csv", "line 2, column 'sepal_width': 'x' is not a number"),
        (",".join(IRIS) + "\n5.1,nan,1.4,0.2\n", "csv", "'nan' is not a finite number"),
        ("[1, 2", "json", "not valid JSON"),
        ('{"rows": []}', "json", 'under "instances"'),
        ("[]", "json", "non-empty list"),
        ("[[5.1, 3.5, 1.4, true]]", "json", "True is not a number"),
        ('["x"]', "json", "row 1 is str"),
        ("1,2,3,4", "yaml", "unknown format 'yaml'"),
    ],
)
def test_a_bad_rows_file_says_where(text: str, fmt: str, message: str) -> None:
    with pytest.raises(RowsError, match=message):
        parse_rows(text, fmt, IRIS)


def test_the_request_is_one_v2_tensor_of_rows_by_features() -> None:
    request = infer_request([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], "input")
    assert request == {
        "inputs": [{"name": "input", "shape": [3, 2], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}]
    }


def test_a_model_with_categorical_features_gets_one_tensor_per_input() -> None:
    inputs = [
        {"name": "a", "datatype": "FP32", "shape": [-1, 1]},
        {"name": "city", "datatype": "BYTES", "shape": [-1, 1]},
    ]
    rows, left_out = parse_rows("city,label,a\nParis,yes,1.5\nLyon,no,-2\n", "csv", ["a", "city"], {"city"})
    assert rows == [[1.5, "Paris"], [-2.0, "Lyon"]] and left_out == ["label"]
    assert infer_request(rows, "a", inputs) == {
        "inputs": [
            {"name": "a", "shape": [2, 1], "datatype": "FP32", "data": [1.5, -2.0]},
            {"name": "city", "shape": [2, 1], "datatype": "BYTES", "data": ["Paris", "Lyon"]},
        ]
    }
    with pytest.raises(RowsError, match="row 1, column 'city': 3 is not a string"):
        parse_rows('[{"a": 1, "city": 3}]', "json", ["a", "city"], {"city"})


def test_answers_are_one_line_per_row() -> None:
    classified = {
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [2], "data": [0, 2]},
            {
                "name": "probabilities",
                "datatype": "FP32",
                "shape": [2, 3],
                "data": [0.9, 0.1, 0, 0, 0.2, 0.8],
            },
        ]
    }
    assert answer_lines(classified, [0, 1, 2]) == [
        "0\t0=0.900  1=0.100  2=0.000",
        "2\t0=0.000  1=0.200  2=0.800",
    ]
    regressed = {"outputs": [{"name": "predictions", "shape": [2], "data": [151.25, 75.0]}]}
    assert answer_lines(regressed) == ["151.25", "75"]


# --- report -----------------------------------------------------------------------------------------------


def test_the_report_shows_metrics_against_the_gate_and_the_model_card() -> None:
    lines = report_lines(with_status(NS)[1])
    assert lines[0] == f"TrainingJob {NS}/iris-lr"
    text = "\n".join(lines)
    assert "  status:     Succeeded=True  GatePassed=True" in text
    assert f"  dataset:    iris version {DATA_VERSION}" in text
    assert "  accuracy  0.967  >= 0.85" in text
    assert f"  sha256:     {SERVING_SHA}" in text
    assert "  inputs:     sepal_length (float), sepal_width (float)" in text
    assert "Trials" not in text  # a single fit has no trials table


def test_the_report_of_a_search_lists_its_trials_and_marks_the_best() -> None:
    job = with_status(NS)[1]
    job["spec"]["search"] = {
        "parameters": [{"name": "C", "values": [0.1, 1]}],
        "objective": {"metric": "accuracy"},
    }
    job["status"]["trials"] = [
        {"index": 0, "job": "j-0", "params": {"C": 0.1}, "state": "Succeeded", "metrics": {"accuracy": 0.9}},
        {"index": 1, "job": "j-1", "params": {"C": 1}, "state": "Succeeded", "metrics": {"accuracy": 0.967}},
    ]
    job["status"]["bestTrial"] = 1
    lines = report_lines(job)
    at = lines.index("Trials (2; * the best)")
    assert lines[at + 1].split() == ["TRIAL", "STATE", "PARAMS", "ACCURACY"]
    assert lines[at + 3].split() == ["1", "*", "Succeeded", "C=1", "0.967"]


def test_the_report_of_a_job_not_started_says_so() -> None:
    job = {
        "kind": "TrainingJob",
        "metadata": {"name": "x", "namespace": NS},
        "spec": {"datasetRef": {"name": "d"}},
    }
    assert report_lines(job)[1:4] == [
        "  status:     not started",
        "  estimator:  ?",
        "  dataset:    d (not resolved yet)",
    ]


def test_a_missing_kubeconfig_is_said_before_anything_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(
        CliError, match="no kubeconfig at /nowhere/config: pass --kubeconfig or set KUBECONFIG"
    ):
        Cluster("/nowhere/config", None, None).get(resolve_kind("dset"), "iris")
    monkeypatch.setenv("KUBECONFIG", f"/nowhere/a{os.pathsep}/nowhere/b")
    with pytest.raises(CliError, match="no kubeconfig at /nowhere/a:/nowhere/b"):
        Cluster(None, None, None).list(resolve_kind("kmon"))


def test_an_api_server_that_does_not_answer_is_said_as_such(tmp_path: Path) -> None:
    # A kubeconfig naming a port nothing listens on (port 1 of loopback): refused at once.
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "ml"}}],
        "current-context": "x",
    }
    path = tmp_path / "config"
    path.write_text(json.dumps(config))  # JSON is YAML
    cluster = Cluster(str(path), None, None)
    assert cluster.namespace == "ml"  # the context's namespace when -n is not given
    with pytest.raises(
        CliError, match=r"cannot read dataset 'iris' in namespace 'ml': cannot reach the API server"
    ):
        cluster.get(resolve_kind("dset"), "iris")
    with pytest.raises(
        CliError, match=r"cannot list monitors in namespace 'ml': cannot reach the API server"
    ):
        cluster.list(resolve_kind("kmon"))
