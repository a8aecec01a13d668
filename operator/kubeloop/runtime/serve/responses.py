"""The bytes of an HTTP answer that do not depend on the request: status lines, fixed headers, errors."""

from __future__ import annotations

import json

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Payload Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
JSON = b"application/json"
OCTETS = b"application/octet-stream"
PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"


def error_body(message: str) -> bytes:
    """Every error answer is ``{"error": "<a sentence that says what was wrong>"}``."""
    return json.dumps({"error": message}).encode()


_heads: dict[tuple[int, bool, bytes], bytes] = {}


def head(status: int, keep_alive: bool, content_type: bytes = JSON) -> bytes:
    """Status line and the headers that never vary (the length is added per answer)."""
    key = (status, keep_alive, content_type)
    h = _heads.get(key)
    if h is None:
        h = b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\n" % (status, REASONS[status].encode(), content_type)
        if status == 401:
            h += b"www-authenticate: Bearer\r\n"
        if not keep_alive:
            h += b"connection: close\r\n"
        _heads[key] = h
    return h
