"""Attacks by a site's key on the real SeaweedFS server (``site_tasks.local.seaweed``): the rules
of ``site_tasks.access`` hold on the server, not only on paper. One server per session (the
``seaweed`` fixture of tests/conftest.py); each test writes under a run of its own."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
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
def test_an_overwrite_is_a_new_version_and_the_first_is_what_the_centre_reads(
    seaweed: Seaweed,
) -> None:
    """SeaweedFS 4.48 honours ``If-None-Match: *`` (412) but accepts a plain PUT over a key: on
    the Object Lock bucket that is a newer version on top of the first, which stays."""
    keys, store = run_keys(), stores(seaweed)
    site, centre = store["site-1"], store["centre"]
    tensors, manifest = keys.update(1, "site-1")
    site.client.put_object(Bucket="fedmap", Key=tensors, Body=b"first", IfNoneMatch="*")
    again = {"Bucket": "fedmap", "Key": tensors, "Body": b"second", "IfNoneMatch": "*"}
    assert error(site.client.put_object, **again) == ("PreconditionFailed", 412)
    site.put(manifest, b"committed")
    site.put(tensors, b"rewritten")  # plain PUTs, no If-None-Match: accepted
    site.put(manifest, b"rewritten")
    assert site.get(tensors) == centre.get(tensors) == b"rewritten"  # the latest version
    assert centre.first(tensors) == b"first" and centre.first(manifest) == b"committed"
    assert centre.first(keys.update(1, "site-2")[1]) is None
    found = centre.versions(keys.updates(1))
    assert list(found) == [manifest, tensors]
    for history in found.values():
        assert len(history) == 2 and len({v.version_id for v in history}) == 2
        written = [v.written for v in history if v.written is not None]
        assert len(written) == 2 and sorted(written) == written
    with pytest.raises(StorageError, match="AccessDenied"):
        site.first(tensors)  # reading versions is the centre's right


@security
def test_nobody_may_delete_or_unlock_the_first_version(seaweed: Seaweed) -> None:
    keys, store = run_keys(), stores(seaweed)
    site, centre = store["site-1"], store["centre"]
    key = keys.update(1, "site-1")[1]
    site.put(key, b"committed")
    site.put(key, b"rewritten")
    oldest = centre.versions(key)[key][0].version_id
    assert oldest is not None
    one = {"Bucket": "fedmap", "Key": key, "VersionId": oldest}
    denied = ("AccessDenied", 403)
    assert error(site.client.delete_object, **one) == denied
    assert error(centre.client.delete_object, **one) == denied  # COMPLIANCE: not even the admin
    assert error(centre.client.delete_object, **one, BypassGovernanceRetention=True) == denied
    batch = centre.client.delete_objects(
        Bucket="fedmap", Delete={"Objects": [{"Key": key, "VersionId": oldest}]}
    )
    assert [e.get("Code") for e in batch.get("Errors", [])] == ["AccessDenied"]
    # An hour is far shorter than the bucket's COMPLIANCE default (RETENTION_DAYS, one day) yet
    # never in the past by the time a slow machine sends the request (a past date is a 400, not
    # the refusal).
    soon = datetime.now(UTC) + timedelta(hours=1)
    retention: Any = {"Mode": "GOVERNANCE", "RetainUntilDate": soon}
    assert error(site.client.put_object_retention, **one, Retention=retention) == denied
    short = {"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": soon}
    assert error(site.client.put_object, Bucket="fedmap", Key=key, Body=b"x", **short) == denied
    unlocked: Any = {"ObjectLockEnabled": "Enabled"}
    assert (
        error(
            site.client.put_object_lock_configuration,
            Bucket="fedmap",
            ObjectLockConfiguration=unlocked,
        )
        == denied
    )
    suspend: Any = {"Status": "Suspended"}
    assert error(
        centre.client.put_bucket_versioning, Bucket="fedmap", VersioningConfiguration=suspend
    ) == ("InvalidBucketState", 409)
    site.client.delete_object(Bucket="fedmap", Key=key)  # a plain DELETE: only a delete marker
    assert centre.get(key) is None
    assert centre.first(key) == b"committed"
    assert [len(v) for v in centre.versions(key).values()] == [2]


@security
def test_uploads_reads_what_each_site_committed_first(seaweed: Seaweed) -> None:
    from site_tasks.centre.server import uploads

    keys, store = run_keys(), stores(seaweed)
    for site in ("site-1", "site-2"):
        tensors, manifest = keys.update(1, site)
        store[site].put(tensors, f"{site} tensors".encode())
        store[site].put(manifest, f"{site} manifest".encode())
    store["site-1"].put(keys.update(1, "site-1")[0], b"forged tensors")
    store["site-1"].put(keys.update(1, "site-1")[1], b"forged manifest")
    store["site-2"].client.delete_object(Bucket="fedmap", Key=keys.update(1, "site-2")[1])
    seen: dict[str, dict[str, Any]] = {}
    found = list(uploads(store["centre"], keys, 1, seen))
    assert [(c.site, c.manifest, c.read()) for c in found] == [
        ("site-1", b"site-1 manifest", b"site-1 tensors"),
        ("site-2", b"site-2 manifest", b"site-2 tensors"),  # withdrawn, yet committed
    ]
    assert {site: s["versions"] for site, s in seen.items()} == {"site-1": 2, "site-2": 1}
    assert seen["site-1"]["manifest_key"] == keys.update(1, "site-1")[1]
    assert seen["site-1"]["tensors_key"] == keys.update(1, "site-1")[0]
    assert datetime.fromisoformat(seen["site-1"]["first_written"]).tzinfo is not None


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
