"""Training overhead of the runtime against bare scikit-learn + skl2onnx on the same data.

Runtime: kubeloop.runtime.train.train (fit + evaluate + export + parity + report + write to a file://
store). Bare: the same estimator fitted on the same split and exported with skl2onnx, nothing else.
Both run in this process after a warm-up, so imports are not counted. Prints the median of --repeat runs
and the overhead ratio per estimator.

    .venv/bin/python bench/train_bench.py [--repeat 5] [--dataset breast_cancer]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

import numpy as np
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.model_selection import train_test_split

from kubeloop.runtime import estimators, ingest, train

CASES = [
    ("LogisticRegression", {"max_iter": 1000}),
    ("RandomForestClassifier", {"n_estimators": 100}),
    ("GradientBoostingClassifier", {"n_estimators": 100}),
]


def bare(name: str, params: dict[str, Any], x: np.ndarray, y: np.ndarray) -> float:
    start = time.perf_counter()
    x_train, _, y_train, _ = train_test_split(x, y, test_size=0.2, random_state=42, stratify=y)
    model = estimators.build(name, params)
    if "random_state" in model.get_params():
        model.set_params(random_state=42)
    model.fit(x_train, y_train)
    convert_sklearn(
        model,
        initial_types=[("input", FloatTensorType([None, x.shape[1]]))],
        options={id(model): {"zipmap": False}},
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dataset", default="breast_cancer", choices=ingest.BUILTINS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = f"file://{tmp}/store"
        with contextlib.redirect_stdout(io.StringIO()):
            ds = ingest.ingest(
                {
                    "namespace": "bench",
                    "name": args.dataset,
                    "storeURI": store,
                    "source": {"builtin": args.dataset},
                }
            )
        config_base = {
            "namespace": "bench",
            "name": "bench",
            "storeURI": store,
            "dataset": {"name": args.dataset, "version": ds["version"]},
        }
        frame, doc, _ = train.load_dataset(config_base)
        x, y, _, _ = train.prepare(frame, doc, config_base)
        print(f"dataset {args.dataset}: {len(y)} rows x {x.shape[1]} features; median of {args.repeat} runs")
        print(f"{'estimator':<28}{'bare s':>9}{'runtime s':>11}{'ratio':>8}   runtime breakdown (s)")
        for name, params in CASES:
            config = {**config_base, "model": {"estimator": name, "params": params}}
            runs: list[dict[str, float]] = []
            bares: list[float] = []
            for i in range(args.repeat + 1):  # the first of each is a warm-up (lazy imports, caches)
                b = bare(name, params, x, y)
                with contextlib.redirect_stdout(io.StringIO()):
                    t = train.train(config)["timings"]
                if i:
                    bares.append(b)
                    runs.append(t)
            b_med = statistics.median(bares)
            r_med = statistics.median(r["total"] for r in runs)
            parts = " ".join(
                f"{k}={statistics.median(r[k] for r in runs):.3f}"
                for k in ("fit", "evaluate", "export", "parity", "write")
            )
            print(f"{name:<28}{b_med:>9.3f}{r_med:>11.3f}{r_med / b_med:>7.2f}x   {parts}")


if __name__ == "__main__":
    main()
