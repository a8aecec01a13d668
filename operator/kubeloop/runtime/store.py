"""The artifact store: one small interface over S3 and a mounted volume.

URIs: ``s3://bucket/prefix`` (endpoint, region and credentials from the environment a Secret provides:
``KUBELOOP_S3_ENDPOINT``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``),
``file:///path`` and ``pvc://claim/path`` (the claim mounted at ``$KUBELOOP_PVC_ROOT``, default
``/mnt/pvc/<claim>``).

Every write is atomic: a volume write goes to a hidden temp file, is fsynced and renamed into place; an S3
write is one PUT or one multipart upload, which the server makes visible whole (on completion) or not at
all (an upload that is aborted or never completed shows no object). A directory of artifacts is complete
only once its marker object (``manifest.json``, ``model-card.json``) exists, and it is written last.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

from kubeloop.contract import PVC_ROOT

CHUNK = 1 << 20
TEMP_PREFIX = ".tmp-"
# S3 multipart: parts of 16 MiB keep a streamed write's buffer small and allow objects of 160 GB (10,000
# parts); files above the threshold go up in parts, in parallel, instead of one PUT (5 GB at most).
S3_PART_BYTES = 16 << 20
S3_MULTIPART_THRESHOLD = 64 << 20
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

    def open_write(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """A file to stream an object into: ``key`` appears, whole, only when the block exits without an
        exception; memory stays bounded (a volume writes to disk, S3 uploads in parts as data comes)."""
        raise NotImplementedError

    def move(self, src: str, dst: str) -> None:
        """Move the object ``src`` to ``dst`` (a rename on a volume, a server-side copy on S3)."""
        raise NotImplementedError

    def remove(self, prefix: str) -> None:
        """Delete every object under ``prefix`` (the prefix is a directory; nothing there is fine)."""
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

        self._atomic_write(key, copy)
        return digest.hexdigest()

    def put_bytes(self, key: str, data: bytes) -> str:
        self._atomic_write(key, lambda out: out.write(data))
        return hashlib.sha256(data).hexdigest()

    def _atomic_write(self, key: str, write: Writer) -> None:
        with self.open_write(key) as out:
            write(out)

    @contextlib.contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        target = self._path(key)
        fd, tmp = _temp_beside(target)
        try:
            with os.fdopen(fd, "wb") as out:
                yield out
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)

    def move(self, src: str, dst: str) -> None:
        source, target = self._path(src), self._path(dst)
        if not source.is_file():
            raise StoreError(f"{self.uri(src)} does not exist")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        _fsync_dir(target.parent)

    def remove(self, prefix: str) -> None:
        base = self._path(prefix)
        if base.is_dir():
            shutil.rmtree(base)
        else:
            base.unlink(missing_ok=True)
        # Directories left empty go too, so a failed write leaves no trace; one in use is not empty.
        root = self.path.resolve()
        parent = base.parent
        while parent != root and root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

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
        from boto3.s3.transfer import TransferConfig

        sha = sha256_file(path)
        # One PUT up to the threshold; above it a multipart upload (one PUT is limited to 5 GB).
        config = TransferConfig(
            multipart_threshold=S3_MULTIPART_THRESHOLD, multipart_chunksize=S3_PART_BYTES, max_concurrency=4
        )
        self.client.upload_file(
            str(path), self.bucket, self._key(key), ExtraArgs={"Metadata": {"sha256": sha}}, Config=config
        )
        return sha

    def put_bytes(self, key: str, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, Metadata={"sha256": sha})
        return sha

    @contextlib.contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        upload = _MultipartUpload(self.client, self.bucket, self._key(key))
        try:
            yield upload  # type: ignore[misc]  # a RawIOBase that only writes
            upload.complete()
        except BaseException:
            upload.abort()
            raise

    def move(self, src: str, dst: str) -> None:
        from boto3.s3.transfer import TransferConfig

        # A managed copy: server-side, in parts above the threshold (copy_object stops at 5 GB).
        config = TransferConfig(multipart_threshold=S3_MULTIPART_THRESHOLD, multipart_chunksize=S3_PART_BYTES)
        source = {"Bucket": self.bucket, "Key": self._key(src)}
        self.client.copy(source, self.bucket, self._key(dst), Config=config)
        self.client.delete_object(Bucket=self.bucket, Key=self._key(src))

    def remove(self, prefix: str) -> None:
        keys = self.list(prefix.rstrip("/") + "/") + ([prefix] if self.exists(prefix) else [])
        for start in range(0, len(keys), 1000):  # delete_objects takes 1,000 keys at a time
            objects = [{"Key": self._key(k)} for k in keys[start : start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})

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


class _MultipartUpload(io.RawIOBase):
    """A write-only stream into one S3 object: a part goes up each time ``S3_PART_BYTES`` are buffered, so
    an object of any size is written with one part in memory and no local copy. Nothing is visible until
    ``complete``; ``abort`` drops the parts already sent."""

    def __init__(self, client: Any, bucket: str, key: str) -> None:
        super().__init__()
        self.client, self.bucket, self.key = client, bucket, key
        self.buffer = bytearray()
        self.parts: list[dict[str, Any]] = []
        self.upload_id: str | None = None
        self.position = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.buffer += view
        self.position += len(view)
        while len(self.buffer) >= S3_PART_BYTES:
            self._send(bytes(self.buffer[:S3_PART_BYTES]))
            del self.buffer[:S3_PART_BYTES]
        return len(view)

    def _send(self, chunk: bytes) -> None:
        if self.upload_id is None:
            started = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key)
            self.upload_id = started["UploadId"]
        number = len(self.parts) + 1
        answer = self.client.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=chunk
        )
        self.parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def complete(self) -> None:
        if self.upload_id is None:  # small: one PUT
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(self.buffer))
            return
        if self.buffer:
            self._send(bytes(self.buffer))  # the last part may be smaller than the others
            self.buffer.clear()
        self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
        )

    def abort(self) -> None:
        if self.upload_id is not None:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)


def _temp_beside(target: Path) -> tuple[int, str]:
    """A new temp file in ``target``'s directory, made if needed. Another writer's remove() may prune
    that directory the moment it is made (it was empty): then it is made again."""
    for attempt in range(3):
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            return tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{target.name}.", dir=target.parent)
        except FileNotFoundError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _fsync_dir(directory: Path) -> None:
    # A rename is durable only once the directory entry is on disk.
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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
