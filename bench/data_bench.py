"""Ingest at scale: N rows x 20 columns of CSV through the project's ingest, in a pod-sized memory limit.

    .venv/bin/python bench/data_bench.py                      # 2 million rows (about 270 MB of CSV)
    .venv/bin/python bench/data_bench.py --rows 10000000      # the figure of issue 12 (about 1.4 GB)

Generates the CSV (12 numeric columns, 7 categorical ones, an int class label), then runs, each in its
own process: ``python -m kubeloop.runtime ingest`` as the ingest pod runs it (pvc source, file:// store)
inside a memory cgroup limited to ``--memory-mib`` (512, as a pod's limit: page cache counts and is
reclaimed, going over is an OOM kill), and plain ``pyarrow.csv.read_csv`` of the same file with no limit
(the floor). Prints rows per second, peak memory (the process's peak RSS, and the cgroup's peak usage),
and the ratio to the floor. Without a writable cgroup (v1 memory or v2) the ingest runs unlimited, and
says so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

REPO = Path(__file__).resolve().parents[1]
CHUNK_ROWS = 500_000
CITIES = np.array([f"city_{i:03d}" for i in range(200)])
COLORS = np.array(["red", "green", "blue", "black", "white"])
CODES = np.array([f"C{i:05d}" for i in range(5000)])

# Runs the measured command in this process and reports its peak RSS on stderr.
MEASURE = """
import resource, runpy, sys, time
start = time.perf_counter()
code = 0
try:
    {body}
except SystemExit as exc:
    code = exc.code or 0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("bench:", time.perf_counter() - start, peak, file=sys.stderr)
sys.exit(code)
"""
INGEST = (
    "sys.argv = ['kubeloop.runtime', 'ingest']; runpy.run_module('kubeloop.runtime', run_name='__main__')"
)
FLOOR = "import pyarrow.csv; table = pyarrow.csv.read_csv(sys.argv[1]); print(table.num_rows)"


def chunk(rng: np.random.Generator, start: int, rows: int) -> pa.Table:
    """rows of the benchmark table; ``start`` keeps row content different across chunks."""
    cols: dict[str, pa.Array] = {}
    for i in range(8):
        values = rng.normal(loc=i, scale=1 + i, size=rows).round(4)
        if i == 0:
            values[rng.random(rows) < 0.01] = np.nan  # some empty cells
        cols[f"f{i}"] = pa.array(values, from_pandas=True)
    for i in range(4):
        cols[f"i{i}"] = pa.array(rng.integers(0, 10 ** (i + 2), size=rows))
    cols["city"] = pa.array(CITIES[rng.zipf(1.3, size=rows) % CITIES.size])
    cols["color"] = pa.array(COLORS[rng.integers(0, COLORS.size, size=rows)])
    cols["code"] = pa.array(CODES[rng.integers(0, CODES.size, size=rows)])
    cols["plan"] = pa.array(np.where(rng.random(rows) < 0.3, "premium", "basic"))
    cols["region"] = pa.array(np.array(["north", "south", "east", "west"])[rng.integers(0, 4, size=rows)])
    cols["active"] = pa.array(np.where(rng.random(rows) < 0.5, "yes", "no"))
    cols["id"] = pa.array([f"u{start + k}" for k in range(rows)])
    cols["label"] = pa.array((rng.random(rows) < 0.2).astype(np.int64))
    return pa.table(cols)


def generate(path: Path, rows: int, seed: int = 12) -> None:
    rng = np.random.default_rng(seed)
    first = chunk(rng, 0, min(rows, CHUNK_ROWS))
    with pacsv.CSVWriter(str(path), first.schema) as writer:
        writer.write_table(first)
        done = first.num_rows
        while done < rows:
            part = chunk(rng, done, min(rows - done, CHUNK_ROWS))
            writer.write_table(part)
            done += part.num_rows


@contextlib.contextmanager
def memory_cgroup(limit: int) -> Iterator[Path | None]:
    """A child memory cgroup of this process's own with ``limit`` bytes, or None where none can be made."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, where = line.split(":", 2)
        base = None
        if "memory" in controllers.split(","):
            base = Path("/sys/fs/cgroup/memory") / where.lstrip("/")
            files = ("memory.limit_in_bytes", "memory.max_usage_in_bytes", "memory.failcnt")
        elif (
            controllers == "" and (Path("/sys/fs/cgroup") / where.lstrip("/") / "cgroup.controllers").exists()
        ):
            base = Path("/sys/fs/cgroup") / where.lstrip("/")
            files = ("memory.max", "memory.peak", "memory.events")
        if base is None:
            continue
        group = base / f"kubeloop-data-bench-{os.getpid()}"
        try:
            group.mkdir()
            (group / files[0]).write_text(str(limit))
        except OSError:
            with contextlib.suppress(OSError):
                group.rmdir()
            continue
        try:
            yield group
        finally:
            for _ in range(50):  # the group empties once its last process is reaped
                try:
                    group.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
        return
    yield None


def peak_of(group: Path | None) -> int | None:
    if group is None:
        return None
    for name in ("memory.max_usage_in_bytes", "memory.peak"):
        if (group / name).exists():
            return int((group / name).read_text())
    return None


def measure(
    body: str, args: list[str], env: dict[str, str], group: Path | None
) -> tuple[float, int, str, int]:
    """(seconds, peak RSS in bytes, stdout, exit code) of ``body`` run in a new process (in ``group``)."""

    def enter() -> None:
        if group is not None:
            (group / "cgroup.procs").write_text(str(os.getpid()))

    proc = subprocess.run(
        [sys.executable, "-c", MEASURE.format(body=body), *args],
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=enter,
        check=False,
    )
    line = next((x for x in reversed(proc.stderr.splitlines()) if x.startswith("bench:")), None)
    if line is None:
        raise SystemExit(f"the measured process died (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    _, seconds, rss_kib = line.split()
    return float(seconds), int(rss_kib) * 1024, proc.stdout, proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument(
        "--memory-mib", type=int, default=512, help="the ingest's memory limit (a pod's limit)"
    )
    parser.add_argument(
        "--batch-mib", type=int, help="CSV block size of the ingest (default: the ingest's own)"
    )
    parser.add_argument("--workdir", type=Path, help="where the CSV and the store go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the generated CSV and the store")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="kubeloop-data-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    csv_path = work / "pvc" / "data.csv"
    csv_path.parent.mkdir(exist_ok=True)
    try:
        made = csv_path.with_suffix(".rows")  # the row count of a CSV kept from an earlier run
        if not csv_path.exists() or not made.exists() or int(made.read_text()) != args.rows:
            start = time.perf_counter()
            generate(csv_path, args.rows)
            made.write_text(str(args.rows))
            took = time.perf_counter() - start
            mb = csv_path.stat().st_size / 1e6
            print(f"generated {args.rows:,} rows x 20 columns, {mb:,.0f} MB in {took:.0f} s")
        size_mb = csv_path.stat().st_size / 1e6

        store = work / "store"
        shutil.rmtree(store, ignore_errors=True)
        config = {
            "namespace": "bench",
            "name": "data",
            "storeURI": f"file://{store}",
            "source": {"pvc": {"claimName": "bench", "path": "data.csv"}},
            "schema": {"target": "label", "columns": [{"name": "label", "type": "int"}]},
        }
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO / "operator"),
            "KUBELOOP_CONFIG": json.dumps(config),
            "KUBELOOP_PVC_ROOT": str(csv_path.parent),
            "KUBELOOP_TERMINATION_LOG": str(work / "termination-log"),
        }
        if args.batch_mib:
            env["KUBELOOP_INGEST_BATCH_BYTES"] = str(args.batch_mib << 20)
        with memory_cgroup(args.memory_mib << 20) as group:
            seconds, rss, out, code = measure(INGEST, [], env, group)
            cgroup_peak = peak_of(group)
        if code != 0:
            print(f"ingest failed (exit {code}): {out.strip().splitlines()[-1] if out.strip() else ''}")
            return 1
        result = json.loads(out.strip().splitlines()[-1])
        assert result["rows"] == args.rows, result
        floor_s, floor_rss, _, _ = measure(FLOOR, [str(csv_path)], {**os.environ}, None)

        mib = 2**20
        limit = (
            f"in a {args.memory_mib} MiB memory cgroup" if group else "UNLIMITED (no writable memory cgroup)"
        )
        cgroup_said = f", cgroup peak {cgroup_peak / mib:,.0f} MiB" if cgroup_peak else ""
        print(
            f"ingest {limit}: {args.rows:,} rows ({size_mb:,.0f} MB CSV) in {seconds:.1f} s = "
            f"{args.rows / seconds:,.0f} rows/s, peak RSS {rss / mib:,.0f} MiB{cgroup_said}; "
            f"{result['parts']} parts, version {result['version']}"
        )
        print(
            f"floor, pyarrow.csv.read_csv (no limit): {floor_s:.1f} s = {args.rows / floor_s:,.0f} rows/s, "
            f"peak RSS {floor_rss / mib:,.0f} MiB"
        )
        within = "not enforced" if not group else "yes" if rss <= args.memory_mib * mib else "no"
        print(
            f"ingest throughput / floor: {floor_s / seconds:.2f} (target >= 0.5); within the limit: {within}"
        )
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
