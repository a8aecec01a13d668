"""The model report page (kubeloop.runtime.report): what a person reads in it, and that data cannot
inject markup."""

from __future__ import annotations

import dataclasses
from html.parser import HTMLParser
from typing import Any

import pytest

from kubeloop.runtime import report

SCRIPT = "<script>alert('x')</script>"


class Page(HTMLParser):
    """The page as a browser's parser sees it: tags, ids, external references and the visible text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(str(values["id"]))
        self.links += [str(values[a]) for a in ("src", "href") if values.get(a)]

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def visible(self) -> str:
        return " ".join(" ".join(self.text).split())  # whitespace as a reader sees it: one space


def card(**extra: Any) -> dict[str, Any]:
    return {
        "namespace": "ml",
        "trainingJob": "iris-rf",
        "sha256": "ab" * 32,
        "task": "classification",
        "estimator": "RandomForestClassifier",
        "params": {"n_estimators": 50},
        "metrics": {"accuracy": 0.9333, "f1_macro": 0.9321},
        "dataset": {
            "name": "iris",
            "version": "9923ad4cafcbf0a1",
            "sha256": "9923ad4cafcbf0a1" + "0" * 48,
            "artifactURI": "s3://store/datasets/ml/iris/x/manifest.json",
        },
        "features": ["petal_length", SCRIPT],
        "classes": ["setosa", "versicolor"],
        "split": {"trainRows": 120, "testRows": 30},
        "gate": {"passed": True, "reasons": []},
        "createdAt": "2026-12-01T16:00:00Z",
        "libraryVersions": {"scikit-learn": "1.9.1"},
        **extra,
    }


STATISTICS = {
    "rows": 150,
    "targetName": "species",
    "target": {"kind": "categorical", "categories": ["setosa", "versicolor"], "counts": [75, 75]},
    "features": {
        "petal_length": {"kind": "numeric", "nulls": 2, "min": 1.0, "max": 6.9, "mean": 3.758, "std": 1.76},
        SCRIPT: {"kind": "numeric", "nulls": 0, "min": 0.1, "max": 2.5, "mean": 1.199, "std": 0.76},
        "colour": {
            "kind": "categorical",
            "nulls": 3,
            "categories": ["red", "<b>blue</b>"],
            "counts": [40, 107],
        },
    },
}


def classification(**extra: Any) -> report.ReportInput:
    base = report.ReportInput(
        card=card(),
        gate={"minimums": {"accuracy": 0.9}, "maximums": {"f1_macro": 0.9}},
        statistics=STATISTICS,
        confusion=report.Confusion(["setosa", "versicolor"], [[14, 1], [3, 12]]),
        importance={"petal_length": 0.71, SCRIPT: 0.29},
    )
    return dataclasses.replace(base, **extra)


def test_classification_page_shows_metrics_against_the_gate_matrix_importance_statistics_and_lineage() -> (
    None
):
    page = Page(report.render(classification()))
    text = page.visible()
    assert {"metrics", "confusion-matrix", "feature-importance", "statistics", "lineage"} <= page.ids
    # Each metric with its value, bound and verdict: accuracy meets its minimum, f1_macro misses its maximum.
    assert "accuracy 0.9333 minimum 0.9 pass" in text and "f1_macro 0.9321 maximum 0.9 fail" in text
    assert "30 rows (trained on 120)" in text
    for count in ("14", "1", "3", "12"):  # every cell of the matrix, with both class names
        assert f" {count} " in f" {text} "
    assert "setosa" in text and "versicolor" in text
    assert "0.71" in text and "0.29" in text  # importance values beside their bars
    assert "min 1, max 6.9, mean 3.758" in text and "<b>blue</b> (107), red (40)" in text  # top first
    assert "9923ad4cafcbf0a1" + "0" * 48 in text and "ab" * 32 in text and "ml/iris-rf" in text
    assert "2026-12-01T16:00:00Z" in text
    # Self-contained: nothing is fetched from anywhere when the page is opened.
    assert page.links == [] and "script" not in page.tags and "link" not in page.tags


def test_strings_from_data_stay_text() -> None:
    odd = card(namespace='a"b', trainingJob="<img src=x onerror=alert(1)>", estimator="<i>LR</i>")
    odd["gate"] = {"passed": False, "reasons": ["accuracy <0.5> & worse"]}
    trials = [report.TrialRow(0, {"C": "</td><script>"}, {"accuracy": 0.5})]
    html = report.render(classification(card=odd, trials=trials, best_trial=0))
    page = Page(html)
    assert page.tags.count("script") == 0 and "img" not in page.tags and "b" not in page.tags
    text = page.visible()
    # What a person reads is the name as it was written, tags and all.
    assert SCRIPT in text and "<img src=x onerror=alert(1)>" in text and "<b>blue</b>" in text
    assert "accuracy <0.5> & worse" in text and '"</td><script>"' in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html


def test_regression_page_plots_residuals_instead_of_a_matrix() -> None:
    actual = [float(i) for i in range(3000)]
    predicted = [a + (5.0 if i % 2 else -5.0) for i, a in enumerate(actual)]
    data = report.ReportInput(
        card=card(task="regression", metrics={"rmse": 5.0, "r2": 0.99}, classes=[]),
        gate={"maximums": {"rmse": 4.0}},
        residuals=report.Residuals(actual, predicted),
    )
    html = report.render(data)
    page = Page(html)
    assert {"predicted-vs-actual", "residuals-histogram"} <= page.ids and "confusion-matrix" not in page.ids
    assert "rmse 5 maximum 4 fail" in page.visible() and "Gate passed" in page.visible()
    # At most MAX_SCATTER_POINTS dots: the page stays small however large the test set.
    assert html.count("<circle") == report.MAX_SCATTER_POINTS
    assert "-5" in page.visible() and "5" in page.visible()  # the histogram's range


def test_trials_of_a_search_mark_the_winner_and_lead_with_the_objective() -> None:
    trials = [
        report.TrialRow(1, {"max_depth": 3}, {"f1_macro": 0.91, "accuracy": 0.9}),
        report.TrialRow(0, {"max_depth": 1}, {"f1_macro": 0.7, "accuracy": 0.72}),
        report.TrialRow(2, {"max_depth": 9}, {}, state="Failed"),
    ]
    page = Page(report.render(classification(trials=trials, best_trial=1, objective="f1_macro")))
    text = page.visible()
    assert "trials" in page.ids
    assert "Trial State Params f1_macro (objective) accuracy" in text
    assert "0 Succeeded max_depth=1 0.7 0.72" in text and "1 best Succeeded max_depth=3 0.91 0.9" in text
    assert "2 Failed max_depth=9 - -" in text
    assert text.index("0 Succeeded") < text.index("1 best")  # by index, not by score


def test_a_single_run_has_no_trials_section_and_a_large_matrix_is_refused_in_words() -> None:
    labels = [str(i) for i in range(report.MAX_MATRIX_CLASSES + 1)]
    counts = [[1 if i == j else 0 for j in labels] for i in labels]
    page = Page(report.render(classification(confusion=report.Confusion(labels, counts))))
    assert "trials" not in page.ids and "confusion-matrix" not in page.ids
    assert f"{len(labels)} classes: too many to draw" in page.visible()


def test_a_matrix_that_is_not_square_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="a confusion matrix of 2 labels needs 2 rows of 2 counts"):
        report.render(classification(confusion=report.Confusion(["a", "b"], [[1, 2, 3], [4, 5, 6]])))
    with pytest.raises(ValueError, match="3 actual values but 2 predicted ones"):
        report.residuals_svg(report.Residuals([1.0, 2.0, 3.0], [1.0, 2.0]))


def test_the_trainingjob_status_points_at_the_report_the_trainer_wrote() -> None:
    from kubeloop.api.trainingjob import TrainingJobSpec
    from kubeloop.builders.settings import Settings
    from kubeloop.builders.training import trial_job_name
    from kubeloop.controllers.conditions import Conditions
    from kubeloop.controllers.jobs import Outcome
    from kubeloop.controllers.trainingjob import Observed, decide

    sha = "c" * 64
    uri = f"s3://b/store/models/{sha}"
    result = {
        "ok": True,
        "metrics": {"accuracy": 0.9},
        "gatePassed": True,
        "model": {"uri": uri, "sha256": sha, "reportURI": f"{uri}/report.html"},
    }
    name = trial_job_name("tj", 1, 0)
    status = {
        "observedGeneration": 1,
        "dataset": {"name": "iris", "version": "v1", "artifactURI": "s3://x"},
        "trials": [{"index": 0, "job": name, "state": "Running"}],
    }
    spec = TrainingJobSpec.model_validate(
        {"datasetRef": {"name": "iris"}, "model": {"estimator": "LogisticRegression"}}
    )
    observed = Observed(
        jobs={name: {"metadata": {"name": name}}}, outcomes={name: Outcome("Succeeded", result, "", "")}
    )
    decision = decide("tj", "ns", spec, status, 1, Conditions([], generation=1), Settings(), observed)
    assert decision.fields["model"]["reportURI"] == f"{uri}/report.html"
