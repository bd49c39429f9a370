"""The stores of originals keep one contract: whole objects by key, None when
absent, and UNAVAILABLE (never a wrong answer) when the store cannot be reached.

The S3 store talks HTTP to moto's S3 server: a real socket and the real boto3
client, no stubbed calls.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.errors import Unavailable
from services.jobs.blobs import BlobStore, FileBlobStore, S3BlobStore, original_key


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    moto_server = pytest.importorskip("moto.server")
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "file":
        return FileBlobStore(tmp_path / "blobs")
    endpoint = request.getfixturevalue("s3_endpoint")
    # a fresh bucket per test: the first put creates it
    return S3BlobStore.connect(
        endpoint, f"bucket-{tmp_path.name.lower()[-40:]}", "key", "secret", "us-east-1", "pre/"
    )


def test_objects_round_trip(store: BlobStore) -> None:
    key = original_key("acme", "handbook", "doc-1", "v1")
    assert store.get(key) is None and not store.exists(key)
    data = bytes(range(256)) * 1000
    store.put(key, memoryview(data))
    assert store.exists(key)
    assert store.get(key) == data
    store.put(key, b"replaced")  # a new version of the same key replaces it whole
    assert store.get(key) == b"replaced"
    store.delete(key, original_key("acme", "handbook", "never", "v1"))  # absent keys: no error
    assert store.get(key) is None and not store.exists(key)


def test_file_store_refuses_keys_outside_its_root(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    for key in ("../escape", "a/../../escape", "/escape", "", "a\\..\\..\\escape", "a\0b"):
        with pytest.raises(ValueError, match="leaves the store"):
            store.put(key, b"x")
        with pytest.raises(ValueError, match="leaves the store"):
            store.get(key)
    assert not (tmp_path / "escape").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written anywhere


def test_file_store_never_shows_a_partial_object(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    store.put("a/b", b"old")
    with pytest.raises(TypeError):
        store.put("a/b", "not bytes")  # type: ignore[arg-type]  # fails mid-write
    assert store.get("a/b") == b"old"
    assert [p.name for p in (tmp_path / "blobs" / "a").iterdir()] == ["b"]  # no temp file left


def test_unreachable_s3_is_unavailable() -> None:
    store = S3BlobStore.connect(
        f"http://127.0.0.1:{_free_port()}", "bucket", "key", "secret", "us-east-1"
    )
    for call in (lambda: store.put("k", b"x"), lambda: store.get("k"), lambda: store.exists("k")):
        with pytest.raises(Unavailable) as info:
            call()
        assert info.value.reason == "BLOB_STORE_UNAVAILABLE"
