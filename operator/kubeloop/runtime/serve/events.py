"""The server's log: one JSON object per line on stdout, ``{"event": ..., **fields}``.

Tests and the e2e load generator read these lines (``listening`` carries the port, ``ready`` the model).
"""

from __future__ import annotations

import json


def log(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)
