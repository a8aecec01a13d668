"""Train one model (or one search trial): fit, evaluate, export ONNX, prove parity, gate, write.

Config (``KUBELOOP_CONFIG``): the TrainingJob spec's fields (``model``, ``features``, ``split``, ``gate``)
plus ``namespace``, ``name``, ``storeURI``, and the dataset the controller pinned: ``dataset``
(``name``, ``version`` — full hash or a unique prefix —, optional ``artifactURI``). In trial mode
``trial`` (``index``, ``params``) overrides ``model.params`` for that one trial.

Output under ``models/<sha256 of model.onnx>/``: model.onnx, baseline.json, report/*.png, report.html (the
page a person reads, ``kubeloop.runtime.report``) and model-card.json last (the marker). A model that
misses the gate is still written, marked as failing it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import platform
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kubeloop import contract
from kubeloop.runtime import estimators, jobio, report, snapshot
from kubeloop.runtime import features as encoding
from kubeloop.runtime.jobio import DataError
from kubeloop.runtime.store import Store, StoreError, join, open_store, sha256_file

MARKER = contract.MODEL_MARKER
DEFAULT_PROBA_TOLERANCE = 1e-4
DEFAULT_REGRESSION_RTOL = 1e-4
LIBRARIES = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy", "pandas", "pyarrow")


# ------------------------------------------------------------------------------------------- dataset


def load_dataset(config: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """The snapshot, its statistics and ``{name, version, artifactURI}``; only complete snapshots count."""
    ref = config.get("dataset") or config.get("datasetRef") or {}
    if ref.get("artifactURI"):
        directory, _, _ = ref["artifactURI"].rpartition("/")
        store = open_store(directory)
        prefix = ""
    else:
        if not ref.get("name") or not ref.get("version"):
            raise DataError(
                "InvalidConfig",
                "config needs dataset.name and dataset.version (the version the "
                "controller pinned) or dataset.artifactURI",
            )
        store = open_store(config["storeURI"])
        prefix = _resolve_version(store, config["namespace"], ref["name"], ref["version"])
    try:
        doc = json.loads(store.get_bytes(join(prefix, contract.STATISTICS_FILE)))
        table = snapshot.read_table(store, prefix)  # every part, in order
    except StoreError as exc:
        raise DataError("DatasetNotFound", f"dataset snapshot is incomplete or missing: {exc}") from None
    sample = None
    wanted = config.get("sampleRows")
    if wanted and table.num_rows > int(wanted):
        target = config.get("target") or doc.get("targetName")
        labels = table.column(target).to_numpy(zero_copy_only=False) if target in table.column_names else None
        seed = int((config.get("split") or {}).get("seed", 42))
        chosen, stratified = sample_indices(table.num_rows, int(wanted), labels, seed)
        sample = {"rows": len(chosen), "of": table.num_rows, "seed": seed, "stratified": stratified}
        table = table.take(chosen)  # before pandas: the DataFrame holds the sample only
    frame = table.to_pandas()
    full = prefix.rsplit("/", 1)[-1] if prefix else ref.get("version", "")
    legacy = not store.exists(join(prefix, contract.DATASET_MARKER))  # one data.parquet, before parts
    info: dict[str, Any] = {
        "name": ref.get("name", ""),
        "version": full[:16],
        "sha256": full,
        "artifactURI": store.uri(join(prefix, contract.SNAPSHOT_FILE if legacy else contract.DATASET_MARKER)),
    }
    if sample is not None:
        info["sample"] = sample
    return frame, doc, info


def sample_indices(rows: int, wanted: int, labels: np.ndarray | None, seed: int) -> tuple[np.ndarray, bool]:
    """``wanted`` row indices of ``rows``, in order, drawn with ``seed``; stratified by ``labels`` when they
    look like classes (not floats) and every class can keep a row, else a plain random sample. Pure."""
    from sklearn.model_selection import train_test_split

    everything = np.arange(rows)
    classes = labels is not None and labels.dtype.kind not in "fc"
    if classes:
        try:
            chosen, _ = train_test_split(everything, train_size=wanted, random_state=seed, stratify=labels)
            return np.sort(chosen), True
        except ValueError:  # a class with one row, or more classes than rows wanted: not stratifiable
            pass
    chosen = np.random.default_rng(seed).choice(rows, size=wanted, replace=False)
    return np.sort(chosen), False


def _resolve_version(store: Store, namespace: str, name: str, version: str) -> str:
    base = join("datasets", namespace, name)
    # A version is complete once its manifest exists; one written before parts (one data.parquet, then
    # statistics.json last) once its statistics do.
    keys = set(store.list(base))
    complete = {
        k.split("/")[-2]
        for k in keys
        if k.endswith(f"/{contract.DATASET_MARKER}")
        or (
            k.endswith(f"/{contract.STATISTICS_FILE}")
            and k.replace(contract.STATISTICS_FILE, contract.SNAPSHOT_FILE) in keys
        )
    }
    matches = sorted(v for v in complete if v.startswith(version))
    if len(matches) != 1:
        found = ", ".join(v[:16] for v in sorted(complete)) or "none"
        what = "no complete snapshot" if not matches else "more than one snapshot"
        raise DataError(
            "DatasetNotFound",
            f"{what} of dataset {namespace}/{name} matches version {version!r}; "
            f"versions in the store: {found}",
        )
    return join(base, matches[0])


def prepare(
    frame: pd.DataFrame, doc: dict[str, Any], config: dict[str, Any]
) -> tuple[np.ndarray | pd.DataFrame, np.ndarray, list[str], str]:
    """Rows, labels, feature names and target. The rows are a float32 matrix when every feature is numeric
    (or bool), else a DataFrame of float32 and string columns for the encoding pipeline (features.py)."""
    target = config.get("target") or doc.get("targetName")
    if not target or target not in frame.columns:
        raise DataError(
            "MissingTarget",
            f"the dataset has no target column {target!r}: set schema.target on "
            f"the Dataset; columns are {list(frame.columns)}",
        )
    features = list(config.get("features") or [c for c in frame.columns if c != target])
    missing = [f for f in features if f not in frame.columns]
    if missing or target in features:
        raise DataError(
            "InvalidFeatures",
            f"features {missing or [target]} are not usable feature columns; "
            f"columns are {list(frame.columns)}",
        )
    categories = encoding.categorical(frame, doc, features)
    frame = frame[frame[target].notna()]  # an unlabelled row cannot be trained on or scored
    # float32 before fitting: ONNX runs in float32, so both models see exactly the same inputs.
    x: np.ndarray | pd.DataFrame = (
        encoding.table(frame, features, categories)
        if categories
        else frame[features].astype("float64").to_numpy().astype(np.float32)
    )
    y_series = frame[target]
    if pd.api.types.is_integer_dtype(y_series) or pd.api.types.is_bool_dtype(y_series):
        y = y_series.astype("int64").to_numpy()
    elif pd.api.types.is_float_dtype(y_series):
        y = y_series.to_numpy(dtype=np.float64)
    else:
        y = y_series.astype(str).to_numpy()
    return x, y, features, target


def infer_task(y: np.ndarray) -> str:
    if y.dtype.kind in "OUSb":
        return "classification"
    distinct = np.unique(y)
    if y.dtype.kind == "f" and not np.all(np.mod(distinct, 1) == 0):
        return "regression"
    return "classification" if len(distinct) <= max(20, int(0.05 * len(y))) else "regression"


# ------------------------------------------------------------------------------------------- metrics


def evaluate(task: str, model: Any, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from sklearn import metrics

    pred = model.predict(x)
    if task == "regression":
        return {
            "rmse": float(np.sqrt(metrics.mean_squared_error(y, pred))),
            "mae": float(metrics.mean_absolute_error(y, pred)),
            "r2": float(metrics.r2_score(y, pred)),
        }
    out = {
        "accuracy": float(metrics.accuracy_score(y, pred)),
        "f1_macro": float(metrics.f1_score(y, pred, average="macro")),
    }
    scores = _scores(model, x)
    if scores is not None:
        try:
            if len(model.classes_) == 2:
                column = scores[:, 1] if scores.ndim == 2 else scores
                out["roc_auc"] = float(metrics.roc_auc_score(y, column))
            elif scores.ndim == 2:
                out["roc_auc"] = float(
                    metrics.roc_auc_score(
                        y, scores, multi_class="ovr", average="macro", labels=model.classes_
                    )
                )
        except ValueError as exc:  # a class absent from the test rows: ROC-AUC is undefined, not an error
            print(f"roc_auc not computed: {exc}")
    return out


def _scores(model: Any, x: np.ndarray) -> np.ndarray | None:
    if hasattr(model, "predict_proba"):
        try:
            return np.asarray(model.predict_proba(x))
        except AttributeError:  # e.g. SVC(probability=False) has the method but refuses to run it
            pass
    if hasattr(model, "decision_function"):
        return np.asarray(model.decision_function(x))
    return None


def gate(metrics: dict[str, float], config: dict[str, Any]) -> tuple[bool, list[str]]:
    """The gate of the config: minimums, maximums and, when the controller passes the serving model's
    bounds (servingMetrics), "no worse" — judged by the one gate function the operator also uses."""
    spec = config.get("gate") or {}
    return contract.gate(metrics, spec.get("minimums"), spec.get("maximums"), spec.get("servingMetrics"))


# ---------------------------------------------------------------------------------------- onnx + parity


def export_onnx(model: Any, n_features: int, task: str, inputs: list[tuple[str, Any]] | None = None) -> bytes:
    """One graph; its input is one float matrix ``input``, or ``inputs`` (one per raw column, features.py)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    options = {id(_final(model)): {"zipmap": False}} if task == "classification" else None
    # A fixed graph name: skl2onnx otherwise picks a random one, and the same model must give the same sha256.
    with _bool_ints_as_ints():
        onx = convert_sklearn(
            model,
            initial_types=inputs or [("input", FloatTensorType([None, n_features]))],
            options=options,
            name="kubeloop",
        )
    return bytes(onx.SerializeToString())


@contextlib.contextmanager
def _bool_ints_as_ints() -> Iterator[None]:
    """skl2onnx 1.20 hands numpy bools to integer-list attributes of the tree ensembles it makes for
    HistGradientBoosting (the missing-value tracks), which onnx 1.23's protobuf refuses ("Expected an int,
    got a boolean"): while converting, a list of bools and ints becomes a list of ints, as the ONNX
    operator defines the attribute. Nothing else changes (tests/unit/test_estimators_export.py)."""
    import onnx.helper

    original = onnx.helper.make_attribute

    def make_attribute(key: str, value: Any, *args: Any, **kwargs: Any) -> Any:
        if (
            isinstance(value, (list, tuple))
            and any(isinstance(v, (bool, np.bool_)) for v in value)
            and all(isinstance(v, (bool, int, np.bool_, np.integer)) for v in value)
        ):
            value = [int(v) for v in value]
        return original(key, value, *args, **kwargs)

    onnx.helper.make_attribute = make_attribute  # make_node looks it up in its module at each call
    try:
        yield
    finally:
        onnx.helper.make_attribute = original


def _final(model: Any) -> Any:
    return model.steps[-1][1] if hasattr(model, "steps") else model


def parity(
    task: str, model: Any, onnx_bytes: bytes, x: np.ndarray | pd.DataFrame, tolerances: dict[str, Any]
) -> dict[str, Any]:
    """The ONNX model must agree with scikit-learn on the held-out rows, or the run fails saying where."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    feed = encoding.feed(x, encoding.categories_of(x)) if isinstance(x, pd.DataFrame) else {"input": x}
    outputs = session.run(None, feed)
    if task == "regression":
        rtol = float(tolerances.get("relativeTolerance", DEFAULT_REGRESSION_RTOL))
        expected = np.asarray(model.predict(x), dtype=np.float64).ravel()
        got = np.asarray(outputs[0], dtype=np.float64).ravel()
        gap = np.abs(got - expected) / np.maximum(np.abs(expected), 1.0)
        worst = int(np.argmax(gap)) if gap.size else 0
        report = {"rows": len(x), "maxRelativeDiff": float(gap.max(initial=0.0)), "relativeTolerance": rtol}
        if gap.size and gap[worst] > rtol:
            raise DataError(
                "ParityFailed",
                f"ONNX and scikit-learn disagree on held-out row {worst + 1}: "
                f"{got[worst]:.6g} vs {expected[worst]:.6g} (relative gap "
                f"{gap[worst]:.2g} > {rtol:g}); the model was not written",
            )
        return report
    atol = float(tolerances.get("probabilityTolerance", DEFAULT_PROBA_TOLERANCE))
    labels = np.asarray(outputs[0]).ravel()
    expected_labels = np.asarray(model.predict(x)).ravel()
    report = {"rows": len(x), "probabilityTolerance": atol}
    proba = _scores(model, x) if hasattr(model, "predict_proba") else None
    onnx_proba = np.asarray(outputs[1]) if len(outputs) > 1 and proba is not None else None
    if onnx_proba is not None and proba is not None and proba.ndim == 2:
        diff = np.abs(onnx_proba - proba)
        report["maxProbabilityDiff"] = float(diff.max(initial=0.0))
        row = int(np.argmax(diff.max(axis=1))) if diff.size else 0
        if diff.size and diff[row].max() > atol:
            raise DataError(
                "ParityFailed",
                f"ONNX and scikit-learn probabilities differ by {diff[row].max():.2g} "
                f"on held-out row {row + 1} (tolerance {atol:g}); the model was not "
                "written",
            )
    mismatch = np.flatnonzero(labels.astype(str) != expected_labels.astype(str))
    if onnx_proba is not None and proba is not None and proba.ndim == 2 and proba.shape[1] > 1:
        # A near-tie of the top two classes may flip in float32 arithmetic: not a disagreement of the models.
        top2 = np.sort(proba, axis=1)[:, -2:]
        mismatch = np.array([i for i in mismatch if top2[i, 1] - top2[i, 0] > atol], dtype=int)
    report["labelMismatches"] = len(mismatch)
    if len(mismatch):
        i = int(mismatch[0])
        raise DataError(
            "ParityFailed",
            f"ONNX and scikit-learn predict different labels on {len(mismatch)} "
            f"held-out row(s), first row {i + 1}: {labels[i]} vs {expected_labels[i]}; "
            "the model was not written",
        )
    return report


# ---------------------------------------------------------------------------------------------- report


def write_report(
    task: str, model: Any, x: np.ndarray | pd.DataFrame, y: np.ndarray, features: list[str], out: Path
) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")  # no display in a pod
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    pred = model.predict(x)
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    if task == "classification":
        from sklearn.metrics import ConfusionMatrixDisplay

        ConfusionMatrixDisplay.from_predictions(y, pred, ax=ax, colorbar=False)
        ax.set_title("Confusion matrix (held-out rows)")
        name = "confusion_matrix.png"
    else:
        ax.scatter(pred, y - pred, s=8, alpha=0.6)
        ax.axhline(0, color="grey", linewidth=1)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual - predicted")
        ax.set_title("Residuals (held-out rows)")
        name = "residuals.png"
    fig.tight_layout()
    fig.savefig(out / name)
    plt.close(fig)
    written.append(name)
    importance = _importance(_final(model))
    if importance is not None and len(importance) == len(features):  # one-hot columns: see encoded_names
        order = np.argsort(importance)[-20:]  # the 20 largest: a bar chart of 64 pixels says nothing
        fig, ax = plt.subplots(figsize=(6, max(2.5, 0.3 * len(order))), dpi=100)
        ax.barh([features[i] for i in order], importance[order])
        ax.set_title("Feature importance")
        fig.tight_layout()
        fig.savefig(out / "feature_importance.png")
        plt.close(fig)
        written.append("feature_importance.png")
    return written


def html_report(
    task: str,
    model: Any,
    x: np.ndarray | pd.DataFrame,
    y: np.ndarray,
    card: dict[str, Any],
    config: dict[str, Any],
    statistics: dict[str, Any],
) -> str:
    """The model report of this run, from the held-out rows (``x``, ``y``) and the card."""
    pred = model.predict(x)
    final = _final(model)
    confusion = residuals = None
    if task == "classification":
        from sklearn.metrics import confusion_matrix

        labels = list(getattr(final, "classes_", np.unique(np.concatenate([y, pred]))))
        counts = confusion_matrix(y, pred, labels=labels)
        confusion = report.Confusion([str(c) for c in card["classes"] or labels], counts.tolist())
    else:
        residuals = report.Residuals([float(v) for v in y], [float(v) for v in np.ravel(pred)])
    raw = _importance(final)
    features = card["features"]
    importance = (
        {f: float(v) for f, v in zip(features, raw, strict=True)}
        if raw is not None and len(raw) == len(features)
        else None
    )
    trial = config.get("trial")
    # A pod runs one trial and never sees the search: its page shows its own row; status has them all.
    trials = (
        [report.TrialRow(int(trial.get("index", 0)), trial.get("params") or {}, card["metrics"])]
        if trial
        else []
    )
    return report.render(
        report.ReportInput(
            card=card,
            gate=config.get("gate") or {},
            statistics=statistics,
            confusion=confusion,
            residuals=residuals,
            importance=importance,
            importance_kind="feature_importances_" if hasattr(final, "feature_importances_") else "coef_",
            trials=trials,
        )
    )


def _importance(model: Any) -> np.ndarray | None:
    if hasattr(model, "feature_importances_"):
        return np.asarray(model.feature_importances_, dtype=float)
    if hasattr(model, "coef_"):  # |coefficient|, averaged over classes: comparable only on scaled inputs
        coef: np.ndarray = np.abs(np.asarray(model.coef_, dtype=float))
        return np.asarray(coef.mean(axis=0)) if coef.ndim == 2 else coef
    return None


# ------------------------------------------------------------------------------------------------ train


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for lib in LIBRARIES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[lib] = importlib.metadata.version(lib)
    return versions


def train(config: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    timings: dict[str, float] = {}
    for key in ("namespace", "name", "storeURI"):
        if not config.get(key):
            raise DataError("InvalidConfig", f"config needs {key!r}")
    spec = config.get("model") or {}
    trial = config.get("trial")
    params = {**(spec.get("params") or {}), **((trial or {}).get("params") or {})}
    try:
        name = estimators.canonical_name(str(spec.get("estimator", "")))
        estimator = estimators.build(name, params)
    except estimators.NotAllowedError as exc:
        raise DataError("EstimatorNotAllowed", str(exc)) from None

    unknown = (config.get("categorical") or {}).get("unknown", "ignore")
    if unknown not in encoding.UNKNOWN_POLICIES:
        raise DataError("InvalidConfig", f"categorical.unknown must be ignore or error, not {unknown!r}")
    frame, doc, dataset = load_dataset(config)
    x, y, features, target = prepare(frame, doc, config)
    categories = encoding.categories_of(x) if isinstance(x, pd.DataFrame) else []
    task = spec.get("task") or infer_task(y)
    if task != estimators.task_of(name):
        raise DataError(
            "TaskMismatch",
            f"{name} does a {estimators.task_of(name)} task but the task is {task}"
            f"{'' if spec.get('task') else ' (inferred from the target)'}: pick a "
            f"{task} estimator or set model.task",
        )
    split = config.get("split") or {}
    seed = int(split.get("seed", 42))
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline

    stratify = y if task == "classification" and split.get("stratify", True) else None
    try:
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=float(split.get("testFraction", 0.2)), random_state=seed, stratify=stratify
        )
    except ValueError as exc:
        raise DataError("InvalidSplit", f"cannot split {len(y)} rows: {exc}") from None
    # Before any pipeline wraps it: a Pipeline's parameter would be model__random_state.
    if "random_state" in estimator.get_params() and "random_state" not in params:
        estimator.set_params(random_state=seed)  # same config, same model, same sha256
    if categories:
        estimator = encoding.pipeline(estimator, x, categories, unknown)
    elif np.isnan(x).any():
        from sklearn.impute import SimpleImputer

        # Most estimators refuse NaN; the imputer is part of the exported graph, so serving does the same.
        estimator = Pipeline([("impute", SimpleImputer(strategy="median")), ("model", estimator)])

    t = time.monotonic()
    try:
        estimator.fit(x_train, y_train)
    except ValueError as exc:
        raise DataError("FitFailed", f"{name} could not be fitted: {exc}") from None
    timings["fit"] = time.monotonic() - t
    t = time.monotonic()
    metrics = evaluate(task, estimator, x_test, y_test)
    timings["evaluate"] = time.monotonic() - t
    t = time.monotonic()
    try:
        inputs = encoding.initial_types(x, categories) if categories else None
        onnx_bytes = export_onnx(estimator, len(features), task, inputs)
    except Exception as exc:  # skl2onnx raises many types; every one means this model cannot be exported
        raise DataError("ExportFailed", f"skl2onnx cannot export {name} with these params: {exc}") from None
    timings["export"] = time.monotonic() - t
    t = time.monotonic()
    # With unknown: ignore, parity also covers rows whose categories training never saw.
    checked = encoding.with_unseen(x_test, categories) if categories and unknown == "ignore" else x_test
    parity_report = parity(task, estimator, onnx_bytes, checked, config.get("parity") or {})
    timings["parity"] = time.monotonic() - t
    passed, reasons = gate(metrics, config)

    t = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / contract.MODEL_FILE).write_bytes(onnx_bytes)
        sha = sha256_file(out / contract.MODEL_FILE)
        (out / contract.BASELINE_FILE).write_text(json.dumps(doc, indent=1, sort_keys=True))
        names = encoding.encoded_names(estimator) if categories else features
        report = write_report(task, estimator, x_test, y_test, names, out / "report")
        classes = [c.item() if hasattr(c, "item") else c for c in getattr(_final(estimator), "classes_", [])]
        card_features = (
            encoding.signature(x, categories, estimator)
            if categories
            else [{"name": f, "type": "float"} for f in features]
        )
        signature = [{"name": f["name"], "type": f["type"]} for f in card_features]
        card = {
            "kind": "ModelCard",
            "version": 1,
            "namespace": config["namespace"],
            "trainingJob": config["name"],
            "sha256": sha,
            "task": task,
            "estimator": name,
            "params": params,
            "effectiveParams": _jsonable(_final(estimator).get_params()),
            "metrics": metrics,
            "dataset": dataset,
            "target": target,
            "features": features,
            "classes": classes,
            "inputSignature": {
                "inputs": (
                    encoding.graph_inputs(card_features)
                    if categories
                    else [{"name": "input", "type": "float32", "shape": [None, len(features)]}]
                ),
                "features": card_features,
                "outputs": ["label", "probabilities"] if task == "classification" else ["variable"],
            },
            "split": {
                "testFraction": float(split.get("testFraction", 0.2)),
                "seed": seed,
                "stratify": stratify is not None,
                "trainRows": len(y_train),
                "testRows": len(y_test),
            },
            "sample": dataset.get("sample"),
            "parity": parity_report,
            "gate": {"passed": passed, "reasons": reasons},
            "libraryVersions": library_versions(),
            "trainingSeconds": round(timings["fit"], 4),
            "createdAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "report": report,
            "trial": trial.get("index") if trial else None,
        }
        if categories:  # what the server does with a category the model does not know (features.py)
            card["categorical"] = {"unknown": unknown}
        store = open_store(config["storeURI"])
        prefix = join("models", sha)
        card["reportURI"] = store.uri(join(prefix, contract.REPORT_FILE))
        html = html_report(task, estimator, x_test, y_test, card, config, doc)
        (out / contract.REPORT_FILE).write_text(html, encoding="utf-8")
        (out / MARKER).write_text(json.dumps(card, indent=1, sort_keys=True))
        store.put_dir(prefix, out, marker=MARKER)
    timings["write"] = time.monotonic() - t
    timings["total"] = time.monotonic() - started
    verdict = "passed" if passed else "FAILED: " + "; ".join(reasons)
    print(
        f"trained {name} on {dataset['version']}: {json.dumps(metrics)}; gate {verdict}; model sha256 {sha}"
    )
    result: dict[str, Any] = {
        "task": task,
        "metrics": metrics,
        "gatePassed": passed,
        "gateReasons": reasons,
        "dataset": {
            "name": dataset["name"],
            "version": dataset["version"],
            "artifactURI": dataset["artifactURI"],
        },
        "model": {
            "uri": store.uri(prefix),
            "sha256": sha,
            "reportURI": card["reportURI"],
            "datasetVersion": dataset["version"],
            "task": task,
            "params": params,
            "inputSignature": signature,
            "libraryVersions": card["libraryVersions"],
            **({"sample": dataset["sample"]} if dataset.get("sample") else {}),
        },
        "timings": {k: round(v, 4) for k, v in timings.items()},
        # The model card holds all of this (the whole input signature, params, parity), should the result
        # be cut to fit the 4 KiB termination message.
        "detailsURI": store.uri(join(prefix, MARKER)),
    }
    if trial:
        result["trial"] = {"index": trial.get("index"), "params": params}
    return result


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v if isinstance(v, str | int | float | bool | type(None)) else repr(v) for k, v in params.items()
    }


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="kubeloop.runtime train", description="Train a model; config in $KUBELOOP_CONFIG"
    ).parse_args(argv)
    return jobio.run("train", lambda: train(jobio.load_config()))


if __name__ == "__main__":
    raise SystemExit(main())
