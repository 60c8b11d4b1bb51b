"""Object storage: the one place parameters, omega_k and summaries are exchanged.

``ObjectStore`` is the small interface the tasks use; ``S3Store`` implements it with boto3 for AWS,
MinIO or the local ``rclone serve s3`` server alike. A single PUT is atomic on S3, so an object is
either whole or absent; multi-object messages are committed by writing their manifest last.

Write-once is the server's to enforce, not the writer's: on a bucket with versioning (S3 Object
Lock, as ``site_tasks.local.seaweed`` makes it, COMPLIANCE retention) an overwrite only adds a
newer version, and ``Versioned.first`` reads the oldest one, which nobody may delete within
retention. A store without versions (``rclone serve s3``) keeps only the latest bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from site_tasks.federation import FederationConfig, StorageConfig

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class StorageError(RuntimeError):
    """The object store refused or could not be reached; the message names bucket and key."""


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such object."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Every key under prefix, sorted."""
        ...


@dataclass(frozen=True)
class Version:
    """One stored version of a key: its id (None on a server without versioning) and when it
    was written (None when the store does not say)."""

    version_id: str | None
    written: datetime | None


History = dict[str, list[Version]]
"""key -> its versions, oldest first (what ``versions`` answers)."""


@runtime_checkable
class Versioned(ObjectStore, Protocol):
    """An ObjectStore that can say what was written first: what the centre reads a committed
    message with. Stores without it (the benchmarks' in-memory and folder stores) are read
    through the ``first`` and ``versions`` functions below, as one version each."""

    def first(self, key: str) -> bytes | None:
        """The key's oldest version (its plain bytes on a store without versioning), or None."""
        ...

    def versions(self, prefix: str) -> History:
        """Every key under prefix with its versions, oldest first, sorted by key; a key whose
        latest version is a delete marker is still here, with the versions under it."""
        ...


def first(store: ObjectStore, key: str) -> bytes | None:
    """``store.first(key)`` where the store keeps versions, else ``store.get(key)``."""
    return store.first(key) if isinstance(store, Versioned) else store.get(key)


def versions(store: ObjectStore, prefix: str) -> History:
    """``store.versions(prefix)`` where the store keeps versions, else one unknown version per
    listed key."""
    if isinstance(store, Versioned):
        return store.versions(prefix)
    return {key: [Version(None, None)] for key in store.list(prefix)}


@dataclass(frozen=True)
class Keys:
    """The key layout of one federation run (see docs/storage.md)."""

    federation: str
    run: str

    @staticmethod
    def of(config: FederationConfig) -> Keys:
        return Keys(config.name, config.run)

    def round(self, t: int) -> str:
        return f"{self.federation}/{self.run}/round-{t}"

    def prior(self, t: int) -> tuple[str, str]:
        """(tensor file, manifest) of the prior that sites train against in round t."""
        return f"{self.round(t)}/prior.safetensors", f"{self.round(t)}/prior.json"

    def updates(self, t: int) -> str:
        return f"{self.round(t)}/updates/"

    def update(self, t: int, site: str) -> tuple[str, str]:
        return f"{self.updates(t)}{site}.safetensors", f"{self.updates(t)}{site}.json"

    def summary(self, t: int) -> str:
        return f"{self.round(t)}/summary.json"

    def evaluation(self, site: str) -> str:
        return f"{self.federation}/{self.run}/evaluation/{site}.json"

    def validation(self, site: str) -> str:
        return f"{self.federation}/{self.run}/validation/{site}.json"

    def released(self, site: str) -> tuple[str, str]:
        """(tensor file, manifest) of the final prior as a site decrypted it (secure
        aggregation: the centre never holds the key), for the registry."""
        base = f"{self.federation}/{self.run}/released/{site}"
        return f"{base}.safetensors", f"{base}.json"

    def model(self, site: str) -> tuple[str, str]:
        """(tensor file, manifest) of a site's personalised theta_k, sent only when it opted in
        (``privacy.register_personal``); in the clear its last update is its model."""
        base = f"{self.federation}/{self.run}/models/{site}"
        return f"{base}.safetensors", f"{base}.json"

    def inference(self, site: str) -> str:
        """A tier-3 site's scoring summary (counts only)."""
        return f"{self.federation}/{self.run}/inference/{site}.json"


class S3Store:
    """boto3 against any S3 endpoint, with SigV4 and path-style addressing.

    ``first`` and ``versions`` read object versions when the bucket's versioning is
    ``Enabled`` (asked once, on first use, with ``GetBucketVersioning``: the centre's right,
    not a site's). Otherwise (``rclone serve s3`` answers with no status, a bucket never
    versioned likewise) they fall back to ``get`` and ``list_objects_v2``, one version per key:
    there a plain PUT replaces an object and write-once is **not** enforced by the server.
    """

    def __init__(self, config: StorageConfig) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = config.bucket
        self._versioned: bool | None = None
        self.client: S3Client = boto3.client(
            "s3",
            endpoint_url=config.endpoint_url,
            region_name=config.region,
            aws_access_key_id=config.access_key_id,
            aws_secret_access_key=config.secret_access_key,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 3, "mode": "standard"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (the coordinating centre's first step)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise self._fail("open bucket", "", exc) from exc
        except BotoCoreError as exc:
            raise self._fail("open bucket", "", exc) from exc
        try:
            self.client.create_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("create bucket", "", exc) from exc

    def _fail(self, action: str, key: str, exc: Exception) -> StorageError:
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            detail = f"{error.get('Code', '?')}: {error.get('Message', '')}".rstrip(": ")
        else:
            detail = str(exc)
        return StorageError(f"cannot {action} s3://{self.bucket}/{key}: {detail}")

    def put(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("write", key, exc) from exc

    def get(self, key: str) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            return response["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise self._fail("read", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("read", key, exc) from exc

    def list(self, prefix: str) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        keys: list[str] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                keys.extend(obj["Key"] for obj in page.get("Contents", []) if "Key" in obj)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("list", prefix + "*", exc) from exc
        return sorted(keys)

    def versioned(self) -> bool:
        """Whether the bucket keeps every version (``GetBucketVersioning`` Status ``Enabled``);
        asked once per store."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self._versioned is None:
            try:
                status = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
            except (BotoCoreError, ClientError) as exc:
                raise self._fail("read the versioning of", "", exc) from exc
            self._versioned = status == "Enabled"
        return self._versioned

    def _versions(self, prefix: str) -> History:
        """key -> its versions, oldest first, from one paginated ListObjectVersions.
        S3 lists a key's versions newest first (LastModified has one-second steps here, too
        coarse to sort by); delete markers are left out."""
        from botocore.exceptions import BotoCoreError, ClientError

        found: History = {}
        try:
            paginator = self.client.get_paginator("list_object_versions")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Versions", []):
                    key, vid = item.get("Key"), item.get("VersionId")
                    if key is not None and vid is not None:
                        found.setdefault(key, []).append(Version(vid, item.get("LastModified")))
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("list versions of", prefix + "*", exc) from exc
        return {key: found[key][::-1] for key in sorted(found)}

    def versions(self, prefix: str) -> History:
        if not self.versioned():
            return self._latest(prefix)
        return self._versions(prefix)

    def _latest(self, prefix: str) -> History:
        from botocore.exceptions import BotoCoreError, ClientError

        found: History = {}
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    if "Key" in obj:
                        found[obj["Key"]] = [Version(None, obj.get("LastModified"))]
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("list", prefix + "*", exc) from exc
        return dict(sorted(found.items()))

    def first(self, key: str) -> bytes | None:
        """The key's oldest version: what was committed first, whatever was put or deleted on
        top of it since (one ListObjectVersions and one GetObject). ``get`` where the bucket
        has no versioning."""
        from botocore.exceptions import BotoCoreError, ClientError

        if not self.versioned():
            return self.get(key)
        found = self._versions(key).get(key)
        if not found:
            return None
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=key, VersionId=str(found[0].version_id)
            )
            return response["Body"].read()
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("read the first version of", key, exc) from exc
