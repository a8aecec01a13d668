"""``python -m kubeloop.runtime serve``: flags, each with an environment variable as its default."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .server import ServeConfig, run


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def _flag(value: str) -> bool:
    if value.lower() in ("1", "true", "on", "yes"):
        return True
    if value.lower() in ("0", "false", "off", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, not {value!r}")


def parse_args(argv: list[str] | None = None) -> ServeConfig:
    p = argparse.ArgumentParser(
        prog="python -m kubeloop.runtime serve",
        description="Serve an ONNX model over the Open Inference Protocol (V2) and V1.",
    )
    p.add_argument(
        "--model-dir",
        type=Path,
        default=_env("KUBELOOP_MODEL_DIR"),
        help="directory with model.onnx, model-card.json, optional baseline.json [KUBELOOP_MODEL_DIR]",
    )
    p.add_argument(
        "--expected-sha256",
        default=_env("KUBELOOP_EXPECTED_SHA256"),
        help="refuse to become ready unless model.onnx has this digest [KUBELOOP_EXPECTED_SHA256]",
    )
    p.add_argument(
        "--model-name",
        default=_env("KUBELOOP_MODEL_NAME"),
        help="name in URLs and metrics (default: the model card's name) [KUBELOOP_MODEL_NAME]",
    )
    p.add_argument(
        "--host", default=_env("KUBELOOP_HOST", "0.0.0.0"), help="[KUBELOOP_HOST] (default 0.0.0.0)"
    )
    p.add_argument(
        "--port",
        type=int,
        default=int(_env("KUBELOOP_PORT", "8080") or 8080),
        help="[KUBELOOP_PORT] (default 8080; 0 picks a free port, printed in the 'listening' line)",
    )
    p.add_argument(
        "--batching",
        type=_flag,
        default=_flag(_env("KUBELOOP_BATCHING", "on") or "on"),
        help="micro-batch concurrent requests into one ONNX Runtime call: on|off [KUBELOOP_BATCHING]",
    )
    p.add_argument(
        "--max-batch-rows",
        type=int,
        default=int(_env("KUBELOOP_MAX_BATCH_ROWS", "64") or 64),
        help="most rows in one ONNX Runtime call [KUBELOOP_MAX_BATCH_ROWS] (default 64)",
    )
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=int(_env("KUBELOOP_MAX_BODY_BYTES", str(1 << 20)) or 0),
        help="larger request bodies get 413 [KUBELOOP_MAX_BODY_BYTES] (default 1 MiB)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=int(_env("KUBELOOP_ORT_THREADS", "0") or 0),
        help="ONNX Runtime intra-op threads (default 0: chosen from the cgroup CPU limit) "
        "[KUBELOOP_ORT_THREADS]",
    )
    p.add_argument(
        "--auth-token-file",
        type=Path,
        default=_env("KUBELOOP_AUTH_TOKEN_FILE"),
        help="require 'Authorization: Bearer <token>' for inference and metadata; one token per "
        "line, re-read when it changes [KUBELOOP_AUTH_TOKEN_FILE]",
    )
    p.add_argument(
        "--drain-delay",
        type=float,
        default=float(_env("KUBELOOP_DRAIN_DELAY", "0") or 0),
        help="on SIGTERM, seconds to keep serving while reporting not ready, so the Service "
        "stops routing here first [KUBELOOP_DRAIN_DELAY] (default 0)",
    )
    p.add_argument(
        "--drain-quiet",
        type=float,
        default=float(_env("KUBELOOP_DRAIN_QUIET", "0") or 0),
        help="after the drain delay, keep accepting until no connection has arrived for this many "
        "seconds: a node whose proxy rules lag still reaches this pod [KUBELOOP_DRAIN_QUIET] (default 0)",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=float(_env("KUBELOOP_DRAIN_TIMEOUT", "30") or 30),
        help="most seconds the drain may take after the delay: the quiet wait and in-flight requests "
        "[KUBELOOP_DRAIN_TIMEOUT]",
    )
    p.add_argument(
        "--termination-log",
        type=Path,
        default=Path(_env("KUBELOOP_TERMINATION_LOG", "/dev/termination-log") or "/dev/termination-log"),
        help="where a load failure is reported as JSON [KUBELOOP_TERMINATION_LOG]",
    )
    a = p.parse_args(argv)
    if a.model_dir is None:
        p.error("--model-dir (or KUBELOOP_MODEL_DIR) is required")
    if a.max_batch_rows < 1 or a.max_body_bytes < 1:
        p.error("--max-batch-rows and --max-body-bytes must be positive")
    return ServeConfig(
        model_dir=a.model_dir,
        expected_sha256=a.expected_sha256,
        model_name=a.model_name,
        host=a.host,
        port=a.port,
        batching=a.batching,
        max_batch_rows=a.max_batch_rows,
        max_body_bytes=a.max_body_bytes,
        ort_threads=a.threads or None,
        auth_token_file=a.auth_token_file,
        drain_delay=a.drain_delay,
        drain_quiet=a.drain_quiet,
        drain_timeout=a.drain_timeout,
        termination_log=a.termination_log,
    )


def main(argv: list[str] | None = None) -> int:
    """Exit 0 after a clean drain, 2 when the model cannot be served (reason in the termination log)."""
    return run(parse_args(argv))
