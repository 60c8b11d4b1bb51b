"""Attacks by a site's key on the real SeaweedFS server (``site_tasks.local.seaweed``): the rules
of ``site_tasks.access`` hold on the server, not only on paper. One server per session (the
``seaweed`` fixture of tests/conftest.py); each test writes under a run of its own."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from site_tasks.storage import Keys, S3Store, StorageError

if TYPE_CHECKING:
    from site_tasks.local.seaweed import Seaweed

security = pytest.mark.security


def error(call: Callable[..., object], **kwargs: Any) -> tuple[str, int]:
    """(S3 error code, HTTP status) of a boto3 call that must fail."""
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    response: Any = caught.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def run_keys() -> Keys:
    return Keys("heart", f"run-{uuid.uuid4().hex[:8]}")


def stores(seaweed: Seaweed) -> dict[str, S3Store]:
    return {who: S3Store(seaweed.storage(who)) for who in seaweed.keys}


@security
def test_a_site_writes_its_own_messages_and_reads_the_prior(seaweed: Seaweed) -> None:
    keys, store = run_keys(), stores(seaweed)
    tensors, manifest = keys.prior(3)
    store["centre"].put(tensors, b"prior tensors")
    store["centre"].put(manifest, b"prior manifest")
    site = store["site-1"]
    assert site.get(tensors) == b"prior tensors" and site.get(manifest) == b"prior manifest"
    assert site.get(keys.prior(4)[1]) is None  # not committed yet: NoSuchKey, not AccessDenied
    own = [*keys.update(3, "site-1"), keys.validation("site-1")]
    own += [keys.evaluation("site-1"), keys.inference("site-1")]
    for key in own:
        site.put(key, key.encode())
        assert site.get(key) == key.encode()  # a retried task reads what it committed
    assert store["centre"].list(keys.updates(3)) == sorted(keys.update(3, "site-1"))


@security
@pytest.mark.parametrize(("attacker", "victim"), [("site-1", "site-10"), ("site-10", "site-1")])
def test_a_site_cannot_touch_another_sites_messages(
    seaweed: Seaweed, attacker: str, victim: str
) -> None:
    keys, store = run_keys(), stores(seaweed)
    theirs = [*keys.update(2, victim), keys.validation(victim), keys.evaluation(victim)]
    for key in theirs:
        store[victim].put(key, b"genuine")
    client = store[attacker].client
    for key in theirs:
        denied = ("AccessDenied", 403)
        assert error(client.put_object, Bucket="fedmap", Key=key, Body=b"forged") == denied
        assert error(client.get_object, Bucket="fedmap", Key=key) == denied
        assert error(client.delete_object, Bucket="fedmap", Key=key) == denied
        assert store["centre"].get(key) == b"genuine"
    # a name that merely starts with the site's own, in the middle of the wildcard pattern
    with pytest.raises(StorageError, match="AccessDenied"):
        store["site-1"].put(keys.update(2, "site-1.b")[1], b"x")


@security
def test_a_site_cannot_write_the_prior_or_read_a_summary_or_list(seaweed: Seaweed) -> None:
    keys, store = run_keys(), stores(seaweed)
    store["centre"].put(keys.prior(1)[1], b"genuine")
    store["centre"].put(keys.summary(1), b"summary")
    site = store["site-2"]
    for key in (*keys.prior(1), *keys.prior(2), keys.summary(1)):
        with pytest.raises(StorageError, match="AccessDenied"):
            site.put(key, b"forged")
    with pytest.raises(StorageError, match="AccessDenied"):
        site.get(keys.summary(1))
    with pytest.raises(StorageError, match="AccessDenied"):
        site.list(keys.updates(1))
    with pytest.raises(StorageError, match="AccessDenied"):
        site.put(Keys("tcga", keys.run).update(1, "site-2")[1], b"another federation")
    assert store["centre"].get(keys.prior(1)[1]) == b"genuine"


@security
def test_a_site_cannot_change_the_bucket_or_its_own_rights(seaweed: Seaweed) -> None:
    client = stores(seaweed)["site-1"].client
    assert error(client.create_bucket, Bucket="fedmap-evil")[1] == 403
    policy = '{"Version":"2012-10-17","Statement":[]}'
    assert error(client.put_bucket_policy, Bucket="fedmap", Policy=policy)[1] == 403
    assert error(client.delete_bucket, Bucket="fedmap")[1] == 403


@security
def test_only_a_conditional_put_is_refused_over_an_existing_object(seaweed: Seaweed) -> None:
    """SeaweedFS 4.48 honours ``If-None-Match: *`` (412), but a plain PUT replaces the object:
    the server is not write-once, so a site may rewrite its own messages (never another's)."""
    keys, site = run_keys(), stores(seaweed)["site-1"]
    key = keys.update(1, "site-1")[0]
    site.client.put_object(Bucket="fedmap", Key=key, Body=b"first", IfNoneMatch="*")
    again = {"Bucket": "fedmap", "Key": key, "Body": b"second", "IfNoneMatch": "*"}
    assert error(site.client.put_object, **again) == ("PreconditionFailed", 412)
    assert site.get(key) == b"first"
    site.put(key, b"rewritten")  # no If-None-Match: accepted
    assert site.get(key) == b"rewritten"


def test_a_worker_for_several_sites_holds_the_union_of_their_rules(tmp_path: Path) -> None:
    from fedmap.schema import Site
    from site_tasks.local.edge import identities, spread

    sites = [Site(f"site-{i}", tmp_path, queue=f"q{i}") for i in (1, 2, 3)]
    pool = spread([(s.name, s.queue) for s in sites], 2)
    found = {
        i.name: {r.pattern for r in i.rules if r.action == "write"}
        for i in identities("heart", sites, pool)
    }
    assert set(found) == {"centre", "edge-1", "edge-2"}
    assert "heart/*/round-*/updates/site-3.json" in found["edge-1"]  # edge-1 serves q1 and q3
    assert not any("site-2" in pattern for pattern in found["edge-1"])
    assert {p for p in found["edge-2"] if "updates" in p} == {
        "heart/*/round-*/updates/site-2.safetensors",
        "heart/*/round-*/updates/site-2.json",
    }
    with pytest.raises(ValueError, match="centre"):
        identities("heart", [Site("centre", tmp_path, queue="c")], spread([("centre", "c")], None))
