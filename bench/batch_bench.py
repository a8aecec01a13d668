"""Batch scoring at scale: a snapshot of N rows x 20 features scored by 1 and by 2 shards.

    .venv/bin/python bench/batch_bench.py                      # 2 million rows, the RandomForest
    .venv/bin/python bench/batch_bench.py --rows 10000000      # the figure of issue 12

Writes a Dataset version with the project's own snapshot code (Parquet parts of ``--part-rows`` rows and
the manifest), puts a real ONNX model in a file:// store (``--model``: the serving benchmark's RandomForest,
100 trees of depth 8, or a logistic regression), then runs ``python -m kubeloop.runtime score`` as the
Indexed Job's pods run it, one process per index, each pinned to one CPU of its own (a pod with a 1-CPU
limit; ONNX Runtime takes as many threads as the process has CPUs): once with 1 shard, once with 2 shards
side by side. Prints rows per second (rows / wall time from the first start to the last exit, model
fetch and load included), the CPUs the shards kept busy (their CPU seconds / wall seconds: 2.0 for 2
shards with a CPU each to themselves, less when other work on the machine took a share) and the
speed-up. Then the retry check: the 2-shard run again with index 0
killed (SIGKILL) mid-way and run again, as the Job would; the output manifests (every part's sha256 and
rows) must equal the 1-shard run's, and the rows the input's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from kubeloop.contract import COMPLETION_INDEX_ENV, MODEL_MARKER, SCORES_MARKER, scores_prefix  # noqa: E402
from kubeloop.runtime.serve.examples import build_model_dir  # noqa: E402
from kubeloop.runtime.snapshot import ContentHash, PartWriter, publish, staging_prefix  # noqa: E402
from kubeloop.runtime.store import join, open_store  # noqa: E402

FEATURES = 20
CHUNK_ROWS = 250_000


def write_snapshot(root: Path, rows: int, part_rows: int) -> tuple[str, str]:
    """(artifactURI, version) of a snapshot of ``rows`` rows: 20 float features and an int target."""
    store = open_store(f"file://{root}")
    base = join("datasets", "bench", "data")
    staging = staging_prefix(base)
    schema = pa.schema(
        [*(pa.field(f"f{i}", pa.float64()) for i in range(FEATURES)), pa.field("target", pa.int64())]
    )
    writer = PartWriter(store, staging, schema, part_rows)
    content = ContentHash(schema)
    rng = np.random.default_rng(0)
    for start in range(0, rows, CHUNK_ROWS):
        n = min(CHUNK_ROWS, rows - start)
        x = rng.normal(size=(n, FEATURES))
        batch = pa.record_batch(
            [*(pa.array(x[:, i]) for i in range(FEATURES)), pa.array(rng.integers(0, 3, n))], schema=schema
        )
        writer.write(batch)
        content.update(batch)
    parts = writer.close()
    version = content.hexdigest()
    publish(store, staging, join(base, version), parts, schema, {"rows": rows}, version)
    return store.uri(join(base, version, "manifest.json")), version


def config(root: Path, name: str, shards: int, artifact: str, version: str, sha: str) -> dict[str, Any]:
    return {
        "namespace": "bench",
        "name": name,
        "job": f"{name}-score",
        "storeURI": f"file://{root}",
        "dataset": {"name": "data", "version": version[:16], "artifactURI": artifact},
        "model": {"uri": f"file://{root}/models/{sha}", "sha256": sha},
        "output": scores_prefix("bench", name, version, sha),
        "shards": shards,
    }


def start(cfg: dict[str, Any], index: int, cpu: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "operator"),
        "KUBELOOP_CONFIG": json.dumps(cfg),
        COMPLETION_INDEX_ENV: str(index),
        "KUBELOOP_TERMINATION_LOG": os.devnull,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "kubeloop.runtime", "score"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
    )


def finish(process: subprocess.Popen[bytes]) -> dict[str, Any]:
    out, _ = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"a shard failed (exit {process.returncode}):\n{out.decode()[-2000:]}")
    return json.loads(out.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(cfg: dict[str, Any], cpus: list[int]) -> tuple[float, float, list[dict[str, Any]]]:
    """(wall seconds, CPU seconds the shards got, their results)."""
    began, cpu = time.monotonic(), children_cpu()
    processes = [start(cfg, i, cpus[i % len(cpus)]) for i in range(cfg["shards"])]
    results = [finish(p) for p in processes]
    return time.monotonic() - began, children_cpu() - cpu, results


def manifest(root: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    return json.loads((root / cfg["output"] / SCORES_MARKER).read_text())  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--part-rows", type=int, default=250_000, help="rows per snapshot part")
    parser.add_argument("--model", choices=("random_forest", "logistic_regression"), default="random_forest")
    parser.add_argument("--dir", help="where the store goes (default: a temporary directory, removed after)")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        print(f"note: this process may use {len(cpus)} CPU; the 2 shards share it", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="batch-bench-") as tmp:
        root = Path(tmp)
        began = time.monotonic()
        artifact, version = write_snapshot(root, args.rows, args.part_rows)
        parts = len(json.loads(Path(artifact.removeprefix("file://")).read_text())["parts"])
        local = root / "model-src"
        build_model_dir(local, args.model, n_features=FEATURES)
        sha = json.loads((local / MODEL_MARKER).read_text())["sha256"]
        open_store(f"file://{root}").put_dir(f"models/{sha}", local, MODEL_MARKER)
        print(
            f"snapshot: {args.rows:,} rows x {FEATURES} features in {parts} part(s), model {args.model} "
            f"({sha[:12]}), made in {time.monotonic() - began:.1f} s; CPUs {cpus}"
        )
        one = config(root, "one", 1, artifact, version, sha)
        wall_1, cpu_1, _ = run(one, cpus[:1])
        two = config(root, "two", 2, artifact, version, sha)
        wall_2, cpu_2, results = run(two, cpus[:2])
        rate_1, rate_2 = args.rows / wall_1, args.rows / wall_2
        # CPU seconds per wall second: 1.0 per shard when each had its CPU to itself; less when other
        # processes of the machine took a share (the figure is then the machine's, not the code's).
        print(
            f"1 shard  (1 CPU):       {wall_1:7.2f} s  {rate_1:11,.0f} rows/s, CPUs busy {cpu_1 / wall_1:.2f}"
        )
        print(
            f"2 shards (1 CPU each):  {wall_2:7.2f} s  {rate_2:11,.0f} rows/s, CPUs busy {cpu_2 / wall_2:.2f}"
            f"  (shards scored {[r['rows'] for r in results]} rows)"
        )
        print(
            f"speed-up 2 shards / 1 shard: {rate_2 / rate_1:.2f}x; rows per CPU-second "
            f"{args.rows / cpu_1:,.0f} (1 shard), {args.rows / cpu_2:,.0f} (2 shards)"
        )
        reference = manifest(root, one)
        assert reference["rows"] == args.rows, "output rows must equal input rows"
        assert manifest(root, two) == reference, "2 shards must write the same output as 1"

        killed = config(root, "killed", 2, artifact, version, sha)
        victim, other = start(killed, 0, cpus[0]), start(killed, 1, cpus[1 % len(cpus)])
        time.sleep(wall_2 / 2)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        finish(other)
        complete = (root / killed["output"] / SCORES_MARKER).exists()
        print(
            f"retry: index 0 killed after {wall_2 / 2:.1f} s (exit {victim.returncode}); "
            f"a manifest before the retry: {complete}"
        )
        finish(start(killed, 0, cpus[0]))
        same = manifest(root, killed) == reference
        print(
            f"retry: index 0 run again; output equals the 1-shard output: {same} ({reference['rows']:,} rows)"
        )
        if complete or not same:
            raise SystemExit("the retry check failed")


if __name__ == "__main__":
    main()
