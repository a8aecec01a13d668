"""The artifact store: one small interface over S3 and a mounted volume.

URIs: ``s3://bucket/prefix`` (endpoint, region and credentials from the environment a Secret provides:
``KUBELOOP_S3_ENDPOINT``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``),
``file:///path`` and ``pvc://claim/path`` (the claim mounted at ``$KUBELOOP_PVC_ROOT``, default
``/mnt/pvc/<claim>``).

Every write is atomic: a volume write goes to a hidden temp file, is fsynced and renamed into place; an S3
write is one PUT, which the server makes visible whole or not at all. A directory of artifacts is complete
only once its marker object (``statistics.json``, ``model-card.json``) exists, and it is written last.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

from kubeloop.contract import PVC_ROOT

CHUNK = 1 << 20
TEMP_PREFIX = ".tmp-"
# Writes the content of an object to an open file.
Writer = Callable[[BinaryIO], object]


class StoreError(Exception):
    """The store cannot do what was asked (bad URI, missing object, checksum mismatch)."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class Store:
    """Keys are ``/``-separated paths relative to the store's root URI."""

    root: str

    def uri(self, key: str = "") -> str:
        return f"{self.root.rstrip('/')}/{key.lstrip('/')}" if key else self.root

    def put_file(self, key: str, path: str | os.PathLike[str]) -> str:
        """Store the file at ``key``; returns its sha256."""
        raise NotImplementedError

    def put_bytes(self, key: str, data: bytes) -> str:
        raise NotImplementedError

    def get_file(self, key: str, dest: str | os.PathLike[str], sha256: str | None = None) -> str:
        """Download ``key`` to ``dest`` atomically; verify ``sha256`` when given. Returns the sha256."""
        raise NotImplementedError

    def get_bytes(self, key: str) -> bytes:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix``, sorted; never a temp file of an unfinished write."""
        raise NotImplementedError

    def put_dir(self, prefix: str, local_dir: str | os.PathLike[str], marker: str) -> dict[str, str]:
        """Upload every file of ``local_dir`` under ``prefix``, the ``marker`` file last.

        Returns ``{relative path: sha256}``. Readers treat the directory as complete only when the marker
        exists, so a crash part-way leaves objects that no reader takes for a finished artifact.
        """
        base = Path(local_dir)
        files = sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
        if marker not in files:
            raise StoreError(f"{base} has no {marker}: the marker file must be part of the directory")
        sums = {}
        for rel in [f for f in files if f != marker] + [marker]:
            sums[rel] = self.put_file(f"{prefix.rstrip('/')}/{rel}", base / rel)
        return sums


class VolumeStore(Store):
    def __init__(self, root_uri: str, path: Path) -> None:
        self.root = root_uri
        self.path = path

    def _path(self, key: str) -> Path:
        target = (self.path / key.lstrip("/")).resolve()
        if self.path.resolve() not in (target, *target.parents):
            raise StoreError(f"key {key!r} leaves the store root {self.root}")
        return target

    def put_file(self, key: str, path: str | os.PathLike[str]) -> str:
        digest = hashlib.sha256()

        def copy(out: BinaryIO) -> None:
            with open(path, "rb") as src:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)

        self._atomic_write(self._path(key), copy)
        return digest.hexdigest()

    def put_bytes(self, key: str, data: bytes) -> str:
        self._atomic_write(self._path(key), lambda out: out.write(data))
        return hashlib.sha256(data).hexdigest()

    @staticmethod
    def _atomic_write(target: Path, write: Writer) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                write(out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        # The rename is durable only once the directory entry is on disk.
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def get_file(self, key: str, dest: str | os.PathLike[str], sha256: str | None = None) -> str:
        src = self._path(key)
        if not src.is_file():
            raise StoreError(f"{self.uri(key)} does not exist")
        return _verified_copy(lambda out: _copy_from(src, out), Path(dest), sha256, self.uri(key))

    def get_bytes(self, key: str) -> bytes:
        src = self._path(key)
        if not src.is_file():
            raise StoreError(f"{self.uri(key)} does not exist")
        return src.read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        base = self._path(prefix) if prefix else self.path
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.path).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(TEMP_PREFIX)
        )


class S3Store(Store):
    def __init__(self, root_uri: str, bucket: str, prefix: str, endpoint: str | None = None) -> None:
        import boto3  # the operator image has no boto3; only the runtime images import this
        from botocore.config import Config

        self.root = root_uri
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        endpoint = endpoint or os.environ.get("KUBELOOP_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint or None,
            region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            # Path style works with every S3-compatible server; virtual hosts need DNS per bucket.
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"}),
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key.lstrip('/')}" if self.prefix else key.lstrip("/")

    def put_file(self, key: str, path: str | os.PathLike[str]) -> str:
        sha = sha256_file(path)
        size = os.path.getsize(path)
        with open(path, "rb") as body:
            # put_object is one PUT (upload_file would switch to multipart above 8 MiB).
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=body,
                ContentLength=size,
                Metadata={"sha256": sha},
            )
        return sha

    def put_bytes(self, key: str, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, Metadata={"sha256": sha})
        return sha

    def get_file(self, key: str, dest: str | os.PathLike[str], sha256: str | None = None) -> str:
        body = self._get(key)["Body"]

        def copy(out: BinaryIO) -> None:
            for chunk in body.iter_chunks(CHUNK):
                out.write(chunk)

        return _verified_copy(copy, Path(dest), sha256, self.uri(key))

    def get_bytes(self, key: str) -> bytes:
        data: bytes = self._get(key)["Body"].read()
        return data

    def _get(self, key: str) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        try:
            response: dict[str, Any] = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                raise StoreError(f"{self.uri(key)} does not exist") from None
            raise
        return response

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return False
            raise
        return True

    def list(self, prefix: str = "") -> list[str]:
        full = self._key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(keys)


def _copy_from(src: Path, out: BinaryIO) -> None:
    with open(src, "rb") as fh:
        while chunk := fh.read(CHUNK):
            out.write(chunk)


def _verified_copy(copy: Writer, dest: Path, sha256: str | None, what: str) -> str:
    """Write to a temp file beside ``dest``; rename only when the checksum matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            copy(out)
        actual = sha256_file(tmp)
        if sha256 is not None and actual != sha256.lower():
            raise StoreError(f"checksum mismatch for {what}: expected sha256 {sha256}, got {actual}")
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return actual


def open_store(uri: str) -> Store:
    """The store for ``uri``; raises StoreError naming the accepted forms when the URI is not one."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StoreError(f"store URI {uri!r} has no bucket: use s3://bucket/prefix")
        return S3Store(uri, parsed.netloc, parsed.path)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise StoreError(f"store URI {uri!r}: a file URI needs an absolute path, file:///path")
        return VolumeStore(uri, Path(parsed.path))
    if parsed.scheme == "pvc":
        if not parsed.netloc:
            raise StoreError(f"store URI {uri!r} has no claim name: use pvc://claim/path")
        root = Path(os.environ.get("KUBELOOP_PVC_ROOT") or f"{PVC_ROOT}/{parsed.netloc}")
        return VolumeStore(uri, root / parsed.path.lstrip("/"))
    raise StoreError(
        f"unsupported store URI {uri!r}: use s3://bucket/prefix, file:///path or pvc://claim/path"
    )


def join(*parts: str) -> str:
    """Join key parts with ``/``, ignoring empty ones."""
    return "/".join(p.strip("/") for p in parts if p.strip("/"))
