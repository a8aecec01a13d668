"""The inference server: ONNX Runtime behind the Open Inference Protocol (V2) and V1 ``:predict``.

``python -m kubeloop.runtime serve --model-dir DIR [--expected-sha256 HEX] [--port 8080] ...`` (all flags
and their ``KUBELOOP_*`` environment variables: :mod:`.cli`). Never imports the operator.

Endpoints (``NAME`` is ``--model-name`` or the card's; ``VERSION`` the first 16 hex of the model's sha256):

- ``GET /v2/health/live`` — 200 once the process listens (also while the model loads).
- ``GET /v2/health/ready``, ``GET /v2/models/NAME[/versions/VERSION]/ready`` — 200 with the loaded digest
  only after the model loaded, matched ``--expected-sha256`` and passed a self-test prediction; 503 while
  loading or draining. A model that cannot be served exits 2 with ``{"ok": false, "reason", "message"}``
  in the termination log.
- ``GET /v2/models/NAME[/versions/VERSION]`` — V2 metadata (+ ``sha256``, ``features``, ``classes``).
- ``POST /v2/models/NAME[/versions/VERSION]/infer`` — V2 JSON; answers ``label`` + ``probabilities``
  (classification) or ``predictions`` (regression), or the ``outputs`` a request names; the binary tensor
  extension both ways (``binary_data_size`` inputs, ``binary_data`` / ``binary_data_output`` answers).
- ``GET /v1/models/NAME``, ``POST /v1/models/NAME:predict`` — ``{"instances": [[...]] | [{feature: v}]}``.
- ``GET /metrics`` — Prometheus text (names in docs/contracts.md).

Client mistakes are 4xx with ``{"error": "..."}`` naming what was wrong; ``--auth-token-file`` requires
``Authorization: Bearer`` on inference and metadata (on metrics and the baseline too with
``--metrics-auth``; never on health). Limits on what a client sends and for how long (URL, headers, body,
timeouts, open connections): :mod:`.config`, docs/contracts.md.

Modules, one concern each: :mod:`.config` (the settings) and :mod:`.cli` (flags derived from them),
:mod:`.lifecycle` (start, readiness, SIGTERM drain), :mod:`.connection` (HTTP parsing per connection),
:mod:`.app` (dispatch), :mod:`.routes` (the route table), :mod:`.batching` (micro-batching),
:mod:`.auth` (bearer tokens), :mod:`.limits` (timeouts), :mod:`.responses` (answer bytes),
:mod:`.events` (the JSON log); and the model side: :mod:`.model` (load, verify, predict), :mod:`.protocol`
(V2/V1 bodies), :mod:`.metrics`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["main"]


def __getattr__(name: str) -> Any:
    """``main`` is imported on first use: the model side (:mod:`.model`) is used by batch scoring in the
    trainer image, which has ONNX Runtime but not the HTTP side's libraries (orjson, httptools, uvloop)."""
    if name == "main":
        from .cli import main

        return main
    raise AttributeError(name)
