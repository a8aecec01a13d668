"""Bearer tokens from a file that a mounted Secret keeps up to date."""

from __future__ import annotations

import asyncio
import hmac
from pathlib import Path

from .events import log

RELOAD_SECONDS = 10.0  # the kubelet updates a mounted Secret in place, within about a minute


class BearerTokens:
    """The tokens are the non-empty lines of the file, re-read when it changes; an empty or missing file
    lets nobody in."""

    def __init__(self, path: Path, loop: asyncio.AbstractEventLoop) -> None:
        self.path = path
        self.loop = loop
        self._headers: list[bytes] = []  # each token as its whole header value, "Bearer <token>"
        self._mtime = -1.0
        self.reload()

    def reload(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
            if mtime != self._mtime:
                lines = self.path.read_text().splitlines()
                self._headers = [b"Bearer " + t.strip().encode() for t in lines if t.strip()]
                self._mtime = mtime
        except OSError as e:  # the tokens read before stay valid
            log("auth_tokens_unreadable", path=str(self.path), error=str(e))
        self.loop.call_later(RELOAD_SECONDS, self.reload)

    def allow(self, authorization: bytes | None) -> bool:
        """Whether an ``Authorization`` header value carries one of the tokens."""
        if authorization is None or not self._headers:
            return False
        # Compare with every token in constant time: the answer must not leak how much of a token matched.
        return any([hmac.compare_digest(authorization, t) for t in self._headers])
