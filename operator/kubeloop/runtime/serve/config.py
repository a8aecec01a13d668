"""The server's settings: one frozen dataclass, the only place a setting is named.

:mod:`.cli` makes a flag and an environment variable of every field (``max_batch_rows``:
``--max-batch-rows``, ``KUBELOOP_MAX_BATCH_ROWS``), with the field's type, default and :class:`Setting`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kubeloop.contract import TERMINATION_LOG

SETTING = "kubeloop.setting"  # the key of a field's Setting in its metadata


@dataclass(frozen=True)
class Setting:
    """How a person sets a field: what it does, its smallest value, and older flag names kept working."""

    help: str
    minimum: float | None = None
    aliases: tuple[str, ...] = ()


def setting(help: str, minimum: float | None = None, aliases: tuple[str, ...] = ()) -> Mapping[str, Setting]:
    """A field's metadata."""
    return {SETTING: Setting(help, minimum, aliases)}


@dataclass(frozen=True)
class ServeConfig:
    model_dir: Path = field(
        metadata=setting("directory with model.onnx, model-card.json, optional baseline.json")
    )
    expected_sha256: str | None = field(
        default=None, metadata=setting("refuse to become ready unless model.onnx has this digest")
    )
    model_name: str | None = field(
        default=None, metadata=setting("name in URLs and metrics (default: the model card's name)")
    )
    host: str = field(default="0.0.0.0", metadata=setting("address to listen on"))
    port: int = field(
        default=8080,
        metadata=setting(
            "port to listen on; 0 picks a free port, printed in the 'listening' line", minimum=0
        ),
    )
    batching: bool = field(
        default=True, metadata=setting("micro-batch concurrent requests into one ONNX Runtime call")
    )
    max_batch_rows: int = field(default=64, metadata=setting("most rows in one ONNX Runtime call", minimum=1))
    max_body_bytes: int = field(default=1 << 20, metadata=setting("larger request bodies get 413", minimum=1))
    ort_threads: int = field(
        default=0,
        metadata=setting(
            "ONNX Runtime intra-op threads; 0: chosen from the cgroup CPU limit",
            minimum=0,
            aliases=("--threads",),
        ),
    )
    auth_token_file: Path | None = field(
        default=None,
        metadata=setting(
            "require 'Authorization: Bearer <token>' for inference and metadata; one token per line, "
            "re-read when it changes"
        ),
    )
    drain_delay: float = field(
        default=0.0,
        metadata=setting(
            "on SIGTERM, seconds to keep serving while reporting not ready, so the Service stops routing "
            "here first",
            minimum=0,
        ),
    )
    drain_quiet: float = field(
        default=0.0,
        metadata=setting(
            "after the drain delay, keep accepting until no connection has arrived for this many seconds: "
            "a node whose proxy rules lag still reaches this pod",
            minimum=0,
        ),
    )
    drain_timeout: float = field(
        default=30.0,
        metadata=setting(
            "most seconds the drain may take after the delay: the quiet wait and in-flight requests",
            minimum=0,
        ),
    )
    termination_log: Path = field(
        default=Path(TERMINATION_LOG), metadata=setting("where a load failure is reported as JSON")
    )
