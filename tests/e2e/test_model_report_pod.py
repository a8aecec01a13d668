"""The model report through the whole path: a training pod writes report.html beside the model, the
operator puts its URI in the TrainingJob's status, and the page there is the one of that model."""

from __future__ import annotations

from support.e2e import (
    STORE_ROOT,
    Kubectl,
    apply,
    iris_dataset,
    status,
    training_job,
    wait_condition,
)


def test_a_trained_model_has_its_report_in_the_store_and_status_points_at_it(
    kubectl: Kubectl, namespace: str, operator_installed: dict[str, str]
) -> None:
    apply(
        kubectl,
        namespace,
        iris_dataset(),
        training_job(
            "reported", "RandomForestClassifier", {"n_estimators": 20}, gate={"minimums": {"accuracy": 0.8}}
        ),
    )
    wait_condition(kubectl, "trainingjob", "reported", namespace, "Succeeded", timeout=600)
    model = status(kubectl, "trainingjob", "reported", namespace)["model"]
    assert model["reportURI"] == f"{model['uri']}/report.html", model
    page = next(STORE_ROOT.glob(f"**/models/{model['sha256']}/report.html")).read_text()
    assert f"{namespace}/reported" in page and model["sha256"] in page
    assert 'id="confusion-matrix"' in page and "minimum 0.8" in page and "petal_length_cm" in page
