"""Fetching from outside the pod: a model directory from the store, and a Dataset's source.

``python -m kubeloop.runtime fetch --uri URI --sha256 HEX --dest DIR``: URI is the model directory
(``.../models/<sha256>``). Used by the inference pod's init step; a mismatch exits 2 and leaves no model.

Sources (``read_url``, ``read_s3``): an answer that says the source is wrong (HTTP 4xx, S3 NoSuchKey,
NoSuchBucket, AccessDenied) is a DataError at once, naming the status code or the key; what may pass (HTTP
5xx, 408, 429, a timeout, a refused or reset connection) is tried again with backoff, then given up as
RetryLater with the attempt count and the last error. Messages show a URL without its query string,
fragment or user info: a presigned URL carries its credentials there.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from kubeloop.contract import BASELINE_FILE, MODEL_FILE, MODEL_MARKER
from kubeloop.runtime import jobio
from kubeloop.runtime.jobio import DataError, RetryLater
from kubeloop.runtime.store import Store, StoreError, open_store

FILES = (MODEL_FILE, BASELINE_FILE, MODEL_MARKER)  # the marker last: a model is complete once it exists
T = TypeVar("T")
# HTTP answers that say "not now" rather than "not this": tried again.
HTTP_TRANSIENT = frozenset({408, 425, 429})
# S3 error codes that may pass (besides any 5xx answer).
S3_TRANSIENT = frozenset(
    {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "Throttling", "ThrottlingException"}
)
S3_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
S3_DENIED = frozenset(
    {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
)


def fetch(uri: str, sha256: str, dest: str) -> dict[str, str]:
    store = open_store(uri)
    if not store.exists(MODEL_MARKER):
        raise DataError(
            "ModelNotFound",
            f"{store.uri(MODEL_MARKER)} does not exist: {uri} is not a complete model "
            "directory (missing, or its upload did not finish)",
        )
    target = Path(dest)
    target.mkdir(parents=True, exist_ok=True)
    # Download beside the destination and move in only after the checksum matched.
    with tempfile.TemporaryDirectory(dir=target, prefix=".fetch-") as tmp:
        try:
            for name in FILES:
                store.get_file(name, Path(tmp) / name, sha256=sha256 if name == MODEL_FILE else None)
        except StoreError as exc:
            if "checksum mismatch" in str(exc):
                raise DataError("ChecksumMismatch", f"{exc}; the model was not installed in {dest}") from None
            raise DataError("ModelNotFound", str(exc)) from None
        for name in FILES:
            shutil.move(str(Path(tmp) / name), target / name)
    print(f"fetched {uri} into {dest} ({MODEL_FILE} sha256 {sha256})")
    return {"uri": uri, "sha256": sha256.lower(), "dest": str(target)}


# ------------------------------------------------------------------------------------------- sources


class Transient(Exception):
    """One attempt failed in a way that may pass; the message says what happened, for a person."""


@dataclass(frozen=True)
class Retry:
    """How often and how patiently a source is tried inside one pod. The defaults bridge a restart of the
    server (about a minute at most) and leave longer outages to the Job, which runs a new pod."""

    attempts: int = 4
    first_delay: float = 2.0
    factor: float = 2.0
    max_delay: float = 20.0
    timeout: float = 30.0  # per attempt, seconds without an answer

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.first_delay < 0 or self.factor < 1 or self.timeout <= 0:
            raise ValueError(f"unusable retry policy {self}")

    def delays(self) -> list[float]:
        """The waits between attempts (one fewer than the attempts). Pure."""
        return [min(self.first_delay * self.factor**i, self.max_delay) for i in range(self.attempts - 1)]


def public_url(url: str) -> str:
    """The URL as it may be shown: no user info, query string or fragment (credentials live there). Pure."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def http_error(status: int, phrase: str, url: str) -> DataError | Transient:
    """What an HTTP error answer means for a source: a data error naming the status, or a retry. Pure."""
    said = f"GET {public_url(url)} answered HTTP {status}{f' {phrase}' if phrase else ''}"
    if status >= 500 or status in HTTP_TRANSIENT:
        return Transient(said)
    if status in (404, 410):
        return DataError("SourceNotFound", f"{said}: check source.url")
    if status in (401, 403):
        return DataError(
            "SourceForbidden", f"{said}: the server refuses this client; check the URL and its access rights"
        )
    return DataError("SourceRejected", f"{said}: check source.url")


def s3_error(code: str, status: int, uri: str) -> DataError | Transient:
    """What an S3 error answer means for a source (``uri`` is s3://bucket/key). Pure."""
    bucket = uri.removeprefix("s3://").split("/", 1)[0]
    if code == "NoSuchBucket":
        return DataError("SourceNotFound", f"bucket {bucket!r} of {uri} does not exist (NoSuchBucket)")
    if code in S3_MISSING:
        return DataError("SourceNotFound", f"{uri} does not exist (NoSuchKey): check source.s3.uri")
    if code in S3_DENIED:
        return DataError(
            "SourceForbidden",
            f"access to {uri} is denied ({code}): check source.s3.credentialsSecretRef and the "
            "bucket's policy",
        )
    if status >= 500 or code in S3_TRANSIENT:
        return Transient(f"reading {uri} failed with {code or 'an error'} (HTTP {status})")
    return DataError("SourceRejected", f"reading {uri} was refused: {code} (HTTP {status})")


def with_retries(
    read: Callable[[], T],
    what: str,
    retry: Retry,
    sleep: Callable[[float], object] = time.sleep,
) -> T:
    """``read()``, tried again after each Transient with backoff; a DataError passes through at once.

    Every failed attempt is logged (the pod's log shows the whole story); when none is left, RetryLater
    carries ``attempts`` and ``lastError`` for the result."""
    delays = retry.delays()
    for attempt in range(1, retry.attempts + 1):
        try:
            return read()
        except Transient as exc:
            last = str(exc)
            if attempt == retry.attempts:
                break
            wait = delays[attempt - 1]
            print(f"attempt {attempt} of {retry.attempts}: {last}; again in {wait:g}s", file=sys.stderr)
            sleep(wait)
    raise RetryLater(
        "SourceUnavailable",
        f"{what} could not be read in {retry.attempts} attempts; last error: {last}",
        attempts=retry.attempts,
        lastError=last[:500],
    )


def read_url(url: str, retry: Retry | None = None, headers: Mapping[str, str] | None = None) -> bytes:
    """The body of an http(s) source, asked with ``headers`` (their values are never said)."""
    retry = retry or Retry()
    shown = public_url(url)

    def once() -> bytes:
        try:
            with urllib.request.urlopen(url_request(url, headers), timeout=retry.timeout) as response:
                body: bytes = response.read()
                return body
        except urllib.error.HTTPError as exc:
            raise http_error(exc.code, str(exc.reason or ""), url) from None
        except urllib.error.URLError as exc:
            raise Transient(f"GET {shown}: {_said(exc.reason)}") from None
        except (OSError, http.client.HTTPException) as exc:  # a timeout, a reset mid-body
            raise Transient(f"GET {shown}: {_said(exc)}") from None

    return with_retries(once, shown, retry)


def url_request(url: str, headers: Mapping[str, str] | None = None) -> urllib.request.Request:
    """The request for a source URL with ``headers``; user info in the URL (``https://user:password@host/``)
    becomes a Basic Authorization header, which urllib does not do by itself (it would look the user up as a
    host). Pure."""
    parts = urlsplit(url)
    if parts.username is None:
        return urllib.request.Request(url, headers=dict(headers or {}))
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    bare = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    user, password = unquote(parts.username), unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return urllib.request.Request(bare, headers={**(headers or {}), "Authorization": f"Basic {token}"})


# A header name is an HTTP token (RFC 9110); its value may not break the request's lines.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def headers_from(directory: Path) -> dict[str, str]:
    """The headers of a mounted Secret: each key a header name, its value the header's (a trailing newline
    dropped). A DataError names a bad key, never a value. Files beginning with a dot are the volume's own
    bookkeeping (``..data``)."""
    headers: dict[str, str] = {}
    try:
        entries = sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        raise DataError("InvalidSource", f"the url headers Secret is not mounted: {exc.strerror}") from None
    for path in entries:
        if not _HEADER_NAME.match(path.name):
            raise DataError(
                "InvalidSource", f"headersSecretRef: key {path.name!r} is not an HTTP header name"
            )
        try:
            value = path.read_text(encoding="utf-8").removesuffix("\n")
        except UnicodeDecodeError:
            raise DataError(
                "InvalidSource", f"headersSecretRef: the value of {path.name} is not UTF-8 text"
            ) from None
        if "\r" in value or "\n" in value or "\0" in value:
            raise DataError(
                "InvalidSource",
                f"headersSecretRef: the value of {path.name} holds a line break or NUL; it would break the "
                "request (the value is not shown)",
            )
        headers[path.name] = value
    return headers


def read_s3(store: Store, key: str, uri: str, retry: Retry | None = None) -> bytes:
    """The object ``key`` of an S3 store (``uri`` names it in messages)."""
    from botocore.exceptions import BotoCoreError, ClientError  # only the runtime images have botocore

    retry = retry or Retry()

    def once() -> bytes:
        try:
            return store.get_bytes(key)
        except StoreError:
            raise s3_error("NoSuchKey", 404, uri) from None
        except ClientError as exc:
            error = exc.response.get("Error") or {}
            status = int((exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
            raise s3_error(str(error.get("Code") or ""), status, uri) from None
        except BotoCoreError as exc:  # no connection, a timeout: the endpoint may come back
            raise Transient(f"reading {uri}: {exc}") from None

    return with_retries(once, uri, retry)


def _said(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return "no answer in time (timed out)"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}"
    return str(reason)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubeloop.runtime fetch", description=__doc__)
    parser.add_argument("--uri", required=True, help="model directory URI (s3://, file://, pvc://)")
    parser.add_argument("--sha256", required=True, help="expected sha256 of model.onnx")
    parser.add_argument("--dest", required=True, help="local directory to write the model into")
    args = parser.parse_args(argv)
    return jobio.run("fetch", lambda: fetch(args.uri, args.sha256, args.dest))


if __name__ == "__main__":
    raise SystemExit(main())
