"""S3Store against a real S3 server (rclone serve s3), and the key layout."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from site_tasks.federation import StorageConfig
from site_tasks.storage import Keys, S3Store, StorageError, Version, Versioned, first, versions
from tests.memory_store import MemoryStore


@pytest.fixture
def store(s3_server: Any) -> S3Store:
    config = StorageConfig(
        bucket=f"b-{uuid.uuid4().hex[:10]}",
        endpoint_url=s3_server.url,
        access_key_id=s3_server.access_key,
        secret_access_key=s3_server.secret_key,
    )
    s = S3Store(config)
    s.ensure_bucket()
    return s


def test_put_get_list_round_trip(store: S3Store) -> None:
    store.put("fed/run/round-1/prior.json", b'{"a": 1}')
    store.put("fed/run/round-1/updates/site-01.json", b"x" * 10)
    store.put("fed/run/round-2/prior.json", b"y")
    assert store.get("fed/run/round-1/prior.json") == b'{"a": 1}'
    assert store.get("fed/run/round-1/missing.json") is None
    assert store.list("fed/run/round-1/") == [
        "fed/run/round-1/prior.json",
        "fed/run/round-1/updates/site-01.json",
    ]
    assert store.list("nothing/") == []


def test_put_overwrites_the_same_key(store: S3Store) -> None:
    store.put("k", b"first")
    store.put("k", b"second")
    assert store.get("k") == b"second"
    assert store.list("") == ["k"]


def test_without_versioning_first_is_get_and_versions_is_the_listing(store: S3Store) -> None:
    """rclone serve s3 keeps no versions: an overwrite replaces the object (not write-once)."""
    store.put("r/updates/a.json", b"first")
    store.put("r/updates/a.json", b"second")
    store.put("r/updates/b.safetensors", b"b")
    assert not store.versioned()
    assert store.first("r/updates/a.json") == store.get("r/updates/a.json") == b"second"
    assert store.first("r/updates/missing.json") is None
    found = store.versions("r/updates/")
    assert (
        list(found) == store.list("r/updates/") == ["r/updates/a.json", "r/updates/b.safetensors"]
    )
    assert all(len(v) == 1 and v[0].version_id is None and v[0].written for v in found.values())


def test_a_store_without_versions_reads_as_one_version_per_key() -> None:
    memory = MemoryStore({"p/a": b"1", "q/b": b"2"})
    assert not isinstance(memory, Versioned)
    assert first(memory, "p/a") == b"1" and first(memory, "p/z") is None
    assert versions(memory, "p/") == {"p/a": [Version(None, None)]}


def test_large_object_round_trips_exactly(store: S3Store) -> None:
    blob = bytes(range(256)) * 40_000  # 10 MB
    store.put("big.bin", blob)
    assert store.get("big.bin") == blob


def test_ensure_bucket_is_idempotent(store: S3Store) -> None:
    store.ensure_bucket()
    store.put("a", b"1")
    store.ensure_bucket()
    assert store.get("a") == b"1"


def test_wrong_secret_is_refused(s3_server: Any, store: S3Store) -> None:
    bad = S3Store(
        StorageConfig(
            bucket=store.bucket,
            endpoint_url=s3_server.url,
            access_key_id=s3_server.access_key,
            secret_access_key="not-the-secret",
        )
    )
    with pytest.raises(StorageError, match=f"cannot write s3://{store.bucket}/x"):
        bad.put("x", b"1")
    assert store.get("x") is None


def test_key_layout() -> None:
    keys = Keys("fed", "run-7")
    assert keys.prior(3) == ("fed/run-7/round-3/prior.safetensors", "fed/run-7/round-3/prior.json")
    assert keys.update(3, "site-02") == (
        "fed/run-7/round-3/updates/site-02.safetensors",
        "fed/run-7/round-3/updates/site-02.json",
    )
    assert keys.updates(3) == "fed/run-7/round-3/updates/"
    assert keys.summary(3) == "fed/run-7/round-3/summary.json"
    assert keys.validation("site-02") == "fed/run-7/validation/site-02.json"


def test_missing_bucket_and_unreachable_endpoint_are_storage_errors(s3_server: Any) -> None:
    nobucket = S3Store(
        StorageConfig(
            bucket="never-created",
            endpoint_url=s3_server.url,
            access_key_id=s3_server.access_key,
            secret_access_key=s3_server.secret_key,
        )
    )
    with pytest.raises(StorageError, match="s3://never-created/k"):
        nobucket.get("k")
    down = S3Store(
        StorageConfig(
            bucket="b", endpoint_url="http://127.0.0.1:9", access_key_id="a", secret_access_key="b"
        )
    )
    with pytest.raises(StorageError, match="cannot list"):
        down.list("p/")


def test_ensure_bucket_with_bad_credentials_is_a_storage_error(s3_server: Any) -> None:
    bad = S3Store(
        StorageConfig(
            bucket="any",
            endpoint_url=s3_server.url,
            access_key_id="someone-else",
            secret_access_key="wrong",
        )
    )
    with pytest.raises(StorageError, match="cannot open bucket s3://any/"):
        bad.ensure_bucket()
