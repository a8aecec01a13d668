"""How much memory a training pod needs for its data: peak RSS of ``python -m kubeloop.runtime train`` on
snapshots of growing size, and the line through them (a base plus bytes per cell, cell = row x column).

    .venv/bin/python bench/train_memory_bench.py                    # 100k, 400k, 800k rows x 12 features
    .venv/bin/python bench/train_memory_bench.py --rows 200000 1000000 --estimator RandomForestClassifier

Each size: the CSV of bench/data_bench.py (its 12 numeric columns are the features, `label` the target) is
ingested by the real ingest into a file:// store, then the real trainer fits the estimator on it, in a new
process whose peak RSS is read with getrusage. The operator's estimate before a trial starts
(kubeloop.controllers.trainingjob.memory_needed) is a lower bound from these figures: compare them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from data_bench import MEASURE, generate

from kubeloop.controllers.trainingjob import memory_needed

REPO = Path(__file__).resolve().parents[1]
FEATURES = [f"f{i}" for i in range(8)] + [f"i{i}" for i in range(4)]
RUN = (
    "sys.argv = ['kubeloop.runtime', sys.argv[1]]; runpy.run_module('kubeloop.runtime', run_name='__main__')"
)


def run(command: str, config: dict[str, object], work: Path) -> tuple[float, int, dict[str, object]]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "operator"),
        "KUBELOOP_CONFIG": json.dumps(config),
        "KUBELOOP_PVC_ROOT": str(work / "pvc"),
        "KUBELOOP_TERMINATION_LOG": str(work / "termination-log"),
        "MPLCONFIGDIR": str(work / "mpl"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE.format(body=RUN), command],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    line = next((x for x in reversed(proc.stderr.splitlines()) if x.startswith("bench:")), None)
    if line is None or proc.returncode != 0:
        raise SystemExit(
            f"{command} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    _, seconds, rss_kib = line.split()
    return float(seconds), int(rss_kib) * 1024, json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 400_000, 800_000])
    parser.add_argument("--estimator", default="LogisticRegression")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kubeloop-train-memory-"))
    mib = 2**20
    points = []
    try:
        for rows in args.rows:
            (work / "pvc").mkdir(exist_ok=True)
            generate(work / "pvc" / "data.csv", rows)
            store = work / "store"
            shutil.rmtree(store, ignore_errors=True)
            _, _, ingested = run(
                "ingest",
                {
                    "namespace": "bench",
                    "name": "data",
                    "storeURI": f"file://{store}",
                    "source": {"pvc": {"claimName": "bench", "path": "data.csv"}},
                    "schema": {"target": "label", "columns": [{"name": "label", "type": "int"}]},
                },
                work,
            )
            seconds, rss, _ = run(
                "train",
                {
                    "namespace": "bench",
                    "name": "t",
                    "storeURI": f"file://{store}",
                    "dataset": {"name": "data", "artifactURI": ingested["artifactURI"]},
                    "model": {"estimator": args.estimator, "params": {}},
                    "features": FEATURES,
                    "split": {"testFraction": 0.2, "seed": 1},
                },
                work,
            )
            columns = int(ingested["columns"])  # the trainer loads every column of the snapshot
            points.append((rows * columns, rss))
            estimate = memory_needed(rows, columns)
            print(
                f"{args.estimator}: {rows:,} rows x {columns} columns ({len(FEATURES)} features): "
                f"trained in {seconds:.1f} s, "
                f"peak RSS {rss / mib:,.0f} MiB; the operator's estimate {estimate / mib:,.0f} MiB "
                f"({estimate / rss:.2f} of the peak)"
            )
        if len(points) >= 2:
            slope, base = np.polyfit([v for v, _ in points], [r for _, r in points], 1)
            print(f"fit: peak RSS = {base / mib:,.0f} MiB + {slope:.1f} bytes per cell (row x column)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
