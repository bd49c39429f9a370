"""Where bytes live: the uploads waiting for their job, and the originals (and
their normalised text) kept after a document is indexed.

`BlobStore` is the interface: bytes by key, written whole (no partial object is
ever visible). `RedisBlobStore` keeps upload bytes in flight beside the job
records; `FileBlobStore` (one machine: under `data/`) and `S3BlobStore` (a
cluster: any S3-compatible store, e.g. the Milvus chart's MinIO) keep the
originals, from which ragmesh can rebuild an index by itself.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from services.common.errors import Unavailable
from services.jobs.keys import Keys


class BlobStore(Protocol):
    def put(self, key: str, data: bytes | memoryview) -> None: ...
    def get(self, key: str) -> bytes | None: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, *keys: str) -> None: ...


class RedisBlobStore:
    """Upload bytes in flight, by job id, under {p}:blob:{job}."""

    def __init__(self, client: Any, keys: Keys) -> None:
        self.r = client
        self.keys = keys

    def put(self, key: str, data: bytes | memoryview) -> None:
        self.r.set(self.keys.blob(key), data)

    def get(self, key: str) -> bytes | None:
        data = self.r.get(self.keys.blob(key))
        return bytes(data) if data is not None else None

    def exists(self, key: str) -> bool:
        return bool(self.r.exists(self.keys.blob(key)))

    def delete(self, *keys: str) -> None:
        if keys:
            self.r.delete(*(self.keys.blob(k) for k in keys))


class FileBlobStore:
    """Objects as files under `root` (keys are relative paths of validated ids)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        # Checked by its text, not by resolving it against the disk (several system calls
        # a component, on every put and get): a relative path without `..` stays under
        # the root, as nothing here makes symbolic links.
        parts = PurePosixPath(key).parts
        if not parts or key.startswith("/") or ".." in parts or "\\" in key or "\0" in key:
            raise ValueError(f"blob key {key!r} leaves the store")
        return self.root / key

    def put(self, key: str, data: bytes | memoryview) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, *keys: str) -> None:
        for key in keys:
            with contextlib.suppress(FileNotFoundError):
                self._path(key).unlink()


class S3BlobStore:
    """Objects in an S3-compatible bucket (boto3), under `prefix`."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    @classmethod
    def connect(
        cls,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        region: str,
        prefix: str = "",
    ) -> S3BlobStore:
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3",
            endpoint_url=endpoint or None,
            aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None,
            region_name=region or None,
            config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5),
        )
        return cls(client, bucket, prefix)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        """One S3 call; a missing object is None, any other failure UNAVAILABLE."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in {"NoSuchKey", "404", "NotFound"}:
                return None
            if code == "NoSuchBucket":
                raise _MissingBucket from exc
            raise _unavailable(what) from exc
        except BotoCoreError as exc:
            raise _unavailable(what) from exc

    def put(self, key: str, data: bytes | memoryview) -> None:
        body = bytes(data)
        try:
            self._call("put", self.client.put_object, Key=self._key(key), Body=body)
        except _MissingBucket:
            # the first write to a fresh store (e.g. the Milvus chart's MinIO) makes the bucket
            region = self.client.meta.region_name
            where = (
                {"CreateBucketConfiguration": {"LocationConstraint": region}}
                if region and region != "us-east-1"
                else {}
            )
            # another writer may make it first (BucketAlreadyOwnedByYou): the put below tells
            with contextlib.suppress(_MissingBucket, Unavailable):
                self._call("create bucket", self.client.create_bucket, **where)
            self._call("put", self.client.put_object, Key=self._key(key), Body=body)

    def get(self, key: str) -> bytes | None:
        try:
            resp = self._call("get", self.client.get_object, Key=self._key(key))
        except _MissingBucket:
            return None  # nothing was ever written
        return None if resp is None else bytes(resp["Body"].read())

    def exists(self, key: str) -> bool:
        try:
            return self._call("head", self.client.head_object, Key=self._key(key)) is not None
        except _MissingBucket:
            return False

    def delete(self, *keys: str) -> None:
        for key in keys:
            with contextlib.suppress(_MissingBucket):
                self._call("delete", self.client.delete_object, Key=self._key(key))


class _MissingBucket(Exception):
    """The bucket does not exist (yet)."""


def _unavailable(what: str) -> Unavailable:
    return Unavailable(f"the blob store failed ({what})", reason="BLOB_STORE_UNAVAILABLE")


def original_key(tenant: str, kb: str, document_id: str, version: str) -> str:
    return f"originals/{tenant}/{kb}/{document_id}/{version}"


def text_key(tenant: str, kb: str, document_id: str, version: str) -> str:
    return f"texts/{tenant}/{kb}/{document_id}/{version}.txt"
