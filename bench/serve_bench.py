#!/usr/bin/env python3
"""Kubeloop's inference server beside MLServer and KServe's ModelServer, measured in one run.

    .venv/bin/python bench/serve_bench.py [--duration 10] [--connections 1,32] [--models rf,lr]

Closed loop (wrk), 1-row V2 requests, the same models for every server; prints req/s, p50, p99, RSS and
the ratios against each competitor's strongest configuration in the run (KServe serves the pickle with
scikit-learn and the same ONNX file with ONNX Runtime), the ONNX Runtime floor, and where Kubeloop's
time goes (component timings + a cProfile of the server under load). Competitors live in their own
virtual environments under .work/bench-venv/, created here on first use. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pstats
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import timeit
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

WORK = REPO / ".work" / "bench"
VENVS = REPO / ".work" / "bench-venv"
# MLServer 1.7.1's worker dies at start with a newer uvloop.
COMPETITORS = {
    "mlserver": ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0"],
    "kserve": ["kserve", "onnxruntime"],
}
# Each competitor's configurations: the ratios compare Kubeloop with the fastest one of the same run.
PEERS = {"mlserver": ("mlserver",), "kserve": ("kserve", "kserve-onnx")}
PEER_OF = {kind: peer for peer, kinds in PEERS.items() for kind in kinds}
MODELS = {"rf": "random_forest", "lr": "logistic_regression"}
TARGETS = {
    "rps32": 20_000,
    "p50_1_ms": 0.1,
    "p99_1_ms": 0.3,
    "rss_mib": 150,
    "vs_kserve": 8,
    "vs_mlserver": 10,
}

KSERVE_SERVER = '''
"""KServe's ModelServer with one model: the scikit-learn pickle, as kserve's sklearnserver serves it
(predict), or the same model's ONNX file in an ONNX Runtime session (a custom kserve.Model, what a KServe
user writes to serve ONNX on CPU), with Kubeloop's session options so that only the servers differ."""
import sys
import uuid

import kserve
import numpy as np
from kserve import InferOutput, InferRequest, InferResponse


def response(model, payload, y):
    out = InferOutput(name="predict", shape=list(y.shape), datatype="INT64")
    out.set_data_from_numpy(y.astype(np.int64), binary_data=False)
    # KServe's V2 endpoint insists on a response id; it generates one when the request has none.
    response_id = payload.id or uuid.uuid4().hex
    return InferResponse(model_name=model.name, infer_outputs=[out], response_id=response_id)


class SKLearnModel(kserve.Model):
    def __init__(self, name: str, path: str) -> None:
        import joblib

        super().__init__(name)
        self.model = joblib.load(path)
        self.ready = True

    def predict(self, payload, headers=None, response_headers=None):
        return response(self, payload, self.model.predict(payload.inputs[0].as_numpy()))


class ONNXModel(kserve.Model):
    def __init__(self, name: str, path: str) -> None:
        import onnxruntime as ort

        super().__init__(name)
        opts = ort.SessionOptions()  # as Kubeloop's server on a 2-CPU machine: one thread, no spinning
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.label = self.session.get_outputs()[0].name  # skl2onnx: the label first, then probabilities
        self.ready = True

    def predict(self, payload, headers=None, response_headers=None):
        x = payload.inputs[0].as_numpy().astype(np.float32, copy=False)
        return response(self, payload, self.session.run([self.label], {self.input: x})[0])


if __name__ == "__main__":
    kind, name, path, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    model = (ONNXModel if kind == "onnx" else SKLearnModel)(name, path)
    kserve.ModelServer(http_port=port, grpc_port=port + 1, enable_grpc=False, workers=1).start([model])
'''


# The same stack (uvloop + httptools) answering a fixed body: what wrk, loopback TCP and the event loop
# cost before any inference work. The gap between it and Kubeloop is the server's own work.
FLOOR_SERVER = """
import asyncio, sys
import httptools, uvloop

BODY = b'{"model_name":"floor","outputs":[]}'
HEAD = b"HTTP/1.1 200 OK\\r\\ncontent-type: application/json\\r\\ncontent-length: %d\\r\\n\\r\\n"
ANSWER = HEAD % len(BODY) + BODY


class Fixed(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data):
        self.parser.feed_data(data)

    def on_message_complete(self):
        self.transport.write(ANSWER)


async def main(port):
    server = await asyncio.get_running_loop().create_server(Fixed, "127.0.0.1", port)
    await server.serve_forever()

uvloop.run(main(int(sys.argv[1])))
"""


@dataclass
class Point:
    model: str
    server: str
    connections: int
    placement: str  # "any": where the scheduler puts wrk and the server; "1 core": both pinned to one CPU
    rps: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    errors: int
    rss_mib: float
    cpu_us_per_request: float


# ---------------------------------------------------------------------------------------------- setup


def need_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("wrk is not installed: apt-get install -y wrk (Debian's package)")
    return wrk


def build_models() -> dict[str, Path]:
    import joblib

    from kubeloop.runtime.serve.examples import build_model_dir

    dirs = {}
    for short, kind in MODELS.items():
        d = WORK / "models" / short
        if not (d / "model.joblib").exists():
            estimator = build_model_dir(d, kind, name=short)
            joblib.dump(estimator, d / "model.joblib")
            (d / "model-settings.json").write_text(
                json.dumps(
                    {
                        "name": short,
                        "implementation": "mlserver_sklearn.SKLearnModel",
                        "parameters": {"uri": "./model.joblib"},
                    }
                )
            )
        dirs[short] = d
    return dirs


def ensure_venv(name: str) -> Path:
    """A competitor's own venv, with this scikit-learn version so that the pickled models load."""
    import sklearn

    venv = VENVS / name
    marker = venv / ".installed"  # holds the requirements it was made with: a new one is installed
    requirements = [*COMPETITORS[name], f"scikit-learn=={sklearn.__version__}", "joblib"]
    if not marker.exists() or marker.read_text().split() != requirements:
        print(f"# installing {' '.join(requirements)} in {venv} (once; a few minutes)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *requirements], check=True)
        marker.write_text("\n".join(requirements))
    return venv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------- servers


class Server:
    def __init__(self, kind: str, model: str, model_dir: Path, profile: Path | None = None) -> None:
        self.kind, self.model = kind, model
        self.port = free_port()
        self.log = (WORK / f"{kind}-{model}.log").open("w")
        if kind.startswith("kubeloop"):
            serve = ["serve", "--model-dir", str(model_dir), "--host", "127.0.0.1", "--port", str(self.port)]
            if kind == "kubeloop-nobatch":
                serve += ["--batching", "off"]
            cmd = [sys.executable, "-m", "kubeloop.runtime", *serve]
            if profile is not None:
                statement = f"main({serve[1:]!r})"
                code = (
                    "import cProfile; from kubeloop.runtime.serve.cli import main; "
                    f"cProfile.run({statement!r}, {str(profile)!r})"
                )
                cmd = [sys.executable, "-c", code]
        elif kind == "floor":
            script = WORK / "floor_server.py"
            script.write_text(FLOOR_SERVER)
            cmd = [sys.executable, str(script), str(self.port)]
        elif kind == "mlserver":
            venv = ensure_venv("mlserver")
            (model_dir / "settings.json").write_text(
                json.dumps(
                    {
                        "http_port": self.port,
                        "grpc_port": free_port(),
                        "metrics_port": free_port(),
                        "host": "127.0.0.1",
                    }
                )
            )
            cmd = [str(venv / "bin" / "mlserver"), "start", str(model_dir)]
        elif kind in ("kserve", "kserve-onnx"):
            venv = ensure_venv("kserve")
            script = WORK / "kserve_server.py"
            script.write_text(KSERVE_SERVER)
            onnx = kind == "kserve-onnx"
            cmd = [
                str(venv / "bin" / "python"),
                str(script),
                "onnx" if onnx else "sklearn",
                model,
                str(model_dir / ("model.onnx" if onnx else "model.joblib")),
                str(self.port),
            ]
        else:
            raise ValueError(f"unknown server {kind!r}")
        env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
        self.proc = subprocess.Popen(
            cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=model_dir, start_new_session=True
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self._wait_ready()

    def _wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}; see {self.log.name}")
            ready = f"{self.url}/v2/models/{self.model}/ready"
            with contextlib.suppress(OSError), urllib.request.urlopen(ready, timeout=2) as r:
                if r.status == 200:
                    return
            time.sleep(0.3)
        raise RuntimeError(f"{self.kind} not ready after {timeout}s; see {self.log.name}")

    def pids(self) -> list[int]:
        """The server and its children (MLServer runs inference in worker processes)."""
        pids = [self.proc.pid]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == self.proc.pid or int(fields[1]) in pids[1:]:  # ppid, or process group
                    pids.append(int(stat.parent.name))
        return sorted(set(pids))

    def rss_mib(self) -> float:
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError, StopIteration):
                status = Path(f"/proc/{pid}/status").read_text().splitlines()
                total += int(next(line.split()[1] for line in status if line.startswith("VmRSS:")))
        return total / 1024

    def cpu_seconds(self) -> float:
        ticks = 0
        for pid in self.pids():
            with contextlib.suppress(OSError, IndexError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])  # utime + stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


# ---------------------------------------------------------------------------------------------- wrk

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def lua_script(model: str, server: str) -> Path:
    row = [round(0.37 * i - 3.1, 3) for i in range(20)]
    name = "X" if server.startswith("kubeloop") else "input-0"  # competitors take any input name
    body = json.dumps({"inputs": [{"name": name, "shape": [1, 20], "datatype": "FP32", "data": row}]})
    path = WORK / f"{server}-{model}.lua"
    path.write_text(
        f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        # --latency prints up to p99; the tail beyond it, from the same distribution:
        "done = function(summary, latency, requests)\n"
        '  io.write(string.format("p99.9 %d us\\n", latency:percentile(99.9)))\n'
        "end\n"
    )
    return path


def run_wrk(
    wrk: str, server: Server, connections: int, seconds: float, core: int | None = None
) -> dict[str, float]:
    script = lua_script(server.model, server.kind)
    url = f"{server.url}/v2/models/{server.model}/infer"
    cmd = [
        *(["taskset", "-c", str(core)] if core is not None else []),
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)$", out, re.M)
        return float(m[1]) * UNITS[m[2]] if m else float("nan")

    p999 = re.search(r"^p99.9 (\d+) us$", out, re.M)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non2xx[1]) if non2xx else 0
    if sock:
        errors += sum(int(g) for g in sock.groups())
    total = re.search(r"(\d+) requests in", out)
    return {
        "rps": float(rps[1]) if rps else 0.0,
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "p999_ms": int(p999[1]) / 1000 if p999 else float("nan"),
        "errors": errors,
        "requests": float(total[1]) if total else 0.0,
    }


def pin(server: Server, cpus: set[int]) -> None:
    """Every thread of the server's processes (ORT's, MLServer's workers) on ``cpus``."""
    for pid in server.pids():
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(task.name), cpus)


def measure(wrk: str, server: Server, connections: int, seconds: float, core: int | None = None) -> Point:
    """One point; with ``core``, wrk and the server share that one CPU for the measurement."""
    if core is not None:
        pin(server, {core})
    try:
        run_wrk(wrk, server, connections, min(2.0, seconds), core)  # warm-up: caches and pools
        cpu0 = server.cpu_seconds()
        r = run_wrk(wrk, server, connections, seconds, core)
        cpu = server.cpu_seconds() - cpu0
    finally:
        if core is not None:
            pin(server, os.sched_getaffinity(0))
    return Point(
        server.model,
        server.kind,
        connections,
        "any" if core is None else "1 core",
        r["rps"],
        r["p50_ms"],
        r["p99_ms"],
        r["p999_ms"],
        int(r["errors"]),
        server.rss_mib(),
        cpu / max(r["requests"], 1) * 1e6,
    )


# ---------------------------------------------------------------------------------------------- breakdown


def micro(fn: Any, number: int = 5000) -> float:
    """Best-of-5 microseconds per call."""
    for _ in range(200):
        fn()
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def breakdown(model_dir: Path) -> dict[str, float]:
    """What one 1-row V2 request costs, piece by piece, in this process (the server does the same)."""
    import httptools
    import numpy as np
    import orjson

    from kubeloop.runtime.serve.metrics import Metrics
    from kubeloop.runtime.serve.model import Model
    from kubeloop.runtime.serve.protocol import Codec

    model = Model(model_dir)
    codec, metrics = Codec(model), Metrics(model)
    row = [round(0.37 * i - 3.1, 3) for i in range(20)]
    body = orjson.dumps({"inputs": [{"name": "X", "shape": [1, 20], "datatype": "FP32", "data": row}]})
    x = np.asarray([row], dtype=np.float32)
    feed = {model.input_name: x}
    pred = model.predict(x)
    request = (
        b"POST /v2/models/m/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )

    class Sink:
        def on_url(self, url: bytes) -> None: ...
        def on_header(self, name: bytes, value: bytes) -> None: ...
        def on_body(self, body: bytes) -> None: ...
        def on_message_complete(self) -> None: ...

    parser = httptools.HttpRequestParser(Sink())
    batch32 = np.repeat(x, 32, axis=0)

    def record() -> None:
        metrics.request("v2", 200, 1e-4)
        metrics.batch(x, pred)

    return {
        "ort_floor_1row_us": micro(lambda: model.session.run(None, feed)),
        "ort_32rows_per_row_us": micro(lambda: model.session.run(None, {model.input_name: batch32}), 500)
        / 32,
        "http_parse_us": micro(lambda: parser.feed_data(request)),
        "decode_v2_us": micro(lambda: codec.decode_v2(body)),
        "predict_us": micro(lambda: model.predict(x)),
        "encode_v2_us": micro(lambda: codec.encode_v2(pred, None)),
        "metrics_us": micro(record),
    }


def profile_server(wrk: str, model_dir: Path, seconds: float) -> list[str]:
    """cProfile of the server under 32 connections: the top functions by own time."""
    out = WORK / "kubeloop.prof"
    server = Server("kubeloop", "rf", model_dir, profile=out)
    try:
        run_wrk(wrk, server, 32, seconds)
    finally:
        server.stop()
    stats = pstats.Stats(str(out))
    # Stats.stats (the raw table) is undocumented, so typeshed leaves it out.
    table = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in table.values())
    rows = sorted(table.items(), key=lambda kv: -kv[1][2])[:14]
    lines = []
    for (path, lineno, func), (_, calls, own, _, _) in rows:
        where = f"{Path(path).name}:{lineno}({func})" if path != "~" else str(func)
        lines.append(f"  {100 * own / total:5.1f}%  {calls:>9}  {where}")
    return lines


# ---------------------------------------------------------------------------------------------- report


def strongest(by: dict[tuple[str, str, int], Point]) -> dict[tuple[str, int, str], Point]:
    """Per model, connection count and competitor: its configuration with the most req/s."""
    best: dict[tuple[str, int, str], Point] = {}
    for (model, server, conns), p in by.items():
        peer = PEER_OF.get(server)
        if peer is None or not p.rps:
            continue
        key = (model, conns, peer)
        if key not in best or p.rps > best[key].rps:
            best[key] = p
    return best


def report(points: list[Point], parts: dict[str, dict[str, float]], profile: list[str]) -> None:
    print("\n== Throughput and latency (wrk closed loop, 1-row V2 requests)")
    print(
        f"{'model':5} {'server':16} {'conns':>5} {'cores':>6} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'p99.9 ms':>8} {'errors':>6} {'RSS MiB':>8} {'CPU us/req':>10}"
    )
    for p in points:
        print(
            f"{p.model:5} {p.server:16} {p.connections:>5} {p.placement:>6} {p.rps:>10.0f} {p.p50_ms:>8.3f} "
            f"{p.p99_ms:>8.3f} {p.p999_ms:>8.3f} {p.errors:>6} {p.rss_mib:>8.0f} "
            f"{p.cpu_us_per_request:>10.1f}"
        )
    print(
        "   (cores 'any': wherever the scheduler runs wrk and the server; '1 core': both pinned to one CPU,"
        "\n    so that a request never waits for the other CPU to wake: at 1 connection only one of them runs"
        "\n    at a time, and on this VM a cross-CPU wake-up costs more than the server's own work)"
    )
    by = {(p.model, p.server, p.connections): p for p in points if p.placement == "any"}
    pinned = {(p.model, p.server): p for p in points if p.placement != "any"}
    print("\n== Ratios (Kubeloop req/s / the competitor's fastest configuration in this run, same machine)")
    for (model, conns, peer), best in sorted(strongest(by).items()):
        ours = by.get((model, "kubeloop", conns))
        if ours:
            want = TARGETS.get(f"vs_{peer}")
            target = f"  (target >= {want}x on rf @32)" if want and model == "rf" and conns == 32 else ""
            print(
                f"  {model} @{conns:<3} kubeloop / {peer:8} = {ours.rps / best.rps:7.1f}x"
                f"  (its best: {best.server}, {best.rps:.0f} req/s){target}"
            )
    for model, part in parts.items():
        print(f"\n== Where the time goes: {model}, one 1-row request (microseconds, in-process)")
        for key, value in part.items():
            print(f"  {key:26} {value:8.2f}")
        floor = part["ort_floor_1row_us"]
        for conns in (1, 32):
            ours = by.get((model, "kubeloop", conns))
            http = next((p for p in points if p.server == "floor" and p.connections == conns), None)
            if ours is None:
                continue
            # At 1 connection the latency is the measure; at 32 the wall time per request (1 / throughput).
            us = ours.p50_ms * 1000 if conns == 1 else 1e6 / ours.rps
            what = "p50" if conns == 1 else "wall time per request"
            line = f"  -> @{conns}: {what} {us:.0f} us = {us / floor:.1f}x the ORT floor; "
            line += f"server CPU {ours.cpu_us_per_request:.1f} us/request"
            if http:
                line += f" (HTTP floor server: CPU {http.cpu_us_per_request:.1f} us/request)"
            print(line)
        print(f"  -> ORT per row inside a 32-row micro-batch: {part['ort_32rows_per_row_us']:.2f} us")
    if profile:
        print("\n== cProfile of the Kubeloop server, rf @32 connections (own time, top functions)")
        print(
            "   (wall time: 'write' includes the time the kernel runs wrk on this core when a send wakes it)"
        )
        print(*profile, sep="\n")
    nobatch = by.get(("rf", "kubeloop-nobatch", 32))
    if nobatch and by.get(("rf", "kubeloop", 32)):
        gain = by[("rf", "kubeloop", 32)].rps / nobatch.rps
        print(f"\n== Micro-batching: rf @32 with it / without it = {gain:.2f}x req/s")
    rf1, rf32 = by.get(("rf", "kubeloop", 1)), by.get(("rf", "kubeloop", 32))
    if rf1 and rf32:
        print("\n== Targets (issue 5)")
        checks = [(f"rf @32 req/s >= {TARGETS['rps32']}", rf32.rps >= TARGETS["rps32"], f"{rf32.rps:.0f}")]
        for where, point in (("any cores", rf1), ("1 core", pinned.get(("rf", "kubeloop")))):
            if point is None:
                continue
            fl = pinned.get(("rf", "floor")) if point.placement != "any" else by.get(("rf", "floor", 1))
            vs = f" (floor server {fl.p50_ms:.3f} / {fl.p99_ms:.3f})" if fl else ""
            checks += [
                (
                    f"rf @1 p50 <= {TARGETS['p50_1_ms']} ms, {where}",
                    point.p50_ms <= TARGETS["p50_1_ms"],
                    f"{point.p50_ms:.3f}{vs}",
                ),
                (
                    f"rf @1 p99 <= {TARGETS['p99_1_ms']} ms, {where}",
                    point.p99_ms <= TARGETS["p99_1_ms"],
                    f"{point.p99_ms:.3f}",
                ),
            ]
        checks.append(
            (f"RSS <= {TARGETS['rss_mib']} MiB", rf32.rss_mib <= TARGETS["rss_mib"], f"{rf32.rss_mib:.0f}")
        )
        for name, ok, measured in checks:
            print(f"  {'PASS' if ok else 'MISS'}  {name:38} measured {measured}")
        print(f"  (load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10, help="seconds per measurement (default 10)")
    p.add_argument("--connections", default="1,32", help="comma-separated (default 1,32)")
    p.add_argument("--models", default="rf,lr", help="rf (RandomForest 100x8), lr (LogisticRegression)")
    p.add_argument(
        "--servers",
        default="floor,kubeloop,kubeloop-nobatch,mlserver,kserve,kserve-onnx",
        help="floor = uvloop+httptools answering a fixed body (no inference): the HTTP floor; "
        "kubeloop-nobatch = Kubeloop with --batching off (what micro-batching buys); "
        "kserve-onnx = KServe's ModelServer running model.onnx in ONNX Runtime",
    )
    p.add_argument("--no-profile", action="store_true", help="skip the cProfile run")
    p.add_argument(
        "--no-one-core",
        action="store_true",
        help="skip the second 1-connection measurement with wrk and the server pinned to one CPU",
    )
    p.add_argument("--json", type=Path, default=WORK / "results.json", help="where to write the figures")
    args = p.parse_args()

    wrk = need_wrk()
    WORK.mkdir(parents=True, exist_ok=True)
    dirs = build_models()
    models = args.models.split(",")
    conns = [int(c) for c in args.connections.split(",")]
    # At 1 connection, also measured with wrk and the server on one CPU (the last one).
    one_core = None if args.no_one_core else max(os.sched_getaffinity(0))
    points: list[Point] = []
    for server_kind in args.servers.split(","):
        for model in models[:1] if server_kind in ("floor", "kubeloop-nobatch") else models:
            print(f"# {server_kind} / {model}", flush=True)
            try:
                server = Server(server_kind, model, dirs[model])
            except (RuntimeError, subprocess.CalledProcessError) as e:
                print(f"# {server_kind} / {model} skipped: {e}", flush=True)
                continue
            try:
                for c in conns:
                    points.append(measure(wrk, server, c, args.duration))
                    print(f"#   {points[-1]}", flush=True)
                    if c == 1 and one_core is not None:
                        points.append(measure(wrk, server, c, args.duration, one_core))
                        print(f"#   {points[-1]}", flush=True)
            finally:
                server.stop()
    parts = {m: breakdown(dirs[m]) for m in models if "kubeloop" in args.servers}
    profile = [] if args.no_profile or "rf" not in models else profile_server(wrk, dirs["rf"], args.duration)
    report(points, parts, profile)
    args.json.write_text(
        json.dumps({"points": [asdict(p) for p in points], "breakdown": parts, "profile": profile}, indent=2)
    )
    print(f"\n(figures also in {args.json})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
