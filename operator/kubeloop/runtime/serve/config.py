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
    # The limits below bound what one client can make the server hold: buffered bytes, open descriptors,
    # time. Defaults follow nginx (8 KiB request line, 32 KiB of headers, 75 s keep-alive), Apache (100
    # header fields) and Node.js (a header and a whole-request timeout); docs/contracts.md.
    max_url_bytes: int = field(default=8192, metadata=setting("longer request URLs get 414", minimum=256))
    max_header_bytes: int = field(
        default=32768,
        metadata=setting(
            "a request line and header fields (and chunked trailers) larger than this get 431", minimum=1024
        ),
    )
    max_header_fields: int = field(
        default=100, metadata=setting("a request with more header fields gets 431", minimum=16)
    )
    header_timeout: float = field(
        default=10.0,
        metadata=setting(
            "seconds a request head may take from its first byte (408, then the connection is closed), "
            "and a new connection may stay silent (closed)",
            minimum=0.1,
        ),
    )
    request_timeout: float = field(
        default=60.0,
        metadata=setting(
            "seconds a whole request, head and body, may take from its first byte (408, then closed)",
            minimum=0.1,
        ),
    )
    idle_timeout: float = field(
        default=75.0,
        metadata=setting(
            "seconds a keep-alive connection may wait for its next request (closed)", minimum=0.1
        ),
    )
    max_connections: int = field(
        default=1000,
        metadata=setting(
            "open connections at most; a connection beyond them gets 503 and is closed (counted in "
            "kubeloop_connections_refused_total); keep it below the open-file limit",
            minimum=1,
        ),
    )
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
    metrics_auth: bool = field(
        default=False,
        metadata=setting(
            "require the bearer token on /metrics and /kubeloop/v1/baseline too (needs --auth-token-file); "
            "off: scrapers without a token read them, health probes never need one"
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

    def __post_init__(self) -> None:
        if self.metrics_auth and self.auth_token_file is None:
            raise ValueError("--metrics-auth needs --auth-token-file: there is no token to require")
